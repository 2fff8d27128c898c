"""Sockets for the network tests: address kinds, connected pairs, recording and echo protocols.

Every address is on loopback (127.0.0.1, ::1) or a Unix socket under the test's tmp_path.
A test parametrized with ``kind_params()`` runs over TCP/IPv4, TCP/IPv6 and Unix sockets;
the IPv6 case is skipped when ::1 cannot be bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
from pathlib import Path

import pytest

KINDS = ("tcp4", "tcp6", "unix")
FAMILY = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6, "unix": socket.AF_UNIX}
HOST = {"tcp4": "127.0.0.1", "tcp6": "::1"}
MiB = 1024 * 1024


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="IPv6 loopback (::1) is not available")


def kind_params(*kinds: str) -> list:
    """pytest params for the address kinds (all by default), IPv6 skipped when unavailable."""
    return [
        pytest.param(k, id=k, marks=[needs_ipv6] if k == "tcp6" else []) for k in kinds or KINDS
    ]


# For cases where the address family is not at stake: TCP/IPv4 and Unix are enough.
TCP4_AND_UNIX = kind_params("tcp4", "unix")


def unix_path(tmp_path: Path, name: str = "s.sock") -> str:
    path = str(tmp_path / name)
    assert len(os.fsencode(path)) < 100, f"Unix socket path too long: {path}"
    return path


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port nothing listens on at the moment (bound, then released)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bind_address(kind: str, tmp_path: Path, name: str = "s.sock"):
    """An address to bind a listening socket of ``kind`` to (port 0 for TCP)."""
    return unix_path(tmp_path, name) if kind == "unix" else (HOST[kind], 0)


def listening_socket(
    kind: str, tmp_path: Path, backlog: int = 128, name: str = "listen.sock"
) -> socket.socket:
    sock = socket.socket(FAMILY[kind], socket.SOCK_STREAM)
    try:
        sock.bind(bind_address(kind, tmp_path, name))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def connected_pair(kind: str, tmp_path: Path) -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking stream sockets of ``kind``: (client side, accepted side)."""
    with listening_socket(kind, tmp_path, name="pair.sock") as listener:
        client = socket.socket(FAMILY[kind], socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect(listener.getsockname())
        listener.settimeout(5)
        accepted, _ = listener.accept()
        if kind == "unix":
            os.unlink(listener.getsockname())  # the path is free for the next pair
    client.setblocking(False)
    accepted.setblocking(False)
    return client, accepted


def address_of(server: asyncio.AbstractServer, index: int = 0):
    """The address a client connects to for ``server.sockets[index]``."""
    sock = server.sockets[index]
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return name[:2]
    return name


async def start_server(
    loop: asyncio.AbstractEventLoop, kind: str, factory, tmp_path: Path, **kwargs
) -> asyncio.AbstractServer:
    """create_server on loopback port 0, or create_unix_server on a path in tmp_path."""
    if kind == "unix":
        return await loop.create_unix_server(factory, unix_path(tmp_path), **kwargs)
    return await loop.create_server(factory, HOST[kind], 0, **kwargs)


async def connect(loop: asyncio.AbstractEventLoop, kind: str, factory, address, **kwargs):
    """create_connection / create_unix_connection to ``address``."""
    if kind == "unix":
        return await loop.create_unix_connection(factory, address, **kwargs)
    return await loop.create_connection(factory, *address, **kwargs)


async def wrap(loop: asyncio.AbstractEventLoop, kind: str, factory, sock: socket.socket):
    """A transport over an already connected socket (the ``sock=`` form)."""
    if kind == "unix":
        return await loop.create_unix_connection(factory, sock=sock)
    return await loop.create_connection(factory, sock=sock)


async def open_connection(kind: str, address, **kwargs):
    if kind == "unix":
        return await asyncio.open_unix_connection(address, **kwargs)
    return await asyncio.open_connection(*address, **kwargs)


async def start_stream_server(kind: str, callback, tmp_path: Path, **kwargs):
    if kind == "unix":
        return await asyncio.start_unix_server(callback, unix_path(tmp_path), **kwargs)
    return await asyncio.start_server(callback, HOST[kind], 0, **kwargs)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shrink_buffers(sock, size: int = 16384) -> None:
    """Small kernel buffers, so a few hundred KiB are enough to make writes block."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """Read ``n`` bytes from a non-blocking socket with sock_recv; fails at early EOF."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = await loop.sock_recv(sock, min(n - len(chunks), 1 * MiB))
        assert chunk, f"EOF after {len(chunks)} of {n} bytes"
        chunks += chunk
    return bytes(chunks)


async def recv_until_eof(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, limit: int = 256 * MiB
) -> bytes:
    chunks = bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 1 * MiB)
        if not chunk:
            return bytes(chunks)
        chunks += chunk
        assert len(chunks) <= limit, "peer sent more than expected"


