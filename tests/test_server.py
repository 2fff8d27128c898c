"""loop.create_server and the Server object: binding, serving, closing."""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import sys

import pytest
from support import net

needs_313 = pytest.mark.skipif(sys.version_info < (3, 13), reason="new in Python 3.13")

# Server.wait_closed waits for the server's connections only from 3.12.1 on; before, it
# returned at once once the server was closed.
WAIT_CLOSED_WAITS_FOR_CLIENTS = sys.version_info >= (3, 12, 1)


@pytest.fixture(params=net.kind_params("tcp4", "tcp6"))
def kind(request):
    return request.param


async def _round_trip(loop, kind, address, message: bytes = b"ping") -> bytes:
    """Connect, send ``message``, half-close and return what the echo server sent back."""
    transport, proto = await net.connect(loop, kind, lambda: net.RecordingProtocol(loop), address)
    transport.write(message)
    transport.write_eof()
    assert await proto.lost is None
    return bytes(proto.data)


def _refused(kind: str, address) -> bool:
    """Whether a plain connect to ``address`` is refused (nothing listens there)."""
    with socket.socket(net.FAMILY[kind], socket.SOCK_STREAM) as s:
        s.settimeout(5)
        return s.connect_ex(address) == errno.ECONNREFUSED


def test_create_server_port_zero(loop, run, kind):
    async def main():
        server = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0)
        try:
            assert server.is_serving()
            assert server.get_loop() is loop
            assert isinstance(repr(server), str)
            (sock,) = server.sockets
            assert sock.family == net.FAMILY[kind]
            assert sock.type == socket.SOCK_STREAM
            host, port = sock.getsockname()[:2]
            assert host == net.HOST[kind] and port != 0
            return await _round_trip(loop, kind, (host, port))
        finally:
            server.close()
            await server.wait_closed()

    assert run(main()) == b"ping"


@net.needs_ipv6
def test_host_list_binds_every_host(loop, run):
    async def main():
        server = await loop.create_server(net.EchoProtocol, ["127.0.0.1", "::1"], 0)
        async with server:
            names = {s.family: net.address_of(server, i) for i, s in enumerate(server.sockets)}
            assert set(names) == {socket.AF_INET, socket.AF_INET6}
            assert names[socket.AF_INET][0] == "127.0.0.1"
            assert names[socket.AF_INET6][0] == "::1"
            return [
                await _round_trip(loop, "tcp4", names[socket.AF_INET], b"v4"),
                await _round_trip(loop, "tcp6", names[socket.AF_INET6], b"v6"),
            ]

    assert run(main()) == [b"v4", b"v6"]


def test_repeated_host_is_bound_once(loop, run):
    async def main():
        async with await loop.create_server(
            asyncio.Protocol, ["127.0.0.1", "127.0.0.1"], 0
        ) as server:
            return len(server.sockets)

    assert run(main()) == 1


@pytest.mark.parametrize("host", [None, ""], ids=["None", "empty"])
def test_all_interfaces(loop, run, host):
    # Only loopback is ever connected to; the wildcard sockets are inspected, not used.
    async def main():
        async with await loop.create_server(net.EchoProtocol, host, 0) as server:
            names = [s.getsockname()[0] for s in server.sockets]
            v6only = [
                s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                for s in server.sockets
                if s.family == socket.AF_INET6
            ]
            v4 = [i for i, s in enumerate(server.sockets) if s.family == socket.AF_INET]
            port = server.sockets[v4[0]].getsockname()[1]
            echoed = await _round_trip(loop, "tcp4", ("127.0.0.1", port))
            return names, v6only, echoed

    names, v6only, echoed = run(main())
    assert "0.0.0.0" in names
    assert set(names) <= {"0.0.0.0", "::"}
    assert len(names) == len(set(names))
    assert all(v6only)  # each IPv6 wildcard socket is IPv6-only, next to the IPv4 one
    assert echoed == b"ping"


def test_sock_argument(loop, run, kind):
    sock = socket.socket(net.FAMILY[kind], socket.SOCK_STREAM)
    sock.bind((net.HOST[kind], 0))  # not listening yet: the server calls listen()
    address = sock.getsockname()[:2]

    async def main():
        server = await loop.create_server(net.EchoProtocol, sock=sock)
        async with server:
            assert [s.fileno() for s in server.sockets] == [sock.fileno()]
            assert sock.gettimeout() == 0
            echoed = await _round_trip(loop, kind, address)
        return echoed

    try:
        assert run(main()) == b"ping"
        assert sock.fileno() == -1  # closing the server closed the socket it was given
    finally:
        sock.close()


