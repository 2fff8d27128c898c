"""TLS behaviour ferroloop shares with uvloop where asyncio's ``SSLProtocol`` differs.

ferroloop's TLS layer is the running Python's ``SSLProtocol`` with four of its steps taken
as uvloop takes them (python/ferroloop/_tls_steps.py); each test says what asyncio does
instead. The peer here is an ``ssl.SSLObject`` over memory BIOs driven through the loop's
``sock_*`` calls, so the test decides which TLS records travel together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys

import pytest
from support import net, tls

# 3.10's SSLProtocol is another design, left as it is.
pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11+'s SSLProtocol")


class _BioPeer:
    """One end of a TLS connection over a non-blocking socket, driven by hand."""

    def __init__(self, loop, sock, context, *, server_side):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        hostname = None if server_side else tls.HOSTNAME
        self.obj = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )

    async def flush(self):
        if self.outgoing.pending:
            await self.loop.sock_sendall(self.sock, self.outgoing.read())

    async def _fill(self):
        data = await self.loop.sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionError("peer closed the socket")
        self.incoming.write(data)

    async def handshake(self, *, flush_last=True):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self._fill()
        if flush_last:
            await self.flush()

    async def read(self):
        """Application data, or b'' once the peer's close_notify is read."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLWantReadError:
                await self.flush()
                await self._fill()

    async def write(self, data):
        self.obj.write(data)
        await self.flush()

    async def unwrap(self):
        while True:
            try:
                self.obj.unwrap()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self._fill()
        await self.flush()


