"""The type stubs match the native module, and the Python sources pass the linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def test_stubs_match_native_module() -> None:
    pytest.importorskip("mypy", reason="mypy is installed by requirements-dev.txt")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ferroloop._ferroloop"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_ships_typing_marker() -> None:
    package = ROOT / "python" / "ferroloop"
    assert (package / "py.typed").exists()
    assert (package / "_ferroloop.pyi").exists()
