"""Sockets, connections and servers for ``ferroloop.Loop``.

The per-event work is native: the stream transport, and the ``sock_*``
operations, which wait through a native operation that holds the socket's
file open while it waits (see ``src/sock_ops.rs``); their Python halves here
keep asyncio's checks, order and messages. Everything else that runs once per
call or per connection is the interpreter's own asyncio code, taken from its
selector and Unix loops rather than rewritten, so argument checks, error
messages and version differences (``all_errors``, ``keep_alive``,
``cleanup_socket``...) are exactly those of the running Python. Those
methods only need the primitives ``ferroloop.Loop`` provides: ``_add_reader``
and friends, ``_make_socket_transport``, ``_transports`` and futures. The
accept step of a server's socket is the exception (``_accept.py``): asyncio's
retries a resource error (EMFILE...) up to ``backlog`` times per wake-up.

TLS is the running Python's ``asyncio.sslproto.SSLProtocol`` (the stdlib
``ssl`` module's ``SSLObject`` over memory BIOs) as the protocol of a native
socket transport, exactly as asyncio's selector loop layers it; ``start_tls``
is ``BaseEventLoop``'s own.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import io
import os
import socket
import sys
import weakref
from asyncio import base_events, exceptions, futures, selector_events, sslproto, unix_events
from typing import Any

from ._accept import AcceptAPI
from ._ferroloop import TransportTable
from ._tls_steps import install as _install_tls_steps
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
        protocol.__init__(*args, **kwargs)  # type: ignore[misc]
        return protocol
    # (Typeshed gives 3.10's SSLProtocol no max_size: attr-defined there.)
    protocol.max_size = 0  # type: ignore[misc, attr-defined, unused-ignore]
    try:
        protocol.__init__(*args, **kwargs)  # type: ignore[misc]
    finally:
        del protocol.max_size  # type: ignore[attr-defined, unused-ignore]
    return protocol


def _run_in_copy(context: contextvars.Context, function: Any, ref: Any) -> Any:
    # A copy each time: the call may nest (pause_writing() that writes). A weak
    # reference: the protocol's own attribute must not keep it (and its SSL
    # context) alive in a reference cycle.
    protocol = ref()
    if protocol is None:
        return None
    return context.copy().run(function, protocol)


def _in_transport_context(ssl_protocol: sslproto.SSLProtocol) -> None:
    """Run the two steps through which a caller's ``write()`` or
    ``resume_reading()`` reaches the application protocol in the context the
    connection was made in, as the socket transport runs its own callbacks.

    Instance attributes, set before the native pump looks at the protocol's
    ``__dict__``; the pump calls the first only when writing pauses or resumes.
    3.10's sslproto has neither step: its application protocol is reached
    through the socket transport.
    """
    context = contextvars.copy_context()
    ref = weakref.ref(ssl_protocol)
    for name in ("_control_app_writing", "_resume_reading"):
        function = getattr(type(ssl_protocol), name, None)
        if function is not None:
            setattr(ssl_protocol, name, functools.partial(_run_in_copy, context, function, ref))


# The accept step itself (_start_serving, _accept_connection) is ferroloop's
# own (_accept.py): asyncio's retries a resource error up to backlog times.
_FROM_SELECTOR_LOOP = (
    "_ensure_fd_no_transport",
    "_sendfile_native",
    "_accept_connection2",
)
_FROM_UNIX_LOOP = (
    "create_unix_connection",
    "create_unix_server",
)


def _check_nonblocking(loop: Any, sock: Any) -> None:
    # Called by the native sock_* operations only for an SSL socket or in
    # debug mode, so the errors are this Python's own.
    base_events._check_ssl_socket(sock)  # type: ignore[attr-defined]
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def _accept(sock: Any) -> tuple[Any, Any]:
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


# The socket's methods are looked up at every attempt, as asyncio does.
def _recvfrom(sock: Any, bufsize: int) -> tuple[bytes, Any]:
    return sock.recvfrom(bufsize)


def _recvfrom_into(sock: Any, buf: Any, nbytes: int) -> tuple[int, Any]:
    return sock.recvfrom_into(buf, nbytes)


def _sendto(sock: Any, data: Any, address: Any) -> int:
    return sock.sendto(data, 0, address)


def _connect_result(sock: Any, address: Any) -> None:
    # Called once the socket is writable after a connect in progress.
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Connect call failed {address}")


class _SendfileSteps:
    """``os.sendfile`` until done or the socket is full, as asyncio's
    ``_sock_sendfile_native_impl`` does one step at a time. Loops until
    ``BlockingIOError``: the native wait is edge-triggered."""

    __slots__ = ("sock", "fileno", "offset", "count", "blocksize", "total_sent", "calls")

    def __init__(self, sock: Any, fileno: int, offset: int, count: int, blocksize: int) -> None:
        self.sock = sock
        self.fileno = fileno
        self.offset = offset
        self.count = count
        self.blocksize = blocksize
        self.total_sent = 0
        self.calls = 0

    def __call__(self) -> int:
        while True:
            blocksize = self.blocksize
            if self.count:
                blocksize = self.count - self.total_sent
                if blocksize <= 0:
                    return self.total_sent
            # As 3.13 does: a Py_ssize_t on 32-bit builds.
            blocksize = min(blocksize, sys.maxsize // 2 + 1)
            self.calls += 1
            try:
                sent = os.sendfile(self.sock.fileno(), self.fileno, self.offset, blocksize)
            except (BlockingIOError, InterruptedError):
                raise
            except OSError as exc:
                not_first = self.calls > 1
                if not_first and exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                    # As asyncio: the connection closed in the middle of the
                    # operation is a ConnectionError on every platform.
                    new_exc = ConnectionError("socket is not connected", errno.ENOTCONN)
                    new_exc.__cause__ = exc
                    exc = new_exc
                if self.total_sent == 0:
                    # Not a regular file, say: the caller falls back to send().
                    raise exceptions.SendfileNotAvailableError("os.sendfile call failed") from None
                raise exc
            if sent == 0:
                return self.total_sent  # EOF
            self.offset += sent
            self.total_sent += sent


class SocketAPI(AcceptAPI):
    """Mixin for ``ferroloop.Loop``: sockets, connections, servers, sendfile."""

    _transports: Any
    _unix_server_sockets: dict[Any, int]

    def _init_sockets(self) -> None:
        # Which open transport uses which fd, for asyncio's
        # _ensure_fd_no_transport (a WeakValueDictionary on asyncio).
        self._transports = TransportTable()
        # 3.13's create_unix_server records each socket's inode here so the
        # file can be removed when the server closes (cleanup_socket).
        self._unix_server_sockets = {}
        self._init_accept()
        # The last local address and peer host a transport recorded, shared
        # by the next transports with equal ones (see _transports).
        self._last_sockname: Any = None
        self._last_peer_host: Any = None

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
        _in_transport_context(ssl_protocol)
        _install_tls_steps(ssl_protocol)
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

    async def sock_accept(self, sock: Any) -> tuple[Any, Any]:
        """Accept a connection: ``(conn, address)``, ``conn`` non-blocking."""
        result = self._sock_call(sock, False, _accept, (sock,))  # type: ignore[attr-defined]
        if result.__class__ is _Future:
            return await result
        return result

    async def sock_connect(self, sock: Any, address: Any) -> None:
        """Connect ``sock`` to ``address`` (resolved first for IP sockets)."""
        _check_nonblocking(self, sock)
        if sock.family == socket.AF_INET or (
            base_events._HAS_IPv6  # type: ignore[attr-defined]
            and sock.family == socket.AF_INET6
        ):
            resolved = await self._ensure_resolved(  # type: ignore[attr-defined]
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self
            )
            _, _, _, _, address = resolved[0]
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            # In progress (EINTR too leaves it running): wait for writable.
            pass
        else:
            return None
        fut = self._sock_call(sock, True, _connect_result, (sock, address), True)  # type: ignore[attr-defined]
        try:
            return await fut
        finally:
            # Breaks the cycle through the traceback on error, as asyncio.
            fut = None

    async def _sock_sendfile_native(self, sock: Any, file: Any, offset: int, count: int) -> int:
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        steps = _SendfileSteps(sock, fileno, offset, count, blocksize)
        try:
            result = self._sock_call(sock, True, steps, ())  # type: ignore[attr-defined]
            if result.__class__ is _Future:
                return await result
            return result
        finally:
            # Where the file position would be after a plain send, as asyncio.
            if steps.total_sent > 0:
                os.lseek(fileno, steps.offset, os.SEEK_SET)

    if sys.version_info >= (3, 11):

        async def sock_recvfrom(self, sock: Any, bufsize: int) -> tuple[bytes, Any]:
            """Receive a datagram: ``(data, address)``."""
            result = self._sock_call(sock, False, _recvfrom, (sock, bufsize))  # type: ignore[attr-defined]
            if result.__class__ is _Future:
                return await result
            return result

        async def sock_recvfrom_into(self, sock: Any, buf: Any, nbytes: int = 0) -> tuple[int, Any]:
            """Receive a datagram into ``buf``: ``(nbytes, address)``."""
            _check_nonblocking(self, sock)
            if not nbytes:
                nbytes = len(buf)
            result = self._sock_call(sock, False, _recvfrom_into, (sock, buf, nbytes))  # type: ignore[attr-defined]
            if result.__class__ is _Future:
                return await result
            return result

        async def sock_sendto(self, sock: Any, data: Any, address: Any) -> int:
            """Send a datagram to ``address``; the number of bytes sent."""
            _check_nonblocking(self, sock)
            try:
                return sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                pass
            result = self._sock_call(sock, True, _sendto, (sock, data, address), True)  # type: ignore[attr-defined]
            return await result

    def _stop_serving(self, sock: Any) -> None:
        # A Unix server socket created with cleanup_socket (3.13) takes its
        # file with it, unless something else has replaced the file since.
        self._cancel_accept_retry(sock)
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
