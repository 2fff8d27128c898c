"""A stand-in for uvloop whose loops are ferroloop loops (the compat runs only).

Put this directory first on sys.path and a test suite written for uvloop (uvloop's own
``Test_UV_*`` classes, anyio's ``asyncio+uvloop`` backend, aiohttp's ``--aiohttp-loop=uvloop``)
judges ferroloop instead. ``COMPAT_UVLOOP_SRC`` names the ``uvloop`` package directory of an
unpacked uvloop sdist: its pure-Python helpers (``_testbase``, ``_noop``) are then importable as
``uvloop._testbase``; the compiled parts are not, so tests of libuv internals fail to import.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import ferroloop

from . import loop  # noqa: F401 - uvloop.loop.Loop, which suites probe

if os.environ.get("COMPAT_UVLOOP_SRC"):
    __path__.append(os.environ["COMPAT_UVLOOP_SRC"])  # type: ignore[name-defined]  # noqa: F821

__version__ = "0.0+ferroloop"
Loop = ferroloop.Loop
# How many ferroloop loops this shim made: the compat plugin refuses a run with none.
created = 0

__all__ = ["EventLoopPolicy", "Loop", "install", "new_event_loop", "run"]


def _made(new: Any) -> Any:
    global created
    if not isinstance(new, ferroloop.Loop):
        raise AssertionError(f"the uvloop shim made {type(new)!r}, not a ferroloop loop")
    created += 1
    return new


def new_event_loop() -> ferroloop.Loop:
    return _made(ferroloop.new_event_loop())


# Suites skip or xfail tests for uvloop's own bugs by the factory's module (anyio's UDP close
# test does): ferroloop is judged on them.
new_event_loop.__module__ = "ferroloop"


class EventLoopPolicy(ferroloop.EventLoopPolicy):
    def _loop_factory(self) -> ferroloop.Loop:  # type: ignore[override]
        return new_event_loop()

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} (ferroloop)>"


def install() -> None:
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Any, *, loop_factory: Any = None, debug: bool | None = None, **kw: Any) -> Any:
    """uvloop.run: asyncio.run on a loop from ``loop_factory`` (default: new_event_loop),
    which must make this module's loops, as uvloop.run requires of its own."""
    make = loop_factory or new_event_loop

    def factory() -> ferroloop.Loop:
        new = make()
        if not isinstance(new, ferroloop.Loop):
            new.close()
            raise TypeError(f"uvloop.run() uses a non-uvloop event loop: {new!r}")
        return new

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory, debug=debug, **kw) as runner:
            return runner.run(main)
    from ferroloop._run import _run_310

    return _run_310(main, debug, factory)
