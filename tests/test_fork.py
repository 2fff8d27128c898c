"""A forked child and its copy of the parent's loop.

``fork`` copies a loop's memory, but its epoll instance, wake-up descriptors and sockets
are kernel objects the child shares with the parent. Nothing the child does with its copy
may change the parent's loop: closing it (explicitly or when it is collected), removing
readers, running it. A child forked from inside a running loop gets asyncio's errors when
it touches that loop. uvloop's differences are noted where they occur.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import warnings

import pytest

CHILD_TIMEOUT = 10.0


def in_child(body, timeout: float = CHILD_TIMEOUT) -> str:
    """Runs ``body()`` in a forked child; returns what it returned (as a string) or its
    exception as ``"Type: message"``. The child never returns into pytest."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns that forking a process with threads may deadlock; the child here
        # only runs the loop's and this file's code.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            try:
                out = str(body())
            except BaseException as exc:
                out = f"{type(exc).__name__}: {exc}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            raise AssertionError(f"the child did not finish in {timeout} s")
        time.sleep(0.005)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()


def watched_pair(loop):
    """A socket pair whose first end the loop reads into the returned list."""
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []
    loop.add_reader(a, lambda: got.append(a.recv(100)))
    return a, b, got


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def parent_still_works(loop, got: list[bytes], b: socket.socket) -> None:
    """The reader registered before the fork fires, and every kind of wake-up works."""
    b.send(b"after")
    await until(lambda: got == [b"after"])
    if not isinstance(loop, asyncio.SelectorEventLoop):
        # Skipped on asyncio: a child that closed its copy unregistered the parent's
        # self-pipe from the shared epoll, so call_soon_threadsafe (and with it every
        # executor result) no longer wakes the parent's loop: the callback waits for the
        # next event or timer.
        fut = loop.create_future()
        threading.Timer(0.01, loop.call_soon_threadsafe, (fut.set_result, "threadsafe")).start()
        assert await asyncio.wait_for(fut, 2) == "threadsafe"
        assert await asyncio.wait_for(loop.run_in_executor(None, sum, [1, 2]), 2) == 3
    c, d = socket.socketpair()
    with c, d:
        c.setblocking(False)
        d.send(b"new")
        assert await asyncio.wait_for(loop.sock_recv(c, 10), 5) == b"new"
    start = loop.time()
    await asyncio.sleep(0.01)
    assert loop.time() - start >= 0.01


def close_explicitly(loop):
    loop.close()
    return "closed"


def close_as_collected(loop):
    # What the garbage collector runs for an unreferenced loop (BaseEventLoop.__del__).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop.__del__()
    return f"closed={loop.is_closed()}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("close", "said"), [(close_explicitly, "closed"), (close_as_collected, "closed=True")]
)
def test_a_child_closing_its_copy_leaves_the_parents_loop(loop, run, close, said):
    # uvloop: an explicit close in the child unregisters the parent's reader too.
    a, b, got = watched_pair(loop)
    with a, b:
        run(asyncio.sleep(0.01))
        assert in_child(lambda: close(loop)) == said
        run(parent_still_works(loop, got, b))


@pytest.mark.timeout(30)
def test_a_child_can_run_its_copy(loop, run):
    a, b, got = watched_pair(loop)

    def child():
        c, d = socket.socketpair()
        c.setblocking(False)
        d.send(b"child")
        data = loop.run_until_complete(asyncio.wait_for(loop.sock_recv(c, 10), 5))
        loop.close()
        return data.decode()

    with a, b:
        assert in_child(child) == "child"
        run(parent_still_works(loop, got, b))


@pytest.mark.timeout(30)
def test_a_child_of_a_running_loop_gets_asyncios_errors(loop, run):
    a, b, got = watched_pair(loop)

    def child():
        errors = []
        try:
            asyncio.get_running_loop()
        except RuntimeError as exc:
            errors.append(str(exc))
        coro = asyncio.sleep(0)
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc).lower().rstrip("."))
        finally:
            coro.close()
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        return " | ".join(errors)

    async def main():
        return in_child(child)

    with a, b:
        said = run(main())
        assert said == (
            "no running event loop | this event loop is already running"
            " | Cannot close a running event loop"
        )
        run(parent_still_works(loop, got, b))


@pytest.mark.ferroloop_only
@pytest.mark.timeout(30)
def test_a_child_unregistering_leaves_the_parents_loop(loop, run):
    # asyncio and uvloop share the epoll instance (uvloop: libuv's) with the child: there
    # the child's remove_reader unregisters the parent's reader too, and it never fires.
    a, b, got = watched_pair(loop)

    def child():
        removed = loop.remove_reader(a)
        c, d = socket.socketpair()
        loop.add_reader(c, print)
        loop.remove_reader(c)
        loop.close()
        return f"removed={removed}"

    with a, b:
        assert in_child(child) == "removed=False"
        run(parent_still_works(loop, got, b))


@pytest.mark.ferroloop_only
@pytest.mark.timeout(30)
def test_a_childs_signals_do_not_reach_the_parents_handlers(loop, run):
    # asyncio before 3.12 keeps the inherited wakeup fd in the child: the child's signal
    # is written to the parent's socket and the parent runs its handler (3.12+ resets it).
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    seen = []
    loop.add_signal_handler(signal.SIGUSR1, seen.append, "parent")
    try:
        a, b, got = watched_pair(loop)

        def child():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            return "sent"

        with a, b:
            run(asyncio.sleep(0.01))
            assert in_child(child) == "sent"
            run(parent_still_works(loop, got, b))
            assert seen == []
            os.kill(os.getpid(), signal.SIGUSR1)
            run(until(lambda: seen == ["parent"]))
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


@pytest.mark.timeout(30)
def test_a_childs_copy_wakes_for_its_own_threads(loop, run):
    a, b, got = watched_pair(loop)

    def child():
        fut = loop.create_future()
        threading.Timer(0.01, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        return loop.run_until_complete(asyncio.wait_for(fut, 5))

    with a, b:
        assert in_child(child) == "woken"
        run(parent_still_works(loop, got, b))


@pytest.mark.ferroloop_only
@pytest.mark.timeout(30)
def test_a_child_gets_its_own_default_executor(loop, run):
    # asyncio and uvloop keep the parent's executor in the child, whose threads were not
    # forked: a child's run_in_executor on the inherited loop never completes there.
    a, b, got = watched_pair(loop)
    with a, b:
        assert run(loop.run_in_executor(None, sum, [1, 2])) == 3

        def child():
            return loop.run_until_complete(
                asyncio.wait_for(loop.run_in_executor(None, sum, [3, 4]), 5)
            )

        assert in_child(child) == "7"
        run(parent_still_works(loop, got, b))


@pytest.mark.ferroloop_only
@pytest.mark.timeout(30)
def test_a_child_leaves_the_parents_subprocesses_alone(loop, run):
    # asyncio: the child's close() unregisters the parent's self-pipe, through which the
    # child watcher's thread reports the exit, so the parent's proc.wait() never returns.
    a, b, got = watched_pair(loop)

    async def start():
        return await asyncio.create_subprocess_exec("sleep", "30")

    with a, b:
        proc = run(start())
        try:
            assert in_child(lambda: close_explicitly(loop)) == "closed"
            assert proc.returncode is None
            os.kill(proc.pid, 0)  # still running, not killed nor reaped by the child
            proc.terminate()
            assert run(proc.wait()) == -signal.SIGTERM
            run(parent_still_works(loop, got, b))
        finally:
            if proc.returncode is None:
                proc.kill()
                run(proc.wait())
