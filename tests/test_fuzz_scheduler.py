"""Differential fuzzing of the scheduler against asyncio (issue 18, section 4).

hypothesis writes small programs: callbacks scheduled with call_soon, call_soon_threadsafe
(from another thread), call_later and call_at; handles cancelled; futures with done callbacks,
results, exceptions and cancellation; tasks that sleep, await futures, run ``wait_for`` and
get cancelled; callbacks that raise (into a recording exception handler). Each program runs
on a fresh asyncio loop and a fresh ferroloop loop, and both must leave the same trace: which
callbacks ran in which order, what every call returned or raised, and every exception
handler call.

Time: the programs never compare timestamps, only order. Every timer gets its own slot, a
deadline ``STEP`` apart from every other (``slot * STEP`` after the program's start), always
in the future when it is scheduled, so no two timers tie and the order in which they fire does
not depend on how fast the machine is. What could still depend on it is a run that falls
behind by a slot (a preempted process): each run checks that every event happened before the
next slot was due, and a run that did not is repeated; a program whose runs all fell behind is
rejected, not compared (the test fails if that happens to more programs than it compares).

Ties are tested apart, in ``test_equal_deadlines``: asyncio orders timers with equal deadlines
by its heap (not first-in first-out), ferroloop in the order they were scheduled. That test
compares which timers fired at each deadline as sets, and asserts ferroloop's order.

Bounded for ``make test`` (the "ci" profile: few examples, derandomized, no example
database); ``make fuzz`` runs the "long" profile.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import tempfile
import threading
from typing import Any

import pytest
from support import loops

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# As in test_fuzz_args.py: hypothesis's cache goes to a directory removed at exit.
_HOME = tempfile.TemporaryDirectory(prefix="ferroloop-hypothesis-")
set_hypothesis_home_dir(_HOME.name)

_PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings(
    max_examples={"ci": 60, "long": 2000}.get(_PROFILE_NAME, 60),
    derandomize=_PROFILE_NAME != "long",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(1200)]

# Seconds between two timer slots: far above what one slot's callbacks take.
STEP = 0.01
# A run is repeated this often before its program is rejected as too slow to judge.
ATTEMPTS = 3
# Futures each run makes before the program starts ("future" actions add more).
FUTURES = 3
# Bound on one run (a program runs for tens of slots at most).
RUN_TIMEOUT = 10.0


class Boom(Exception):
    """What programs raise and set; its args name where it came from."""


# --- programs
#
# A program is a tuple of actions; an action is a tuple whose first item names it. Callbacks
# and tasks carry their own bodies. Indices (`ref`) pick, modulo their count, among the
# handles, futures or tasks the run has made so far (nothing happens when there are none).
# Delays `d` are in slots after the latest slot that fired.

_REF = st.integers(0, 7)
_DELAY = st.integers(1, 3)
_FUTURE_OPS = ("result", "exception", "cancel", "remove_callback")


@functools.cache
def _actions(depth: int) -> st.SearchStrategy:
    body = _bodies(depth - 1) if depth > 0 else st.just(())
    scheduling = st.one_of(
        st.tuples(st.just("soon"), body),
        st.tuples(st.just("threadsafe"), body),
        st.tuples(st.just("later"), _DELAY, body),
        st.tuples(st.just("at"), _DELAY, body),
        st.tuples(st.just("fut_callback"), _REF, body),
        st.tuples(st.just("task"), _steps(depth - 1) if depth > 0 else st.just(())),
    )
    leaves = st.one_of(
        st.tuples(st.just("cancel"), _REF),
        st.just(("raise",)),
        st.just(("future",)),
        st.tuples(st.just("fut"), st.sampled_from(_FUTURE_OPS), _REF, st.integers(0, 9)),
        st.tuples(st.just("task_cancel"), _REF),
    )
    return st.one_of(scheduling, leaves)


@functools.cache
def _bodies(depth: int) -> st.SearchStrategy:
    return st.lists(_actions(depth), max_size=4).map(tuple)


@functools.cache
def _steps(depth: int) -> st.SearchStrategy:
    step = st.one_of(
        st.tuples(st.just("sleep"), _DELAY),
        st.just(("sleep0",)),
        st.tuples(st.just("await"), _REF),
        st.tuples(st.just("wait_for"), _DELAY, _DELAY, st.integers(0, 9)),
        st.tuples(st.just("act"), _actions(depth)),
    )
    return st.lists(step, min_size=1, max_size=4).map(tuple)


PROGRAMS = st.lists(_actions(3), min_size=3, max_size=8).map(tuple)


# --- running a program


def _outcome(fut: asyncio.Future) -> tuple:
    if fut.cancelled():
        return ("cancelled",)
    exc = fut.exception()
    if exc is not None:
        return ("exception", type(exc).__name__, exc.args)
    return ("result", fut.result())


class _Run:
    """One program on one loop: the trace it leaves, and whether it kept to its slots."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.trace: list[tuple] = []
        self.late = False
        self.t0 = 0.0
        self.epoch = 0  # the latest slot that fired
        self.used: set[int] = set()
        self.pending: set[int] = set()  # slots scheduled, neither fired nor cancelled
        self.handles: list[tuple[int, asyncio.Handle, int | None]] = []
        # A few futures from the start, so that programs refer to some.
        self.futures = [loop.create_future() for _ in range(FUTURES)]
        self.callbacks: dict[int, list] = {}  # future index -> done callbacks added
        self.tasks: list[asyncio.Task] = []
        self.ids = 0
        loop.set_exception_handler(self._handler)

    # bookkeeping

    def _new_id(self) -> int:
        self.ids += 1
        return self.ids

    def _check_time(self) -> None:
        # Everything a slot starts must be over before the next slot is due.
        if self.loop.time() >= self.t0 + (self.epoch + 0.8) * STEP:
            self.late = True

    def record(self, *event: Any) -> None:
        self._check_time()
        self.trace.append(event)

    def _slot(self, delay: int) -> int:
        self._check_time()
        slot = self.epoch + delay
        while slot in self.used:
            slot += 1
        self.used.add(slot)
        self.pending.add(slot)
        return slot

    def _deadline(self, slot: int) -> float:
        return self.t0 + slot * STEP

    def _fired(self, slot: int) -> None:
        if slot < self.epoch:
            # A later slot fired first: this one was overdue by a slot or more.
            self.late = True
        self.epoch = max(self.epoch, slot)
        self.pending.discard(slot)

    def _handler(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        message = context.get("message", "")
        self.record(
            "handler",
            message.split(" ", 3)[:3],
            sorted(context),
            None if exc is None else (type(exc).__name__, exc.args),
        )

    # callbacks

    def _callback(self, body: tuple, slot: int | None = None):
        cid = self._new_id()

        def callback() -> None:
            if slot is not None:
                self._fired(slot)
            self.record("run", cid)
            self.execute(body)

        return cid, callback

    def execute(self, body: tuple) -> None:
        for action in body:
            getattr(self, "_do_" + action[0])(*action[1:])

    def _do_soon(self, body: tuple) -> None:
        cid, callback = self._callback(body)
        self.handles.append((cid, self.loop.call_soon(callback), None))

    def _do_threadsafe(self, body: tuple) -> None:
        cid, callback = self._callback(body)
        made = []

        def other_thread() -> None:
            made.append(self.loop.call_soon_threadsafe(callback))

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        self.handles.append((cid, made[0], None))

    def _do_later(self, delay: int, body: tuple) -> None:
        slot = self._slot(delay)
        cid, callback = self._callback(body, slot)
        handle = self.loop.call_later(self._deadline(slot) - self.loop.time(), callback)
        self.handles.append((cid, handle, slot))

    def _do_at(self, delay: int, body: tuple) -> None:
        slot = self._slot(delay)
        cid, callback = self._callback(body, slot)
        handle = self.loop.call_at(self._deadline(slot), callback)
        self.handles.append((cid, handle, slot))

    def _do_cancel(self, ref: int) -> None:
        if not self.handles:
            return
        cid, handle, slot = self.handles[ref % len(self.handles)]
        handle.cancel()
        if slot is not None:
            self.pending.discard(slot)
        self.record("cancel", cid, handle.cancelled())

    def _do_raise(self) -> None:
        raise Boom(self._new_id())

    # futures

    def _future(self, ref: int) -> tuple[int, asyncio.Future | None]:
        if not self.futures:
            return -1, None
        index = ref % len(self.futures)
        return index, self.futures[index]

    def _do_future(self) -> None:
        self.futures.append(self.loop.create_future())

    def _do_fut_callback(self, ref: int, body: tuple) -> None:
        index, fut = self._future(ref)
        if fut is None:
            return
        cid = self._new_id()

        def done(f: asyncio.Future) -> None:
            self.record("done", cid, index, _outcome(f))
            self.execute(body)

        fut.add_done_callback(done)
        self.callbacks.setdefault(index, []).append(done)

    def _do_fut(self, op: str, ref: int, value: int) -> None:
        index, fut = self._future(ref)
        if fut is None:
            return
        if op == "remove_callback":
            if self.callbacks.get(index):
                removed = fut.remove_done_callback(self.callbacks[index].pop())
                self.record("removed", index, removed)
            return
        try:
            if op == "result":
                outcome = fut.set_result(value)
            elif op == "exception":
                outcome = fut.set_exception(Boom(self._new_id()))
            else:
                outcome = fut.cancel()
        except asyncio.InvalidStateError:
            outcome = "InvalidStateError"
        self.record("settled", index, op, outcome)

    # tasks

    def _do_task(self, steps: tuple) -> None:
        tid = len(self.tasks)
        task = self.loop.create_task(self._coroutine(tid, steps))
        task.add_done_callback(lambda t: self.record("task_done", tid, _outcome(t)))
        self.tasks.append(task)

    def _do_task_cancel(self, ref: int) -> None:
        if self.tasks:
            tid = ref % len(self.tasks)
            self.record("task_cancel", tid, self.tasks[tid].cancel())

    async def _sleep_to(self, slot: int) -> None:
        try:
            await asyncio.sleep(self._deadline(slot) - self.loop.time())
        finally:
            self.pending.discard(slot)
        self._fired(slot)

    async def _coroutine(self, tid: int, steps: tuple) -> int:
        self.record("task_start", tid)
        for step in steps:
            kind = step[0]
            if kind == "sleep":
                await self._sleep_to(self._slot(step[1]))
                self.record("woke", tid)
            elif kind == "sleep0":
                await asyncio.sleep(0)
                self.record("stepped", tid)
            elif kind == "await":
                index, fut = self._future(step[1])
                if fut is None:
                    continue
                try:
                    self.record("awaited", tid, index, ("result", await fut))
                except Boom as exc:
                    self.record("awaited", tid, index, ("exception", exc.args))
                except asyncio.CancelledError:
                    self.record("awaited", tid, index, ("cancelled",))
                    raise
            elif kind == "wait_for":
                await self._wait_for(tid, *step[1:])
            else:
                self.execute((step[1],))
        return tid

    async def _wait_for(self, tid: int, inner_delay: int, timeout_delay: int, value: int) -> None:
        inner_slot = self._slot(inner_delay)
        timeout_slot = self._slot(timeout_delay)

        async def inner() -> int:
            await self._sleep_to(inner_slot)
            return value

        try:
            timeout = self._deadline(timeout_slot) - self.loop.time()
            self.record("waited", tid, await asyncio.wait_for(inner(), timeout))
        except asyncio.TimeoutError:
            self._fired(timeout_slot)
            self.record("timed_out", tid)
        finally:
            # The inner coroutine may never have started (a timeout already past cancels it
            # first), so its slot is given up here too.
            self.pending.discard(inner_slot)
            self.pending.discard(timeout_slot)

    # the whole run

    def run(self, program: tuple) -> None:
        loop = self.loop

        def start() -> None:
            self.t0 = loop.time()
            loop.call_at(self.t0 + 0.5 * STEP, watch)
            self.execute(program)

        def watch() -> None:
            # Half-way between slots: once no timer is left, a few more iterations let the
            # callbacks already queued finish, then the loop stops.
            now = loop.time()
            # A slot long overdue never fires (a run that fell behind, or a loop that lost
            # the timer): the traces tell which; the run goes on without it.
            self.pending -= {s for s in self.pending if self._deadline(s + 3) < now}
            if self.pending:
                next_half = math.floor((now - self.t0) / STEP) + 1.5
                loop.call_at(self.t0 + next_half * STEP, watch)
            else:
                drain(50)

        def drain(left: int) -> None:
            if self.pending:
                watch()
            elif left:
                loop.call_soon(drain, left - 1)
            else:
                loop.stop()

        def cancel_left() -> None:
            for task in self.tasks:
                if not task.done():
                    task.cancel()

        loop.call_soon(start)
        loops.run_forever_bounded(loop, RUN_TIMEOUT)
        # Tasks still waiting for a future nobody settles are cancelled, in order, and what
        # that sets off (done callbacks, new timers) runs to its end as before: from the next
        # slot on, so that new timers are in the future.
        for _ in range(5):
            if all(task.done() for task in self.tasks):
                break
            self.epoch = max(self.epoch, math.floor((loop.time() - self.t0) / STEP) + 1)
            loop.call_soon(cancel_left)
            loop.call_at(self.t0 + (self.epoch + 0.5) * STEP, watch)
            loops.run_forever_bounded(loop, RUN_TIMEOUT)
        for fut in self.futures:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "never retrieved" report at collection


def _trace(kind: str, program: tuple) -> list[tuple] | None:
    """The trace of the first run of ``program`` that kept to its slots, or None."""
    for _ in range(ATTEMPTS):
        loop = loops.new_loop(kind)
        try:
            run = _Run(loop)
            run.run(program)
        finally:
            loop.close()
        if not run.late:
            return run.trace
    return None


def test_same_trace():
    judged = {"compared": 0, "rejected": 0}

    @PROFILE
    @given(program=PROGRAMS)
    def check(program):
        want = _trace("asyncio", program)
        got = _trace("ferroloop", program) if want is not None else None
        if want is None or got is None:
            judged["rejected"] += 1
            reject()
        judged["compared"] += 1
        assert got == want, _difference(want, got)

    check()
    assert judged["rejected"] <= judged["compared"], judged


def _difference(want: list[tuple], got: list[tuple]) -> str:
    for i, (a, b) in enumerate(zip(want, got, strict=False)):
        if a != b:
            return f"event {i}: asyncio {a!r}, ferroloop {b!r}\nasyncio: {want}\nferroloop: {got}"
    return f"lengths {len(want)} and {len(got)}\nasyncio: {want}\nferroloop: {got}"


# --- equal deadlines

# Which timers fire at one deadline does not depend on speed: the slots can be close.
TIE_STEP = 0.002


def _tie_trace(kind: str, timers: list[tuple[int, bool]]) -> list[tuple[int, int]]:
    """(slot, index) of each timer in firing order. Timers marked to be cancelled are
    cancelled at once (slot 0) or by a timer between slot 0 and slot 1 (later slots)."""
    loop = loops.new_loop(kind)
    fired: list[tuple[int, int]] = []
    try:
        t0 = loop.time() + TIE_STEP
        handles = []
        for i, (slot, _) in enumerate(timers):
            handles.append(loop.call_at(t0 + slot * TIE_STEP, fired.append, (slot, i)))

        def cancel_late() -> None:
            for handle, (slot, cancel) in zip(handles, timers, strict=True):
                if cancel and slot > 0:
                    handle.cancel()

        for handle, (slot, cancel) in zip(handles, timers, strict=True):
            if cancel and slot == 0:
                handle.cancel()
        loop.call_at(t0 + 0.5 * TIE_STEP, cancel_late)
        loop.call_at(t0 + 3 * TIE_STEP, loop.stop)
        loops.run_forever_bounded(loop, RUN_TIMEOUT)
    finally:
        loop.close()
    return fired


@PROFILE
@given(timers=st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=150))
def test_equal_deadlines(timers):
    want = _tie_trace("asyncio", timers)
    got = _tie_trace("ferroloop", timers)

    def by_slot(trace):
        return [sorted(i for s, i in trace if s == slot) for slot in range(3)]

    # The same timers at each deadline, the deadlines in order...
    assert [s for s, _ in got] == sorted(s for s, _ in got)
    assert by_slot(got) == by_slot(want)
    # ...and in ferroloop, equal deadlines in the order they were scheduled.
    assert got == sorted(got)
