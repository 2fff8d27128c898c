"""Test helpers: a loop on a virtual clock, so tests that wait do not wait.

A :class:`VirtualClockLoop`'s time moves only when the loop would otherwise
block for a timer: it jumps to that timer at once. A test that sleeps an hour
finishes in milliseconds, with ``loop.time()`` an hour later, and timers fire
in the order they would on a real clock. Real I/O still works: the clock only
jumps when no fd is ready and nothing can run. ::

    import ferroloop.testing

    async def main() -> None:
        await asyncio.sleep(3600)

    ferroloop.testing.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.testing.new_virtual_loop)  # Python 3.11+
    anyio.run(main, backend_options={"loop_factory": ferroloop.testing.new_virtual_loop})

With pytest-asyncio (1.5+), ``pytest -p ferroloop.testing.pytest_plugin`` runs
every asyncio test on a virtual clock (see :mod:`ferroloop.testing.pytest_plugin`).
"""

from __future__ import annotations

import functools
import sys
from asyncio import events
from collections.abc import Coroutine
from typing import Any, TypeVar

from .._run import _run_310
from ._loop import ClockHold, HoldPolicy, VirtualClockLoop, VirtualClockPolicy, new_virtual_loop

__all__ = [
    "ClockHold",
    "HoldPolicy",
    "VirtualClockLoop",
    "VirtualClockPolicy",
    "new_virtual_loop",
    "run",
]

_T = TypeVar("_T")


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    autojump: bool = True,
    start: float | None = 0.0,
    autojump_threshold: float = 0.0,
    hold_policy: HoldPolicy = "real",
) -> _T:
    """Run coroutine ``main`` on a new :class:`VirtualClockLoop` and return its
    result, as ``asyncio.run`` does (the clock options are the loop's)."""
    factory = functools.partial(
        new_virtual_loop,
        autojump=autojump,
        start=start,
        autojump_threshold=autojump_threshold,
        hold_policy=hold_policy,
    )
    if events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.testing.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        import asyncio

        with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)
    return _run_310(main, debug, factory)
