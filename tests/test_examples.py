"""The example programs print the same on ferroloop as on asyncio (bar the loop's name)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.timeout(120)


def run_example(name: str, loop_kind: str) -> list[str]:
    args = ["--loop", "asyncio"] if loop_kind == "asyncio" else []
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-W",
            "ignore:There is no current event loop:DeprecationWarning",
            str(EXAMPLES / name),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


@pytest.mark.parametrize("name", ["tutorial.py", "hello_run.py", "runner.py", "threads.py"])
def test_example_output_matches_asyncio(loop_kind: str, name: str) -> None:
    lines = run_example(name, loop_kind)
    reference = run_example(name, "asyncio")
    loop_lines = [line for line in lines if line.startswith("loop:")]
    expected_loop = "ferroloop.Loop" if loop_kind == "ferroloop" else "_UnixSelectorEventLoop"
    assert loop_lines and all(expected_loop in line for line in loop_lines), loop_lines
    strip = [line for line in lines if not line.startswith("loop:")]
    assert strip == [line for line in reference if not line.startswith("loop:")]


def test_tutorial_interleaves(loop_kind: str) -> None:
    lines = [line for line in run_example("tutorial.py", loop_kind) if line.startswith("worker")]
    workers = [line.split(":")[0] for line in lines]
    # Concurrency shows as interleaving: no worker runs all of its steps back to back.
    assert workers[:3] == ["worker A", "worker B", "worker C"], workers
    assert lines[-1].endswith("done")