def test_argument_errors(loop, run):
    stream = socket.socket()
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cases = [
        (
            dict(host="127.0.0.1", port=0, sock=stream),
            ValueError,
            "^host/port and sock can not be specified at the same time$",
        ),
        (dict(), ValueError, "^Neither host/port nor sock were specified$"),
        (dict(sock=dgram), ValueError, "^A Stream Socket was expected, got "),
        (
            dict(host="127.0.0.1", port=0, ssl=True),
            TypeError,
            "^ssl argument must be an SSLContext or None$",
        ),
        (
            dict(host="127.0.0.1", port=0, ssl_handshake_timeout=1.0),
            ValueError,
            "^ssl_handshake_timeout is only meaningful with ssl$",
        ),
    ]
    try:
        for kwargs, exc_type, pattern in cases:
            with pytest.raises(exc_type, match=pattern):
                run(loop.create_server(asyncio.Protocol, **kwargs))
        assert stream.fileno() != -1 and dgram.fileno() != -1  # rejected sockets stay open
    finally:
        stream.close()
        dgram.close()


@pytest.mark.parametrize("backlog", [2, 100])
def test_backlog_bounds_the_accept_queue(loop, run, backlog):
    # While the loop is not running nothing is accepted, so the kernel completes at most
    # backlog (+1 on Linux) handshakes and drops further SYNs.
    server = run(loop.create_server(asyncio.Protocol, "127.0.0.1", 0, backlog=backlog))
    address = server.sockets[0].getsockname()
    clients = []
    established = 0
    try:
        for _ in range(6):
            client = socket.socket()
            client.setblocking(False)
            clients.append(client)
            client.connect_ex(address)
            _, writable, _ = select.select([], [client], [], 0.1)
            if writable and client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                established += 1
    finally:
        for client in clients:
            client.close()
        server.close()
        run(asyncio.sleep(0.05))  # let the accepted, already closed connections finish
        run(server.wait_closed())
    if backlog >= 6:
        assert established == 6
    else:
        assert backlog <= established <= backlog + 1


def test_reuse_address(loop, run):
    async def main():
        flags = []
        for reuse in (None, True, False):
            async with await loop.create_server(
                asyncio.Protocol, "127.0.0.1", 0, reuse_address=reuse
            ) as server:
                sock = server.sockets[0]
                flags.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0)
        return flags

    # On by default on POSIX.
    assert run(main()) == [True, True, False]


def test_reuse_port_lets_two_servers_share_a_port(loop, run, kind):
    async def main():
        first = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0, reuse_port=True)
        async with first:
            sock = first.sockets[0]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            port = sock.getsockname()[1]
            second = await loop.create_server(
                net.EchoProtocol, net.HOST[kind], port, reuse_port=True
            )
            async with second:
                assert second.sockets[0].getsockname()[1] == port
                with pytest.raises(OSError) as info:
                    await loop.create_server(asyncio.Protocol, net.HOST[kind], port)
                assert info.value.errno == errno.EADDRINUSE
                return await _round_trip(loop, kind, (net.HOST[kind], port))

    assert run(main()) == b"ping"


def test_address_in_use(loop, run, kind):
    holder = socket.socket(net.FAMILY[kind], socket.SOCK_STREAM)
    holder.bind((net.HOST[kind], 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(OSError) as info:
            run(loop.create_server(asyncio.Protocol, net.HOST[kind], port))
    finally:
        holder.close()
    assert type(info.value) is OSError
    assert info.value.errno == errno.EADDRINUSE
    message = str(info.value)
    assert "error while attempting to bind on address" in message
    assert repr(net.HOST[kind]) in message and str(port) in message
    assert "address already in use" in message


def test_start_serving_false(loop, run, kind):
    # Until start_serving() the socket is bound but not listening: connections are refused.
    async def main():
        server = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0, start_serving=False)
        async with server:
            assert not server.is_serving()
            address = net.address_of(server)
            refused_before = _refused(kind, address)
            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()  # no-op when already serving
            return refused_before, await _round_trip(loop, kind, address)

    assert run(main()) == (True, b"ping")


def test_serve_forever_and_its_cancellation(loop, run, kind):
    async def main():
        server = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0, start_serving=False)
        address = net.address_of(server)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        echoed = await _round_trip(loop, kind, address)
        with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        assert _refused(kind, address)
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()
        await server.wait_closed()
        return echoed

    assert run(main()) == b"ping"


def test_close_keeps_live_connections(loop, run, kind):
    async def main():
        server = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0)
        address = net.address_of(server)
        transport, proto = await net.connect(
            loop, kind, lambda: net.RecordingProtocol(loop), address
        )
        server.close()
        server.close()  # idempotent
        assert not server.is_serving()
        assert server.sockets == ()
        assert _refused(kind, address)
        waiter = loop.create_task(server.wait_closed())
        transport.write(b"still served")
        echoed = await proto.wait_bytes(12)
        await asyncio.sleep(0.02)
        pending_while_client_lives = not waiter.done()
        transport.write_eof()
        await proto.lost
        await waiter
        return echoed, pending_while_client_lives

    echoed, pending = run(main())
    assert echoed == b"still served"
    assert pending is WAIT_CLOSED_WAITS_FOR_CLIENTS


