"""How the Python transports reach their native cores: methods forwarded to
``self._core``, and asyncio's private attributes read from it."""

from __future__ import annotations

from typing import Any


def forward(core_class: type, name: str) -> Any:
    """A method that calls ``self._core.<name>``, documented as the native one."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._core, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(core_class, name).__doc__
    return method


def state(name: str) -> property:
    """A read-only property for ``self._core.<name>``."""
    return property(lambda self: getattr(self._core, name))
