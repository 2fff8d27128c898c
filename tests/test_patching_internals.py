"""Tools that patch asyncio's ``BaseEventLoop`` internals fail at once on ferroloop.

nest_asyncio (and code like it) replaces ``run_forever``/``_run_once`` with versions that
drive ``_ready``, ``_scheduled`` and ``_selector``. ferroloop inherits ``BaseEventLoop`` but
keeps those in native code: patched, it would run on queues nothing reads. As on uvloop
(``ValueError: Can't patch loop of type``), ``nest_asyncio.apply`` is refused before it changes
the loop's class, and the attributes themselves raise ``AttributeError`` saying why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import textwrap

import pytest
from support import loops

NATIVE = ("_ready", "_scheduled", "_selector", "_run_once")


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("name", NATIVE)
def test_asyncios_internals_are_absent(loop, run, name):
    with pytest.raises(AttributeError, match=f"ferroloop.Loop has no '{name}'"):
        getattr(loop, name)
    assert not hasattr(loop, name)
    # The loop is whole without them.
    loop.call_soon(lambda: None)
    loop.call_later(0.001, lambda: None)
    assert run(asyncio.sleep(0.002, "ok")) == "ok"


@pytest.mark.ferroloop_only
def test_what_nest_asyncio_checks_first_is_refused(loop):
    # nest_asyncio.apply's first look at the loop: hasattr(loop, "_nest_patched").
    with pytest.raises(ValueError, match="^Can't patch loop of type ferroloop.Loop"):
        hasattr(loop, "_nest_patched")


NEST_CHILD = textwrap.dedent(
    """
    import asyncio, nest_asyncio, ferroloop

    loop = ferroloop.new_event_loop()
    run_forever = ferroloop.Loop.run_forever
    try:
        nest_asyncio.apply(loop)
    except ValueError as exc:
        print(f"{type(exc).__name__}: {exc}")
    assert ferroloop.Loop.run_forever is run_forever, "the class was patched"
    loop.close()
    """
)


@pytest.mark.ferroloop_only
@pytest.mark.skipif(importlib.util.find_spec("nest_asyncio") is None, reason="needs nest_asyncio")
def test_nest_asyncio_apply_fails_loudly():
    # In a child: apply() patches the asyncio module itself before it looks at the loop.
    done = loops.run_child(NEST_CHILD)
    assert done.returncode == 0, done.stderr
    expected = "ValueError: Can't patch loop of type ferroloop.Loop"
    assert done.stdout.startswith(expected), done.stdout
