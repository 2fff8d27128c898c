"""The harness itself: unexpected exception-handler calls must fail a test.

Each case runs a tiny test file in a child pytest that uses this directory's conftest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent

BODY = """
import pytest

def _fail():
    raise ValueError("boom")

def test_case({args}):
    loop.call_soon(_fail)
    loop.call_soon(loop.stop)
    loop.run_forever()
    {extra}
"""


def _run_inner(tmp_path: Path, args: str, marker: str = "", extra: str = "") -> str:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(HERE / "support", tmp_path / "support")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    source = textwrap.dedent(BODY).format(args=args, extra=extra or "pass")
    if marker:
        source = source.replace("def test_case", f"{marker}\ndef test_case")
    (tmp_path / "test_inner.py").write_text(source)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "--loop=asyncio",
            "test_inner.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout


@pytest.mark.timeout(120)
def test_unexpected_handler_call_fails_the_test(tmp_path):
    out = _run_inner(tmp_path, "loop")
    assert "1 passed, 1 error" in out, out
    assert "unexpected exception handler calls" in out, out


@pytest.mark.timeout(120)
def test_marker_allows_handler_calls(tmp_path):
    out = _run_inner(tmp_path, "loop", marker="@pytest.mark.expect_exception_handler")
    assert "1 passed" in out and "error" not in out, out


@pytest.mark.timeout(120)
def test_loop_errors_fixture_allows_and_exposes_calls(tmp_path):
    extra = "assert [type(c['exception']) for c in loop_errors] == [ValueError]"
    out = _run_inner(tmp_path, "loop, loop_errors", extra=extra)
    assert "1 passed" in out and "error" not in out, out
