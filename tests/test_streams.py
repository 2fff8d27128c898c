"""asyncio's streams over the loop's TCP and Unix transports."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from support import net


@pytest.fixture(params=net.kind_params())
def kind(request):
    return request.param


async def _serve(kind, tmp_path, callback, **kwargs):
    return await net.start_stream_server(kind, callback, tmp_path, **kwargs)


def _sends(script: bytes):
    """A server callback that writes ``script`` and closes."""

    async def callback(reader, writer):
        writer.write(script)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return callback


def test_line_round_trip(loop, run, kind, tmp_path):
    async def upper(reader, writer):
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await _serve(kind, tmp_path, upper) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            peer = writer.get_extra_info("peername")
            assert (peer if kind == "unix" else peer[:2]) == net.address_of(server)
            writer.write(b"hello streams\n")
            await writer.drain()
            reply = await reader.readline()
            eof = await reader.read()
            writer.close()
            await writer.wait_closed()
            return reply, eof

    assert run(main()) == (b"HELLO STREAMS\n", b"")


def test_reading_methods(loop, run, kind, tmp_path):
    script = b"first line\nrecord|12345rest of the data"

    async def main():
        async with await _serve(kind, tmp_path, _sends(script)) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            parts = [
                await reader.readline(),
                await reader.readuntil(b"|"),
                await reader.readexactly(5),
                await reader.read(4),
            ]
            assert not reader.at_eof()
            parts.append(await reader.read())
            assert reader.at_eof()
            parts.append(await reader.read())
            parts.append(await reader.readline())
            writer.close()
            await writer.wait_closed()
            return parts

    assert run(main()) == [
        b"first line\n",
        b"record|",
        b"12345",
        b"rest",
        b" of the data",
        b"",
        b"",
    ]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_incomplete_read_at_eof(loop, run, kind, tmp_path):
    async def main():
        async with await _serve(kind, tmp_path, _sends(b"abc")) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            with pytest.raises(asyncio.IncompleteReadError) as short:
                await reader.readexactly(10)
            writer.close()
            await writer.wait_closed()
            reader, writer = await net.open_connection(kind, net.address_of(server))
            with pytest.raises(asyncio.IncompleteReadError) as unterminated:
                await reader.readuntil(b"\n")
            writer.close()
            await writer.wait_closed()
            return short.value, unterminated.value

    short, unterminated = run(main())
    assert (short.partial, short.expected) == (b"abc", 10)
    assert (unterminated.partial, unterminated.expected) == (b"abc", None)


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_limit_overrun(loop, run, kind, tmp_path):
    async def main():
        async with await _serve(kind, tmp_path, _sends(b"x" * 64 + b"\n")) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server), limit=16)
            with pytest.raises(asyncio.LimitOverrunError) as overrun:
                await reader.readuntil(b"\n")
            writer.close()
            await writer.wait_closed()
            reader, writer = await net.open_connection(kind, net.address_of(server), limit=16)
            with pytest.raises(ValueError, match="^Separator is (not )?found"):
                await reader.readline()
            writer.close()
            await writer.wait_closed()
            return overrun.value

    assert run(main()).consumed >= 16


def test_drain_applies_flow_control(loop, run, kind, tmp_path):
    total = 4 * net.MiB
    chunk = 64 * 1024
    data = net.payload(total, seed=5)
    received = bytearray()

    async def slow_reader(reader, writer):
        while len(received) < total:
            block = await reader.read(64 * 1024)
            if not block:
                break
            received.extend(block)
            await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await _serve(kind, tmp_path, slow_reader) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            transport = writer.transport
            low, high = transport.get_write_buffer_limits()
            before_drain, after_drain = [], []
            for i in range(0, total, chunk):
                writer.write(data[i : i + chunk])
                before_drain.append(transport.get_write_buffer_size())
                await writer.drain()
                after_drain.append(transport.get_write_buffer_size())
            assert await reader.read() == b""  # the server closes once it has it all
            writer.close()
            await writer.wait_closed()
            return high, before_drain, after_drain

    high, before_drain, after_drain = run(main(), timeout=30)
    assert net.digest(received) == net.digest(data)
    assert max(before_drain) > high, "the slow reader never made drain() wait"
    assert max(after_drain) <= high
    assert max(before_drain) <= high + chunk


def test_write_eof_then_reply(loop, run, kind, tmp_path):
    async def reply_after_eof(reader, writer):
        request = await reader.read()
        writer.write(b"got %d bytes" % len(request))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await _serve(kind, tmp_path, reply_after_eof) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            assert writer.can_write_eof()
            writer.write(b"x" * 1000)
            writer.write_eof()
            reply = await reader.read()
            writer.close()
            await writer.wait_closed()
            return reply

    assert run(main()) == b"got 1000 bytes"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_close_and_wait_closed(loop, run, kind, tmp_path):
    seen = []

    async def record(reader, writer):
        seen.append(await reader.read())
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await _serve(kind, tmp_path, record) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            writer.write(b"last words")
            writer.close()
            assert writer.is_closing()
            await writer.wait_closed()
            await writer.wait_closed()  # again: returns at once
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            return seen

    assert run(main()) == [b"last words"]


@pytest.mark.parametrize("kind", net.kind_params("tcp4", "tcp6"))
def test_open_connection_refused(loop, run, kind):
    port = net.free_port(net.FAMILY[kind], net.HOST[kind])

    async def main():
        await asyncio.open_connection(net.HOST[kind], port)

    with pytest.raises(ConnectionRefusedError) as info:
        run(main())
    assert info.value.errno == errno.ECONNREFUSED


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_stream_transport_socket_is_the_connection(loop, run, kind, tmp_path):
    async def main():
        async with await _serve(kind, tmp_path, _sends(b"")) as server:
            reader, writer = await net.open_connection(kind, net.address_of(server))
            sock = writer.get_extra_info("socket")
            info = (sock.family, sock.type)
            await reader.read()
            writer.close()
            await writer.wait_closed()
            return info

    assert run(main()) == (net.FAMILY[kind], socket.SOCK_STREAM)
