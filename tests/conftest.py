"""Shared harness: every behaviour test runs once on asyncio and once on ferroloop.

The teardown follows uvloop's ``_testbase.py`` (STYLE.md §8): an exception handler is
installed at setup and the test fails if it was called unexpectedly; the loop is closed;
``gc.collect()`` runs (up to three times) so finalizers fire inside the test that caused them.
"""

from __future__ import annotations

import asyncio
import gc
import signal

import pytest
from support import loops, net

LOOP_KINDS = ("asyncio", "ferroloop")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        choices=(*LOOP_KINDS, "all"),
        default="all",
        help="run the behaviour tests on one loop only (default: all)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background, pytest inherits an ignored SIGINT, and so
    # would every Python it spawns: the Ctrl-C tests need the default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for line in (
        "expect_exception_handler: the test expects the loop's exception handler to be called",
        "ferroloop_only: the behaviour is ferroloop's own (policy, precision, unimplemented)",
    ):
        config.addinivalue_line("markers", line)
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `loop_kind` drives `loop`; tests that only need the name (child processes) use it directly.
    if "loop_kind" not in metafunc.fixturenames:
        return
    selected = metafunc.config.getoption("--loop")
    ferroloop_only = metafunc.definition.get_closest_marker("ferroloop_only") is not None
    params = []
    for kind in LOOP_KINDS:
        if selected not in ("all", kind) or (ferroloop_only and kind != "ferroloop"):
            continue  # not generated at all, so --loop=asyncio output is not full of skips
        marks = []
        if kind == "ferroloop" and loops.FERROLOOP_IMPORT_ERROR is not None:
            marks.append(pytest.mark.skip(reason=loops.FERROLOOP_IMPORT_ERROR))
        params.append(pytest.param(kind, id=kind, marks=marks))
    metafunc.parametrize("loop_kind", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--loop") != "asyncio":
        return
    # ferroloop-only tests (including their empty-parameter placeholders) are deselected.
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("ferroloop_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _Harness:
    """What the teardown needs to know about one test's loop."""

    def __init__(self) -> None:
        self.handler_calls: list[dict] = []
        self.expected = False

    def record(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        self.handler_calls.append(context)


_HARNESS = pytest.StashKey[_Harness]()


@pytest.fixture
def new_loop(loop_kind: str):
    """Factory for extra loops of the same kind; all are closed at teardown."""
    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(loops.new_loop(loop_kind))
        return made[-1]

    yield factory
    for extra in made:
        if not extra.is_running() and not extra.is_closed():
            extra.close()


@pytest.fixture
def loop(request: pytest.FixtureRequest, loop_kind: str):
    harness = _Harness()
    request.node.stash[_HARNESS] = harness
    ev_loop = loops.new_loop(loop_kind)
    # Nothing may rely on an implicit "current" loop: tests pass `loop` explicitly.
    asyncio.set_event_loop(None)
    ev_loop.set_exception_handler(harness.record)
    yield ev_loop

    expected = harness.expected or request.node.get_closest_marker("expect_exception_handler")
    try:
        if not ev_loop.is_closed():
            ev_loop.close()
    finally:
        # Up to three passes, as uvloop's harness; a pass that frees nothing
        # ran no finalizer, so a further pass could not free anything either.
        for _ in range(3):
            if not gc.collect():
                break
    if harness.handler_calls and not expected:
        pytest.fail(f"unexpected exception handler calls: {harness.handler_calls!r}")


@pytest.fixture
def loop_errors(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> list[dict]:
    """The contexts the harness's exception handler received; using it marks them expected."""
    harness = request.node.stash[_HARNESS]
    harness.expected = True
    return harness.handler_calls


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop):
    """``run(coro, timeout=10)``: run_until_complete bounded by wait_for, so nothing hangs."""

    def runner(coro, timeout: float = loops.DEFAULT_TIMEOUT):
        return loops.run(loop, coro, timeout)

    return runner


@pytest.fixture
def ferroloop_module(request: pytest.FixtureRequest):
    """The ferroloop package for ferroloop-only tests that need no loop fixture."""
    if request.config.getoption("--loop") == "asyncio":
        pytest.skip("not selected (--loop=asyncio)")
    if loops.FERROLOOP_IMPORT_ERROR is not None:
        pytest.skip(loops.FERROLOOP_IMPORT_ERROR)
    import ferroloop

    return ferroloop


@pytest.fixture
def restore_policy():
    """Put back the event loop policy (and no current loop) after a test that installs one."""
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)
    asyncio.set_event_loop(None)


# --- sockets: the connection kinds (tcp4, tcp6, unix) and a connected pair of each


@pytest.fixture(params=net.kind_params())
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pair(kind: str, tmp_path):
    """(our socket, the peer's socket), both non-blocking."""
    ours, peer = net.connected_pair(kind, tmp_path)
    yield ours, peer
    ours.close()
    peer.close()
