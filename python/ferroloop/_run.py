"""``ferroloop.run``: ``asyncio.run`` on a ferroloop loop, on every Python version."""

from __future__ import annotations

import asyncio
import sys
from asyncio import coroutines, events
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run coroutine ``main`` on a new ferroloop loop and return its result.

    Behaves as ``asyncio.run``: it cancels leftover tasks, finalizes async
    generators, shuts down the default executor and closes the loop; Ctrl-C
    cancels the main task (Python 3.11+, as asyncio).
    """
    from . import new_event_loop

    # Checked before a Runner exists, as asyncio.run does: the Runner's own
    # clean-up would otherwise replace this error with another.
    if events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_310(main, debug, new_event_loop)


def _run_310(main: Any, debug: bool | None, factory: Any) -> Any:
    # Python 3.10 has no asyncio.Runner: the same steps as its asyncio.run.
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = factory()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            asyncio.runners._cancel_all_tasks(loop)  # type: ignore[attr-defined]
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()
