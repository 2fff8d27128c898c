"""The classic asyncio tutorial program, run on ferroloop.

Three workers run concurrently, each sleeping between steps, so their output interleaves.
The only change from the plain asyncio program is the ``EventLoopPolicy`` block at the
top; ``asyncio.get_event_loop()`` then returns a ferroloop loop (``python -m ferroloop``
runs the program with no change at all). On Python 3.12+ ``get_event_loop()`` emits
asyncio's "There is no current event loop" DeprecationWarning, on ferroloop exactly as
on stock asyncio (the policy behaves as the stdlib's).

    python examples/tutorial.py                 # on ferroloop
    python examples/tutorial.py --loop asyncio  # reference run on stock asyncio
    python -m ferroloop examples/tutorial.py --loop asyncio  # the plain program, on ferroloop

Both runs print the same lines except the ``loop:`` line. Every worker sleeps the same
time, so the workers always wake in the order they went to sleep (timers fire in deadline
order, FIFO on ties): the interleaving is the same on every run, however loaded the machine.
"""

import asyncio
import sys

if sys.argv[1:] != ["--loop", "asyncio"]:
    import ferroloop

    asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())


async def worker(name, steps):
    for step in range(1, steps + 1):
        print(f"worker {name}: step {step}/{steps}")
        await asyncio.sleep(0.05)
    print(f"worker {name}: done")
    return f"{name}x{steps}"


async def main():
    loop = asyncio.get_running_loop()
    print(f"loop: {type(loop).__module__}.{type(loop).__qualname__}")
    results = await asyncio.gather(worker("A", 2), worker("B", 3), worker("C", 4))
    print(f"results: {results}")


loop = asyncio.get_event_loop()
loop.run_until_complete(main())
loop.close()
