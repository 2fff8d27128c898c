"""create_connection with its parameters, and connect_accepted_socket.

Several cases connect to host ``None``: without AI_PASSIVE, getaddrinfo(None, port) gives the
loopback addresses of both families (::1 and 127.0.0.1), which makes a host with two
addresses out of loopback alone.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import select
import socket
import ssl
import sys
import time

import pytest
from support import net

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in 3.12")


@pytest.fixture(params=net.kind_params("tcp4", "tcp6"))
def kind(request):
    return request.param


def _loopback_addresses(port: int) -> list[str]:
    infos = socket.getaddrinfo(None, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def _needs_both_loopbacks(port: int) -> None:
    if not net.HAS_IPV6 or set(_loopback_addresses(port)) != {"::1", "127.0.0.1"}:
        pytest.skip("getaddrinfo(None, port) does not give both ::1 and 127.0.0.1")


@contextlib.contextmanager
def _listener(host: str, port: int = 0, backlog: int = 128):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()


def _peer(transport) -> str:
    return transport.get_extra_info("peername")[0]


async def _close(transport, proto) -> None:
    transport.close()
    await proto.lost


def test_create_connection_to_host_and_port(loop, run, kind):
    made = []

    def factory():
        made.append(net.RecordingProtocol(loop))
        return made[-1]

    async def main():
        with _listener(net.HOST[kind]) as listener:
            address = listener.getsockname()[:2]
            transport, proto = await loop.create_connection(factory, *address)
            try:
                assert made == [proto]
                assert proto.events == ["made"]  # connection_made ran before the return
                assert proto.transport is transport
                assert transport.get_extra_info("peername")[:2] == address
                sock = transport.get_extra_info("socket")
                return sock.family, sock.type, sock.proto
            finally:
                await _close(transport, proto)

    assert run(main()) == (net.FAMILY[kind], socket.SOCK_STREAM, socket.IPPROTO_TCP)


def test_host_name_is_resolved(loop, run):
    # Wherever "localhost" also maps to ::1, that attempt is refused and 127.0.0.1 follows.
    async def main():
        with _listener("127.0.0.1") as listener:
            port = listener.getsockname()[1]
            transport, proto = await loop.create_connection(
                lambda: net.RecordingProtocol(loop), "localhost", port
            )
            peer = transport.get_extra_info("peername")
            await _close(transport, proto)
            return peer, port

    peer, port = run(main())
    assert peer == ("127.0.0.1", port)


def test_sock_argument(loop, run, tmp_path, kind):
    ours, peer = net.connected_pair(kind, tmp_path)
    ours.setblocking(True)

    async def main():
        transport, proto = await loop.create_connection(
            lambda: net.RecordingProtocol(loop), sock=ours
        )
        assert ours.gettimeout() == 0  # made non-blocking
        assert transport.get_extra_info("socket").fileno() == ours.fileno()
        transport.write(b"via sock=")
        got = await net.recv_exactly(loop, peer, 9)
        await _close(transport, proto)
        return got

    try:
        assert run(main()) == b"via sock="
    finally:
        ours.close()
        peer.close()


def test_unix_socket_through_create_connection(loop, run, tmp_path):
    # create_connection(sock=) takes any SOCK_STREAM socket, AF_UNIX included.
    ours, peer = net.connected_pair("unix", tmp_path)

    async def main():
        transport, proto = await loop.create_connection(
            lambda: net.RecordingProtocol(loop), sock=ours
        )
        await loop.sock_sendall(peer, b"unix")
        got = await proto.wait_bytes(4)
        await _close(transport, proto)
        return got

    try:
        assert run(main()) == b"unix"
    finally:
        ours.close()
        peer.close()


def test_argument_errors(loop, run):
    stream = socket.socket()
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    context = ssl.create_default_context()
    cases = [
        (
            dict(host="127.0.0.1", port=1, sock=stream),
            ValueError,
            "^host/port and sock can not be specified at the same time$",
        ),
        (dict(), ValueError, "^host and port was not specified and no sock specified$"),
        (dict(sock=dgram), ValueError, "^A Stream Socket was expected, got "),
        (
            dict(host="127.0.0.1", port=1, server_hostname="example.org"),
            ValueError,
            "^server_hostname is only meaningful with ssl$",
        ),
        (
            dict(host="127.0.0.1", port=1, ssl_handshake_timeout=1.0),
            ValueError,
            "^ssl_handshake_timeout is only meaningful with ssl$",
        ),
        (
            dict(sock=stream, ssl=context),
            ValueError,
            "^You must set server_hostname when using ssl without a host$",
        ),
    ]
    if sys.version_info >= (3, 11):
        cases.append(
            (
                dict(host="127.0.0.1", port=1, ssl_shutdown_timeout=1.0),
                ValueError,
                "^ssl_shutdown_timeout is only meaningful with ssl$",
            )
        )
    try:
        for kwargs, exc_type, pattern in cases:
            with pytest.raises(exc_type, match=pattern):
                run(loop.create_connection(asyncio.Protocol, **kwargs))
        assert stream.fileno() != -1 and dgram.fileno() != -1
    finally:
        stream.close()
        dgram.close()


def test_local_addr(loop, run, kind):
    async def main():
        with _listener(net.HOST[kind]) as listener:
            address = listener.getsockname()[:2]
            wanted = net.free_port(net.FAMILY[kind], net.HOST[kind])
            names = []
            for local in ((net.HOST[kind], 0), (net.HOST[kind], wanted)):
                transport, proto = await loop.create_connection(
                    lambda: net.RecordingProtocol(loop), *address, local_addr=local
                )
                names.append(transport.get_extra_info("sockname")[:2])
                await _close(transport, proto)
            return names, wanted

    (first, second), wanted = run(main())
    assert first[0] == net.HOST[kind] and first[1] != 0
    assert second == (net.HOST[kind], wanted)


def test_local_addr_in_use(loop, run, kind):
    async def main():
        with _listener(net.HOST[kind]) as target, _listener(net.HOST[kind]) as taken:
            with pytest.raises(OSError) as info:
                await loop.create_connection(
                    asyncio.Protocol,
                    *target.getsockname()[:2],
                    local_addr=taken.getsockname()[:2],
                )
            return info.value

    fds = net.open_fds()
    exc = run(main())
    assert net.open_fds() == fds
    assert exc.errno == errno.EADDRINUSE
    assert "error while attempting to bind on address" in str(exc)
    assert "address already in use" in str(exc)


@net.needs_ipv6
def test_local_addr_of_another_family(loop, run):
    async def main():
        with _listener("127.0.0.1") as listener:
            await loop.create_connection(
                asyncio.Protocol, *listener.getsockname(), local_addr=("::1", 0)
            )

    with pytest.raises(OSError, match="^no matching local address with family="):
        run(main())


def test_family_selects_the_address(loop, run):
    # Host None resolves to both loopbacks; family picks one of them.
    async def main():
        with _listener("127.0.0.1") as v4:
            port = v4.getsockname()[1]
            _needs_both_loopbacks(port)
            transport, proto = await loop.create_connection(
                lambda: net.RecordingProtocol(loop), None, port, family=socket.AF_INET
            )
            peer = _peer(transport)
            await _close(transport, proto)
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(asyncio.Protocol, None, port, family=socket.AF_INET6)
            return peer

    assert run(main()) == "127.0.0.1"


def test_family_mismatch_fails_resolution(loop, run):
    with pytest.raises(socket.gaierror):
        run(loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, family=socket.AF_INET6))


def test_flags_reach_getaddrinfo(loop, run):
    with pytest.raises(socket.gaierror):
        run(loop.create_connection(asyncio.Protocol, "localhost", 1, flags=socket.AI_NUMERICHOST))


def test_proto_argument(loop, run):
    async def main():
        with _listener("127.0.0.1") as listener:
            transport, proto = await loop.create_connection(
                lambda: net.RecordingProtocol(loop),
                *listener.getsockname(),
                proto=socket.IPPROTO_TCP,
            )
            number = transport.get_extra_info("socket").proto
            await _close(transport, proto)
            return number

    assert run(main()) == socket.IPPROTO_TCP


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"happy_eyeballs_delay": 10.0},
        {"happy_eyeballs_delay": 10.0, "interleave": 2},
        {"interleave": 1},
    ],
    ids=["sequential", "happy_eyeballs", "happy_eyeballs_interleave2", "interleave_only"],
)
@pytest.mark.parametrize("server_host", ["127.0.0.1", "::1"])
@net.needs_ipv6
def test_falls_back_past_refused_addresses(loop, run, options, server_host):
    # Only one family listens; the other address is refused and the next one is tried
    # at once, long before a 10 s happy-eyeballs delay would start it.

    async def main():
        with _listener(server_host) as listener:
            port = listener.getsockname()[1]
            _needs_both_loopbacks(port)
            start = time.monotonic()
            transport, proto = await loop.create_connection(
                lambda: net.RecordingProtocol(loop), None, port, **options
            )
            elapsed = time.monotonic() - start
            peer = _peer(transport)
            await _close(transport, proto)
            return peer, elapsed

    peer, elapsed = run(main())
    assert peer == server_host
    assert elapsed < 2.0


def _connect_would_hang(address) -> bool:
    """Whether a new connection to ``address`` is left without an answer for 0.1 s."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.setblocking(False)
        probe.connect_ex(address)
        _, writable, _ = select.select([], [probe], [], 0.1)
        return not writable


