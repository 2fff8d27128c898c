"""`loop.create_future()`: the future belongs to the loop it was asked of, whether
that loop is running in this thread, not running, or running in another thread."""

from __future__ import annotations

import asyncio
import threading


def test_on_the_running_loop(loop, run):
    async def main():
        fut = loop.create_future()
        assert type(fut) is asyncio.Future
        assert fut.get_loop() is loop
        loop.call_soon(fut.set_result, 7)
        return await fut

    assert run(main()) == 7


def test_before_the_loop_runs(loop, run):
    fut = loop.create_future()
    assert fut.get_loop() is loop
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_while_another_loop_runs(loop, run):
    # Asked of `loop` from a coroutine of another loop: the future is `loop`'s,
    # not the running one's.
    other = asyncio.new_event_loop()
    try:

        async def main():
            fut = loop.create_future()
            assert fut.get_loop() is loop
            return fut

        fut = other.run_until_complete(main())
    finally:
        other.close()
    loop.call_soon(fut.set_result, 3)
    assert loop.run_until_complete(fut) == 3


def test_from_another_thread(loop, run):
    made = []

    def worker():
        made.append(loop.create_future())

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        await loop.run_in_executor(None, t.join)
        fut = made[0]
        assert fut.get_loop() is loop
        fut.set_result(1)
        return await fut

    assert run(main()) == 1
