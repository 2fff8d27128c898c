"""The typings a user of ferroloop sees, checked by mypy in `make lint` (never run).

mypy runs with ``--strict`` and ``warn_unused_ignores``: every line that ends in
``# type: ignore[code]`` is one mypy must find wrong, and it fails if it does not.
"""

from __future__ import annotations

import asyncio
import socket

import ferroloop


def on_timer(count: int, label: str) -> None:
    print(count, label)


def on_readable(sock: socket.socket) -> None:
    sock.recv(1)


async def with_running_loop() -> None:
    # How asyncio code holds its loop: typed as asyncio's, whichever loop runs it.
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle = loop.call_later(0.1, on_timer, 1, "one")
    at: asyncio.TimerHandle = loop.call_at(loop.time() + 0.1, on_timer, 2, "two")
    soon: asyncio.Handle = loop.call_soon(on_timer, 3, "three")
    for handle in (timer, at, soon):
        handle.cancel()
    loop.call_soon(on_timer, "three", 3)  # type: ignore[arg-type]


def with_ferroloop_loop() -> None:
    loop = ferroloop.new_event_loop()
    # A ferroloop.Loop is an asyncio.AbstractEventLoop (a BaseEventLoop, in fact).
    generic: asyncio.AbstractEventLoop = loop
    timer: asyncio.TimerHandle = generic.call_later(0.1, on_timer, 1, "one")
    timer.cancel()

    # Typed as asyncio's handles (as uvloop's stubs do), so code annotated for
    # asyncio type-checks on a ferroloop.Loop too; at run time they are
    # ferroloop's own handle types, with the same public methods.
    timer2: asyncio.TimerHandle = loop.call_later(0.1, on_timer, 1, "one")
    at2: asyncio.TimerHandle = loop.call_at(loop.time() + 1, on_timer, 1, "one")
    soon2: asyncio.Handle = loop.call_soon(on_timer, 1, "one")
    threadsafe: asyncio.Handle = loop.call_soon_threadsafe(on_timer, 1, "one")
    when: float = timer2.when()
    cancelled: bool = at2.cancelled()
    soon2.cancel()
    threadsafe.cancel()
    print(when, cancelled)
    wrong: asyncio.TimerHandle = loop.call_soon(on_timer, 1, "one")  # type: ignore[assignment]
    print(wrong)

    # The callback's arguments are checked, as typeshed checks asyncio's loops.
    loop.call_soon(on_timer, 1, "one")
    loop.call_later(0.1, on_timer, "one", 1)  # type: ignore[arg-type]
    loop.call_at(loop.time(), on_timer, 1)  # type: ignore[arg-type]
    loop.call_soon_threadsafe(on_timer, 1, 2)  # type: ignore[arg-type]

    rsock, wsock = socket.socketpair()
    loop.add_reader(rsock, on_readable, rsock)
    loop.add_writer(wsock.fileno(), on_readable, wsock)
    loop.add_reader(rsock, on_readable, "not a socket")  # type: ignore[arg-type]
    loop.add_writer(wsock, on_readable)  # type: ignore[arg-type]
    loop.add_reader("not a file", on_readable, rsock)  # type: ignore[arg-type]
    loop.add_signal_handler(2, on_timer, 1, "one")
    loop.add_signal_handler(2, on_timer, 1)  # type: ignore[arg-type]
    removed: bool = loop.remove_reader(rsock) and loop.remove_writer(wsock)
    print(removed)
    loop.close()


def run_returns_the_result() -> None:
    async def answer() -> int:
        return 42

    result: int = ferroloop.run(answer())
    wrong: str = ferroloop.run(answer())  # type: ignore[assignment]
    print(result, wrong)
