"""Queued handles and the cyclic garbage collector.

ferroloop keeps a handle made by call_soon/call_later/call_at (and the context copy made
for it) off the collector's lists while it waits in the loop, and reports what it
references through the loop instead. These tests hold it to asyncio's outcome: every
cycle through a handle is still collected, whether the handle ran, was cancelled, or
still waits in a loop that is itself garbage, and contexts a program took from waiting
handles stay valid whatever happens to the handle and the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import random
import warnings
import weakref

import pytest
from support import loops

VAR: contextvars.ContextVar[int] = contextvars.ContextVar("VAR", default=0)


class Holder:
    """Holds the handle whose callback is one of its own methods: holder -> handle ->
    bound method -> holder."""

    def __init__(self) -> None:
        self.ran = 0
        self.handle: asyncio.Handle | None = None

    def cb(self, *args: object) -> None:
        self.ran += 1


def collect_until_gone(ref: weakref.ref) -> None:
    for _ in range(3):
        if ref() is None:
            return
        gc.collect()
    assert ref() is None, "the cycle was not collected"


def test_cycle_through_a_callback_that_ran(loop) -> None:
    holder = Holder()
    holder.handle = loop.call_soon(holder.cb, holder)
    loop.run_until_complete(asyncio.sleep(0))
    assert holder.ran == 1
    ref = weakref.ref(holder)
    del holder
    collect_until_gone(ref)


def test_cycle_through_a_cancelled_timer(loop) -> None:
    holder = Holder()
    holder.handle = loop.call_later(3600, holder.cb, holder)
    loop.run_until_complete(asyncio.sleep(0))
    holder.handle.cancel()
    loop.run_until_complete(asyncio.sleep(0))  # the cancelled timer leaves the heap
    ref = weakref.ref(holder)
    del holder
    collect_until_gone(ref)


def test_cycle_through_a_waiting_timer_is_kept_then_collected(loop) -> None:
    # While the timer waits, the loop holds it: nothing may be collected.
    holder = Holder()
    holder.handle = loop.call_later(0.01, holder.cb, holder)
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is not None
    loop.run_until_complete(asyncio.sleep(0.05))
    assert ref().ran == 1
    collect_until_gone(ref)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_garbage_loop_with_waiting_callbacks_and_timers(loop_kind) -> None:
    # holder -> loop -> queued handles -> holder's methods: the loop is garbage with
    # callbacks and timers still queued, and the whole cycle must go.
    ev_loop = loops.new_loop(loop_kind)
    holder = Holder()
    holder.loop = ev_loop
    for i in range(50):
        ev_loop.call_soon(holder.cb, holder, i)
        ev_loop.call_later(3600 + i, holder.cb, holder)
    ev_loop.call_at(ev_loop.time() + 3600, holder.cb)
    refs = [weakref.ref(holder), weakref.ref(ev_loop)]
    del holder, ev_loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for ref in refs:
            collect_until_gone(ref)


def test_context_taken_from_a_waiting_handle_outlives_it(loop) -> None:
    seen = []
    handle = loop.call_soon(lambda: seen.append(VAR.get()))
    context = handle._context
    handle.cancel()
    timer = loop.call_later(0, lambda: seen.append(VAR.get()))
    timer_context = timer._context
    del handle, timer
    loop.run_until_complete(asyncio.sleep(0.01))
    gc.collect()
    assert seen == [0]
    assert context.run(VAR.set, 5) is not None and context[VAR] == 5
    assert timer_context.run(VAR.get) == 0
    del context, timer_context
    gc.collect()


def test_contexts_held_past_close(new_loop) -> None:
    ev_loop = new_loop()
    handles = [ev_loop.call_soon(int) for _ in range(10)]
    handles += [ev_loop.call_later(3600, int) for _ in range(10)]
    contexts = [h._context for h in handles]
    ev_loop.close()
    del handles, ev_loop
    gc.collect()
    for context in contexts:
        assert context.run(VAR.get) == 0
    del contexts
    gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_contexts_held_past_a_garbage_loop(loop_kind) -> None:
    ev_loop = loops.new_loop(loop_kind)
    holder = Holder()
    holder.loop = ev_loop
    handles = [ev_loop.call_soon(holder.cb) for _ in range(10)]
    handles += [ev_loop.call_later(3600, holder.cb) for _ in range(10)]
    contexts = [h._context for h in handles]
    ref = weakref.ref(ev_loop)
    del holder, ev_loop, handles
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        collect_until_gone(ref)
    assert all(c.run(VAR.get) == 0 for c in contexts)
    del contexts
    gc.collect()


def test_one_context_given_to_many_callbacks(loop) -> None:
    context = contextvars.copy_context()
    seen = []

    def bump() -> None:
        VAR.set(VAR.get() + 1)
        seen.append(VAR.get())

    for _ in range(5):
        loop.call_soon(bump, context=context)
        loop.call_later(0, bump, context=context)
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == list(range(1, 11))
    assert context[VAR] == 10


def test_collections_while_callbacks_wait_run_and_cancel(loop) -> None:
    # A random mix of scheduling, cancelling, holding contexts and handles, and full
    # collections between iterations: every callback runs once or not at all, as on
    # asyncio, and nothing the program holds breaks.
    rng = random.Random(7)
    ran: list[int] = []
    kept: list[object] = []
    handles = []
    for i in range(2000):
        kind = rng.randrange(3)
        if kind == 0:
            h = loop.call_soon(ran.append, i)
        elif kind == 1:
            h = loop.call_later(rng.random() * 0.002, ran.append, i)
        else:
            h = loop.call_at(loop.time() + rng.random() * 0.002, ran.append, i)
        handles.append((i, h))
        if rng.random() < 0.2:
            kept.append(h._context)
        if rng.random() < 0.1:
            kept.append(h)
        if i % 200 == 199:
            gc.collect()
            loop.run_until_complete(asyncio.sleep(0))
    cancelled = set()
    ran_before = len(ran)
    for i, h in handles:
        if rng.random() < 0.3:
            h.cancel()
            cancelled.add(i)
    del handles
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0.02))
    gc.collect()
    assert len(ran) == len(set(ran))
    assert not cancelled & set(ran[ran_before:])
    assert set(range(2000)) - cancelled <= set(ran)
    for obj in kept:
        if isinstance(obj, contextvars.Context):
            assert obj.run(VAR.get) == 0
    del kept
    gc.collect()


@pytest.mark.ferroloop_only
def test_waiting_handles_are_reported_through_the_loop(loop) -> None:
    class Callback:
        def __call__(self) -> None:
            pass

    callback = Callback()
    handle = loop.call_soon(callback)
    timer = loop.call_later(3600, callback)
    assert not gc.is_tracked(handle) and not gc.is_tracked(timer)
    assert not gc.is_tracked(handle._context)
    assert callback in gc.get_referents(loop)
    loop.run_until_complete(asyncio.sleep(0))
    assert gc.is_tracked(handle) and gc.is_tracked(handle._context)
    timer.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert gc.is_tracked(timer)


@pytest.mark.ferroloop_only
def test_a_given_context_stays_tracked(loop) -> None:
    context = contextvars.copy_context()
    handle = loop.call_soon(int, context=context)
    assert not gc.is_tracked(handle)
    assert gc.is_tracked(context)
    loop.close()
    assert gc.is_tracked(handle)
