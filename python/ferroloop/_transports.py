"""The socket transports: ``asyncio`` transports whose work is native.

Reading, writing, buffering and flow control happen in
``_ferroloop.SocketTransportCore``; the classes here are what protocols,
streams and servers hold. They derive from asyncio's transport classes, so
``isinstance(transport, asyncio.Transport)`` holds and asyncio's own helpers
that expect its flow-control base (``loop.sendfile``'s fallback) accept it.

What happens once per connection stays here, in the order asyncio's selector
transport does it: the extra info, registration with the server and the loop,
``TCP_NODELAY``, then ``connection_made``, reading, and the waiter, each as a
loop callback.
"""

from __future__ import annotations

import socket
import sys
import warnings
from asyncio import constants, futures, sslproto, transports
from typing import Any

from ._ferroloop import SocketTransportCore
from ._forwarding import forward
from ._forwarding import state as _state
from ._tls_steps import install as _install_tls_steps

# 3.13's Server keeps its transports (for close_clients); older ones count them.
_SERVER_TRACKS_TRANSPORTS = sys.version_info >= (3, 13)


def _set_nodelay(sock: Any) -> None:
    # asyncio sets TCP_NODELAY only when sock.proto is IPPROTO_TCP; a socket made
    # with socket.socket()'s default proto=0 is just as much TCP. uvloop disables
    # Nagle's algorithm on every TCP stream, and so does ferroloop.
    if (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
        and sock.proto in (0, socket.IPPROTO_TCP)
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_MISSING = object()

# A transport's _core in a slot, read on every write and is_closing without
# a dict lookup; the __dict__ stays, as asyncio's transports take any
# attribute. asyncio's base classes have slots of their own, so only the
# concrete classes can add these.
_SLOTS = ("_core", "__dict__", "__weakref__")


def _shared_address(loop: Any, address: Any) -> Any:
    """`address`, or an equal one the loop saw last: every connection a
    listener accepts has the same local address, and a tuple is immutable,
    so one object serves them all instead of one per connection."""
    last = loop._last_sockname
    if type(address) is type(last) and address == last:
        return last
    loop._last_sockname = address
    return address


def _shared_host(loop: Any, address: Any) -> Any:
    """An IP `address` tuple whose host string is the one the loop saw last,
    when equal: connections from one host (a proxy in front of a server, a
    pool of clients) then share it instead of each keeping its own copy."""
    if type(address) is not tuple or len(address) < 2:
        return address
    host, last = address[0], loop._last_peer_host
    if type(host) is not str or host is last:
        return address
    if type(last) is str and host == last:
        return (last, *address[1:])
    loop._last_peer_host = host
    return address


def _forward(name: str) -> Any:
    return forward(SocketTransportCore, name)


class _NativeTransport:
    """What the stream and datagram transports share: the native core, the
    calls forwarded to it, asyncio's private attributes read from it, the
    repr and the unclosed-transport warning."""

    # The layout is the concrete classes' (see _SLOTS).
    __slots__ = ()

    _core: SocketTransportCore

    def _wire(self, loop: Any, sock: Any, protocol: Any, waiter: Any) -> None:
        # Same order as asyncio: extra info, registration, connection_made,
        # reading (only once connection_made() has run), the waiter.
        core = self._core
        try:
            sockname = _shared_address(loop, sock.getsockname())
        except OSError:
            sockname = None
        peername = core.get_extra_info("peername", _MISSING)
        if peername is _MISSING:
            try:
                peername = sock.getpeername()
            except OSError:
                peername = None
        peername = _shared_host(loop, peername)
        core._set_addresses(sockname, peername)
        loop._transports[core._sock_fd] = self
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    close = _forward("close")
    abort = _forward("abort")
    is_closing = _forward("is_closing")
    is_reading = _forward("is_reading")
    pause_reading = _forward("pause_reading")
    resume_reading = _forward("resume_reading")
    get_protocol = _forward("get_protocol")
    set_protocol = _forward("set_protocol")
    get_extra_info = _forward("get_extra_info")
    get_write_buffer_size = _forward("get_write_buffer_size")
    get_write_buffer_limits = _forward("get_write_buffer_limits")
    set_write_buffer_limits = _forward("set_write_buffer_limits")
    _force_close = _forward("_force_close")
    _fatal_error = _forward("_fatal_error")
    _call_connection_lost = _forward("_call_connection_lost")

    # asyncio's transport attributes, read from the native state (they
    # replace the slots of asyncio's base classes, which stay unused).
    _loop = _state("_loop")
    _extra = _state("_extra")
    _protocol_paused = _state("_protocol_paused")
    _sock = _state("_sock")
    _sock_fd = _state("_sock_fd")
    _protocol = _state("_protocol")
    _server = _state("_server")
    _closing = _state("_closing")
    _conn_lost = _state("_conn_lost")
    _paused = _state("_paused")

    def __repr__(self) -> str:
        core = self._core
        info = [type(self).__name__]
        if core._sock is None:
            info.append("closed")
        elif core._closing:
            info.append("closing")
        info.append(f"fd={core._sock_fd}")
        loop = core._loop
        if loop is not None and not loop.is_closed():
            reading, writing = loop._io_state(core._sock_fd)
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, bufsize={core.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        core: Any = getattr(self, "_core", None)
        sock = core._sock if core is not None else None
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._close_socket()
            server = core._server
            if server is not None and _SERVER_TRACKS_TRANSPORTS:
                server._detach(self)


class SocketTransport(_NativeTransport, transports._FlowControlMixin, transports.Transport):
    """A TCP or Unix stream transport."""

    __slots__ = _SLOTS

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: Any,
        waiter: Any = None,
        extra: Any = None,
        server: Any = None,
    ) -> None:
        core = SocketTransportCore(self, loop, sock, protocol, extra, server)
        self._core = core
        if server is not None:
            if _SERVER_TRACKS_TRANSPORTS:
                server._attach(self)
            else:
                server._attach()
        _set_nodelay(sock)
        self._wire(loop, sock, protocol, waiter)

    # write and is_closing (called per message) are replaced below by
    # native methods that skip the Python frame.
    write = _forward("write")
    writelines = _forward("writelines")
    write_eof = _forward("write_eof")
    can_write_eof = _forward("can_write_eof")
    _make_empty_waiter = _forward("_make_empty_waiter")
    _reset_empty_waiter = _forward("_reset_empty_waiter")
    _eof = _state("_eof")
    _empty_waiter = _state("_empty_waiter")

    def set_protocol(self, protocol: Any) -> None:
        # start_tls() hands the SSLProtocol it made to the transport here.
        if type(protocol) is sslproto.SSLProtocol:
            _install_tls_steps(protocol)
        _NativeTransport.set_protocol(self, protocol)

    set_protocol.__doc__ = _NativeTransport.set_protocol.__doc__


SocketTransportCore._install_owner_methods(SocketTransport)


class DatagramTransport(
    _NativeTransport, transports._FlowControlMixin, transports.DatagramTransport
):
    """A UDP or Unix datagram transport."""

    __slots__ = _SLOTS

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: Any,
        address: Any = None,
        waiter: Any = None,
        extra: Any = None,
    ) -> None:
        core = SocketTransportCore(
            self, loop, sock, protocol, extra, None, datagram_address=address, datagram=True
        )
        self._core = core
        self._address = address
        self.sendto = core.sendto
        self._wire(loop, sock, protocol, waiter)

    sendto = _forward("sendto")