class _Recorder(asyncio.Protocol):
    def __init__(self, loop):
        self.transport = None
        self.data = bytearray()
        self.transport_at_data = None
        self.got_data = loop.create_future()
        self.eof = False
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if not self.got_data.done():
            self.transport_at_data = self.transport
            self.got_data.set_result(None)

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@contextlib.asynccontextmanager
async def _tls_client(loop):
    """A TLS connection made by ``create_connection`` (protocol: a ``_Recorder``) and
    its server end as a ``_BioPeer``, the handshake done; the socket closed after."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    with listener:
        connecting = loop.create_task(
            loop.create_connection(
                lambda: _Recorder(loop),
                *listener.getsockname(),
                ssl=tls.client_context(),
                server_hostname=tls.HOSTNAME,
            )
        )
        sock, _ = await loop.sock_accept(listener)
    with sock:
        sock.setblocking(False)
        server = _BioPeer(loop, sock, tls.server_context(), server_side=True)
        await server.handshake()
        transport, proto = await connecting
        yield transport, proto, server


# asyncio reads right after the handshake, before start_tls() returns: data_received then
# sees the transport the protocol had before, and an answer written there goes out in
# plain text.
@pytest.mark.ferroloop_only
def test_start_tls_caller_runs_before_the_first_data_received(loop, run):
    async def main():
        upgraded = loop.create_future()

        async def upgrade(transport):
            # start_tls() pauses reading before its first await, in this same step.
            upgrading.set()
            ssl_transport = await loop.start_tls(
                transport, proto, tls.server_context(), server_side=True
            )
            proto.transport = ssl_transport
            upgraded.set_result(ssl_transport)

        class Upgrading(_Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                loop.create_task(upgrade(transport))

        proto = Upgrading(loop)
        upgrading = asyncio.Event()
        server = await loop.create_server(lambda: proto, "127.0.0.1", 0)
        async with server:
            sock = socket.socket()
            sock.setblocking(False)
            with sock:
                await loop.sock_connect(sock, server.sockets[0].getsockname())
                await upgrading.wait()
                client = _BioPeer(loop, sock, tls.client_context(), server_side=False)
                # The client's last handshake flight and its first data in one send.
                await client.handshake(flush_last=False)
                client.obj.write(b"hello")
                await client.flush()
                await asyncio.wait_for(proto.got_data, 10)
                ssl_transport = await upgraded
                ssl_transport.close()
                assert await client.read() == b""
                await client.unwrap()
                await asyncio.wait_for(proto.lost, 10)
        return bytes(proto.data), proto.transport_at_data is ssl_transport

    assert run(main()) == (b"hello", True)


# asyncio leaves that data in the SSLObject, whose unwrap() then fails with
# APPLICATION_DATA_AFTER_CLOSE_NOTIFY: connection_lost() gets that SSLError and
# eof_received() is never called.
@pytest.mark.ferroloop_only
@pytest.mark.parametrize("paused", [False, True], ids=["reading", "paused"])
def test_close_discards_data_the_peer_sends_before_its_close_notify(loop, run, paused):
    async def main():
        async with _tls_client(loop) as (transport, proto, server):
            transport.write(b"ping")
            assert await server.read() == b"ping"
            if paused:
                transport.pause_reading()
            transport.close()
            assert await server.read() == b""  # the client's close_notify
            await server.write(b"trailing")
            await server.unwrap()
            exc = await asyncio.wait_for(proto.lost, 10)
        return exc, proto.eof, bytes(proto.data)

    assert run(main()) == (None, True, b"")


# asyncio's SSLProtocol calls data_received, which this protocol lacks.
@pytest.mark.ferroloop_only
@pytest.mark.parametrize("upgrade", [False, True], ids=["ssl", "start_tls"])
def test_base_protocol_with_get_buffer_reads_decrypted_data_into_its_buffer(loop, run, upgrade):
    payload = bytes(range(256)) * 20

    async def serve(reader, writer):
        if upgrade:
            # The answer first: a ClientHello read with "start" would stay in the reader.
            await reader.readexactly(5)
            writer.write(b"ok")
            await writer.drain()
            await writer.start_tls(tls.server_context())
        writer.write(payload)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(
            serve, "127.0.0.1", 0, ssl=None if upgrade else tls.server_context()
        )
        async with server:
            address = server.sockets[0].getsockname()
            proto = net.BaseBuffered(loop, 100)
            if upgrade:
                transport, _ = await loop.create_connection(lambda: proto, *address)
                transport.write(b"start")
                while proto.received != b"ok":
                    await asyncio.sleep(0.001)
                del proto.received[:]
                transport = await loop.start_tls(
                    transport, proto, tls.client_context(), server_hostname=tls.HOSTNAME
                )
            else:
                transport, _ = await loop.create_connection(
                    lambda: proto, *address, ssl=tls.client_context(), server_hostname=tls.HOSTNAME
                )
            await asyncio.wait_for(proto.eof, 10)
            transport.close()
            await asyncio.wait_for(proto.lost, 10)
        return bytes(proto.received) == payload

    assert run(main())


# asyncio's flush after close() reads what the SSLObject holds into data_received.
@pytest.mark.ferroloop_only
def test_no_data_received_after_close(loop, run):
    async def main():
        async with _tls_client(loop) as (transport, proto, server):
            transport.pause_reading()
            await server.write(b"late")
            await asyncio.sleep(0.05)  # received and held while reading is paused
            transport.resume_reading()
            transport.close()
            assert await server.read() == b""  # the client's close_notify
            await server.unwrap()
            exc = await asyncio.wait_for(proto.lost, 10)
        return exc, bytes(proto.data)

    assert run(main()) == (None, b"")


class _WritesAndCloses(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"bye")
        transport.close()


# Both loops: a close() in connection_made() still sends what was written first.
def test_write_then_close_in_connection_made_sends_the_data(loop, run):
    async def main():
        server = await loop.create_server(
            _WritesAndCloses, "127.0.0.1", 0, ssl=tls.server_context()
        )
        async with server:
            sock = socket.socket()
            sock.setblocking(False)
            with sock:
                await loop.sock_connect(sock, server.sockets[0].getsockname())
                client = _BioPeer(loop, sock, tls.client_context(), server_side=False)
                await client.handshake()
                received = bytearray()
                while chunk := await client.read():
                    received += chunk
                await client.unwrap()
        return bytes(received)

    assert run(main()) == b"bye"
