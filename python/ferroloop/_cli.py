"""The command line of ``python -m ferroloop``: parse it, report, or run a program."""

from __future__ import annotations

import os
import platform
import sys
from typing import NoReturn

from . import _ferroloop, _program

USAGE = """\
usage: python -m ferroloop [--stats] (script.py | -m module | -c command | -) [args ...]
       python -m ferroloop --version | --info | --help

Runs an asyncio program on ferroloop, unmodified, as `python script.py` would run it:
every loop asyncio creates (asyncio.run, asyncio.Runner, asyncio.new_event_loop,
get_event_loop) is a ferroloop loop.

  --stats     print the loop's statistics at exit (sets FERROLOOP_STATS=1)
  --version   print ferroloop's and Python's versions
  --info      also print the kernel features ferroloop uses and the poll window
"""


def main(argv: list[str]) -> None:
    """Handle ``python -m ferroloop argv...``; exits with the program's status."""
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(USAGE, end="")
            return
        if arg in ("-V", "--version"):
            print(version())
            return
        if arg == "--info":
            print(info())
            return
        if arg == "--stats":
            os.environ["FERROLOOP_STATS"] = "1"
            continue
        if arg.startswith("-m") or arg.startswith("-c"):
            value = arg[2:] or (args.pop(0) if args else None)
            if value is None:
                _usage_error(f"argument expected for the {arg} option")
            _install_loop()
            if arg.startswith("-m"):
                _program.run_module(value, args)
            else:
                _program.run_code(value, args)
            return
        if arg == "-":
            _install_loop()
            _program.run_stdin(args)
            return
        if arg == "--" and args:
            arg = args.pop(0)
        elif arg.startswith("-"):
            _usage_error(f"unknown option {arg}")
        _install_loop()
        _program.run_script(arg, args)
        return
    _usage_error("no program to run")


def _install_loop() -> None:
    from ._policy import _install

    _install()


def _usage_error(message: str) -> NoReturn:
    print(f"python -m ferroloop: {message}\n\n{USAGE}", end="", file=sys.stderr)
    raise SystemExit(2)


def version() -> str:
    """``ferroloop X.Y.Z (CPython 3.x.y)``."""
    return (
        f"ferroloop {_ferroloop.__version__} "
        f"({platform.python_implementation()} {platform.python_version()})"
    )


_FEATURES = {
    "epoll_pwait2": (
        "Linux 5.11+",
        "timers wait to the nanosecond",
        "waits round up to whole milliseconds (timers fire up to 1 ms late, never early)",
    ),
    "pidfd_open": (
        "Linux 5.3+",
        "a child's exit wakes the loop through a pidfd",
        "child exits are polled",
    ),
}


def info() -> str:
    """The version, the kernel features in use, and the poll window for a new loop."""
    lines = [version(), f"python: {sys.executable}", f"kernel: Linux {platform.release()}"]
    features = _ferroloop.kernel_features()
    if not hasattr(os, "pidfd_open"):  # this Python was built without it
        features["pidfd_open"] = False
    for name, (needs, yes, no) in _FEATURES.items():
        state = f"yes: {yes}" if features.get(name) else f"no: {no}"
        lines.append(f"{name} ({needs}): {state}")
    try:
        window_us, reason = _ferroloop.poll_window()
    except ValueError as exc:
        lines.append(f"poll window: error: {exc}")
    else:
        state = f"{window_us} us" if window_us else "off"
        lines.append(f"poll window: {state} ({reason})")
    return "\n".join(lines)
