"""``ferroloop.run``: ``asyncio.run`` on a ferroloop loop, on every Python version.

Same signature as ``uvloop.run``: a program switches from uvloop by renaming.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import coroutines, events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._loop import Loop

_T = TypeVar("_T")


def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], Loop] | None = None,
    debug: bool | None = None,
    **run_kwargs: Any,
) -> _T:
    """Run coroutine ``main`` on a new ferroloop loop and return its result.

    Behaves as ``asyncio.run``: it cancels leftover tasks, finalizes async
    generators, shuts down the default executor and closes the loop; Ctrl-C
    cancels the main task (Python 3.11+, as asyncio). ``loop_factory`` makes
    the loop (``ferroloop.new_event_loop`` by default; it must return a
    ferroloop loop, or ``TypeError`` is raised, as ``uvloop.run`` does), and
    ``run_kwargs`` go to ``asyncio.Runner`` (Python 3.11+).
    """
    if loop_factory is None:
        from . import new_event_loop

        loop_factory = new_event_loop
    # Checked before a Runner exists, as asyncio.run does: the Runner's own
    # clean-up would otherwise replace this error with another.
    if events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory, **run_kwargs) as runner:
            _check_loop(runner.get_loop(), main)
            return runner.run(main)
    if run_kwargs:
        name = next(iter(run_kwargs))
        raise TypeError(f"run() got an unexpected keyword argument {name!r}")
    return _run_310(main, debug, loop_factory)


def _check_loop(loop: asyncio.AbstractEventLoop, main: object) -> None:
    if isinstance(loop, Loop):
        return
    if coroutines.iscoroutine(main):
        main.close()  # never to run: no "was never awaited" warning
    raise TypeError("ferroloop.run() uses a non-ferroloop event loop")


def _run_310(main: Any, debug: bool | None, factory: Callable[[], Loop]) -> Any:
    # Python 3.10 has no asyncio.Runner: the same steps as its asyncio.run.
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = factory()
    try:
        events.set_event_loop(loop)
        _check_loop(loop, main)
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
