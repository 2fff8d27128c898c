"""Futures and tasks on the loop: factories, names, contexts, current_task, cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import re
import sys
import time

import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("task_var", default="unset")

requires_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="new in 3.11")
requires_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="new in 3.12")


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_create_task_name_and_result(loop, run):
    async def work():
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def main():
        named = loop.create_task(work(), name="worker")
        unnamed = loop.create_task(work())
        assert named.get_name() == "worker"
        assert re.fullmatch(r"Task-\d+", unnamed.get_name())
        assert isinstance(named, asyncio.Task)
        assert named.get_loop() is loop
        return named, await named, unnamed, await unnamed

    named, named_current, unnamed, unnamed_current = run(main())
    assert named_current is named
    assert unnamed_current is unnamed


@requires_311
def test_create_task_with_context(loop, run):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task context")

    async def read():
        value = var.get()
        var.set("changed in task")
        return value

    async def main():
        return await loop.create_task(read(), context=ctx)

    assert run(main()) == "task context"
    assert ctx[var] == "changed in task"
    assert var.get() == "unset"


def test_task_factory(loop, run):
    created = []

    def factory(lp, coro, **kwargs):
        task = asyncio.Task(coro, loop=lp, **kwargs)
        created.append((lp, task))
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def child():
        return "child result"

    async def main():
        task = loop.create_task(child(), name="via factory")
        assert task.get_name() == "via factory"
        return task, await task

    task, result = run(main())
    assert result == "child result"
    # run() wraps main in wait_for, which makes its own task through the factory too.
    assert (loop, task) in created
    assert all(lp is loop for lp, _ in created)
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_task_factory_rejects_non_callable(loop):
    with pytest.raises(TypeError, match="^task factory must be a callable or None$"):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


@requires_312
def test_eager_task_factory(loop, run):
    steps = []

    async def eager():
        steps.append("ran eagerly")
        return "eager result"

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        try:
            task = loop.create_task(eager())
            # The coroutine ran to completion inside create_task, with no loop iteration.
            assert steps == ["ran eagerly"]
            assert task.done()
            return task.result()
        finally:
            loop.set_task_factory(None)

    assert run(main()) == "eager result"


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "factory",
    [None, pytest.param("eager", marks=requires_312), "plain"],
)
def test_create_task_takes_eager_start(loop, run, debug, factory):
    # 3.14's keyword. asyncio before 3.14 raises TypeError for it; ferroloop (like uvloop)
    # accepts it on every version. asyncio.Task starts eagerly from 3.12; before that, or
    # with a task factory before 3.14, the keyword is dropped: the factory decides.
    ran = []

    async def body():
        ran.append(True)
        return "done"

    factories = {
        None: None,
        "eager": getattr(asyncio, "eager_task_factory", None),  # 3.12+
        "plain": lambda loop, coro, **kwargs: asyncio.Task(coro, loop=loop, **kwargs),
    }

    async def main():
        loop.set_debug(debug)
        loop.set_task_factory(factories[factory])
        try:
            lazy = loop.create_task(body(), eager_start=False, name="lazy")
            # The eager factory decides (before 3.14 it is not told eager_start).
            assert lazy.done() == (factory == "eager")
            await lazy
            ran.clear()
            task = loop.create_task(body(), eager_start=True)
            eager = factory == "eager" or (factory is None and sys.version_info >= (3, 12))
            assert task.done() == eager
            return lazy.get_name(), await task
        finally:
            loop.set_task_factory(None)
            loop.set_debug(False)

    assert run(main()) == ("lazy", "done")
    assert ran == [True]


def test_current_task_and_all_tasks(loop, run):
    assert asyncio.current_task(loop) is None

    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        me = asyncio.current_task()
        assert me is not None and asyncio.current_task(loop) is me
        others = [loop.create_task(sleeper()) for _ in range(3)]
        await asyncio.sleep(0)
        tasks = asyncio.all_tasks()
        assert me in tasks and set(others) <= tasks
        assert asyncio.all_tasks(loop) == tasks
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        return asyncio.all_tasks()

    remaining = run(main())
    assert not any(t.get_coro().__name__ == "sleeper" for t in remaining)
    assert asyncio.current_task(loop) is None


@pytest.mark.timeout(60)
def test_gather_1000_tasks(loop, run):
    async def work(i):
        for _ in range(3):
            await asyncio.sleep(0)
        return i * 2

    async def main():
        return await asyncio.gather(*(work(i) for i in range(1000)))

    assert run(main(), timeout=30) == [i * 2 for i in range(1000)]


def test_task_cancellation(loop, run):
    cleanup = []

    async def victim():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleanup.append("cancelled")
            raise

    async def main():
        task = loop.create_task(victim())
        await asyncio.sleep(0)  # let it start and block
        assert task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = run(main())
    assert task.cancelled()
    assert cleanup == ["cancelled"]
    assert not task.cancel()  # already done


def test_cancel_before_start(loop, run):
    started = []

    async def never():
        started.append(True)

    async def main():
        task = loop.create_task(never())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    assert run(main()).cancelled()
    assert started == []


def test_wait_for_timeout(loop, run):
    async def main():
        start = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.02)
        return time.monotonic() - start

    elapsed = run(main())
    assert 0.02 <= elapsed < 2


@requires_311
def test_asyncio_timeout(loop, run):
    async def main():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02) as cm:
                await asyncio.sleep(10)
        assert cm.expired()
        async with asyncio.timeout(1):
            await asyncio.sleep(0)
        return time.monotonic() - start

    elapsed = run(main())
    assert 0.02 <= elapsed < 2
