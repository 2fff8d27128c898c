"""Behaviour ferroloop shares with uvloop where asyncio has none, or has another.

Programs written against uvloop rely on these. Cases asyncio agrees with run on both
loops; the rest are ``ferroloop_only``, each saying what asyncio does instead
(listed in docs/architecture.md, "Known differences from asyncio").
"""

from __future__ import annotations

import asyncio
import contextvars
import socket

import pytest
from support import net, tls


@pytest.mark.ferroloop_only  # asyncio calls data_received, which this protocol lacks
@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_base_protocol_with_get_buffer_reads_into_its_buffer(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await net.wrap(loop, kind, lambda: net.BaseBuffered(loop, 50), ours)
        payload = bytes(range(256)) * 40  # more than one buffer's worth
        await loop.sock_sendall(peer, payload)
        peer.shutdown(socket.SHUT_WR)
        await proto.eof
        transport.close()
        await proto.lost
        return bytes(proto.received) == payload

    assert run(main())


class _Both:
    """Not an asyncio protocol subclass; has data_received and get_buffer."""

    def __init__(self, loop):
        self.data = bytearray()
        self.buffer_calls = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        pass

    def data_received(self, data):
        self.data += data

    def get_buffer(self, sizehint):
        self.buffer_calls += 1
        return bytearray(16)

    def buffer_updated(self, nbytes):
        pass

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_protocol_with_data_received_gets_data_received(loop, run, pair, kind):
    # A protocol asyncio can serve gets asyncio's calls, get_buffer or not.
    ours, peer = pair

    async def main():
        transport, proto = await net.wrap(loop, kind, lambda: _Both(loop), ours)
        await loop.sock_sendall(peer, b"hello")
        peer.close()
        await proto.lost
        return bytes(proto.data), proto.buffer_calls

    assert run(main()) == (b"hello", 0)


@pytest.mark.ferroloop_only  # asyncio leaves Nagle's algorithm on when sock.proto is 0
def test_nodelay_on_connections_of_a_server_given_a_proto_0_socket(loop, run):
    accepted = net.Factory(loop)

    async def main():
        listener = socket.socket()  # proto=0, as most programs make them
        listener.bind(("127.0.0.1", 0))
        server = await loop.create_server(accepted, sock=listener)
        async with server:
            client, proto = await net.connect(
                loop, "tcp4", lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            server_side = await accepted.nth(0)
            sock = server_side.transport.get_extra_info("socket")
            flag = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            client.close()
            await server_side.lost
        return flag != 0

    assert run(main())


_cvar: contextvars.ContextVar[str] = contextvars.ContextVar("_cvar", default="outer")


class _ContextProtocol(asyncio.Protocol):
    """Records the context variable's value in each callback."""

    def __init__(self, loop):
        self.seen: dict[str, str] = {}
        self.paused = loop.create_future()
        self.resumed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.seen["connection_made"] = _cvar.get()

    def data_received(self, data):
        self.seen["data_received"] = _cvar.get()

    def pause_writing(self):
        self.seen["pause_writing"] = _cvar.get()
        self.paused.set_result(None)

    def resume_writing(self):
        self.seen["resume_writing"] = _cvar.get()
        self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.seen["connection_lost"] = _cvar.get()
        self.lost.set_result(exc)


@pytest.mark.ferroloop_only  # asyncio runs these in the context of the caller of write()/close()
@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_protocol_callbacks_run_in_the_transports_context(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        _cvar.set("made")
        transport, proto = await net.wrap(loop, kind, lambda: _ContextProtocol(loop), ours)

        async def write_elsewhere():
            _cvar.set("writer")
            transport.set_write_buffer_limits(high=256, low=128)
            while not transport.get_write_buffer_size():
                transport.write(b"q" * 16384)

        await loop.create_task(write_elsewhere())
        await proto.paused
        while not proto.resumed.done():
            try:
                peer.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await proto.resumed

        def close_elsewhere():
            _cvar.set("closer")
            transport.close()

        loop.call_soon(close_elsewhere)
        await proto.lost
        return proto.seen

    assert run(main()) == {
        "connection_made": "made",
        "pause_writing": "made",
        "resume_writing": "made",
        "connection_lost": "made",
    }


class _ContextDatagram(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_lost(self, exc):
        self.lost.set_result(_cvar.get())


@pytest.mark.ferroloop_only  # asyncio runs connection_lost in the context of close()'s caller
def test_datagram_connection_lost_runs_in_the_transports_context(loop, run):
    async def main():
        _cvar.set("made")
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _ContextDatagram(loop), local_addr=("127.0.0.1", 0)
        )

        def close_elsewhere():
            _cvar.set("closer")
            transport.close()

        loop.call_soon(close_elsewhere)
        return await proto.lost

    assert run(main()) == "made"


@pytest.mark.ferroloop_only  # asyncio reads, after resume_reading(), in its caller's context
@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_reading_resumed_elsewhere_stays_in_the_transports_context(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        _cvar.set("made")
        transport, proto = await net.wrap(loop, kind, lambda: _ContextProtocol(loop), ours)
        transport.pause_reading()
        peer.send(b"hello")

        def resume_elsewhere():
            _cvar.set("resumer")
            transport.resume_reading()

        loop.call_soon(resume_elsewhere)
        while "data_received" not in proto.seen:
            await asyncio.sleep(0.001)
        transport.close()
        await proto.lost
        return proto.seen["data_received"]

    assert run(main()) == "made"


@pytest.mark.ferroloop_only  # asyncio's SSLProtocol calls these in the caller's context
def test_tls_protocol_callbacks_run_in_the_connections_context(loop, run, tmp_path):
    accepted = net.Factory(loop)

    async def main():
        server = await net.start_server(loop, "tcp4", accepted, tmp_path, ssl=tls.server_context())
        async with server:
            _cvar.set("made")
            transport, proto = await net.connect(
                loop,
                "tcp4",
                lambda: _ContextProtocol(loop),
                net.address_of(server),
                ssl=tls.client_context(),
                server_hostname=tls.HOSTNAME,
            )
            server_side = await accepted.nth(0)
            server_side.transport.pause_reading()

            async def write_elsewhere():
                _cvar.set("writer")
                transport.set_write_buffer_limits(high=256, low=128)
                while not transport.get_write_buffer_size():
                    transport.write(b"q" * 16384)

            await loop.create_task(write_elsewhere())
            await proto.paused

            transport.pause_reading()
            server_side.transport.write(b"hello")
            await asyncio.sleep(0.05)

            def resume_elsewhere():
                _cvar.set("resumer")
                transport.resume_reading()

            loop.call_soon(resume_elsewhere)
            while "data_received" not in proto.seen:
                await asyncio.sleep(0.001)
            transport.abort()
            await proto.lost
            server_side.transport.abort()
            await server_side.lost
        return proto.seen["pause_writing"], proto.seen["data_received"]

    assert run(main()) == ("made", "made")
