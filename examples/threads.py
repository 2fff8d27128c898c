"""Threads and the loop: ``run_in_executor``, ``call_soon_threadsafe`` and
``run_coroutine_threadsafe``. ``--loop asyncio`` runs it on stock asyncio.
"""

import argparse
import asyncio
import hashlib
import threading
import time


def blocking_digest(n, barrier):
    """Blocking work that would stall the loop if it ran on the loop's thread."""
    barrier.wait()  # returns only once all callers are inside: proves they overlap
    time.sleep(0.01)
    return hashlib.sha256(str(n).encode() * 10_000).hexdigest()[:12]


def producer(loop, queue, count):
    """A plain thread hands items to the loop; only *_threadsafe calls are allowed here."""
    for i in range(count):
        time.sleep(0.005)
        item = f"item {i} from {threading.current_thread().name}"
        loop.call_soon_threadsafe(queue.put_nowait, item)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def add(a, b):
    await asyncio.sleep(0.001)
    return a + b


async def main():
    loop = asyncio.get_running_loop()
    print(f"loop: {type(loop).__module__}.{type(loop).__qualname__}")

    barrier = threading.Barrier(4, timeout=5)
    calls = (loop.run_in_executor(None, blocking_digest, n, barrier) for n in range(4))
    print(f"run_in_executor: 4 calls ran at once in the pool: {await asyncio.gather(*calls)}")

    queue = asyncio.Queue()
    thread = threading.Thread(target=producer, args=(loop, queue, 3), name="producer")
    thread.start()
    while (item := await queue.get()) is not None:
        print(f"call_soon_threadsafe: got {item}")
    await asyncio.to_thread(thread.join)

    # A thread submits a coroutine to the loop and blocks on the result.
    def submit():
        return asyncio.run_coroutine_threadsafe(add(20, 22), loop).result(timeout=5)

    print(f"run_coroutine_threadsafe: 20 + 22 = {await loop.run_in_executor(None, submit)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["ferroloop", "asyncio"], default="ferroloop")
    if parser.parse_args().loop == "asyncio":
        asyncio.run(main())
    else:
        import ferroloop

        ferroloop.run(main())
