"""Sockets, connections and servers for ``ferroloop.Loop``.

The per-event work is native: the stream transport, and ``sock_recv``,
``sock_recv_into`` and ``sock_sendall``. Everything that runs once per call
or per connection is the interpreter's own asyncio code, taken from its
selector and Unix loops rather than rewritten, so argument checks, error
messages and version differences (``all_errors``, ``keep_alive``,
``cleanup_socket``...) are exactly those of the running Python. Those
methods only need the primitives ``ferroloop.Loop`` provides: ``_add_reader``
and friends, ``_make_socket_transport``, ``_transports`` and futures.
"""

from __future__ import annotations

import os
from asyncio import base_events, futures, selector_events, unix_events
from typing import Any

from ._transports import DatagramTransport, SocketTransport

_Future = futures.Future

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
    "_sock_sendfile_native",
    "_sock_sendfile_native_impl",
    "_sock_sendfile_update_filepos",
    "_sock_add_cancellation_callback",
)
_TLS_NOT_YET = "ferroloop does not support TLS yet (ssl=...)"


def _check_nonblocking(loop: Any, sock: Any) -> None:
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

    def _make_ssl_transport(self, rawsock: Any, *args: Any, **kwargs: Any) -> Any:
        # Only reachable through a server that is being refused (see
        # _refuse_tls_server): the connection is dropped, never served plain.
        rawsock.close()
        raise NotImplementedError(_TLS_NOT_YET)

    async def sock_recv(self, sock: Any, n: int) -> bytes:
        """Receive up to ``n`` bytes from the non-blocking socket ``sock``."""
        _check_nonblocking(self, sock)
        result = self._sock_recv(sock, n)  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            return await result
        return result

    async def sock_recv_into(self, sock: Any, buf: Any) -> int:
        """Receive into ``buf``; the number of bytes received."""
        _check_nonblocking(self, sock)
        result = self._sock_recv_into(sock, buf)  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            return await result
        return result

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        """Send all of ``data``, waiting for the socket as needed."""
        _check_nonblocking(self, sock)
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

    async def _create_connection_transport(
        self, sock: Any, protocol_factory: Any, ssl: Any, *args: Any, **kwargs: Any
    ) -> Any:
        # Reached once asyncio has checked every argument; TLS stops here.
        if ssl:
            raise _TLSNotSupported(sock)
        return await base_events.BaseEventLoop._create_connection_transport(
            self,
            sock,
            protocol_factory,
            ssl,
            *args,
            **kwargs,  # type: ignore[arg-type]
        )

    async def create_connection(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        try:
            return await base_events.BaseEventLoop.create_connection(
                self,
                protocol_factory,
                host,
                port,
                **kwargs,  # type: ignore[arg-type]
            )
        except _TLSNotSupported as exc:
            exc.release(owned=kwargs.get("sock") is None)
            raise

    async def create_unix_connection(
        self, protocol_factory: Any, path: Any = None, **kwargs: Any
    ) -> Any:
        try:
            return await unix_events._UnixSelectorEventLoop.create_unix_connection(
                self,
                protocol_factory,
                path,
                **kwargs,  # type: ignore[arg-type]
            )
        except _TLSNotSupported as exc:
            exc.release(owned=kwargs.get("sock") is None)
            raise

    async def connect_accepted_socket(self, protocol_factory: Any, sock: Any, **kwargs: Any) -> Any:
        try:
            return await base_events.BaseEventLoop.connect_accepted_socket(
                self,
                protocol_factory,
                sock,
                **kwargs,  # type: ignore[arg-type]
            )
        except _TLSNotSupported as exc:
            exc.release(owned=False)
            raise

    async def create_server(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        server = await base_events.BaseEventLoop.create_server(
            self,
            protocol_factory,
            host,
            port,
            **kwargs,  # type: ignore[arg-type]
        )
        return _refuse_tls_server(server, kwargs.get("ssl"))

    async def create_unix_server(
        self, protocol_factory: Any, path: Any = None, **kwargs: Any
    ) -> Any:
        server = await unix_events._UnixSelectorEventLoop.create_unix_server(
            self,
            protocol_factory,
            path,
            **kwargs,  # type: ignore[arg-type]
        )
        return _refuse_tls_server(server, kwargs.get("ssl"))


class _TLSNotSupported(NotImplementedError):
    """``ssl=`` reached the point where TLS would start."""

    def __init__(self, sock: Any) -> None:
        super().__init__(_TLS_NOT_YET)
        self.sock = sock

    def release(self, *, owned: bool) -> None:
        # A socket the loop created for this call is closed; the caller's is not.
        if owned:
            self.sock.close()
        self.sock = None


def _refuse_tls_server(server: Any, ssl: Any) -> Any:
    # asyncio has validated the arguments (ssl=True is its TypeError);
    # a server that was asked for TLS never serves plaintext.
    if ssl:
        server.close()
        raise NotImplementedError(_TLS_NOT_YET)
    return server


def _borrow(source: type, names: tuple[str, ...]) -> None:
    for name in names:
        method = source.__dict__.get(name)
        if method is not None:  # sock_recvfrom and sock_sendto arrived in 3.11
            setattr(SocketAPI, name, method)


_borrow(selector_events.BaseSelectorEventLoop, _FROM_SELECTOR_LOOP)
_borrow(unix_events._UnixSelectorEventLoop, _FROM_UNIX_LOOP)
