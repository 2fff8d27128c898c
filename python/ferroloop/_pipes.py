"""Pipe transports: ``connect_read_pipe`` and ``connect_write_pipe``.

Reading, writing, buffering and flow control happen in the native
``ReadPipeTransportCore`` / ``WritePipeTransportCore``; these classes are what
protocols (and subprocess transports) hold. They derive from asyncio's
transport classes and behave as asyncio's ``_UnixReadPipeTransport`` and
``_UnixWritePipeTransport``: a regular file is refused, the pipe is made
non-blocking, ``connection_made``, reading and the waiter each follow as a loop
callback, and ``connection_lost`` runs once and closes the pipe.

The core reads, writes and registers through a duplicate of the pipe's fd that
it owns, closed with the pipe: a program that closes its pipe object (or fd)
while the transport is open only frees its own number, so the file that gets
that number next is never touched by this transport, and the pipe's file stays
open until the transport is done. ``_fileno`` and the reprs keep the pipe's own
number, as asyncio shows it.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from asyncio import futures, transports
from asyncio.log import logger
from typing import Any

from ._ferroloop import ReadPipeTransportCore, WritePipeTransportCore
from ._forwarding import forward as _forward
from ._forwarding import state as _state


class _PipeTransportBase:
    """What both ends share: the pipe object, reprs, ``connection_lost``."""

    _core: Any
    _pipe: Any
    _fileno: Any

    def _log_closed_by_peer(self) -> None:
        logger.info("%r was closed by peer", self)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        core = self._core
        try:
            protocol = core.get_protocol()
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            pipe, self._pipe = self._pipe, None
            try:
                if pipe is not None:
                    pipe.close()
            finally:
                # Closes the core's fd too: a write end's reader sees EOF now.
                core._detach()

    def _repr_info(self, polling: Any) -> list[str]:
        info = [type(self).__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._core is not None and self._core._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        loop = self._core._loop if self._core is not None else None
        if self._pipe is not None and loop is not None and not loop.is_closed():
            info.append("polling" if polling(loop._io_state(self._core._fd)) else "idle")
            return info + self._extra_repr()
        info.append("open" if self._pipe is not None else "closed")
        return info

    def _extra_repr(self) -> list[str]:
        return []

    def __del__(self, _warn: Any = warnings.warn) -> None:
        pipe = self.__dict__.get("_pipe")
        if pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            pipe.close()
            core = self.__dict__.get("_core")
            if core is not None:
                core._close_file()


def _open_pipe(transport: Any, pipe: Any, extra: Any, accepted: Any, message: str) -> int:
    """Checks the file type and makes it non-blocking; the fd."""
    transport._pipe = None
    transport._fileno = None
    transports.BaseTransport.__init__(transport, extra)
    transport._extra["pipe"] = pipe
    fileno: int = pipe.fileno()
    if not accepted(os.fstat(fileno).st_mode):
        raise ValueError(message)
    os.set_blocking(fileno, False)
    transport._pipe = pipe
    transport._fileno = fileno
    return fileno


class ReadPipeTransport(_PipeTransportBase, transports.ReadTransport):
    """The read end of a pipe, FIFO, socket or character device."""

    max_size = 64 * 1024  # most bytes read per event (see read_buffer.rs)

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        self._core = None
        fileno = _open_pipe(
            self,
            pipe,
            extra,
            lambda m: stat.S_ISFIFO(m) or stat.S_ISSOCK(m) or stat.S_ISCHR(m),
            "Pipe transport is for pipes/sockets only.",
        )
        try:
            # Duplicates the fd (see the module's doc).
            core = ReadPipeTransportCore(self, loop, fileno, protocol)
        except BaseException:
            self._pipe = None
            raise
        self._core = core
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    is_reading = _forward(ReadPipeTransportCore, "is_reading")
    pause_reading = _forward(ReadPipeTransportCore, "pause_reading")
    resume_reading = _forward(ReadPipeTransportCore, "resume_reading")
    is_closing = _forward(ReadPipeTransportCore, "is_closing")
    get_protocol = _forward(ReadPipeTransportCore, "get_protocol")
    set_protocol = _forward(ReadPipeTransportCore, "set_protocol")
    _close = _forward(ReadPipeTransportCore, "_close")
    _read_ready = _forward(ReadPipeTransportCore, "_read_ready")

    _loop = _state("_loop")
    _protocol = property(lambda self: self._core.get_protocol())
    _closing = _state("_closing")
    _paused = _state("_paused")

    def close(self) -> None:
        if not self._core._closing:
            self._core._close(None)

    def _fatal_error(
        self, exc: BaseException, message: str = "Fatal error on pipe transport"
    ) -> None:
        loop = self._core._loop
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if loop is not None and loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        elif loop is not None:
            loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._core.get_protocol(),
                }
            )
        self._core._close(exc)

    def __repr__(self) -> str:
        return "<{}>".format(" ".join(self._repr_info(lambda state: state[0])))


class WritePipeTransport(
    _PipeTransportBase, transports._FlowControlMixin, transports.WriteTransport
):
    """The write end of a pipe, FIFO, socket or character device."""

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        self._core = None
        fileno = _open_pipe(
            self,
            pipe,
            extra,
            lambda m: stat.S_ISCHR(m) or stat.S_ISFIFO(m) or stat.S_ISSOCK(m),
            "Pipe transport is only for pipes, sockets and character devices",
        )
        try:
            # Duplicates the fd (see the module's doc).
            core = WritePipeTransportCore(self, loop, fileno, protocol)
        except BaseException:
            self._pipe = None
            raise
        self._core = core
        # The per-message call skips a Python frame.
        self.write = core.write
        loop.call_soon(protocol.connection_made, self)
        # A pipe or socket whose reader goes away becomes readable (an error
        # or hang-up): that is how the transport learns the peer closed.
        mode = os.fstat(fileno).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            loop.call_soon(core._watch_peer)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    write = _forward(WritePipeTransportCore, "write")
    can_write_eof = _forward(WritePipeTransportCore, "can_write_eof")
    write_eof = _forward(WritePipeTransportCore, "write_eof")
    abort = _forward(WritePipeTransportCore, "abort")
    is_closing = _forward(WritePipeTransportCore, "is_closing")
    get_protocol = _forward(WritePipeTransportCore, "get_protocol")
    set_protocol = _forward(WritePipeTransportCore, "set_protocol")
    get_write_buffer_size = _forward(WritePipeTransportCore, "get_write_buffer_size")
    get_write_buffer_limits = _forward(WritePipeTransportCore, "get_write_buffer_limits")
    set_write_buffer_limits = _forward(WritePipeTransportCore, "set_write_buffer_limits")
    _close = _forward(WritePipeTransportCore, "_close")
    _read_ready = _forward(WritePipeTransportCore, "_read_ready")
    _write_ready = _forward(WritePipeTransportCore, "_write_ready")

    # asyncio's transport attributes, read from the native state (they
    # replace the slots of asyncio's base classes, which stay unused).
    _loop = _state("_loop")
    _protocol_paused = _state("_protocol_paused")
    _protocol = property(lambda self: self._core.get_protocol())
    _closing = _state("_closing")
    _conn_lost = _state("_conn_lost")

    def close(self) -> None:
        if self._pipe is not None and not self._core._closing:
            # write_eof is all a write pipe needs to close.
            self._core.write_eof()

    def _fatal_error(
        self, exc: BaseException, message: str = "Fatal error on pipe transport"
    ) -> None:
        loop = self._core._loop
        if isinstance(exc, OSError):
            if loop is not None and loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        elif loop is not None:
            loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._core.get_protocol(),
                }
            )
        self._core._close(exc)

    def _extra_repr(self) -> list[str]:
        return [f"bufsize={self._core.get_write_buffer_size()}"]

    def __repr__(self) -> str:
        return "<{}>".format(" ".join(self._repr_info(lambda state: state[1])))
