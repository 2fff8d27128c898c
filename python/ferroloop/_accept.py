"""Accepting connections on a server's listening socket.

asyncio's selector loop accepts up to ``backlog`` connections per wake-up. When
``accept()`` runs out of a system resource (EMFILE, ENFILE, ENOBUFS, ENOMEM) it
reports the error, removes the reader and schedules a restart after
``constants.ACCEPT_RETRY_DELAY``; but its loop goes on, and every further
attempt of that wake-up fails the same way, so one wake-up reports up to
``backlog`` times and schedules as many restarts. Here the first resource
error ends the wake-up: one report, and one pending restart per listening
socket, cancelled when the server stops serving that socket.

What a caller of asyncio's versions observes is kept: the exception-handler
context (``message``, ``exception``, ``socket``), the reader removed during the
pause, the restart after ``ACCEPT_RETRY_DELAY`` read at the time of the error,
the connections still queued served after it, and ``_accept_connection2``
(asyncio's own, see ``_sockets.py``) making each transport. The extra
arguments after ``backlog`` (the TLS timeouts, whose number depends on the
Python version) are passed through unchanged.

Queued connections are left in the kernel's queue during the pause rather than
accepted and closed to free the queue (libuv's way, which uvloop inherits): a
connection that waits may still be served once fds are free, one that is
closed is lost.
"""

from __future__ import annotations

import errno
from asyncio import constants, trsock
from asyncio.log import logger
from typing import Any

# The errors after which accept() fails again at once until something frees the
# resource, so retrying within the same wake-up is pointless.
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class AcceptAPI:
    """Mixin for ``ferroloop.Loop``: the accept step of ``create_server``'s sockets."""

    _accept_retries: dict[Any, Any]

    def _init_accept(self) -> None:
        # Listening socket -> its pending restart (a TimerHandle). At most one
        # per socket: a pause is only entered from the socket's reader, which
        # the pause removes.
        self._accept_retries = {}

    def _start_serving(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *timeouts: Any,
        **kw_timeouts: Any,
    ) -> None:
        # A direct (re)start supersedes a pending restart.
        self._cancel_accept_retry(sock)
        self._watch_listening_socket(
            protocol_factory, sock, sslcontext, server, backlog, timeouts, kw_timeouts
        )

    def _watch_listening_socket(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any,
        server: Any,
        backlog: int,
        timeouts: tuple[Any, ...],
        kw_timeouts: dict[str, Any],
    ) -> None:
        # Not through _start_serving: a restart is not a new server (the loop's
        # statistics count servers there).
        self._add_reader(  # type: ignore[attr-defined]
            sock.fileno(),
            self._accept_connection,
            protocol_factory,
            sock,
            sslcontext,
            server,
            backlog,
            *timeouts,
            **kw_timeouts,
        )

    def _accept_connection(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *timeouts: Any,
        **kw_timeouts: Any,
    ) -> None:
        # Called once per wake-up of the listening socket; several connections
        # may be queued, so accept up to `backlog` of them (bpo-27906).
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:  # type: ignore[attr-defined]
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # the queue is empty
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise  # the loop reports it and keeps the reader
                # Paused before reporting, so a handler that closes the server
                # finds nothing left to restart.
                self._pause_accepting(
                    protocol_factory, sock, sslcontext, server, backlog, timeouts, kw_timeouts
                )
                self.call_exception_handler(  # type: ignore[attr-defined]
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                return
            else:
                accept = self._accept_connection2(  # type: ignore[attr-defined]
                    protocol_factory,
                    conn,
                    {"peername": addr},
                    sslcontext,
                    server,
                    *timeouts,
                    **kw_timeouts,
                )
                self.create_task(accept)  # type: ignore[attr-defined]

    def _pause_accepting(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any,
        server: Any,
        backlog: int,
        timeouts: tuple[Any, ...],
        kw_timeouts: dict[str, Any],
    ) -> None:
        # Linux keeps reporting the socket readable while connections wait, so
        # the reader goes until the restart.
        self._remove_reader(sock.fileno())  # type: ignore[attr-defined]
        self._cancel_accept_retry(sock)
        self._accept_retries[sock] = self.call_later(  # type: ignore[attr-defined]
            constants.ACCEPT_RETRY_DELAY,
            self._resume_accepting,
            protocol_factory,
            sock,
            sslcontext,
            server,
            backlog,
            timeouts,
            kw_timeouts,
        )

    def _resume_accepting(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any,
        server: Any,
        backlog: int,
        timeouts: tuple[Any, ...],
        kw_timeouts: dict[str, Any],
    ) -> None:
        self._accept_retries.pop(sock, None)
        # The restart registers by number: only while this socket still owns
        # it. Closed or detached, its number may already be another file's.
        # (A server that stops serving cancels the restart; this is the guard
        # for a socket closed behind the server's back.)
        if sock.fileno() == -1:
            return
        self._watch_listening_socket(
            protocol_factory, sock, sslcontext, server, backlog, timeouts, kw_timeouts
        )

    def _close_accept(self) -> None:
        # The loop drops its timers when it closes; the restarts must not keep
        # their sockets and servers alive with the loop object.
        for handle in self._accept_retries.values():
            handle.cancel()
        self._accept_retries.clear()

    def _cancel_accept_retry(self, sock: Any) -> None:
        handle = self._accept_retries.pop(sock, None)
        if handle is not None:
            handle.cancel()
