"""How the Python transports reach their native cores: methods forwarded to
``self._core``, and asyncio's private attributes read from it."""

from __future__ import annotations

from typing import Any


def forward(core_class: type, name: str) -> Any:
    """A method that calls ``self._core.<name>``, documented as the native one.

    A Rust panic in the core reaches Python as PyO3's ``PanicException``, a
    ``BaseException`` that ``except Exception`` (tasks' callers, asyncio's
    own handlers) would not catch; it is raised as a ``RuntimeError`` instead,
    as the loop reports panics in its own per-event code.
    """

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._core, name)(*args, **kwargs)
        except BaseException as exc:
            if type(exc).__module__ == "pyo3_runtime":
                raise RuntimeError(f"internal error in ferroloop: {exc}") from exc
            raise

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(core_class, name).__doc__
    return method


def state(name: str) -> property:
    """A read-only property for ``self._core.<name>``."""
    return property(lambda self: getattr(self._core, name))
