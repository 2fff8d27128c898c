"""run_forever / run_until_complete / stop / close and the errors around them."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from support.loops import new_loop, run_child, run_forever_bounded


def test_stop_before_run_forever_runs_exactly_one_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "second")  # belongs to the next iteration

    loop.call_soon(first)
    loop.stop()
    loop.run_forever()
    assert calls == ["first"]
    # The stop request was consumed: the next stopped run executes the deferred callback.
    loop.stop()
    loop.run_forever()
    assert calls == ["first", "second"]


def test_stop_from_callback_finishes_the_current_iteration(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, 2)  # already queued when stop() ran: still runs
    loop.call_soon(lambda: loop.call_soon(calls.append, 3))  # next iteration: does not
    run_forever_bounded(loop)
    assert calls == [1, 2]
    assert not loop.is_running()


def test_run_forever_can_be_restarted(loop):
    seen = []
    for i in range(3):
        loop.call_soon(seen.append, i)
        loop.call_soon(loop.stop)
        run_forever_bounded(loop)
    assert seen == [0, 1, 2]


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 42)
    assert loop.run_until_complete(fut) == 42
    assert not loop.is_running()


def test_run_until_complete_coroutine_returns_value(loop):
    async def main():
        await asyncio.sleep(0)
        return "value", asyncio.get_running_loop()

    value, running = loop.run_until_complete(main())
    assert value == "value"
    assert running is loop


def test_run_until_complete_propagates_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("from coroutine")

    with pytest.raises(ValueError, match="^from coroutine$"):
        loop.run_until_complete(main())
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, KeyError("from future"))
    with pytest.raises(KeyError, match="from future"):
        loop.run_until_complete(fut)


def test_run_until_complete_rejects_non_awaitable(loop):
    with pytest.raises(
        TypeError, match="^An asyncio.Future, a coroutine or an awaitable is required$"
    ):
        loop.run_until_complete(123)


def test_run_until_complete_future_of_another_loop(loop, new_loop):
    other = new_loop()
    fut = other.create_future()
    msg = "^The future belongs to a different loop than the one specified as the loop argument$"
    with pytest.raises(ValueError, match=msg):
        loop.run_until_complete(fut)


def test_event_loop_stopped_before_future_completed(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        loop.run_until_complete(fut)
    assert not fut.done()


def test_closed_loop_rejects_scheduling_and_running(loop):
    loop.close()
    assert loop.is_closed()
    closed = "^Event loop is closed$"
    with pytest.raises(RuntimeError, match=closed):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match=closed):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match=closed):
        loop.call_at(loop.time() + 1, print)
    with pytest.raises(RuntimeError, match=closed):
        loop.call_soon_threadsafe(print)
    with pytest.raises(RuntimeError, match=closed):
        loop.run_forever()
    fut = loop.create_future()
    with pytest.raises(RuntimeError, match=closed):
        loop.run_until_complete(fut)
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match=closed):
        loop.run_until_complete(coro)
    coro.close()  # asyncio checks closed before wrapping the coroutine in a task


def _running_state(loop):
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    return loop.is_running(), running is loop


def _xfail_on_asyncio_reentry_bug(request, loop_kind):
    # CPython 3.13.0-3.13.2 ran run_forever's cleanup even when its own "already running"
    # check failed, unregistering the loop that *was* running (gh-130145, fixed in 3.13.3).
    if loop_kind == "asyncio" and (3, 13, 0) <= sys.version_info[:3] < (3, 13, 3):
        request.applymarker(pytest.mark.xfail(strict=True, reason="CPython gh-130145"))


def test_run_forever_reentry_raises(loop, loop_kind, request):
    _xfail_on_asyncio_reentry_bug(request, loop_kind)
    errors = []
    state = []

    def reenter():
        for method, arg in ((loop.run_until_complete, (fut,)), (loop.run_forever, ())):
            try:
                method(*arg)
            except RuntimeError as exc:
                errors.append(str(exc))
        # The failed attempts must leave the running loop's own state alone.
        state.append(_running_state(loop))
        loop.stop()

    fut = loop.create_future()
    loop.call_soon(reenter)
    run_forever_bounded(loop)
    assert errors == ["This event loop is already running"] * 2
    assert state == [(True, True)]


def test_run_until_complete_reentry_from_coroutine_raises(loop, run):
    async def main():
        inner = asyncio.sleep(0)
        try:
            loop.run_until_complete(inner)
        finally:
            inner.close()

    with pytest.raises(RuntimeError, match="^This event loop is already running$"):
        run(main())


def test_cannot_run_while_another_loop_of_same_kind_runs(loop, loop_kind, new_loop, run, request):
    _xfail_on_asyncio_reentry_bug(request, loop_kind)
    other = new_loop()

    async def main():
        fut = other.create_future()
        with pytest.raises(RuntimeError) as info:
            other.run_until_complete(fut)
        with pytest.raises(RuntimeError) as info2:
            other.run_forever()
        return str(info.value), str(info2.value), _running_state(loop)

    msg = "Cannot run the event loop while another loop is running"
    assert run(main()) == (msg, msg, (True, True))
    assert not other.is_running()


def test_asyncio_loop_sees_this_loop_as_running(loop, run):
    # The check lives in the *inner* loop and reads the running-loop slot, so this passes
    # only if the outer loop registers itself with asyncio (asyncio._set_running_loop).
    inner = new_loop("asyncio")
    try:

        async def main():
            assert asyncio.get_running_loop() is loop
            with pytest.raises(RuntimeError) as info:
                inner.run_until_complete(inner.create_future())
            return str(info.value)

        assert run(main()) == "Cannot run the event loop while another loop is running"
    finally:
        inner.close()
    with pytest.raises(RuntimeError, match="^no running event loop$"):
        asyncio.get_running_loop()


def test_close_running_loop_raises(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    run_forever_bounded(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_twice_is_fine(loop):
    assert not loop.is_closed()
    loop.close()
    loop.close()
    assert loop.is_closed()


def test_is_running(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    run_forever_bounded(loop)
    assert seen == [True]
    assert not loop.is_running()


def test_time_is_monotonic_clock(loop):
    for _ in range(100):
        before = time.monotonic()
        now = loop.time()
        after = time.monotonic()
        assert before <= now <= after
    assert isinstance(loop.time(), float)


_FINALIZER_CHILD = """
import asyncio, sys
if sys.argv[1] == "ferroloop":
    import ferroloop
    loop = ferroloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()

class Cleanup:
    # A library object whose finalizer schedules its cleanup on the loop; kept
    # in a module global, so it is finalized while the interpreter shuts down.
    def __init__(self, loop):
        self.loop = loop

    def __del__(self):
        loop = self.loop
        loop.call_soon(print)
        loop.call_soon_threadsafe(print)
        loop.call_later(1, print)
        loop.call_at(loop.time() + 1, print)
        print("scheduled", flush=True)

keep = Cleanup(loop)
del loop
"""


def test_scheduling_from_a_finalizer_at_interpreter_exit(loop_kind):
    # The raw call_soon/call_later entries once asked to attach to the
    # interpreter, which aborts the process while it is finalizing.
    proc = run_child(_FINALIZER_CHILD, argv=(loop_kind,))
    assert (proc.returncode, proc.stdout) == (0, "scheduled\n"), proc.stderr
