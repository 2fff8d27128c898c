"""Creating loops of either kind and running coroutines on them with a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

DEFAULT_TIMEOUT = 10.0

try:
    import ferroloop  # noqa: F401

    if not hasattr(ferroloop, "new_event_loop"):
        raise ImportError("ferroloop has no new_event_loop yet")
    FERROLOOP_IMPORT_ERROR: str | None = None
except ImportError as exc:
    FERROLOOP_IMPORT_ERROR = f"ferroloop not importable: {exc!r}"
    # `make test` sets this: there, a missing build must fail, not skip half the suite.
    if os.environ.get("FERROLOOP_REQUIRED"):
        raise


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        # What the default policy's new_event_loop() builds on Linux (the epoll selector
        # loop), made directly so a test that installed another policy cannot change it.
        return asyncio.SelectorEventLoop()
    if kind == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    raise ValueError(f"unknown loop kind {kind!r}")


def run(loop: asyncio.AbstractEventLoop, coro, timeout: float = DEFAULT_TIMEOUT):
    """Run ``coro`` to completion on ``loop``; a hang becomes TimeoutError after ``timeout``."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def run_forever_bounded(loop: asyncio.AbstractEventLoop, timeout: float = DEFAULT_TIMEOUT) -> None:
    """run_forever with a guard timer; fails if the guard, not the test, stopped the loop."""
    fired = []

    def guard() -> None:
        fired.append(True)
        loop.stop()

    handle = loop.call_later(timeout, guard)
    try:
        loop.run_forever()
    finally:
        handle.cancel()
    assert not fired, f"run_forever was still running after {timeout} s"


def run_child(
    code: str,
    *interpreter_args: str,
    env: dict | None = None,
    cwd=None,
    argv: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess:
    """Run ``python [interpreter_args] -c code [argv]`` with a clean asyncio-debug env."""
    full_env = dict(os.environ)
    for key in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE"):
        full_env.pop(key, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *interpreter_args, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        check=False,
    )


def interrupt_child(code: str, loop_kind: str, cwd, ready: str, timeout: float = 20.0):
    """Start ``python -c code loop_kind``, wait for the line `ready`, send it SIGINT;
    returns (returncode, stdout, stderr). The child is killed if it outlives `timeout`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, loop_kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == ready, (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
