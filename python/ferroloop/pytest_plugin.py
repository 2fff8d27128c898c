"""A pytest plugin that runs every pytest-asyncio test and fixture on a ferroloop loop.

Enable it for one run with ``pytest -p ferroloop.pytest_plugin``, or for a project in its
``conftest.py``::

    pytest_plugins = ["ferroloop.pytest_plugin"]

It answers pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (pytest-asyncio 1.4 and
newer; older versions take an ``event_loop_policy`` fixture, see ferroloop's integration
docs). It is not registered automatically: installing ferroloop changes no test run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from . import new_event_loop

__all__ = ["pytest_asyncio_loop_factories"]


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]]:
    """The loops pytest-asyncio runs tests on: ferroloop's only."""
    return {"ferroloop": new_event_loop}