@net.needs_ipv6
def test_happy_eyeballs_starts_next_attempt_after_delay(loop, run):
    # ::1 is tried first but hangs (its listener's accept queue is full, so the SYN is
    # dropped); after happy_eyeballs_delay the 127.0.0.1 attempt starts and wins.
    with contextlib.ExitStack() as stack:
        v6 = stack.enter_context(_listener("::1", backlog=0))
        port = v6.getsockname()[1]
        _needs_both_loopbacks(port)
        if _loopback_addresses(port)[0] != "::1":
            pytest.skip("getaddrinfo lists 127.0.0.1 first")
        try:
            stack.enter_context(_listener("127.0.0.1", port))
        except OSError:
            pytest.skip("the port is taken on 127.0.0.1")
        filler = stack.enter_context(socket.socket(socket.AF_INET6))
        filler.settimeout(2)
        filler.connect(("::1", port))  # fills the accept queue of the backlog-0 listener
        if not _connect_would_hang(("::1", port)):
            pytest.skip("the kernel accepts past a full accept queue")

        async def main():
            start = time.monotonic()
            transport, proto = await loop.create_connection(
                lambda: net.RecordingProtocol(loop), None, port, happy_eyeballs_delay=0.2
            )
            elapsed = time.monotonic() - start
            peer = _peer(transport)
            await _close(transport, proto)
            await asyncio.sleep(0.01)
            return peer, elapsed

        fds = net.open_fds()
        peer, elapsed = run(main())
        assert net.open_fds() == fds  # the losing ::1 attempt's socket was closed
    assert peer == "127.0.0.1"
    assert 0.2 <= elapsed < 1.0


