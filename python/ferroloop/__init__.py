"""ferroloop: a drop-in replacement for the asyncio event loop, written in Rust.

Switch a program over in one line::

    ferroloop.run(main())                                   # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # Python 3.11+
    ferroloop.install()                                     # every new loop is a ferroloop
"""

from __future__ import annotations

import asyncio

from ._ferroloop import __version__
from ._loop import Loop
from ._observe import LagHistogram, LoopStats, SlowCallback
from ._run import run

# Public name, as in reprs and tracebacks: ferroloop.Loop.
Loop.__module__ = __name__

__all__ = [
    "EventLoopPolicy",
    "LagHistogram",
    "Loop",
    "LoopStats",
    "SlowCallback",
    "__version__",
    "install",
    "new_event_loop",
    "run",
]


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are ferroloop loops.

    ``asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())`` makes
    ``asyncio.new_event_loop()``, ``asyncio.get_event_loop()`` and
    ``asyncio.run()`` use ferroloop.
    """

    def _loop_factory(self) -> Loop:  # type: ignore[override]
        return new_event_loop()


def install() -> None:
    """Make ferroloop the event loop of every loop asyncio creates from now on."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
