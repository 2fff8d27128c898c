"""The socket transport's Python side: wiring done once per connection.

Reading, writing, buffering and flow control are native
(``_ferroloop.SocketTransportCore``). What happens once per connection stays
here, in the same order asyncio's selector transport does it: the extra info,
registration with the server and the loop, ``TCP_NODELAY``, then
``connection_made``, reading, and the waiter, each as a loop callback.
"""

from __future__ import annotations

import sys
import warnings
from asyncio import base_events, constants, futures, trsock
from typing import Any

from . import _ferroloop

# 3.13's Server keeps its transports (for close_clients); older ones count them.
_SERVER_TRACKS_TRANSPORTS = sys.version_info >= (3, 13)


class SocketTransport(_ferroloop.SocketTransportCore):
    """A TCP or Unix stream transport (``asyncio.Transport``'s interface)."""

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
        info = self._extra
        info["socket"] = trsock.TransportSocket(sock)
        try:
            info["sockname"] = sock.getsockname()
        except OSError:
            info["sockname"] = None
        if "peername" not in info:
            try:
                info["peername"] = sock.getpeername()
            except OSError:
                info["peername"] = None
        if server is not None:
            if _SERVER_TRACKS_TRANSPORTS:
                server._attach(self)
            else:
                server._attach()
        loop._transports[self._sock_fd] = self
        base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            reading, writing = loop._io_state(self._sock_fd)
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        sock = self._sock
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()
            server = self._server
            if server is not None and _SERVER_TRACKS_TRANSPORTS:
                server._detach(self)