async def recv_slowly(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    total: int,
    chunk: int = 64 * 1024,
    pause: float = 0.001,
) -> bytes:
    """A slow reader: ``chunk`` bytes at a time with a short sleep between reads."""
    data = bytearray()
    while len(data) < total:
        got = await loop.sock_recv(sock, min(chunk, total - len(data)))
        assert got, f"EOF after {len(data)} of {total} bytes"
        data += got
        await asyncio.sleep(pause)
    return bytes(data)


class RecordingProtocol(asyncio.Protocol):
    """Records every callback; futures resolve on EOF, on connection_lost and on byte counts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, keep_open_on_eof: bool = False):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.events: list[str] = []
        self.data = bytearray()
        self.lost_exc: list[BaseException | None] = []
        self.keep_open_on_eof = keep_open_on_eof
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.pauses: list[int] = []  # write buffer size at each pause_writing
        self.resumes: list[int] = []  # write buffer size at each resume_writing
        self._waiting: tuple[int, asyncio.Future] | None = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self._check_waiter()

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open_on_eof

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_exc.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(
                AssertionError(f"connection lost after {len(self.data)} bytes")
            )

    def pause_writing(self):
        self.events.append("pause_writing")
        self.pauses.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume_writing")
        self.resumes.append(self.transport.get_write_buffer_size())

    async def wait_bytes(self, n: int) -> bytes:
        """Wait until at least ``n`` bytes arrived in total; returns everything so far."""
        if len(self.data) < n:
            fut = self.loop.create_future()
            self._waiting = (n, fut)
            try:
                await fut
            finally:
                self._waiting = None
        return bytes(self.data)

    def _check_waiter(self):
        if self._waiting is not None:
            n, fut = self._waiting
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)


class Factory:
    """A protocol factory that keeps every protocol it made (server side of a test)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cls=RecordingProtocol, **kwargs):
        self.loop = loop
        self.cls = cls
        self.kwargs = kwargs
        self.made: list = []

    def __call__(self):
        self.made.append(self.cls(self.loop, **self.kwargs))
        return self.made[-1]

    async def nth(self, n: int = 0, timeout: float = 5.0):
        """The ``n``-th protocol made, once it has its transport."""
        deadline = self.loop.time() + timeout
        while len(self.made) <= n:
            assert self.loop.time() < deadline, f"only {len(self.made)} connections accepted"
            await asyncio.sleep(0.001)
        await self.made[n].made
        return self.made[n]


class EchoProtocol(asyncio.Protocol):
    """Writes back what it receives; stops reading while its peer is not reading.

    EOF from the peer closes the transport once the echoed data is flushed.
    """

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class BufferedEchoProtocol(asyncio.BufferedProtocol):
    """EchoProtocol through get_buffer/buffer_updated."""

    def __init__(self, size: int = 64 * 1024):
        self.buffer = bytearray(size)
        self.sizehints: list[int] = []

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return self.buffer

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buffer[:nbytes]))

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """start_server callback: echo until EOF, then close."""
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


class BaseBuffered(asyncio.BaseProtocol):
    """Reads into its own buffer of `size` bytes without deriving from
    asyncio.BufferedProtocol (what uvloop and ferroloop serve as buffered)."""

    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.received = bytearray()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.received += self.buf[:nbytes]

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)
