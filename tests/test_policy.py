"""ferroloop's own entry points: install(), EventLoopPolicy, run(), loop factories.

ferroloop-only by nature: asyncio has nothing to compare with here. Each test that
changes the global policy restores it (the `restore_policy` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import warnings

import pytest

pytestmark = pytest.mark.ferroloop_only

# install() is deprecated from 3.12 in favour of run(), as uvloop.install() is.
INSTALL_WARNS = sys.version_info >= (3, 12)


def _install_warning():
    if INSTALL_WARNS:
        return pytest.warns(DeprecationWarning, match=r"install\(\) is deprecated")
    return contextlib.nullcontext()


async def _running_loop_info():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    return loop, loop.get_debug()


def test_loop_class_is_an_abstract_event_loop(ferroloop_module):
    assert issubclass(ferroloop_module.Loop, asyncio.AbstractEventLoop)
    loop = ferroloop_module.new_event_loop()
    try:
        assert isinstance(loop, ferroloop_module.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_install_makes_asyncio_create_ferroloops(ferroloop_module, restore_policy):
    with _install_warning():
        ferroloop_module.install()
    assert isinstance(asyncio.get_event_loop_policy(), ferroloop_module.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop_module.Loop)
    finally:
        loop.close()
    loop, _ = asyncio.run(_running_loop_info())
    assert isinstance(loop, ferroloop_module.Loop)
    assert loop.is_closed()


def test_event_loop_policy(ferroloop_module, restore_policy):
    policy = ferroloop_module.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, ferroloop_module.Loop)
    finally:
        loop.close()
    asyncio.set_event_loop_policy(policy)
    assert asyncio.get_event_loop_policy() is policy


@pytest.mark.parametrize("debug", [True, False])
def test_run_with_debug(ferroloop_module, debug):
    loop, seen_debug = ferroloop_module.run(_running_loop_info(), debug=debug)
    assert isinstance(loop, ferroloop_module.Loop)
    assert seen_debug is debug
    assert loop.is_closed()


def test_run_propagates_result_and_exception(ferroloop_module):
    async def fail():
        raise LookupError("from main")

    async def value():
        return 123

    assert ferroloop_module.run(value()) == 123
    with pytest.raises(LookupError, match="^from main$"):
        ferroloop_module.run(fail())


def test_run_rejects_non_coroutine_like_asyncio(ferroloop_module):
    with pytest.raises(ValueError) as expected:
        asyncio.run(123)
    with pytest.raises(ValueError) as got:
        ferroloop_module.run(123)
    assert str(got.value) == str(expected.value)


def test_run_inside_running_loop_raises(ferroloop_module):
    async def outer():
        inner = _running_loop_info()
        try:
            ferroloop_module.run(inner)
        finally:
            inner.close()

    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        ferroloop_module.run(outer())


def test_run_finalizes_asyncgens_and_executor(ferroloop_module):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("agen finalized")

    gen = agen()

    async def main():
        await gen.__anext__()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: __import__("threading").current_thread())

    worker = ferroloop_module.run(main())
    assert log == ["agen finalized"]
    assert not worker.is_alive()  # run() shut the default executor down


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_asyncio_runner_with_loop_factory(ferroloop_module):
    with asyncio.Runner(loop_factory=ferroloop_module.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), ferroloop_module.Loop)
        loop, _ = runner.run(_running_loop_info())
        assert loop is runner.get_loop()
    assert loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_with_loop_factory(ferroloop_module):
    loop, _ = asyncio.run(_running_loop_info(), loop_factory=ferroloop_module.new_event_loop)
    assert isinstance(loop, ferroloop_module.Loop)
    assert loop.is_closed()


def _install_warnings(install):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install()
    return [(w.category, w.filename) for w in caught]


def test_install_warns_as_uvloop_does(ferroloop_module, restore_policy):
    got = _install_warnings(ferroloop_module.install)
    assert [category for category, _ in got] == ([DeprecationWarning] if INSTALL_WARNS else [])
    # Attributed to the caller, who has to change the call.
    assert all(filename == __file__ for _, filename in got), got
    uvloop = pytest.importorskip("uvloop")
    if hasattr(uvloop, "install"):
        expected = _install_warnings(uvloop.install)
        assert [c for c, _ in got] == [c for c, _ in expected]


def test_policy_names_are_public(ferroloop_module):
    assert ferroloop_module.EventLoopPolicy.__module__ == "ferroloop"
    assert ferroloop_module.install.__module__ == "ferroloop"
    assert "EventLoopPolicy" in ferroloop_module.__all__
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ferroloop_module.not_a_name  # noqa: B018


def test_run_with_loop_factory(ferroloop_module):
    made = []

    def factory():
        made.append(ferroloop_module.new_event_loop())
        return made[-1]

    loop, _ = ferroloop_module.run(_running_loop_info(), loop_factory=factory)
    assert made == [loop] and loop.is_closed()


def test_run_refuses_a_foreign_loop_as_uvloop_does(ferroloop_module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # main is closed: no "never awaited" warning
        with pytest.raises(TypeError, match="non-ferroloop event loop"):
            ferroloop_module.run(_running_loop_info(), loop_factory=asyncio.new_event_loop)


def test_run_passes_unknown_keywords_on_as_uvloop_does(ferroloop_module):
    # asyncio.Runner (3.11+) or run() itself (3.10) rejects what it does not know.
    main = _running_loop_info()
    with pytest.raises(TypeError, match="no_such_option"):
        ferroloop_module.run(main, no_such_option=1)
    main.close()


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_is_warning_free(ferroloop_module):
    proc = _run_python("import asyncio, ferroloop; ferroloop.run(asyncio.sleep(0))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# Every asyncio name Python 3.14 deprecates: none may be read while ferroloop imports.
_AUDIT = textwrap.dedent(
    """
    import asyncio, asyncio.events, asyncio.unix_events
    NAMES = {"AbstractEventLoopPolicy", "DefaultEventLoopPolicy", "get_event_loop_policy",
             "set_event_loop_policy", "AbstractChildWatcher", "SafeChildWatcher",
             "FastChildWatcher", "ThreadedChildWatcher", "PidfdChildWatcher",
             "MultiLoopChildWatcher", "get_child_watcher", "set_child_watcher",
             "_UnixDefaultEventLoopPolicy", "BaseDefaultEventLoopPolicy"}
    seen = []
    for module in (asyncio, asyncio.events, asyncio.unix_events):
        hidden = {n: module.__dict__.pop(n) for n in NAMES if n in module.__dict__}
        def lookup(name, hidden=hidden, module=module):
            if name not in hidden:
                raise AttributeError(name)
            seen.append(f"{module.__name__}.{name}")
            return hidden[name]
        module.__getattr__ = lookup
    import ferroloop
    print("import:", sorted(seen))
    ferroloop.EventLoopPolicy
    print("first use:", sorted(set(seen)))
    """
)


def test_import_touches_no_deprecated_asyncio_name(ferroloop_module):
    proc = _run_python(_AUDIT)
    assert proc.returncode == 0, proc.stderr
    imported, used = proc.stdout.splitlines()
    assert imported == "import: []"
    # The audit does see the policy class being made on first use.
    assert "asyncio.DefaultEventLoopPolicy" in used, used
