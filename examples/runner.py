"""``asyncio.Runner(loop_factory=ferroloop.new_event_loop)`` (Python 3.11+).

A Runner keeps one loop across several ``run()`` calls: a consumer task started in the
first run keeps serving the queue in the second. Python 3.10 has no Runner, so there the
program falls back to a single ``ferroloop.run()``. ``--loop asyncio`` uses stock asyncio.
"""

import argparse
import asyncio
import sys


async def consumer(queue):
    while True:
        item = await queue.get()
        print(f"  consumed {item}")
        queue.task_done()


async def start(queue):
    loop = asyncio.get_running_loop()
    print(f"loop: {type(loop).__module__}.{type(loop).__qualname__}")
    task = asyncio.create_task(consumer(queue))  # outlives this run() call
    for i in range(3):
        queue.put_nowait(f"first-{i}")
    await queue.join()
    return task


async def finish(queue, task):
    for i in range(2):
        queue.put_nowait(f"second-{i}")
    await queue.join()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return f"consumer cancelled: {task.cancelled()}"


async def both(queue):
    task = await start(queue)
    print("(no Runner on Python 3.10: one run)")
    return await finish(queue, task)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["ferroloop", "asyncio"], default="ferroloop")
    use_asyncio = parser.parse_args().loop == "asyncio"
    if not use_asyncio:
        import ferroloop
    if sys.version_info < (3, 11):
        queue = asyncio.Queue()  # 3.10 binds the queue's loop lazily, on first use
        print((asyncio.run if use_asyncio else ferroloop.run)(both(queue)))
        return
    factory = asyncio.new_event_loop if use_asyncio else ferroloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        queue = asyncio.Queue()
        print("run 1:")
        task = runner.run(start(queue))
        print("run 2 (same loop, consumer still alive):")
        print(runner.run(finish(queue, task)))


if __name__ == "__main__":
    main()
