"""Sockets, connections and servers for ``ferroloop.Loop``.

The per-event work is native: the stream transport, and ``sock_recv``,
``sock_recv_into`` and ``sock_sendall``. Everything that runs once per call
or per connection is the interpreter's own asyncio code, taken from its
selector and Unix loops rather than rewritten, so argument checks, error
messages and version differences (``all_errors``, ``keep_alive``,
``cleanup_socket``...) are exactly those of the running Python. Those
methods only need the primitives ``ferroloop.Loop`` provides: ``_add_reader``
and friends, ``_make_socket_transport``, ``_transports`` and futures.

TLS is the running Python's ``asyncio.sslproto.SSLProtocol`` (the stdlib
``ssl`` module's ``SSLObject`` over memory BIOs) as the protocol of a native
socket transport, exactly as asyncio's selector loop layers it; ``start_tls``
is ``BaseEventLoop``'s own.
"""

from __future__ import annotations

import os
import sys
from asyncio import base_events, futures, selector_events, sslproto, unix_events
from typing import Any

from ._transports import DatagramTransport, SocketTransport

_Future = futures.Future

# The versions whose SSLProtocol the native pump drives (src/transport/tls/).
_PUMPED_SSLPROTO = (3, 11) <= sys.version_info[:2] < (3, 14)


def _new_ssl_protocol(*args: Any, **kwargs: Any) -> sslproto.SSLProtocol:
    """``sslproto.SSLProtocol(*args, **kwargs)``, without the 256 KiB buffer.

    Its ``__init__`` zero-fills a ``bytearray(self.max_size)`` for
    ``get_buffer``, a fresh mapping and 64 page faults per connection, while
    the native pump receives into the transport's buffer and never asks for it.
    ``max_size`` is shadowed for that one line; ``get_buffer`` grows the buffer
    back on demand should it be called.
    """
    protocol = sslproto.SSLProtocol.__new__(sslproto.SSLProtocol)
    if not _PUMPED_SSLPROTO:
        protocol.__init__(*args, **kwargs)
        return protocol
    protocol.max_size = 0
    try:
        protocol.__init__(*args, **kwargs)
    finally:
        del protocol.max_size
    return protocol


_FROM_SELECTOR_LOOP = (
    "sock_recvfrom",
    "_sock_recvfrom",
    "sock_recvfrom_into",
    "_sock_recvfrom_into",
    "sock_sendto",
    "_sock_sendto",
    "sock_connect",
    "_sock_connect",
    "_sock_connect_cb",
    "_sock_write_done",
    "_sock_read_done",
    "sock_accept",
    "_sock_accept",
    "_ensure_fd_no_transport",
    "_sendfile_native",
    "_start_serving",
    "_accept_connection",
    "_accept_connection2",
)
_FROM_UNIX_LOOP = (
    "create_unix_connection",
    "create_unix_server",
    "_sock_sendfile_native",
    "_sock_sendfile_native_impl",
    "_sock_sendfile_update_filepos",
    "_sock_add_cancellation_callback",
)


def _check_nonblocking(loop: Any, sock: Any) -> None:
    # Called by the native sock_* operations only for an SSL socket or in
    # debug mode, so the errors are this Python's own.
    base_events._check_ssl_socket(sock)
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


class SocketAPI:
    """Mixin for ``ferroloop.Loop``: sockets, connections, servers, sendfile."""

    _transports: Any
    _unix_server_sockets: dict[Any, int]

    def _init_sockets(self) -> None:
        import weakref

        self._transports = weakref.WeakValueDictionary()
        # 3.13's create_unix_server records each socket's inode here so the
        # file can be removed when the server closes (cleanup_socket).
        self._unix_server_sockets = {}

    def _make_socket_transport(
        self, sock: Any, protocol: Any, waiter: Any = None, *, extra: Any = None, server: Any = None
    ) -> SocketTransport:
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(
        self, sock: Any, protocol: Any, address: Any = None, waiter: Any = None, extra: Any = None
    ) -> DatagramTransport:
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_ssl_transport(
        self,
        rawsock: Any,
        protocol: Any,
        sslcontext: Any,
        waiter: Any = None,
        *,
        server_side: bool = False,
        server_hostname: Any = None,
        extra: Any = None,
        server: Any = None,
        **timeouts: Any,
    ) -> Any:
        # `timeouts`: ssl_handshake_timeout, and ssl_shutdown_timeout from 3.11,
        # as this Python's SSLProtocol takes them.
        ssl_protocol = _new_ssl_protocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname, **timeouts
        )
        SocketTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    async def sock_recv(self, sock: Any, n: int) -> bytes:
        """Receive up to ``n`` bytes from the non-blocking socket ``sock``."""
        result = self._sock_recv(sock, n)  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            return await result
        return result

    async def sock_recv_into(self, sock: Any, buf: Any) -> int:
        """Receive into ``buf``; the number of bytes received."""
        result = self._sock_recv_into(sock, buf)  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            return await result
        return result

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        """Send all of ``data``, waiting for the socket as needed."""
        result = self._sock_sendall(sock, data)  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            await result

    def _stop_serving(self, sock: Any) -> None:
        # A Unix server socket created with cleanup_socket (3.13) takes its
        # file with it, unless something else has replaced the file since.
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        self._remove_reader(sock.fileno())  # type: ignore[attr-defined]
        sock.close()
        if path is None:
            return
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            from asyncio.log import logger

            logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)


def _borrow(source: type, names: tuple[str, ...]) -> None:
    for name in names:
        method = source.__dict__.get(name)
        if method is not None:  # sock_recvfrom and sock_sendto arrived in 3.11
            setattr(SocketAPI, name, method)


_borrow(selector_events.BaseSelectorEventLoop, _FROM_SELECTOR_LOOP)
_borrow(unix_events._UnixSelectorEventLoop, _FROM_UNIX_LOOP)
