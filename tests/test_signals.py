"""add_signal_handler / remove_signal_handler, and Ctrl-C in a real child process."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import textwrap
import threading
import time

import pytest
from support.loops import interrupt_child, run_forever_bounded


@pytest.fixture
def sigusr1_restored():
    """Whatever a test does, SIGUSR1 ends up with its original disposition."""
    original = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, original)


def test_signal_handler_runs_with_args(loop, run, sigusr1_restored):
    got = []

    async def main():
        done = loop.create_future()

        def handler(*args):
            got.append((args, threading.current_thread() is threading.main_thread()))
            done.set_result(None)

        loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
        os.kill(os.getpid(), signal.SIGUSR1)
        await done

    run(main())
    # Runs as a loop callback, on the loop's thread, with the given args.
    assert got == [(("a", 2), True)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_handler_installed_synchronously(loop, sigusr1_restored):
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_signal_handler_return_values(loop, sigusr1_restored):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_removing_sigint_handler_restores_default_int_handler(loop):
    original = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, print)
        assert loop.remove_signal_handler(signal.SIGINT) is True
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, original)


def test_second_handler_replaces_first(loop, run, sigusr1_restored):
    got = []

    async def main():
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.append, "first")
        loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("second"), done.set_result(1)))
        os.kill(os.getpid(), signal.SIGUSR1)
        await done

    run(main())
    assert got == ["second"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_invalid_signals(loop):
    with pytest.raises(ValueError, match="^invalid signal number 1000$"):
        loop.add_signal_handler(1000, print)
    with pytest.raises(ValueError, match="^invalid signal number 1000$"):
        loop.remove_signal_handler(1000)
    with pytest.raises(TypeError, match="^sig must be an int, not 'x'$"):
        loop.add_signal_handler("x", print)


def test_uncatchable_signal(loop):
    with pytest.raises(RuntimeError, match=f"^sig {int(signal.SIGKILL)} cannot be caught$"):
        loop.add_signal_handler(signal.SIGKILL, print)
    assert loop.remove_signal_handler(signal.SIGKILL) is False


def test_coroutine_function_handler_rejected(loop):
    async def handler():
        pass

    with pytest.raises(TypeError, match=r"^coroutines cannot be used with add_signal_handler\(\)$"):
        loop.add_signal_handler(signal.SIGUSR1, handler)


def test_add_signal_handler_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_signal_handler(signal.SIGUSR1, print)


def test_add_signal_handler_from_non_main_thread(loop):
    outcome = {}

    def worker():
        try:
            signal.set_wakeup_fd(-1)
        except ValueError as exc:
            outcome["wakeup_fd_message"] = str(exc)
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            outcome["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    # asyncio re-raises set_wakeup_fd's ValueError as RuntimeError with the same text.
    assert type(outcome["error"]) is RuntimeError
    assert str(outcome["error"]) == outcome["wakeup_fd_message"]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.fixture
def sigvtalrm_restored():
    original = signal.getsignal(signal.SIGVTALRM)
    yield
    signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    signal.signal(signal.SIGVTALRM, original)


def test_python_signal_handler_runs_promptly(loop, sigvtalrm_restored):
    # asyncio.Runner's Ctrl-C support is a plain signal.signal() handler that wakes the loop
    # with call_soon_threadsafe; CPython runs it only when bytecode runs next. Here the signal
    # lands while a C callback (pbkdf2, ~30 ms of CPU) runs, so no bytecode follows before
    # the loop would go to sleep: the loop itself must let the handler run (asyncio's
    # Python-level _run_once does so implicitly). SIGVTALRM, because pytest-timeout may
    # own SIGALRM.
    got = []

    def handler(signum, frame):
        got.append(signum)
        loop.call_soon_threadsafe(loop.stop)

    signal.signal(signal.SIGVTALRM, handler)
    arm = functools.partial(signal.setitimer, signal.ITIMER_VIRTUAL, 0.005)
    burn = functools.partial(hashlib.pbkdf2_hmac, "sha256", b"pw", b"salt", 100_000)
    loop.call_soon(arm)
    loop.call_soon(burn)
    start = time.monotonic()
    run_forever_bounded(loop, timeout=5)
    assert got == [signal.SIGVTALRM]
    assert time.monotonic() - start < 1


CHILD = textwrap.dedent(
    """
    import asyncio, functools, sys

    async def main():
        # Say "ready" from a callback once main is suspended: on 3.10 (no SIGINT handler in
        # asyncio.run) a SIGINT landing inside main's own frame would not be a cancellation.
        ready = functools.partial(print, "ready", flush=True)
        asyncio.get_running_loop().call_soon(ready)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            print("main cancelled", flush=True)
            raise

    if sys.argv[1] == "ferroloop":
        import ferroloop
        ferroloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
def test_ctrl_c_in_run_cancels_main_and_raises_keyboard_interrupt(loop_kind, tmp_path):
    code, out, err = interrupt_child(CHILD, loop_kind, tmp_path, ready="ready")
    # The uncaught KeyboardInterrupt makes CPython exit by re-raising SIGINT on itself.
    assert code == -signal.SIGINT, (code, err)
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert out.splitlines() == ["main cancelled"], (out, err)
