"""ferroloop's own entry points: install(), EventLoopPolicy, run(), loop factories.

ferroloop-only by nature: asyncio has nothing to compare with here. Each test that
changes the global policy restores it (the `restore_policy` fixture).
"""

from __future__ import annotations

import asyncio
import sys

import pytest

pytestmark = pytest.mark.ferroloop_only


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
