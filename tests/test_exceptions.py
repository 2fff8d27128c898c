"""Exception handler contract and BaseException propagation out of callbacks."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from support.loops import run_forever_bounded

# In debug mode asyncio adds the handle's creation traceback to the context.
OPTIONAL_KEYS = {"source_traceback"}


def _raise(exc: BaseException):
    raise exc


def _stop_after_one_iteration(loop):
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)


def test_callback_exception_reaches_handler_with_loop_and_context(loop):
    calls = []
    loop.set_exception_handler(lambda *args: calls.append(args))
    error = ValueError("boom")

    def failing_callback():
        raise error

    handle = loop.call_soon(failing_callback)
    after = []
    loop.call_soon(after.append, "still runs")
    _stop_after_one_iteration(loop)

    assert after == ["still runs"]
    assert len(calls) == 1
    got_loop, context = calls[0]
    assert got_loop is loop
    assert (
        {"message", "exception", "handle"}
        <= set(context)
        <= {"message", "exception", "handle", *OPTIONAL_KEYS}
    )
    assert context["message"].startswith("Exception in callback ")
    assert "failing_callback" in context["message"]
    assert context["exception"] is error
    assert context["handle"] is handle


def test_timer_callback_exception_context_has_timer_handle(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    handle = loop.call_later(0.001, _raise, KeyError("k"))
    loop.call_later(0.01, loop.stop)
    run_forever_bounded(loop)
    assert len(calls) == 1
    assert calls[0]["handle"] is handle
    assert isinstance(calls[0]["exception"], KeyError)


def test_default_handler_logs_to_asyncio_logger(loop, caplog):
    loop.set_exception_handler(None)
    error = ValueError("logged")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(_raise, error)
        _stop_after_one_iteration(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("Exception in callback ")
    assert "\nhandle: <Handle " in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is error


def test_set_exception_handler_none_restores_default(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_rejects_non_callable(loop):
    with pytest.raises(TypeError, match="^A callable object or None is expected, got 'nope'$"):
        loop.set_exception_handler("nope")
    assert loop.get_exception_handler() is not None  # the harness's handler is kept


def test_call_exception_handler_directly(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    context = {"message": "custom", "extra": 1}
    loop.call_exception_handler(context)
    assert calls == [(loop, context)]


def test_default_exception_handler_formats_context(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "explicit message", "custom": [1, 2]})
        loop.default_exception_handler({"custom": "x"})
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert messages == [
        "explicit message\ncustom: [1, 2]",
        "Unhandled exception in event loop\ncustom: 'x'",
    ]


def test_raising_exception_handler_is_logged_not_propagated(loop, caplog):
    handler_error = RuntimeError("handler broke")

    def bad_handler(lp, ctx):
        raise handler_error

    loop.set_exception_handler(bad_handler)
    after = []
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(_raise, ValueError("original"))
        loop.call_soon(after.append, "loop continues")
        _stop_after_one_iteration(loop)
    assert after == ["loop continues"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert records[0].exc_info[1] is handler_error


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_propagates_from_run_forever(loop, exc_type):
    ran = []
    loop.call_soon(ran.append, "before")
    loop.call_soon(_raise, exc_type("stop now"))
    loop.call_soon(ran.append, "after")
    with pytest.raises(exc_type, match="stop now"):
        run_forever_bounded(loop)
    assert ran == ["before"]
    assert not loop.is_running()
    # Callbacks queued behind the interrupting one were not lost.
    _stop_after_one_iteration(loop)
    assert ran == ["before", "after"]
    # And the loop is fully usable afterwards.
    assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_propagates_from_run_until_complete(loop, exc_type):
    fut = loop.create_future()
    loop.call_later(0.001, _raise, exc_type())
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not fut.done()
    loop.call_soon(fut.set_result, "resumed")
    assert loop.run_until_complete(fut) == "resumed"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_task_propagates(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert loop.run_until_complete(asyncio.sleep(0, result="ok")) == "ok"


def test_unretrieved_task_exception_reported(loop, loop_errors):
    async def fail():
        raise ValueError("never retrieved")

    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0.001))
    assert task.done()
    del task
    gc.collect()
    assert len(loop_errors) == 1
    context = loop_errors[0]
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], ValueError)
    assert "future" in context
