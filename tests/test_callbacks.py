"""call_soon / call_soon_threadsafe, Handle objects and contexts."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
import time

import pytest
from support.loops import run_forever_bounded

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def _in_context(value: str) -> contextvars.Context:
    ctx = contextvars.copy_context()
    ctx.run(var.set, value)
    return ctx


def test_call_soon_is_fifo(loop):
    order = []
    for i in range(200):
        loop.call_soon(order.append, i)
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert order == list(range(200))


def test_call_soon_passes_args(loop):
    got = []
    loop.call_soon(lambda *a: got.append(a), 1, "two", None)
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert got == [(1, "two", None)]


def test_callbacks_scheduled_by_callbacks_run_next_iteration(loop):
    # A ticker re-queues itself once per iteration, so `ticks` counts iterations. It gives
    # up after 50 ticks: a loop that ran new callbacks in the same pass would spin forever.
    ticks = 0
    seen = []

    def ticker():
        nonlocal ticks
        ticks += 1
        if ticks < 50:
            loop.call_soon(ticker)

    def chain(depth):
        seen.append(ticks)
        if depth < 5:
            loop.call_soon(chain, depth + 1)
        else:
            loop.stop()

    loop.call_soon(ticker)
    loop.call_soon(chain, 0)
    run_forever_bounded(loop)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_handle_cancel(loop):
    called = []
    handle = loop.call_soon(called.append, "cancelled one")
    loop.call_soon(called.append, "kept")
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    handle.cancel()  # idempotent
    assert handle.cancelled()
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert called == ["kept"]


def test_cancel_from_earlier_callback_in_same_iteration(loop):
    called = []
    later = None
    loop.call_soon(lambda: later.cancel())
    later = loop.call_soon(called.append, "must not run")
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert called == []


def test_handle_repr_names_callback(loop):
    def my_callback_name():
        pass

    handle = loop.call_soon(my_callback_name)
    text = repr(handle)
    assert text.startswith("<Handle ")
    assert "my_callback_name" in text
    handle.cancel()
    assert "cancelled" in repr(handle)


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_context_argument_is_honoured(loop, method):
    seen = []

    def record():
        seen.append(var.get())
        loop.stop()

    ctx = _in_context("inside")
    if method == "call_later":
        loop.call_later(0.001, record, context=ctx)
    elif method == "call_at":
        loop.call_at(loop.time() + 0.001, record, context=ctx)
    else:
        getattr(loop, method)(record, context=ctx)
    run_forever_bounded(loop)
    assert seen == ["inside"]
    assert var.get() == "unset"


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_call_soon_arguments(loop, method):
    """Every way of passing call_soon's arguments, good and bad, as asyncio takes them."""
    call = getattr(loop, method)
    got = []
    ctx = _in_context("kw")

    def record(*args):
        got.append((args, var.get()))

    call(record)
    call(record, 1, 2)
    call(record, 3, context=None)
    call(record, 4, context=ctx)
    call(callback=record)
    call(callback=record, context=ctx)
    errors = []
    for bad in (
        lambda: call(),
        lambda: call(context=ctx),
        lambda: call(record, colour="red"),
        lambda: call(record, callback=record),
        lambda: call(record, 5, context=ctx, extra=1),
    ):
        with pytest.raises(TypeError) as caught:
            bad()
        # The message names the method as `BaseEventLoop.call_soon()` on asyncio.
        errors.append(str(caught.value).split("() ", 1)[1])
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert got == [
        ((), "unset"),
        ((1, 2), "unset"),
        ((3,), "unset"),
        ((4,), "kw"),
        ((), "unset"),
        ((), "kw"),
    ]
    assert errors == [
        "missing 1 required positional argument: 'callback'",
        "missing 1 required positional argument: 'callback'",
        "got an unexpected keyword argument 'colour'",
        "got multiple values for argument 'callback'",
        "got an unexpected keyword argument 'extra'",
    ]


def test_context_argument_from_another_thread(loop):
    seen = []

    def record():
        seen.append(var.get())
        loop.stop()

    ctx = _in_context("threaded")
    thread = threading.Thread(
        target=loop.call_soon_threadsafe, args=(record,), kwargs={"context": ctx}
    )
    loop.call_soon(thread.start)
    run_forever_bounded(loop)
    thread.join(5)
    assert seen == ["threaded"]


