"""Cold-path helpers the native core calls: reprs, error contexts, debug logging.

They run only when something is printed, logged or goes wrong, so they stay in
Python and reuse asyncio's own formatting to produce exactly asyncio's text.
"""

from __future__ import annotations

import inspect
import sys
from asyncio import base_events, format_helpers
from asyncio.log import logger
from typing import Any

# The ``debug`` keyword arrived in a 3.12 point release; ask the function itself.
_FORMAT_TAKES_DEBUG = (
    "debug" in inspect.signature(format_helpers._format_callback_source).parameters
)


def _callback_source(handle: Any, debug: bool) -> str:
    if _FORMAT_TAKES_DEBUG:
        return format_helpers._format_callback_source(  # type: ignore[call-arg, unused-ignore]
            handle._callback, handle._args, debug=debug
        )
    return format_helpers._format_callback_source(handle._callback, handle._args)


def callback_error_context(handle: Any, exc: BaseException, debug: bool) -> dict[str, Any]:
    """The context asyncio's ``Handle._run`` passes to ``call_exception_handler``."""
    context: dict[str, Any] = {
        "message": f"Exception in callback {_callback_source(handle, debug)}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    return context


def handle_repr(handle: Any) -> str:
    """``<Handle cb() at file:line created at file:line>``, as asyncio prints it."""
    info = [type(handle).__name__]
    if handle.cancelled():
        info.append("cancelled")
    when = getattr(handle, "_when", None)
    if when is not None:
        info.append(f"when={when}")
    if handle._callback is not None:
        info.append(format_helpers._format_callback_source(handle._callback, handle._args))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def source_traceback() -> Any:
    """Where the caller of the native method is (debug mode's ``_source_traceback``)."""
    # Frame 0 is this function; frame 1 is the Python code that called the
    # native method, which has no frame of its own.
    return format_helpers.extract_stack(sys._getframe(1))


def warn_slow_callback(handle: Any, seconds: float) -> None:
    """Debug mode's warning for a callback that ran past ``slow_callback_duration``."""
    logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), seconds)  # type: ignore[attr-defined]


def report_transport_error(
    loop: Any, transport: Any, protocol: Any, exc: BaseException, message: str
) -> None:
    """A transport's fatal error, reported as asyncio's transports do: OS errors
    only in debug mode's log, anything else through the exception handler."""
    if isinstance(exc, OSError):
        if loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=exc)
        return
    loop.call_exception_handler(
        {"message": message, "exception": exc, "transport": transport, "protocol": protocol}
    )


def log_debug(message: str, *args: Any) -> None:
    """``logger.debug`` for debug mode's transport messages."""
    logger.debug(message, *args)


def log_warning(message: str, *args: Any) -> None:
    """``logger.warning``, e.g. for writes to a lost connection."""
    logger.warning(message, *args)