def test_wait_closed_waits_for_close(loop, run, kind):
    async def main():
        server = await loop.create_server(asyncio.Protocol, net.HOST[kind], 0)
        waiter = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.02)
        open_pending = not waiter.done()
        server.close()
        await waiter
        return open_pending

    assert run(main()) is True


def test_async_context_manager(loop, run, kind):
    async def main():
        server = await loop.create_server(net.EchoProtocol, net.HOST[kind], 0)
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            echoed = await _round_trip(loop, kind, net.address_of(server))
        assert not server.is_serving()
        assert server.sockets == ()
        return echoed

    assert run(main()) == b"ping"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_protocol_factory_error_keeps_serving(loop, run, debug, loop_errors):
    # The failed connection is dropped; asyncio reports the error only in debug mode.
    loop.set_debug(debug)
    calls = []

    def factory():
        calls.append(None)
        if len(calls) == 1:
            raise ValueError("no protocol for you")
        return net.EchoProtocol()

    async def main():
        async with await loop.create_server(factory, "127.0.0.1", 0) as server:
            address = net.address_of(server)
            with socket.socket() as first:
                first.setblocking(False)
                await loop.sock_connect(first, address)
                return await _round_trip(loop, "tcp4", address)

    assert run(main()) == b"ping"
    assert len(calls) == 2
    if debug:
        assert [c["message"] for c in loop_errors] == [
            "Error on transport creation for incoming connection"
        ]
        assert str(loop_errors[0]["exception"]) == "no protocol for you"
    else:
        assert loop_errors == []


def test_thousand_concurrent_connections(loop, run):
    count = 1000

    async def client(address, i: int) -> bytes:
        transport, proto = await loop.create_connection(
            lambda: net.RecordingProtocol(loop), *address
        )
        await asyncio.sleep(0)
        transport.write(b"client %d" % i)
        transport.write_eof()
        assert await proto.lost is None
        return bytes(proto.data)

    async def main():
        server = await loop.create_server(net.EchoProtocol, "127.0.0.1", 0, backlog=count)
        async with server:
            address = net.address_of(server)
            return await asyncio.gather(*(client(address, i) for i in range(count)))

    fds = net.open_fds()
    replies = run(main(), timeout=30)
    assert replies == [b"client %d" % i for i in range(count)]
    assert net.open_fds() <= fds


@needs_313
def test_keep_alive(loop, run, kind):
    accepted = net.Factory(loop)

    async def main():
        flags = []
        for keep_alive in (None, True):
            server = await loop.create_server(accepted, net.HOST[kind], 0, keep_alive=keep_alive)
            async with server:
                listening = server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                before = len(accepted.made)
                transport, proto = await net.connect(
                    loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
                )
                server_side = await accepted.nth(before)
                sock = server_side.transport.get_extra_info("socket")
                conn = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                flags.append((listening != 0, conn != 0))
                transport.close()
                await server_side.lost
        return flags

    # Accepted sockets inherit the listening socket's SO_KEEPALIVE.
    assert run(main()) == [(False, False), (True, True)]


@needs_313
def test_close_clients_flushes_and_closes_connections(loop, run, kind):
    accepted = net.Factory(loop)

    async def main():
        server = await loop.create_server(accepted, net.HOST[kind], 0)
        address = net.address_of(server)
        clients = [
            await net.connect(loop, kind, lambda: net.RecordingProtocol(loop), address)
            for _ in range(3)
        ]
        sides = [await accepted.nth(i) for i in range(3)]
        for i, side in enumerate(sides):
            side.transport.write(b"bye %d" % i)
        server.close()
        server.close_clients()
        await server.wait_closed()
        results = []
        for _, proto in clients:
            assert await proto.lost is None
            results.append((bytes(proto.data), proto.events[-2:]))
        return results, [side.lost_exc for side in sides]

    results, lost = run(main())
    assert results == [(b"bye %d" % i, ["eof", "lost"]) for i in range(3)]
    assert lost == [[None]] * 3


@needs_313
def test_abort_clients_drops_pending_data(loop, run, kind):
    accepted = net.Factory(loop)

    async def main():
        server = await loop.create_server(accepted, net.HOST[kind], 0)
        transport, proto = await net.connect(
            loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
        )
        transport.pause_reading()
        side = await accepted.nth(0)
        side.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16384
        )
        data = net.payload(4 * net.MiB)
        side.transport.write(data)
        assert side.transport.get_write_buffer_size() > 0
        server.close()
        server.abort_clients()
        await server.wait_closed()  # does not wait for the unsent data
        assert side.lost_exc == [None]
        transport.resume_reading()
        await proto.lost
        return len(proto.data) < len(data), bytes(proto.data) == data[: len(proto.data)]

    assert run(main()) == (True, True)
