"""Running a program as ``python`` itself would, for ``python -m ferroloop``.

A script, a module (``-m``), a command (``-c``) or standard input (``-``) runs
with the ``sys.argv``, ``sys.path[0]`` and ``__main__`` module that ``python``
gives it. Its exceptions are left to the interpreter, so the exit status is
``python``'s (1 for an uncaught exception, ``SystemExit``'s code, death by
SIGINT for an uncaught ``KeyboardInterrupt``); only the traceback is trimmed
of this runner's own frames.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import types
import zipfile
from collections.abc import Callable
from types import TracebackType

# Frames of these files lead a traceback before the program's own ones.
_HERE = os.path.dirname(__file__)
_OWN_FILES = frozenset(
    os.path.join(_HERE, name) for name in ("__main__.py", "_cli.py", "_program.py")
)
_RUNPY_FILES = frozenset({runpy.__file__, "<frozen runpy>"})
# What `python -m` itself calls: its argv, error messages and traceback. Private, but
# present on every version supported; runpy's public functions are the fallback.
_as_main: Callable[[str, bool], object] | None = getattr(runpy, "_run_module_as_main", None)


def run_script(path: str, args: list[str]) -> None:
    """``python path args...``: a source file, or (through runpy) a compiled
    file, a directory or a zip file with a ``__main__.py``."""
    sys.argv = [path, *args]
    full = os.path.abspath(path)
    if os.path.isdir(full) or zipfile.is_zipfile(full):
        # As python does: the directory or zip file goes first on sys.path (whatever
        # -P says), then its __main__ module runs as `python -m __main__` would.
        if _as_main is None:
            _run(lambda: runpy.run_path(path, run_name="__main__"), strip_runpy=True)
            return
        if getattr(sys.flags, "safe_path", False) or sys.flags.isolated:
            sys.path.insert(0, full)
        else:
            sys.path[0] = full
        _new_main()
        _run(lambda: _as_main("__main__", False))
        return
    try:
        with io.open_code(full) as file:
            source = file.read()
    except OSError as exc:
        program = sys.orig_argv[0] if sys.orig_argv else sys.executable
        message = f"{program}: can't open file {full!r}: [Errno {exc.errno}] {exc.strerror}"
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
    _replace_path0(os.path.dirname(os.path.realpath(full)))
    if source.startswith(importlib.util.MAGIC_NUMBER):
        _run(lambda: runpy.run_path(path, run_name="__main__"), strip_runpy=True)
        return
    loader = importlib.machinery.SourceFileLoader("__main__", full)
    module = _new_main(__file__=full, __cached__=None, __loader__=loader)
    _run(lambda: exec(compile(source, full, "exec", dont_inherit=True), module.__dict__))


def run_module(name: str, args: list[str]) -> None:
    """``python -m name args...``."""
    sys.argv = ["-m", *args]
    # runpy fills in this module's namespace, as it does python's own __main__.
    _new_main()
    if _as_main is not None:
        _run(lambda: _as_main(name, True))
    else:
        _run(lambda: runpy.run_module(name, run_name="__main__", alter_sys=True), strip_runpy=True)


def run_code(code: str, args: list[str]) -> None:
    """``python -c code args...``."""
    sys.argv = ["-c", *args]
    _replace_path0("")
    module = _new_main()
    _run(lambda: exec(compile(code, "<string>", "exec", dont_inherit=True), module.__dict__))


def run_stdin(args: list[str]) -> None:
    """``python - args...``: the program is standard input."""
    sys.argv = ["-", *args]
    _replace_path0("")
    source = sys.stdin.buffer.read()
    module = _new_main(__file__="<stdin>", __cached__=None)
    _run(lambda: exec(compile(source, "<stdin>", "exec", dont_inherit=True), module.__dict__))


def _new_main(**attrs: object) -> types.ModuleType:
    """A ``__main__`` module as python starts with, in place of this runner's."""
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __annotations__={}, __builtins__=builtins, __loader__=importlib.machinery.BuiltinImporter
    )
    module.__dict__.update(attrs)
    sys.modules["__main__"] = module
    return module


def _run(program: Callable[[], object], *, strip_runpy: bool = False) -> None:
    try:
        program()
    except SystemExit:
        raise
    except BaseException:
        _trim_next_traceback(strip_runpy)
        raise


def _trim_next_traceback(strip_runpy: bool) -> None:
    # The interpreter reports the exception after this runner is gone: wrap
    # whatever hook is in force then (the program may have set its own).
    hook = sys.excepthook

    def trimmed(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.excepthook = hook
        trimmed_tb = _trim(tb, strip_runpy)
        if trimmed_tb is not None or isinstance(value, SyntaxError):
            # (A program that did not compile: python reports just the error.)
            # Set on the exception too: the report prints the exception's own.
            tb = trimmed_tb
            value.__traceback__ = tb
        hook(kind, value, tb)

    sys.excepthook = trimmed


def _trim(tb: TracebackType | None, strip_runpy: bool) -> TracebackType | None:
    """``tb`` from the frame this runner called (past runpy's too if
    ``strip_runpy``); ``None`` when nothing is left (the error is the runner's
    own, or the program did not compile)."""
    # `python -m ferroloop` itself runs under runpy, then under this runner.
    start, entry = tb, tb
    while entry is not None:
        filename = entry.tb_frame.f_code.co_filename
        if filename in _OWN_FILES:
            start = entry.tb_next
        elif filename not in _RUNPY_FILES:
            break
        entry = entry.tb_next
    while strip_runpy and start is not None and start.tb_frame.f_code.co_filename in _RUNPY_FILES:
        start = start.tb_next
    return start


def _replace_path0(entry: str | None) -> None:
    """Put ``entry`` where python puts the program's directory (``None``: drop it)."""
    # -P / PYTHONSAFEPATH (and -I) leave sys.path[0] to the standard library.
    if getattr(sys.flags, "safe_path", False) or sys.flags.isolated:
        return
    if entry is None:
        del sys.path[0]
    else:
        sys.path[0] = entry
