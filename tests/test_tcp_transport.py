"""The stream transport over TCP (IPv4, IPv6) and Unix sockets, seen through its protocol.

Most cases wrap one end of a connected socket pair in a transport (``create_connection(sock=)``
or ``create_unix_connection(sock=)``) and drive the other end as a plain socket, so what the
peer sees is measured independently of the transport under test.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from support import net

CHUNK = 64 * 1024


class FlowProtocol(net.RecordingProtocol):
    """RecordingProtocol with an Event that is clear while writing is paused."""

    def __init__(self, loop, **kwargs):
        super().__init__(loop, **kwargs)
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self):
        super().pause_writing()
        self.writable.clear()

    def resume_writing(self):
        super().resume_writing()
        self.writable.set()


async def _over(loop, kind, sock, factory=None):
    factory = factory or (lambda: FlowProtocol(loop))
    return await net.wrap(loop, kind, factory, sock)


def _fill(transport: asyncio.Transport, total: int, seed: int = 0) -> bytes:
    """Write ``total`` bytes at once; with the peer not reading most of it stays buffered."""
    data = net.payload(total, seed)
    transport.write(data)
    return data


# --- bulk transfer ----------------------------------------------------------------------


class BufferedCollector(asyncio.BufferedProtocol):
    """Receives straight into one preallocated buffer through get_buffer/buffer_updated."""

    def __init__(self, loop, capacity: int):
        self.buffer = bytearray(capacity + 1)  # one spare byte to read the EOF into
        self.filled = 0
        self.sizehints: list[int] = []
        self.events: list[str] = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        view = memoryview(self.buffer)[self.filled :]
        assert len(view), "peer sent more than expected"
        return view

    def buffer_updated(self, nbytes):
        assert nbytes > 0
        self.filled += nbytes

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_echo_16mib_protocol(loop, run, kind, tmp_path):
    data = net.payload(16 * net.MiB, seed=16)

    async def main():
        async with await net.start_server(loop, kind, net.EchoProtocol, tmp_path) as server:
            transport, proto = await net.connect(
                loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            transport.write(data)
            transport.write_eof()
            assert await proto.lost is None
            return proto

    proto = run(main(), timeout=30)
    assert len(proto.data) == len(data)
    assert net.digest(proto.data) == net.digest(data)
    assert proto.events[0] == "made"
    assert proto.events[-2:] == ["eof", "lost"]
    assert proto.lost_exc == [None]


def test_echo_16mib_buffered_protocol(loop, run, kind, tmp_path):
    data = net.payload(16 * net.MiB, seed=17)
    servers: list[net.BufferedEchoProtocol] = []

    def server_factory():
        servers.append(net.BufferedEchoProtocol())
        return servers[-1]

    async def main():
        async with await net.start_server(loop, kind, server_factory, tmp_path) as server:
            transport, proto = await net.connect(
                loop, kind, lambda: BufferedCollector(loop, len(data)), net.address_of(server)
            )
            transport.write(data)
            transport.write_eof()
            assert await proto.lost is None
            return proto

    proto = run(main(), timeout=30)
    assert proto.filled == len(data)
    assert net.digest(proto.buffer[: proto.filled]) == net.digest(data)
    assert proto.events == ["made", "eof", "lost"]
    assert len(servers) == 1 and servers[0].sizehints


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_buffered_protocol_get_buffer_sizehint_is_minus_one(loop, run, pair, kind):
    # asyncio always calls get_buffer(-1): "any size will do".
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours, lambda: BufferedCollector(loop, 1024))
        peer.send(b"x" * 100)
        peer.close()
        await proto.lost
        return proto

    proto = run(main())
    assert proto.filled == 100
    assert proto.sizehints and set(proto.sizehints) == {-1}


def test_echo_16mib_streams(loop, run, kind, tmp_path):
    data = net.payload(16 * net.MiB, seed=18)

    async def main():
        server = await net.start_stream_server(kind, net.stream_echo, tmp_path)
        async with server:
            reader, writer = await net.open_connection(kind, net.address_of(server))

            async def send():
                for i in range(0, len(data), 256 * 1024):
                    writer.write(data[i : i + 256 * 1024])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            echoed = await reader.read()
            await sender
            writer.close()
            await writer.wait_closed()
            return echoed

    echoed = run(main(), timeout=30)
    assert len(echoed) == len(data)
    assert net.digest(echoed) == net.digest(data)


class SizesProtocol(net.RecordingProtocol):
    """RecordingProtocol that also keeps the size of every data_received call."""

    def __init__(self, loop):
        super().__init__(loop)
        self.sizes: list[int] = []

    def data_received(self, data):
        assert type(data) is bytes
        self.sizes.append(len(data))
        super().data_received(data)


def test_reads_of_changing_sizes_arrive_whole_and_in_order(loop, run, pair, kind):
    # Messages larger and smaller than the ones before them, each sent once the previous one
    # has arrived: ferroloop sizes the object of the next read from the last few (and reads
    # large ones straight into it), so every read must still hand over exactly what came.
    ours, peer = pair
    kib = 1024
    sizes = [
        100 * kib,
        1,
        300 * kib,
        20 * kib,
        130 * kib,
        17 * kib,
        60 * kib,
        5,
        200 * kib,
        16 * kib,
    ]

    async def main():
        transport, proto = await _over(loop, kind, ours, lambda: SizesProtocol(loop))
        sent = bytearray()
        for i, size in enumerate(sizes):
            message = net.payload(size, seed=i)
            await loop.sock_sendall(peer, message)
            sent += message
            await proto.wait_bytes(len(sent))
        peer.close()
        assert await proto.lost is None
        return bytes(sent), proto

    sent, proto = run(main())
    assert len(proto.data) == len(sent)
    assert net.digest(proto.data) == net.digest(sent)
    assert sum(proto.sizes) == len(sent)
    assert all(0 < n <= 256 * kib for n in proto.sizes)


def test_full_duplex_checksums(loop, run, pair, kind):
    ours, peer = pair
    out = net.payload(4 * net.MiB, seed=1)
    back = net.payload(4 * net.MiB, seed=2)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.write(out)
        transport.write_eof()
        peer_reads = asyncio.ensure_future(net.recv_until_eof(loop, peer))
        await loop.sock_sendall(peer, back)
        peer.shutdown(socket.SHUT_WR)
        got_out = await peer_reads
        assert await proto.lost is None
        return got_out, bytes(proto.data)

    got_out, got_back = run(main())
    assert net.digest(got_out) == net.digest(out)
    assert net.digest(got_back) == net.digest(back)


# --- write, writelines, buffer limits, flow control -------------------------------------


def test_write_and_writelines(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.write(b"w:")
        transport.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        transport.writelines([])
        transport.write(b"")
        transport.write(memoryview(b"xyz")[1:])
        got = await net.recv_exactly(loop, peer, 7)
        transport.close()
        await proto.lost
        return got

    assert run(main()) == b"w:abcyz"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_write_rejects_str(loop, run, pair, kind):
    ours, _ = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        with pytest.raises(
            TypeError, match="^data argument must be a bytes-like object, not 'str'$"
        ):
            transport.write("text")
        with pytest.raises(TypeError):
            transport.writelines([b"ok", "text"])
        transport.close()
        await proto.lost

    run(main())


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_write_buffer_limits(loop, run, pair, kind):
    ours, _ = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        try:
            limits = [transport.get_write_buffer_limits()]
            transport.set_write_buffer_limits(high=100)
            limits.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits(low=1000)
            limits.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits(high=50, low=50)
            limits.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits()
            limits.append(transport.get_write_buffer_limits())
            with pytest.raises(
                ValueError, match=r"^high \(10\) must be >= low \(20\) must be >= 0$"
            ):
                transport.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(ValueError, match=r"^high \(-4\) must be >= low \(-1\)"):
                transport.set_write_buffer_limits(high=-4)
            assert transport.get_write_buffer_limits() == (16384, 65536)
            return limits
        finally:
            transport.close()
            await proto.lost

    # (low, high): low defaults to high // 4, high to 4 * low, both to 16 KiB / 64 KiB.
    assert run(main()) == [(16384, 65536), (25, 100), (1000, 4000), (50, 50), (16384, 65536)]


def test_flow_control_with_slow_reader(loop, run, pair, kind):
    """pause_writing above the high mark, resume_writing at or below the low mark; the
    buffer never grows past high + one write; the peer gets every byte in order."""
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)
    total = 4 * net.MiB
    data = net.payload(total, seed=3)
    sizes = []

    async def main():
        transport, proto = await _over(loop, kind, ours)
        low, high = transport.get_write_buffer_limits()
        reader = asyncio.ensure_future(net.recv_slowly(loop, peer, total))
        for i in range(0, total, CHUNK):
            await asyncio.wait_for(proto.writable.wait(), 10)
            transport.write(data[i : i + CHUNK])
            sizes.append(transport.get_write_buffer_size())
        received = await reader
        for _ in range(100):  # the last resume_writing follows the last send
            if transport.get_write_buffer_size() == 0 and proto.writable.is_set():
                break
            await asyncio.sleep(0.01)
        transport.close()
        await proto.lost
        return received, proto, low, high

    received, proto, low, high = run(main(), timeout=30)
    assert net.digest(received) == net.digest(data)
    assert proto.pauses, "the slow reader never made the transport pause writing"
    assert len(proto.pauses) == len(proto.resumes)
    flow = [e for e in proto.events if e.endswith("_writing")]
    assert flow == ["pause_writing", "resume_writing"] * len(proto.pauses)
    assert all(size > high for size in proto.pauses)
    assert all(size <= low for size in proto.resumes)
    assert max(sizes) <= high + CHUNK


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_set_write_buffer_limits_pauses_at_once(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.set_write_buffer_limits(high=8 * net.MiB)
        data = _fill(transport, net.MiB)
        buffered = transport.get_write_buffer_size()
        assert 0 < buffered <= net.MiB
        assert proto.pauses == []
        transport.set_write_buffer_limits(high=1000)
        assert proto.pauses == [buffered]  # called synchronously, before any I/O
        received = await net.recv_exactly(loop, peer, len(data))
        await asyncio.wait_for(proto.writable.wait(), 5)
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await proto.lost
        return received == data, proto.resumes

    same, resumes = run(main())
    assert same
    assert len(resumes) == 1 and resumes[0] <= 250


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_get_write_buffer_size_tracks_unsent_data(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        assert transport.get_write_buffer_size() == 0
        transport.write(b"small")
        assert transport.get_write_buffer_size() == 0  # sent at once, nothing buffered
        data = _fill(transport, 2 * net.MiB)
        size = transport.get_write_buffer_size()
        assert 0 < size <= len(data)
        await net.recv_exactly(loop, peer, 5 + len(data))
        for _ in range(100):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await proto.lost

    run(main())


# --- reading ----------------------------------------------------------------------------


def test_pause_and_resume_reading(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        assert transport.is_reading() is True
        transport.pause_reading()
        transport.pause_reading()  # already paused: no-op
        assert transport.is_reading() is False
        peer.send(b"held back")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        transport.resume_reading()  # already reading: no-op
        assert transport.is_reading() is True
        got = await proto.wait_bytes(9)
        transport.close()
        assert transport.is_reading() is False
        transport.pause_reading()  # both are no-ops on a closing transport
        transport.resume_reading()
        assert transport.is_reading() is False
        await proto.lost
        return got

    assert run(main()) == b"held back"


def test_eof_received_false_closes_transport(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        peer.send(b"bye")
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        assert transport.is_closing()
        assert await net.recv_until_eof(loop, peer) == b""
        return proto.events, bytes(proto.data)

    events, data = run(main())
    assert events == ["made", "data", "eof", "lost"]
    assert data == b"bye"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_eof_received_true_keeps_writing_side_open(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _over(
            loop, kind, ours, lambda: FlowProtocol(loop, keep_open_on_eof=True)
        )
        peer.shutdown(socket.SHUT_WR)
        await proto.eof
        await asyncio.sleep(0.02)
        assert not proto.lost.done()
        assert not transport.is_closing()
        transport.write(b"still writable")
        transport.close()
        got = await net.recv_until_eof(loop, peer)
        assert await proto.lost is None
        return got, proto.events

    got, events = run(main())
    assert got == b"still writable"
    assert events == ["made", "eof", "lost"]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_data_received_exception_is_fatal(loop, run, pair, kind, loop_errors):
    ours, peer = pair
    error = ValueError("protocol bug")

    class Failing(net.RecordingProtocol):
        def data_received(self, data):
            raise error

    async def main():
        transport, proto = await _over(loop, kind, ours, lambda: Failing(loop))
        peer.send(b"trigger")
        exc = await proto.lost
        assert transport.is_closing()
        assert await net.recv_until_eof(loop, peer) == b""  # our side closed the socket
        return transport, proto, exc

    transport, proto, exc = run(main())
    assert exc is error
    assert proto.lost_exc == [error]
    assert len(loop_errors) == 1
    context = loop_errors[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is proto


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_get_buffer_returning_empty_buffer_is_fatal(loop, run, pair, kind, loop_errors):
    ours, peer = pair

    class Empty(BufferedCollector):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        transport, proto = await _over(loop, kind, ours, lambda: Empty(loop, 0))
        peer.send(b"trigger")
        return await proto.lost

    exc = run(main())
    assert isinstance(exc, RuntimeError)
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"] == "Fatal error: protocol.get_buffer() call failed."
    assert loop_errors[0]["exception"] is exc


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_set_protocol_switches_receiver(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, first = await _over(loop, kind, ours)
        peer.send(b"one")
        await first.wait_bytes(3)
        second = BufferedCollector(loop, 100)
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        peer.send(b"two")
        peer.close()
        assert await second.lost is None
        return first, second

    first, second = run(main())
    assert first.data == b"one" and first.events == ["made", "data"]
    assert second.buffer[: second.filled] == b"two"
    assert second.events == ["eof", "lost"]


# --- half-close, close, abort -----------------------------------------------------------


def test_write_eof_half_close_peer_reply_arrives(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        assert transport.can_write_eof() is True
        transport.write(b"request")
        transport.write_eof()
        transport.write_eof()  # a second call is a no-op
        assert not transport.is_closing()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"too late")
        request = await net.recv_until_eof(loop, peer)
        await loop.sock_sendall(peer, b"reply after EOF")
        peer.close()
        assert await proto.lost is None
        return request, bytes(proto.data), proto.events

    request, reply, events = run(main())
    assert request == b"request"
    assert reply == b"reply after EOF"
    assert events == ["made", "data", "eof", "lost"]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_write_eof_waits_for_buffered_data(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.set_write_buffer_limits(high=16 * net.MiB)
        data = _fill(transport, 2 * net.MiB)
        assert transport.get_write_buffer_size() > 0
        transport.write_eof()
        got = await net.recv_until_eof(loop, peer)
        peer.close()
        await proto.lost
        return got == data

    assert run(main())


def test_close_flushes_pending_data_then_closes(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        data = _fill(transport, 2 * net.MiB)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        transport.close()  # idempotent
        assert transport.is_closing()
        await asyncio.sleep(0.05)
        assert not proto.lost.done(), "connection_lost before the buffer was flushed"
        got = await net.recv_until_eof(loop, peer)
        assert await proto.lost is None
        return got == data, proto.lost_exc

    same, lost = run(main())
    assert same
    assert lost == [None]


def test_abort_drops_pending_data(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        data = _fill(transport, 4 * net.MiB)
        transport.abort()
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        assert await proto.lost is None  # without the peer reading anything
        transport.abort()
        transport.close()
        got = await net.recv_until_eof(loop, peer)
        await asyncio.sleep(0)
        return data, got, proto.lost_exc

    data, got, lost = run(main())
    assert len(got) < len(data)
    assert got == data[: len(got)]
    assert lost == [None]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_close_then_abort_drops_the_rest(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        _fill(transport, 4 * net.MiB)
        transport.close()
        await asyncio.sleep(0)
        assert not proto.lost.done()
        transport.abort()
        assert await proto.lost is None
        return proto.lost_exc

    assert run(main()) == [None]


def test_peer_reset_reaches_connection_lost_once(loop, run, pair, kind):
    # Closing a socket with unread data in its receive queue resets the connection.
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.write(b"never read")
        await asyncio.sleep(0.02)
        peer.close()
        exc = await proto.lost
        transport.close()
        transport.abort()
        await asyncio.sleep(0.01)
        return exc, proto.lost_exc

    exc, lost = run(main())
    assert isinstance(exc, ConnectionResetError)
    assert lost == [exc]  # OSErrors are not reported to the exception handler


# --- writes after close -----------------------------------------------------------------


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_writes_after_close_are_dropped_and_logged(loop, run, pair, kind, caplog):
    # asyncio counts writes made after the connection was given up; from the fifth on each
    # one logs a warning, and none of them reaches the peer.
    ours, peer = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        transport.write(b"before")
        transport.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                transport.write(b"after")
        await proto.lost
        return await net.recv_until_eof(loop, peer)

    assert run(main()) == b"before"
    warnings = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert warnings == ["socket.send() raised exception."] * 3


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_write_after_close_with_pending_data_is_still_sent(loop, run, pair, kind):
    # asyncio gives the connection up only when its buffer is empty: until then close()
    # still accepts writes, and they go out before the connection closes.
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _over(loop, kind, ours)
        data = _fill(transport, net.MiB)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        transport.write(b"late")
        got = await net.recv_until_eof(loop, peer)
        await proto.lost
        return got == data + b"late"

    assert run(main())


# --- introspection ----------------------------------------------------------------------


def test_get_extra_info(loop, run, pair, kind):
    ours, peer = pair
    fileno = ours.fileno()
    expected_sockname = ours.getsockname()
    expected_peername = ours.getpeername()

    async def main():
        transport, proto = await _over(loop, kind, ours)
        sock = transport.get_extra_info("socket")
        info = {
            "fileno": sock.fileno(),
            "family": sock.family,
            "type": sock.type,
            "so_type": sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
            "sock_sockname": sock.getsockname(),
            "sockname": transport.get_extra_info("sockname"),
            "peername": transport.get_extra_info("peername"),
            "peercert": transport.get_extra_info("peercert"),
            "sslcontext": transport.get_extra_info("sslcontext"),
            "default": transport.get_extra_info("no such key", "fallback"),
        }
        transport.close()
        await proto.lost
        return info

    info = run(main())
    assert info == {
        "fileno": fileno,
        "family": net.FAMILY[kind],
        "type": socket.SOCK_STREAM,
        "so_type": socket.SOCK_STREAM,
        "sock_sockname": expected_sockname,
        "sockname": expected_sockname,
        "peername": expected_peername,
        "peercert": None,
        "sslcontext": None,
        "default": "fallback",
    }


def test_server_side_extra_info(loop, run, kind, tmp_path):
    """Each end's peer address is the other's local one, and it is one object whether
    looked up again, through ``_extra`` or after close, as asyncio keeps the one it got."""
    accepted = net.Factory(loop)

    async def main():
        async with await net.start_server(loop, kind, accepted, tmp_path) as server:
            transport, proto = await net.connect(
                loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            server_side = await accepted.nth(0)
            ends = (server_side.transport, transport)
            peers = [t.get_extra_info("peername") for t in ends]
            result = (
                peers[0],
                transport.get_extra_info("sockname"),
                server_side.transport.get_extra_info("sockname"),
                peers[1],
            )
            pairs = list(zip(ends, peers, strict=True))
            same = [t.get_extra_info("peername") is p for t, p in pairs]
            same += [t._extra["peername"] is p for t, p in pairs]
            transport.close()
            await server_side.lost
            same += [t.get_extra_info("peername") is p for t, p in pairs]
            return result, same

    (server_peer, client_name, server_name, client_peer), same = run(main())
    assert server_peer == client_name
    assert client_peer == server_name
    assert all(same)


def test_extra_info_dict(loop, run, kind, tmp_path):
    """asyncio's private ``_extra`` dict: its keys in asyncio's order on both ends, the
    same entries ``get_extra_info`` gives, kept after close; an unhashable name raises
    as a dict lookup does."""
    accepted = net.Factory(loop)

    def entries(transport):
        lookups = {k: transport.get_extra_info(k) for k in ("socket", "sockname", "peername")}
        try:
            transport.get_extra_info([])
        except TypeError:
            lookups["unhashable"] = "TypeError"
        return lookups

    async def main():
        async with await net.start_server(loop, kind, accepted, tmp_path) as server:
            client, proto = await net.connect(
                loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            server_side = await accepted.nth(0)
            accepted_t = server_side.transport
            before = entries(accepted_t), entries(client)
            dicts = accepted_t._extra, client._extra
            same = accepted_t._extra is dicts[0] and client._extra is dicts[1]
            client.close()
            await server_side.lost
            after = entries(accepted_t), entries(client)
        return before, dicts, same, after

    before, dicts, same, after = run(main())
    assert same
    assert after == before
    assert list(dicts[0]) == ["peername", "socket", "sockname"]
    assert list(dicts[1]) == ["socket", "sockname", "peername"]
    for looked_up, extra in zip(before, dicts, strict=True):
        assert looked_up.pop("unhashable") == "TypeError"
        assert looked_up == extra


def test_extra_info_socket_first_asked_after_close(loop, run, kind, tmp_path):
    """A transport whose ``socket`` entry nobody read while it was open still has it
    after closing: asyncio's TransportSocket of the closed socket."""
    accepted = net.Factory(loop)

    async def main():
        async with await net.start_server(loop, kind, accepted, tmp_path) as server:
            client, proto = await net.connect(
                loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            server_side = await accepted.nth(0)
            client.close()
            await server_side.lost
            await proto.lost
        return [
            (type(t.get_extra_info("socket")).__name__, t.get_extra_info("socket").fileno())
            for t in (server_side.transport, client)
        ]

    assert run(main()) == [("TransportSocket", -1)] * 2


@pytest.mark.parametrize("kind", net.kind_params("tcp4", "tcp6"))
def test_tcp_nodelay_on_by_default(loop, loop_kind, run, kind, tmp_path):
    accepted = net.Factory(loop)

    def nodelay(transport):
        sock = transport.get_extra_info("socket")
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    async def over_socket(proto_number: int) -> bool:
        with net.listening_socket(kind, tmp_path) as listener:
            ours = socket.socket(net.FAMILY[kind], socket.SOCK_STREAM, proto_number)
            ours.connect(listener.getsockname())
            peer, _ = listener.accept()
        with peer:
            transport, proto = await net.wrap(loop, kind, lambda: net.RecordingProtocol(loop), ours)
            flag = nodelay(transport)
            transport.close()
            await proto.lost
        return flag

    async def main():
        async with await net.start_server(loop, kind, accepted, tmp_path) as server:
            client, proto = await net.connect(
                loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
            )
            server_side = await accepted.nth(0)
            flags = [nodelay(client), nodelay(server_side.transport)]
            client.close()
            await server_side.lost
        # sock=: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, so a
        # socket made with the default proto=0 keeps Nagle's algorithm there; ferroloop
        # (as uvloop) turns it off on every TCP stream.
        flags.append(await over_socket(socket.IPPROTO_TCP))
        flags.append(await over_socket(0))
        return flags

    assert run(main()) == [True, True, True, loop_kind == "ferroloop"]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_repr_and_is_closing_through_the_lifecycle(loop, run, pair, kind):
    ours, _ = pair

    async def main():
        transport, proto = await _over(loop, kind, ours)
        states = [(transport.is_closing(), isinstance(repr(transport), str))]
        transport.close()
        states.append((transport.is_closing(), isinstance(repr(transport), str)))
        await proto.lost
        states.append((transport.is_closing(), isinstance(repr(transport), str)))
        return states

    assert run(main()) == [(False, True), (True, True), (True, True)]
