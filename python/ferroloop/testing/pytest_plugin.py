"""pytest plugin: asyncio tests on a virtual clock.

Not registered automatically; turn it on per run or per project::

    pytest -p ferroloop.testing.pytest_plugin
    # or in conftest.py:  pytest_plugins = ["ferroloop.testing.pytest_plugin"]

With pytest-asyncio 1.5 or later, every asyncio test (``@pytest.mark.asyncio``,
or any ``async def`` test in auto mode) then runs on a
:class:`~ferroloop.testing.VirtualClockLoop`, through pytest-asyncio's
``pytest_asyncio_loop_factories`` hook. Options per test or module::

    @pytest.mark.virtual_clock(hold_policy="freeze", start=None)
    async def test_retry_backoff() -> None: ...

The ``virtual_loop`` fixture gives a synchronous test a fresh loop (closed
afterwards). With an older pytest-asyncio, override its ``event_loop_policy``
fixture in ``conftest.py`` instead::

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return ferroloop.testing.VirtualClockPolicy()
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._loop import VirtualClockLoop, new_virtual_loop

# One factory per set of options, so tests with the same options share a
# loop when pytest-asyncio's loop scope is wider than a function.
_factories: dict[tuple[tuple[str, Any], ...], Callable[[], VirtualClockLoop]] = {}


def _options(item: pytest.Item) -> dict[str, Any]:
    marker = item.get_closest_marker("virtual_clock")
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"{item.nodeid}: virtual_clock takes keyword arguments only")
    return dict(marker.kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_clock(**options): options of the test's VirtualClockLoop "
        "(autojump, start, autojump_threshold, hold_policy)",
    )


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], Any]]:
    """pytest-asyncio 1.5+: the loop factory for ``item``."""
    options = _options(item)
    key = tuple(sorted(options.items()))
    factory = _factories.get(key)
    if factory is None:
        factory = functools.partial(new_virtual_loop, **options)
        _factories[key] = factory
    return {"virtual_clock": factory}


@pytest.fixture
def virtual_loop(request: pytest.FixtureRequest) -> Iterator[VirtualClockLoop]:
    """A new :class:`~ferroloop.testing.VirtualClockLoop` for a synchronous
    test (options from a ``virtual_clock`` marker), closed afterwards."""
    loop = new_virtual_loop(**_options(request.node))
    try:
        yield loop
    finally:
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
