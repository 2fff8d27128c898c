"""pytest plugin for the compat runs (``-p compat_plugin``): picks the loop, records outcomes.

Driven by the environment, set by compat.py:

- ``COMPAT_LOOP``: asyncio, uvloop or ferroloop, the loop this run judges. For ferroloop the
  ``uvloop`` module must be the shim (tests/compat/shims) and at least one ferroloop loop must
  be created, or the session fails: a run that never used ferroloop is no evidence.
- ``COMPAT_POLICY=1``: also install the loop's event loop policy at start (suites that take
  the default loop).
- ``COMPAT_KEEP`` / ``COMPAT_DROP``: regular expressions on node ids; tests not kept, or
  dropped, are deselected. ``COMPAT_DROP_IMPL``: deselect unittest classes whose
  ``implementation`` attribute (uvloop's test base classes) has this value.
- ``COMPAT_SHORT``: a regular expression on node ids given a 10 s timeout instead of the
  run's: tests that, on asyncio's semantics, wait for something only uvloop's behaviour
  gives (their cause in causes.json), so they fail sooner rather than at the full timeout.
- ``COMPAT_OUT``: a file receiving one JSON line per test (id, outcome, the test class's
  ``implementation`` and pairing key, ferroloop loops made, the failure's last line), then a
  closing line with the totals. Lines are flushed one by one, so a run that crashes keeps its
  finished tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

LOOP = os.environ.get("COMPAT_LOOP", "asyncio")
SHIMS = Path(__file__).resolve().parent / "shims"
_out = None
_outcomes: dict[str, dict[str, Any]] = {}
_started = time.monotonic()
_SHORT_TIMEOUT = 10  # seconds, for the COMPAT_SHORT tests


def _shim_created() -> int:
    mod = sys.modules.get("uvloop")
    return getattr(mod, "created", 0) if mod is not None else 0


def _check_uvloop_module() -> None:
    """The ``uvloop`` a suite imports must be the real one or the shim, as the run says."""
    try:
        import uvloop
    except ImportError:
        if LOOP == "asyncio":
            return
        raise
    is_shim = Path(uvloop.__file__).resolve().is_relative_to(SHIMS)
    if LOOP == "ferroloop" and not is_shim:
        raise pytest.UsageError(f"ferroloop run imports the real uvloop from {uvloop.__file__}")
    if LOOP == "uvloop" and is_shim:
        raise pytest.UsageError("uvloop run imports the ferroloop shim")


def pytest_configure(config: pytest.Config) -> None:
    global _out
    _check_uvloop_module()
    if os.environ.get("COMPAT_POLICY") == "1" and LOOP != "asyncio":
        import uvloop  # the shim on ferroloop runs

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    path = os.environ.get("COMPAT_OUT")
    if path:
        _out = open(path, "a", buffering=1)  # noqa: SIM115 - closed at session end


def _impl(item: pytest.Item) -> tuple[str | None, str | None]:
    cls = getattr(item, "cls", None)
    impl = getattr(cls, "implementation", None) if cls is not None else None
    if not isinstance(impl, str):
        return None, None
    # Test_UV_TCP(_TestTCP, UVTestCase) and Test_AIO_TCP(_TestTCP, AIOTestCase) pair on _TestTCP.
    base = cls.__bases__[0]
    pair = base.__name__ if len(cls.__bases__) > 1 else cls.__name__
    return impl, pair


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = os.environ.get("COMPAT_KEEP")
    drop = os.environ.get("COMPAT_DROP")
    drop_impl = os.environ.get("COMPAT_DROP_IMPL")
    short = os.environ.get("COMPAT_SHORT")
    selected, deselected = [], []
    for item in items:
        if short and re.search(short, item.nodeid):
            item.add_marker(pytest.mark.timeout(_SHORT_TIMEOUT))
        out = (
            (keep and not re.search(keep, item.nodeid))
            or (drop and re.search(drop, item.nodeid))
            or (drop_impl and _impl(item)[0] == drop_impl)
        )
        (deselected if out else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    before = _shim_created()
    t0 = time.monotonic()
    yield
    rec = _outcomes.pop(item.nodeid, {"outcome": "error", "why": "no report"})
    impl, pair = _impl(item)
    rec.update(
        id=item.nodeid,
        impl=impl,
        pair=pair,
        ferroloop_loops=_shim_created() - before,
        seconds=round(time.monotonic() - t0, 3),
    )
    if _out is not None:
        _out.write(json.dumps(rec) + "\n")


def _last_line(report: pytest.TestReport) -> str:
    """The exception line of a failure (its first ``E`` line naming an error), or a skip reason."""
    if isinstance(report.longrepr, tuple):  # skips: (file, line, reason)
        return str(report.longrepr[2])[:300]
    # Exception groups print their members behind "|" bars.
    lines = [ln.strip(" |") for ln in str(report.longrepr or "").splitlines() if ln.strip(" |+-")]
    errs = [ln for ln in lines if ln.startswith("E ")]
    named = [ln for ln in errs if re.match(r"E\s+[\w.]*(Error|Exception|Failed|Timeout)\b", ln)]
    grouped = [ln for ln in lines if re.match(r"[\w.]*(Error|Warning):", ln)]
    return (named or grouped or errs or lines[-1:] or [""])[0][:300]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    rec = _outcomes.setdefault(report.nodeid, {"outcome": "pass"})
    xfail = hasattr(report, "wasxfail")
    if report.skipped and xfail:
        rec["outcome"] = "xfail"
    elif report.skipped:
        rec["outcome"] = "skip"
        rec["why"] = _last_line(report)
    elif report.failed and rec["outcome"] in ("pass", "skip"):
        rec["outcome"] = "fail" if report.when == "call" else "error"
        rec["why"] = f"[{report.when}] {_last_line(report)}"
    elif report.passed and xfail and report.when == "call":
        rec["outcome"] = "xpass"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    made = _shim_created()
    if _out is not None:
        _out.write(
            json.dumps(
                {
                    "done": True,
                    "loop": LOOP,
                    "ferroloop_loops": made,
                    "seconds": round(time.monotonic() - _started),
                }
            )
            + "\n"
        )
        _out.close()
    if LOOP == "ferroloop" and made == 0 and session.testscollected:
        print("\ncompat: FAIL: no ferroloop loop was created in a ferroloop run", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
