"""Parts of the asyncio API that ferroloop does not provide yet.

Each raises ``NotImplementedError`` naming the method, instead of asyncio's
bare one, so a program that needs it fails with a clear message.
"""

from __future__ import annotations

from typing import Any

_NOT_YET = ("start_tls",)


def _not_yet(name: str) -> Any:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"ferroloop does not implement loop.{name}() yet")

    method.__name__ = method.__qualname__ = name
    return method


class UnsupportedAPI:
    """Mixin for ``ferroloop.Loop``: the methods still to come, each failing clearly."""


for _name in _NOT_YET:
    setattr(UnsupportedAPI, _name, _not_yet(_name))
