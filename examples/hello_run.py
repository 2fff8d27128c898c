"""``ferroloop.run(main())``: the ``asyncio.run`` of ferroloop, on Python 3.10 too.

Shows a future resolved by a timer, a timeout, gathered tasks and a context variable that
follows a callback. ``--loop asyncio`` runs the same program with ``asyncio.run``.
"""

import argparse
import asyncio
import contextvars

request_id = contextvars.ContextVar("request_id", default="-")


async def square(i):
    await asyncio.sleep(0.001 * (5 - i))  # finish in reverse order; gather keeps the order
    return i * i


async def main():
    loop = asyncio.get_running_loop()
    print(f"loop: {type(loop).__module__}.{type(loop).__qualname__}")

    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "world")
    print("hello", await fut)

    try:
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.02)
    except asyncio.TimeoutError:
        print("wait_for: timed out after 20 ms")

    print("squares:", await asyncio.gather(*(square(i) for i in range(5))))

    # A callback runs in the context that was current when it was scheduled.
    request_id.set("req-42")
    seen = loop.create_future()
    loop.call_soon(lambda: seen.set_result(request_id.get()))
    print("context var seen by callback:", await seen)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["ferroloop", "asyncio"], default="ferroloop")
    if parser.parse_args().loop == "asyncio":
        raise SystemExit(asyncio.run(main()))
    import ferroloop

    raise SystemExit(ferroloop.run(main()))
