"""gunicorn worker classes that serve an ASGI application with uvicorn on ferroloop.

    gunicorn app:app -k ferroloop.gunicorn.UvicornWorker

They are uvicorn's own workers (from the ``uvicorn-worker`` package, or from
``uvicorn.workers`` where only uvicorn is installed) with ferroloop as the loop:
uvicorn 0.36 or newer, whose ``loop`` setting takes a loop factory.
"""

from __future__ import annotations

from typing import Any

try:
    from uvicorn_worker import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        UvicornWorker as _UvicornWorker,
    )
except ImportError:  # uvicorn's own copy, deprecated there in favour of uvicorn-worker
    from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = ["UvicornH11Worker", "UvicornWorker"]

LOOP = "ferroloop:new_event_loop"


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker, on ferroloop (HTTP parser: uvicorn's ``auto``)."""

    CONFIG_KWARGS: dict[str, Any] = {**_UvicornWorker.CONFIG_KWARGS, "loop": LOOP}


class UvicornH11Worker(UvicornWorker):
    """The same with the pure-Python h11 HTTP parser."""

    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "http": "h11"}
