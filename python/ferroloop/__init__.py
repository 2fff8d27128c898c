"""ferroloop: a drop-in replacement for the asyncio event loop, written in Rust.

Switch a program over in one line::

    ferroloop.run(main())                                   # like asyncio.run / uvloop.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # Python 3.11+
    python -m ferroloop program.py                          # an unmodified program

``ferroloop.install()`` and ``ferroloop.EventLoopPolicy`` remain for older code; like
uvloop's, ``install()`` is deprecated from Python 3.12 in favour of ``run()``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._ferroloop import __version__
from ._loop import Loop
from ._observe import LagHistogram, LoopStats, SlowCallback
from ._run import run

if TYPE_CHECKING:
    from ._policy import EventLoopPolicy as EventLoopPolicy
    from ._policy import install as install

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

# Made on first use: they are built on asyncio's policy classes, which Python 3.14
# deprecates, so `import ferroloop` must not touch them.
_LAZY = ("EventLoopPolicy", "install")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if sys.version_info >= (3, 16):
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r} "
            "(asyncio's policies were removed in Python 3.16; use ferroloop.run() instead)"
        )
    from . import _policy

    value = getattr(_policy, name)
    globals()[name] = value
    return value
