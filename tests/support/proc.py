"""Pipes and child processes for the pipe and subprocess tests.

Children are ``sys.executable -c <script>``, never the network; every wait is bounded.
"""

from __future__ import annotations

import os
import sys
import time

PYTHON = sys.executable


def python(code: str, *args: str) -> list[str]:
    """argv running ``code`` in a fresh, isolated interpreter (no site, unbuffered)."""
    return [PYTHON, "-I", "-S", "-u", "-c", code, *args]


def pipe_files() -> tuple:
    """An os.pipe() as unbuffered binary file objects: (read end, write end)."""
    r, w = os.pipe()
    return open(r, "rb", buffering=0), open(w, "wb", buffering=0)


def process_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat ("Z" for a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # reaped, or being reaped meanwhile
        return None
    return stat[stat.rindex(")") + 2]


def wait_state(pid: int, predicate, timeout: float = 5.0) -> str | None:
    """Poll process_state until ``predicate(state)`` holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        state = process_state(pid)
        if predicate(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.005)
