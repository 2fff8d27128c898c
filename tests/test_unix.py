"""create_unix_server and create_unix_connection: paths, the abstract namespace, sock=."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import sys
from pathlib import Path

import pytest
from support import net

needs_313 = pytest.mark.skipif(sys.version_info < (3, 13), reason="new in Python 3.13")
# From 3.13 on, closing a Unix server removes its socket file (cleanup_socket=True).
REMOVES_SOCKET_FILE = sys.version_info >= (3, 13)

_abstract_names = itertools.count()


async def _round_trip(loop, address, message: bytes = b"ping", **kwargs) -> bytes:
    transport, proto = await loop.create_unix_connection(
        lambda: net.RecordingProtocol(loop), address, **kwargs
    )
    transport.write(message)
    transport.write_eof()
    assert await proto.lost is None
    return bytes(proto.data)


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib"])
def test_server_and_connection_on_a_path(loop, run, tmp_path, as_path):
    path = net.unix_path(tmp_path)
    address = Path(path) if as_path else path

    async def main():
        server = await loop.create_unix_server(net.EchoProtocol, address)
        async with server:
            (sock,) = server.sockets
            assert sock.family == socket.AF_UNIX
            assert sock.getsockname() == path
            assert os.path.exists(path)
            transport, proto = await loop.create_unix_connection(
                lambda: net.RecordingProtocol(loop), address
            )
            assert transport.get_extra_info("peername") == path
            assert transport.get_extra_info("sockname") == ""  # the client is unnamed
            transport.write(b"over a path")
            transport.write_eof()
            await proto.lost
            return bytes(proto.data)

    assert run(main()) == b"over a path"


def test_abstract_namespace(loop, run, tmp_path):
    name = f"\0ferroloop-test-{os.getpid()}-{next(_abstract_names)}"

    async def main():
        async with await loop.create_unix_server(net.EchoProtocol, name) as server:
            # Python reports abstract names as bytes.
            assert server.sockets[0].getsockname() == name.encode()
            return await _round_trip(loop, name)

    assert run(main()) == b"ping"
    assert os.listdir(tmp_path) == []


def test_sock_arguments(loop, run, tmp_path):
    path = net.unix_path(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def main():
        async with await loop.create_unix_server(net.EchoProtocol, sock=listener) as server:
            assert [s.fileno() for s in server.sockets] == [listener.fileno()]
            client.connect(path)  # blocking connect; the server's listen() already ran
            transport, proto = await loop.create_unix_connection(
                lambda: net.RecordingProtocol(loop), sock=client
            )
            assert client.gettimeout() == 0
            transport.write(b"sock=")
            transport.write_eof()
            await proto.lost
            return bytes(proto.data)

    try:
        assert run(main()) == b"sock="
        assert listener.fileno() == -1 and client.fileno() == -1
    finally:
        listener.close()
        client.close()


def test_stale_socket_file_is_replaced(loop, run, tmp_path):
    path = net.unix_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert os.path.exists(path)

    async def main():
        async with await loop.create_unix_server(net.EchoProtocol, path):
            return await _round_trip(loop, path)

    assert run(main()) == b"ping"


def test_socket_file_of_a_live_server_is_taken_over(loop, run, tmp_path):
    # asyncio removes any socket file at the path before binding, even one a server is
    # still listening on: new connections then reach the new server.
    path = net.unix_path(tmp_path)
    first = net.Factory(loop)
    second = net.Factory(loop)

    async def main():
        async with await loop.create_unix_server(first, path):
            async with await loop.create_unix_server(second, path):
                transport, proto = await loop.create_unix_connection(
                    lambda: net.RecordingProtocol(loop), path
                )
                side = await second.nth(0)
                transport.close()
                await side.lost
        return len(first.made), len(second.made)

    assert run(main()) == (0, 1)


def test_regular_file_at_path_is_address_in_use(loop, run, tmp_path):
    path = net.unix_path(tmp_path)
    Path(path).write_bytes(b"not a socket")
    with pytest.raises(OSError) as info:
        run(loop.create_unix_server(asyncio.Protocol, path))
    assert type(info.value) is OSError
    assert info.value.errno == errno.EADDRINUSE
    assert str(info.value) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"
    assert Path(path).read_bytes() == b"not a socket"


def test_connection_errors(loop, run, tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(net.unix_path(tmp_path, "stale.sock"))
    stale.close()
    with pytest.raises(FileNotFoundError) as missing:
        run(loop.create_unix_connection(asyncio.Protocol, net.unix_path(tmp_path, "none.sock")))
    with pytest.raises(ConnectionRefusedError) as refused:
        run(loop.create_unix_connection(asyncio.Protocol, net.unix_path(tmp_path, "stale.sock")))
    assert missing.value.errno == errno.ENOENT
    assert refused.value.errno == errno.ECONNREFUSED


def test_argument_errors(loop, run, tmp_path):
    path = net.unix_path(tmp_path)
    unix = socket.socket(socket.AF_UNIX)
    tcp = socket.socket()
    proto = asyncio.Protocol
    cases = [
        (
            loop.create_unix_server,
            dict(path=path, sock=unix),
            ValueError,
            "^path and sock can not be specified at the same time$",
        ),
        (
            loop.create_unix_server,
            dict(),
            ValueError,
            "^path was not specified, and no sock specified$",
        ),
        (
            loop.create_unix_server,
            dict(sock=tcp),
            ValueError,
            "^A UNIX Domain Stream Socket was expected, got ",
        ),
        (
            loop.create_unix_server,
            dict(path=path, ssl=True),
            TypeError,
            "^ssl argument must be an SSLContext or None$",
        ),
        (
            loop.create_unix_connection,
            dict(path=path, sock=unix),
            ValueError,
            "^path and sock can not be specified at the same time$",
        ),
        (loop.create_unix_connection, dict(), ValueError, "^no path and sock were specified$"),
        (
            loop.create_unix_connection,
            dict(sock=tcp),
            ValueError,
            "^A UNIX Domain Stream Socket was expected, got ",
        ),
        (
            loop.create_unix_connection,
            dict(path=path, server_hostname="example.org"),
            ValueError,
            "^server_hostname is only meaningful with ssl$",
        ),
        (
            loop.create_unix_connection,
            dict(path=path, ssl_handshake_timeout=1.0),
            ValueError,
            "^ssl_handshake_timeout is only meaningful with ssl$",
        ),
    ]
    try:
        for method, kwargs, exc_type, pattern in cases:
            with pytest.raises(exc_type, match=pattern):
                run(method(proto, **kwargs))
        assert not os.path.exists(path)
    finally:
        unix.close()
        tcp.close()


def test_socket_file_after_close(loop, run, tmp_path):
    path = net.unix_path(tmp_path)

    async def main():
        server = await loop.create_unix_server(asyncio.Protocol, path)
        server.close()
        await server.wait_closed()

    run(main())
    assert os.path.exists(path) is not REMOVES_SOCKET_FILE


@needs_313
def test_cleanup_socket_false_keeps_the_file(loop, run, tmp_path):
    path = net.unix_path(tmp_path)

    async def main():
        async with await loop.create_unix_server(asyncio.Protocol, path, cleanup_socket=False):
            pass

    run(main())
    assert os.path.exists(path)


@needs_313
def test_cleanup_socket_with_sock_argument(loop, run, tmp_path):
    path = net.unix_path(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)

    async def main():
        async with await loop.create_unix_server(asyncio.Protocol, sock=sock):
            pass

    try:
        run(main())
    finally:
        sock.close()
    assert not os.path.exists(path)


@needs_313
def test_cleanup_leaves_a_replaced_file_alone(loop, run, tmp_path):
    # Only the file the server created (same inode) is removed.
    path = net.unix_path(tmp_path)

    async def main():
        async with await loop.create_unix_server(asyncio.Protocol, path):
            os.unlink(path)
            Path(path).write_bytes(b"someone else's")

    run(main())
    assert Path(path).read_bytes() == b"someone else's"
