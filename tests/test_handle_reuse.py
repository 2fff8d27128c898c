"""Handles the loop may reuse after they ran must never be observably shared.

ferroloop recycles a run handle only when nothing else references it; these cases
pin down that a handle the caller kept, or weakly references, stays itself, and that
a reused handle carries no context or callback over from its previous use.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_kept_handle_keeps_its_callback_and_context(loop) -> None:
    seen = []
    ctx = contextvars.copy_context()
    kept = loop.call_soon(seen.append, 1, context=ctx)
    for i in range(2, 50):
        loop.call_soon(seen.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == list(range(1, 50))
    assert kept._callback == seen.append
    assert kept._args == (1,)
    assert kept._context is ctx  # get_context() is 3.12+ on asyncio
    assert not kept.cancelled()


def test_weakly_referenced_handle_is_not_reused(loop) -> None:
    ref = weakref.ref(loop.call_soon(lambda: None))
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None
    fresh = [loop.call_soon(lambda: None) for _ in range(10)]
    assert all(ref() is not h for h in fresh)


def test_each_callback_sees_only_its_own_context(loop) -> None:
    seen = []

    def record(expected: str) -> None:
        seen.append((expected, VAR.get()))
        VAR.set("leaked")  # must stay inside this callback's context

    for round_ in range(3):
        for i in range(100):
            ctx = contextvars.Context()
            if i % 2:
                ctx.run(VAR.set, f"{round_}-{i}")
                loop.call_soon(record, f"{round_}-{i}", context=ctx)
            else:
                loop.call_soon(record, "unset")
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert [got for _, got in seen] == [want for want, _ in seen]
    assert VAR.get() == "unset"


def test_callback_and_args_released_after_run(loop) -> None:
    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    loop.call_soon(lambda p: None, payload)
    del payload
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_future_callbacks_through_reused_handles(loop, run) -> None:
    async def main() -> int:
        total = 0
        for i in range(2000):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            total += await fut
        return total

    assert run(main()) == sum(range(2000))


def test_debug_switched_off_midway(loop) -> None:
    loop.set_debug(True)
    handles = [loop.call_soon(lambda: None) for _ in range(5)]
    loop.set_debug(False)
    del handles
    seen = []
    loop.call_soon(seen.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    later = loop.call_soon(seen.append, 2)
    # A handle made without debug mode records no origin, recycled or not.
    assert later._source_traceback is None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, 2]


def test_handle_reuse_survives_many_iterations(loop, run) -> None:
    async def ping(n: int) -> int:
        for _ in range(n):
            await asyncio.sleep(0)
        return n

    async def main() -> list[int]:
        return await asyncio.gather(*(ping(200) for _ in range(50)))

    assert run(main()) == [200] * 50


class _Box:
    """Something a handle can reach and that can reach the handle back."""

    handle: object = None

    def touch(self, *args) -> None:
        pass


def test_reference_cycles_through_handles_are_collected(loop) -> None:
    # Each box holds a handle that reaches the box again: through the callback (a bound
    # method), the arguments, or the context. Only the garbage collector can free them,
    # and only if a handle reports what it holds.
    refs = []
    for make in ("callback", "args", "context", "timer"):
        box = _Box()
        if make == "callback":
            box.handle = loop.call_soon(box.touch)
        elif make == "args":
            box.handle = loop.call_soon(_Box().touch, box)
        elif make == "context":
            ctx = contextvars.copy_context()
            ctx.run(VAR.set, box)
            box.handle = loop.call_soon(_Box().touch, context=ctx)
            del ctx
        else:
            box.handle = loop.call_later(0.001, box.touch)
        refs.append((make, weakref.ref(box)))
        del box
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    gc.collect()
    assert [make for make, ref in refs if ref() is not None] == []
