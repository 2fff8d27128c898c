"""Not-yet-implemented loop methods fail loudly, naming themselves.

ferroloop-only and temporary: delete a method from METHODS when its implementation lands
(its behaviour tests then run on both loops). An empty NotImplementedError, as the
AbstractEventLoop defaults raise, does not pass: the message must name the method.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import ssl
import sys

import pytest

pytestmark = pytest.mark.ferroloop_only


def _args(name: str, sock: socket.socket, server: socket.socket):
    proto = asyncio.Protocol
    dummy_transport = asyncio.Transport()
    return {
        "create_connection": (proto, "127.0.0.1", server.getsockname()[1]),
        "create_server": (proto, "127.0.0.1", 0),
        "create_unix_connection": (proto, "/nonexistent/ferroloop.sock"),
        "create_unix_server": (proto, "/nonexistent/ferroloop.sock"),
        "create_datagram_endpoint": (asyncio.DatagramProtocol, ("127.0.0.1", 0)),
        "connect_read_pipe": (proto, sys.stdin),
        "connect_write_pipe": (proto, sys.stdout),
        "subprocess_exec": (asyncio.SubprocessProtocol, sys.executable, "-c", "pass"),
        "subprocess_shell": (asyncio.SubprocessProtocol, "true"),
        "sock_recv": (sock, 1),
        "sock_sendall": (sock, b"x"),
        "sock_connect": (sock, server.getsockname()),
        "sock_accept": (server,),
        "sendfile": (dummy_transport, sys.stdin),
        "start_tls": (dummy_transport, proto(), ssl.create_default_context()),
        "connect_accepted_socket": (proto, sock),
    }[name]


METHODS = [
    "start_tls",
]


@pytest.mark.parametrize("method", METHODS)
def test_unimplemented_method_names_itself(loop, run, method):
    # Never actually connects anywhere: a listening loopback socket is only a valid target.
    server = socket.socket()
    sock = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    sock.setblocking(False)
    try:

        async def call():
            result = getattr(loop, method)(*_args(method, sock, server))
            if inspect.isawaitable(result):
                result = await result
            return result

        with pytest.raises(NotImplementedError) as info:
            run(call(), timeout=5)
        assert method in str(info.value)
    finally:
        sock.close()
        server.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tls_is_refused_until_supported(loop, run):
    # ssl= passes asyncio's argument checks, then fails clearly: no plaintext
    # connection is handed out, no server keeps listening, no fd is left open.
    context = ssl.create_default_context()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    before = _open_fds()
    try:
        with pytest.raises(NotImplementedError, match="TLS"):
            run(loop.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=context), timeout=5)
        with pytest.raises(NotImplementedError, match="TLS"):
            run(loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=context), timeout=5)
        assert _open_fds() == before
    finally:
        listener.close()
