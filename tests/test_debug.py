"""Debug mode: switches, slow-callback warnings, argument and thread checks, warnings."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import sys
import threading
import time

import pytest
from support.loops import new_loop, run_child, run_forever_bounded


def _expected_default_debug() -> bool:
    # asyncio.coroutines._is_debug_mode(): -X dev, or PYTHONASYNCIODEBUG unless -E.
    env = not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    return bool(sys.flags.dev_mode or env)


def test_default_debug_follows_environment(loop):
    assert loop.get_debug() is _expected_default_debug()


def test_get_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1


def _asyncio_records(caplog):
    return [r for r in caplog.records if r.name == "asyncio"]


def test_slow_callback_warning_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    def slow_callback():
        time.sleep(0.1)

    def fast_callback():
        pass

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(fast_callback)
        loop.call_soon(loop.stop)
        run_forever_bounded(loop)
    records = _asyncio_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    match = re.fullmatch(
        r"Executing <Handle [^ ]*slow_callback\(\) .*> took (\d+\.\d{3}) seconds",
        records[0].getMessage(),
    )
    assert match, records[0].getMessage()
    assert float(match.group(1)) >= 0.1


def test_slow_transport_read_names_read_ready(loop, run, caplog):
    """A slow data_received is reported as the transport's _read_ready, as asyncio does."""
    import socket

    class Slow(asyncio.Protocol):
        def data_received(self, data):
            time.sleep(0.06)

    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    a, b = socket.socketpair()

    async def main():
        transport, _ = await loop.create_connection(Slow, sock=a)
        b.send(b"x")
        await asyncio.sleep(0.15)
        transport.close()
        await asyncio.sleep(0)

    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            run(main())
    finally:
        b.close()
    messages = [r.getMessage() for r in _asyncio_records(caplog)]
    assert any(
        re.fullmatch(r"Executing <Handle \w+\._read_ready\(\) .*> took \d+\.\d{3} seconds", m)
        for m in messages
    ), messages


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.05)
        loop.call_soon(loop.stop)
        run_forever_bounded(loop)
    assert _asyncio_records(caplog) == []


async def _coroutine_function():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_at", "call_later"])
def test_debug_rejects_coroutines_and_non_callables(loop, method):
    loop.set_debug(True)
    schedule = getattr(loop, method)
    lead = (loop.time() + 1,) if method == "call_at" else (1,) if method == "call_later" else ()
    # call_later delegates to call_at, so asyncio names call_at in the message.
    name = "call_at" if method == "call_later" else method
    with pytest.raises(TypeError, match=rf"^coroutines cannot be used with {name}\(\)$"):
        schedule(*lead, _coroutine_function)
    coro = _coroutine_function()
    try:
        with pytest.raises(TypeError, match=rf"^coroutines cannot be used with {name}\(\)$"):
            schedule(*lead, coro)
    finally:
        coro.close()
    with pytest.raises(TypeError, match=rf"^a callable object was expected by {name}\(\), got 42$"):
        schedule(*lead, 42)


def test_debug_thread_check(loop, run):
    loop.set_debug(True)
    errors = []

    def from_thread():
        for call in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print)):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))

    async def main():
        thread = threading.Thread(target=from_thread)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)

    run(main())
    msg = "Non-thread-safe operation invoked on an event loop other than the current one"
    assert errors == [msg, msg]


def test_unclosed_loop_resource_warning(loop_kind):
    leaked = new_loop(loop_kind)
    with pytest.warns(ResourceWarning, match="^unclosed event loop"):
        del leaked
        gc.collect()


CHILD = """
import sys
if sys.argv[1] == "ferroloop":
    import ferroloop as mod
else:
    import asyncio as mod
loop = mod.new_event_loop()
print(loop.get_debug())
loop.close()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, "False"),
        ((), {"PYTHONASYNCIODEBUG": "1"}, "True"),
        (("-X", "dev"), {}, "True"),
        (("-E",), {"PYTHONASYNCIODEBUG": "1"}, "False"),
    ],
    ids=["plain", "PYTHONASYNCIODEBUG", "X-dev", "E-ignores-env"],
)
def test_debug_mode_from_environment(loop_kind, args, env, expected, tmp_path):
    code = CHILD
    if args == ("-E",):
        # -E also ignores PYTHONPATH, so hand the child our sys.path explicitly.
        code = f"import sys; sys.path[:0] = {sys.path!r}\n" + CHILD
    proc = run_child(code, *args, env=env, cwd=tmp_path, argv=(loop_kind,))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