def test_all_refused_without_all_errors(loop, run):
    # Two addresses, both refused. asyncio raises the first error when all messages are
    # equal, otherwise one OSError listing them all (errno None).
    port = net.free_port()

    async def main():
        _needs_both_loopbacks(port)
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, None, port)
        return info.value

    exc = run(main())
    if isinstance(exc, ConnectionRefusedError):
        assert exc.errno == errno.ECONNREFUSED
    else:
        assert type(exc) is OSError and exc.errno is None
        assert str(exc).startswith("Multiple exceptions: ")
        # One "[Errno 111] Connect call failed ..." per address (the port may contain 111 too).
        assert str(exc).count(f"[Errno {errno.ECONNREFUSED}]") == 2


@needs_312
def test_all_errors(loop, run):
    port = net.free_port()

    async def main():
        _needs_both_loopbacks(port)
        with pytest.raises(builtins.ExceptionGroup) as info:
            await loop.create_connection(asyncio.Protocol, None, port, all_errors=True)
        return info.value

    fds = net.open_fds()
    group = run(main())
    assert net.open_fds() == fds
    assert group.message == "create_connection failed"
    assert len(group.exceptions) == 2
    assert all(isinstance(e, ConnectionRefusedError) for e in group.exceptions)
    assert all(e.errno == errno.ECONNREFUSED for e in group.exceptions)


@needs_312
def test_all_errors_single_address(loop, run):
    port = net.free_port()
    with pytest.raises(builtins.ExceptionGroup) as info:
        run(loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True))
    (exc,) = info.value.exceptions
    assert isinstance(exc, ConnectionRefusedError)


# --- connect_accepted_socket ------------------------------------------------------------


@pytest.mark.parametrize("kind", net.kind_params())
def test_connect_accepted_socket(loop, run, tmp_path, kind):
    client, accepted = net.connected_pair(kind, tmp_path)
    accepted.setblocking(True)

    async def main():
        transport, proto = await loop.connect_accepted_socket(
            lambda: net.RecordingProtocol(loop), accepted
        )
        assert proto.events == ["made"]
        assert accepted.gettimeout() == 0
        assert transport.get_extra_info("peername") == client.getsockname()
        await loop.sock_sendall(client, b"hello server")
        got = await proto.wait_bytes(12)
        transport.write(b"hello client")
        transport.close()
        back = await net.recv_until_eof(loop, client)
        await proto.lost
        return got, back

    try:
        assert run(main()) == (b"hello server", b"hello client")
    finally:
        client.close()
        accepted.close()


def test_connect_accepted_socket_argument_errors(loop, run):
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stream = socket.socket()
    try:
        with pytest.raises(ValueError, match="^A Stream Socket was expected, got "):
            run(loop.connect_accepted_socket(asyncio.Protocol, dgram))
        with pytest.raises(ValueError, match="^ssl_handshake_timeout is only meaningful with ssl$"):
            run(loop.connect_accepted_socket(asyncio.Protocol, stream, ssl_handshake_timeout=1))
    finally:
        dgram.close()
        stream.close()
