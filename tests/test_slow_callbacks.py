"""Slow-callback reports outside debug mode: ``loop.set_slow_callback_handler``.

asyncio only reports slow callbacks in debug mode (a logged warning); ferroloop's
handler sees the same callbacks without it, so the first test compares the two.
The rest is ferroloop's own: what a report says about callbacks and task steps,
handler errors, and the watchdog that captures where a stuck loop is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from support import loops

pytestmark = pytest.mark.timeout(60)

SLOW = 0.03
THRESHOLD = 0.015


def slow_one() -> None:
    time.sleep(SLOW)


def slow_two() -> None:
    time.sleep(SLOW)


def fast() -> None:
    pass


def test_reports_the_callbacks_debug_mode_warns_about(loop, loop_kind, caplog) -> None:
    # asyncio: debug mode's warnings; ferroloop: the handler, debug mode off.
    reported: list[str] = []
    if loop_kind == "asyncio":
        loop.set_debug(True)
        loop.slow_callback_duration = THRESHOLD
    else:
        loop.set_slow_callback_handler(lambda info: reported.append(info.callback), THRESHOLD)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for cb in (slow_one, fast, slow_two, fast):
            loop.call_soon(cb)
        loop.call_soon(loop.stop)
        loops.run_forever_bounded(loop)
    if loop_kind == "asyncio":
        for record in caplog.records:
            match = re.search(r"<Handle (\w+)\(\)", record.getMessage())
            if match and "took" in record.getMessage():
                reported.append(match.group(1))
    assert reported == ["slow_one", "slow_two"]


@pytest.mark.ferroloop_only
def test_callback_report(loop) -> None:
    import ferroloop

    reports: list[ferroloop.SlowCallback] = []
    loop.set_slow_callback_handler(reports.append, THRESHOLD)
    assert loop.get_slow_callback_handler() == reports.append
    loop.call_soon(slow_one)
    loop.call_soon(fast)
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    assert len(reports) == 1
    info = reports[0]
    assert isinstance(info, ferroloop.SlowCallback)
    assert info.callback == "slow_one"
    assert info.duration >= SLOW
    assert info.task is None and info.task_name is None and info.stack is None
    line = slow_one.__code__.co_firstlineno
    assert info.location == f"{__file__}:{line}"
    assert info.description.startswith(f"Callback slow_one() at {__file__}:{line} took ")


@pytest.mark.ferroloop_only
def test_task_step_report_names_task_coroutine_and_where_it_waits(loop, run) -> None:
    reports = []
    loop.set_slow_callback_handler(reports.append, THRESHOLD)

    async def worker() -> None:
        await asyncio.sleep(0)
        time.sleep(SLOW)
        await asyncio.sleep(0)  # suspended here after the slow step
        await asyncio.sleep(0)

    async def main() -> None:
        await loop.create_task(worker(), name="the-worker")

    run(main())
    steps = [r for r in reports if r.task_name == "the-worker"]
    assert len(steps) == 1, reports
    info = steps[0]
    assert isinstance(info.task, asyncio.Task)
    assert info.callback.endswith("worker")
    suspended_at = worker.__code__.co_firstlineno + 3
    assert info.location == f"{__file__}:{suspended_at}"
    assert info.description.startswith("Task 'the-worker' step of ")
    assert info.duration >= SLOW


@pytest.mark.ferroloop_only
def test_works_in_debug_mode_too(loop, caplog) -> None:
    reports = []
    loop.set_debug(True)
    loop.set_slow_callback_handler(reports.append, THRESHOLD)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_one)
        loop.call_soon(loop.stop)
        loops.run_forever_bounded(loop)
    assert [r.callback for r in reports] == ["slow_one"]


@pytest.mark.ferroloop_only
def test_default_threshold_is_slow_callback_duration(loop) -> None:
    reports = []
    loop.slow_callback_duration = THRESHOLD
    loop.set_slow_callback_handler(reports.append)
    loop.call_soon(slow_one)
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    assert len(reports) == 1


@pytest.mark.ferroloop_only
def test_removing_the_handler_stops_reports(loop) -> None:
    reports = []
    loop.set_slow_callback_handler(reports.append, THRESHOLD)
    loop.set_slow_callback_handler(None)
    assert loop.get_slow_callback_handler() is None
    loop.call_soon(slow_one)
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    assert reports == []


@pytest.mark.ferroloop_only
def test_handler_errors_go_to_the_exception_handler(loop, loop_errors) -> None:
    ran = []

    def broken(info) -> None:
        raise ValueError("handler failed")

    loop.set_slow_callback_handler(broken, THRESHOLD)
    loop.call_soon(slow_one)
    loop.call_soon(ran.append, "after")
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    assert ran == ["after"]
    assert len(loop_errors) == 1
    context = loop_errors[0]
    assert context["message"] == "Exception in the slow-callback handler"
    assert isinstance(context["exception"], ValueError)
    assert context["handler"] is broken


@pytest.mark.ferroloop_only
@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("not callable", 0.1), {}, TypeError),
        ((print, "0.1"), {}, TypeError),
        ((print, -1), {}, ValueError),
        ((print, float("nan")), {}, ValueError),
        ((print, float("inf")), {}, ValueError),
        ((print, 0.5), {"stuck_threshold": 0.1}, ValueError),
        ((print, 0.1), {"stuck_threshold": True}, TypeError),
    ],
)
def test_bad_arguments(loop, args, kwargs, error) -> None:
    with pytest.raises(error):
        loop.set_slow_callback_handler(*args, **kwargs)
    assert loop.get_slow_callback_handler() is None


def _watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ferroloop-watchdog"]


def stuck_here() -> None:
    time.sleep(0.4)


@pytest.mark.ferroloop_only
def test_watchdog_captures_where_the_loop_is_stuck(loop) -> None:
    reports = []
    before = len(_watchdogs())
    loop.set_slow_callback_handler(reports.append, 0.05, stuck_threshold=0.1)
    # Setting it again replaces the watchdog: never more than one per loop.
    loop.set_slow_callback_handler(reports.append, 0.05, stuck_threshold=0.1)
    assert len(_watchdogs()) == before + 1
    loop.call_soon(stuck_here)
    loop.call_soon(slow_one)
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    assert [r.callback for r in reports] == ["stuck_here"]
    stack = reports[0].stack
    assert stack is not None
    assert "in stuck_here" in stack and "time.sleep(0.4)" in stack
    loop.close()
    assert len(_watchdogs()) == before


@pytest.mark.ferroloop_only
def test_watchdog_stops_when_the_handler_is_removed(loop) -> None:
    before = len(_watchdogs())
    loop.set_slow_callback_handler(print, 0.05, stuck_threshold=0.1)
    assert len(_watchdogs()) == before + 1
    loop.set_slow_callback_handler(None)
    assert len(_watchdogs()) == before
