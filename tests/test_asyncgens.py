"""Async generator hooks and shutdown_asyncgens."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest


def _tracked_agen(log: list):
    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append(("finalized", asyncio.get_running_loop()))

    return agen()


def test_shutdown_asyncgens_finalizes_unfinished_generator(loop, run):
    log = []
    gen = _tracked_agen(log)  # kept alive so only shutdown_asyncgens can finalize it

    async def start():
        assert await gen.__anext__() == 1

    run(start())
    assert log == []
    run(loop.shutdown_asyncgens())
    assert log == [("finalized", loop)]
    run(loop.shutdown_asyncgens())  # a second call is a no-op
    assert len(log) == 1


def test_shutdown_asyncgens_reports_errors(loop, run, loop_errors):
    async def broken():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    gen = broken()

    async def start():
        await gen.__anext__()

    run(start())
    run(loop.shutdown_asyncgens())
    assert len(loop_errors) == 1
    context = loop_errors[0]
    assert context["message"].startswith(
        "an error occurred during closing of asynchronous generator"
    )
    assert isinstance(context["exception"], ValueError)
    assert context["asyncgen"] is gen


def test_garbage_collected_generator_is_closed_on_the_loop(loop, run):
    log = []

    async def main():
        gen = _tracked_agen(log)
        await gen.__anext__()
        del gen
        gc.collect()  # the finalizer hook schedules aclose() on the loop
        for _ in range(10):
            if log:
                break
            await asyncio.sleep(0)

    run(main())
    assert log == [("finalized", loop)]


def test_asyncgen_hooks_installed_while_running_and_restored(loop, run):
    def firstiter(agen):
        pass

    def finalizer(agen):
        pass

    saved = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    try:

        async def main():
            return sys.get_asyncgen_hooks()

        inside = run(main())
        after = sys.get_asyncgen_hooks()
    finally:
        sys.set_asyncgen_hooks(*saved)
    assert inside.firstiter is not None and inside.firstiter != firstiter
    assert inside.finalizer is not None and inside.finalizer != finalizer
    assert after == (firstiter, finalizer)


def test_generator_started_after_shutdown_warns(loop, run):
    run(loop.shutdown_asyncgens())
    log = []
    gen = _tracked_agen(log)

    async def start():
        with pytest.warns(ResourceWarning, match="was scheduled after loop.shutdown_asyncgens"):
            await gen.__anext__()
        await gen.aclose()

    run(start())
    assert log == [("finalized", loop)]
