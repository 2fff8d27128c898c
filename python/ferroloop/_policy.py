"""``ferroloop.EventLoopPolicy`` and ``ferroloop.install()``.

Imported only when one of the two names is first used (``ferroloop.__getattr__``),
so that ``import ferroloop`` touches no asyncio policy name: Python 3.14 deprecates
them (``asyncio.DefaultEventLoopPolicy`` warns there) and 3.16 removes them.
"""

from __future__ import annotations

import asyncio
import sys
import warnings

from ._loop import Loop


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are ferroloop loops.

    ``asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())`` makes
    ``asyncio.new_event_loop()``, ``asyncio.get_event_loop()`` and
    ``asyncio.run()`` use ferroloop. It is asyncio's default policy in every
    other respect (``get_event_loop()`` in the main thread creates a loop when
    there is none, as asyncio's does). Prefer ``ferroloop.run()`` or
    ``asyncio.Runner(loop_factory=ferroloop.new_event_loop)``: asyncio
    deprecates policies in Python 3.14.
    """

    def _loop_factory(self) -> Loop:
        from . import new_event_loop

        return new_event_loop()


def install() -> None:
    """Make ferroloop the event loop of every loop asyncio creates from now on.

    Deprecated from Python 3.12 in favour of ``ferroloop.run()``, as
    ``uvloop.install()`` is.
    """
    if sys.version_info >= (3, 12):
        warnings.warn(
            "ferroloop.install() is deprecated in favor of ferroloop.run() "
            "starting with Python 3.12.",
            DeprecationWarning,
            stacklevel=2,
        )
    _install()


# Public names, as in reprs: ferroloop.EventLoopPolicy, ferroloop.install.
EventLoopPolicy.__module__ = install.__module__ = __package__ or "ferroloop"


def _install() -> None:
    # `python -m ferroloop` runs a program on ferroloop through this, warning-free:
    # there the policy is the mechanism, not something the user chose.
    asyncio.set_event_loop_policy(EventLoopPolicy())