def test_callback_changes_stay_in_the_callback_context(loop):
    seen = []

    def mutate():
        var.set("mutated")
        seen.append(var.get())

    ctx = _in_context("given")
    loop.call_soon(mutate, context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)  # same context object
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert seen == ["mutated", "mutated", "unset"]
    assert ctx[var] == "mutated"


def test_default_context_is_a_copy_of_the_callers(loop):
    seen = []

    def read_and_mutate():
        seen.append(var.get())
        var.set("changed by callback")

    def caller():
        var.set("caller")
        loop.call_soon(read_and_mutate)
        var.set("after call_soon")  # the copy was taken at call_soon time
        loop.call_soon(read_and_mutate)
        loop.call_soon(loop.stop)

    outer = contextvars.copy_context()
    outer.run(caller)
    run_forever_bounded(loop)
    assert seen == ["caller", "after call_soon"]
    assert outer[var] == "after call_soon"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")
def test_handle_get_context(loop):
    ctx = _in_context("explicit")
    assert loop.call_soon(print, context=ctx).get_context() is ctx
    assert loop.call_later(10, print, context=ctx).get_context() is ctx

    def make():
        var.set("implicit")
        return loop.call_soon(print)

    default_ctx = contextvars.copy_context().run(make).get_context()
    assert isinstance(default_ctx, contextvars.Context)
    assert default_ctx[var] == "implicit"


@pytest.mark.timeout(60)
def test_call_soon_threadsafe_from_many_threads(loop, run):
    n_threads, per_thread = 8, 1000
    received: dict[int, list[int]] = {t: [] for t in range(n_threads)}
    done = loop.create_future()
    total = 0

    def record(tid, i):
        nonlocal total
        received[tid].append(i)
        total += 1
        if total == n_threads * per_thread:
            done.set_result(None)

    barrier = threading.Barrier(n_threads)

    def produce(tid):
        barrier.wait(5)
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, tid, i)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]

    async def main():
        for t in threads:
            t.start()
        await done

    try:
        run(main(), timeout=30)
    finally:
        for t in threads:
            t.join(10)
    # Exactly once each, and in submission order per thread.
    assert received == {t: list(range(per_thread)) for t in range(n_threads)}


def test_call_soon_threadsafe_wakes_idle_loop(loop, run):
    # The loop sleeps in the poller with no timer due for 10 s; a cross-thread call_soon
    # must wake it at once. Measured five times, each from a fresh idle state.
    latencies = []

    async def once():
        fut = loop.create_future()
        sent = []

        def remote():
            time.sleep(0.05)  # let the loop go to sleep first
            sent.append(time.monotonic())
            loop.call_soon_threadsafe(lambda: fut.set_result(time.monotonic()))

        thread = threading.Thread(target=remote)
        thread.start()
        ran_at = await fut
        thread.join(5)
        latencies.append(ran_at - sent[0])

    async def main():
        for _ in range(5):
            await once()

    run(main())
    assert max(latencies) < 1.0, latencies


@pytest.mark.timeout(60)
def test_call_soon_threadsafe_racing_close(loop, run):
    # Threads keep waking a loop that sleeps between their calls, then close it under
    # them: each call either queues or raises "Event loop is closed", and the loop's
    # descriptors are gone afterwards (none left open by a wake-up still in flight).
    fds_before = len(os.listdir("/proc/self/fd")) if sys.platform == "linux" else None
    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0] * 4

    def produce(tid):
        while not stop.is_set():
            try:
                loop.call_soon_threadsafe(int)
            except RuntimeError as exc:
                if "closed" not in str(exc):
                    errors.append(exc)
                return
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            calls[tid] += 1
            if calls[tid] % 64 == 0:
                time.sleep(0.0005)  # let the loop go back to its wait

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]

    async def main():
        for t in threads:
            t.start()
        for _ in range(20):
            await asyncio.sleep(0.005)

    try:
        run(main(), timeout=30)
        loop.close()
        time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert all(calls), calls
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds_before
