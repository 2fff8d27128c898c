"""create_datagram_endpoint and the datagram transport: UDP over IPv4/IPv6, Unix datagrams."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import sys
import warnings

import pytest
from support import dgram, net

# IPv4 and IPv6 loopback; the IPv6 case is skipped when ::1 cannot be bound.
UDP_KINDS = net.kind_params("tcp4", "tcp6")
# 3.13 sends empty datagrams; before, sendto(b"") returned without sending anything.
SENDS_EMPTY = sys.version_info >= (3, 13)
# From 3.13 on, a buffered datagram counts 8 bytes more than its data.
BUFFERED_HEADER = 8 if sys.version_info >= (3, 13) else 0
# The sock= check: only SOCK_DGRAM before 3.13; from 3.13 anything but SOCK_STREAM.
SOCK_TYPE_MESSAGE = (
    "A datagram socket was expected" if sys.version_info >= (3, 13) else "A UDP Socket was expected"
)


@pytest.fixture(params=UDP_KINDS)
def kind(request):
    return request.param


def _host(kind: str) -> str:
    return net.HOST[kind]


def _udp_socket(kind: str = "tcp4") -> socket.socket:
    """A bound, non-blocking plain UDP socket on loopback (a peer outside the loop's control)."""
    sock = socket.socket(net.FAMILY[kind], socket.SOCK_DGRAM)
    sock.bind((_host(kind), 0))
    sock.setblocking(False)
    return sock


def _free_udp_port(kind: str = "tcp4") -> int:
    with socket.socket(net.FAMILY[kind], socket.SOCK_DGRAM) as s:
        s.bind((_host(kind), 0))
        return s.getsockname()[1]


async def _recv(loop, sock: socket.socket, timeout: float = 5.0):
    """One datagram from a plain non-blocking socket, waiting at most ``timeout``."""
    deadline = loop.time() + timeout
    while True:
        try:
            return sock.recvfrom(65536)
        except BlockingIOError:
            assert loop.time() < deadline, "no datagram arrived"
            await asyncio.sleep(0.001)


def _nothing_pending(sock: socket.socket) -> bool:
    try:
        sock.recvfrom(65536)
    except BlockingIOError:
        return True
    return False


async def _endpoint(loop, **kwargs):
    return await loop.create_datagram_endpoint(lambda: dgram.DatagramRecorder(loop), **kwargs)


# --- local_addr, remote_addr, datagram_received -------------------------------------------


def test_local_addr_endpoints_exchange_datagrams(loop, run, kind):
    async def main():
        ta, pa = await _endpoint(loop, local_addr=(_host(kind), 0))
        tb, pb = await _endpoint(loop, local_addr=(_host(kind), 0))
        try:
            assert pa.events == ["made"] and pa.transport is ta
            a_name = ta.get_extra_info("sockname")
            b_name = tb.get_extra_info("sockname")
            ta.sendto(b"one", b_name)
            ta.sendto(bytearray(b"two"), b_name)
            ta.sendto(memoryview(b"xthreex")[1:6], b_name)
            got = await pb.wait_datagrams(3)
            tb.sendto(b"back", a_name[:2])
            back = await pa.wait_datagrams(1)
            return a_name, b_name, list(got), list(back)
        finally:
            ta.close()
            tb.close()

    a_name, b_name, got, back = run(main())
    # The address is exactly what recvfrom reports: (host, port) for IPv4,
    # (host, port, flowinfo, scope_id) for IPv6; the data is always bytes.
    assert got == [(b"one", a_name), (b"two", a_name), (b"three", a_name)]
    assert all(type(data) is bytes for data, _ in got)
    assert back == [(b"back", b_name)]
    if kind == "tcp6":
        assert len(a_name) == 4 and a_name[0] == "::1"
    else:
        assert a_name[0] == "127.0.0.1" and len(a_name) == 2


def test_extra_info_unconnected(loop, run, kind):
    async def main():
        transport, _ = await _endpoint(loop, local_addr=(_host(kind), 0))
        try:
            sock = transport.get_extra_info("socket")
            assert sock.family == net.FAMILY[kind]
            assert sock.type == socket.SOCK_DGRAM
            assert sock.gettimeout() == 0
            assert transport.get_extra_info("sockname") == sock.getsockname()
            assert transport.get_extra_info("sockname")[1] != 0
            assert transport.get_extra_info("peername") is None
            assert transport.get_extra_info("no such key", "default") == "default"
            assert transport.get_write_buffer_size() == 0
            assert not transport.is_closing()
        finally:
            transport.close()

    run(main())


def test_remote_addr_connects_the_socket(loop, run, kind):
    peer = _udp_socket(kind)
    other = _udp_socket(kind)
    peer_name = peer.getsockname()
    peer_addr = peer_name[:2]

    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer_addr)
        try:
            sock = transport.get_extra_info("socket")
            assert transport.get_extra_info("peername") == sock.getpeername()
            assert transport.get_extra_info("peername")[:2] == peer_addr
            me = transport.get_extra_info("sockname")
            transport.sendto(b"no address")
            if kind == "tcp6":
                # Compared with the resolved remote address: for IPv6 that is the 4-tuple,
                # so the (host, port) pair given as remote_addr is refused.
                with pytest.raises(ValueError):
                    transport.sendto(b"x", peer_addr)
                transport.sendto(b"same address", peer_name)
            else:
                transport.sendto(b"same address", peer_addr)
            first = await _recv(loop, peer)
            second = await _recv(loop, peer)
            # A connected socket only receives from its peer: this one is dropped by the kernel.
            other.sendto(b"stranger", me[:2])
            peer.sendto(b"reply", me[:2])
            await proto.wait_datagrams(1)
            await asyncio.sleep(0.02)
            return me, first, second, list(proto.datagrams)
        finally:
            transport.close()

    try:
        me, first, second, received = run(main())
    finally:
        peer.close()
        other.close()
    assert first == (b"no address", me)
    assert second == (b"same address", me)
    assert received == [(b"reply", peer_name)]


def test_connected_sendto_other_address_raises(loop, run):
    peer = _udp_socket()
    peer_addr = peer.getsockname()

    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer_addr)
        try:
            for bad in [(peer_addr[0], peer_addr[1] + 1), ("localhost", peer_addr[1])]:
                # Compared as given, not resolved: "localhost" is another address.
                with pytest.raises(ValueError) as info:
                    transport.sendto(b"x", bad)
                assert str(info.value) == f"Invalid address: must be None or {peer_addr}"
            transport.sendto(b"still usable")
            return await _recv(loop, peer), proto.errors
        finally:
            transport.close()

    try:
        (data, _), errors = run(main())
    finally:
        peer.close()
    assert data == b"still usable"
    assert errors == []


def test_sendto_rejects_non_bytes(loop, run):
    async def main():
        transport, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        try:
            for bad in ["text", 42, None]:
                with pytest.raises(TypeError) as info:
                    transport.sendto(bad, ("127.0.0.1", 9))
                assert str(info.value) == (
                    f"data argument must be a bytes-like object, not {type(bad).__name__!r}"
                )
            assert not transport.is_closing()
        finally:
            transport.close()

    run(main())


def test_sendto_empty_data(loop, run):
    receiver = _udp_socket()

    async def main():
        transport, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        try:
            transport.sendto(b"", receiver.getsockname())
            transport.sendto(b"marker", receiver.getsockname())
            got = [(await _recv(loop, receiver))[0]]
            if got == [b""]:
                got.append((await _recv(loop, receiver))[0])
            return got
        finally:
            transport.close()

    try:
        got = run(main())
    finally:
        receiver.close()
    assert got == ([b"", b"marker"] if SENDS_EMPTY else [b"marker"])


# --- family, proto, flags, reuse_port, allow_broadcast, sock= -------------------------------


def test_family_without_addresses_gives_an_unbound_socket(loop, run, kind):
    receiver = _udp_socket(kind)

    async def main():
        transport, _ = await _endpoint(loop, family=net.FAMILY[kind])
        try:
            sock = transport.get_extra_info("socket")
            assert sock.family == net.FAMILY[kind]
            assert sock.proto == 0  # nothing was resolved, so the protocol stays 0
            transport.sendto(b"autobound", receiver.getsockname())
            data, addr = await _recv(loop, receiver)
            # The kernel bound the socket to the wildcard address on the first send.
            name = sock.getsockname()
            assert name[0] == ("::" if kind == "tcp6" else "0.0.0.0")
            assert addr[1] == name[1] != 0
            return data
        finally:
            transport.close()

    try:
        assert run(main()) == b"autobound"
    finally:
        receiver.close()


def test_family_selects_the_address_family(loop, run):
    async def main():
        transport, _ = await _endpoint(loop, local_addr=("localhost", 0), family=socket.AF_INET)
        try:
            return transport.get_extra_info("sockname")[0]
        finally:
            transport.close()

    assert run(main()) == "127.0.0.1"


def test_family_mismatch_raises_gaierror(loop, run):
    with pytest.raises(socket.gaierror) as info:
        run(_endpoint(loop, local_addr=("127.0.0.1", 0), family=socket.AF_INET6))
    assert info.value.errno == socket.EAI_ADDRFAMILY


def test_proto(loop, run):
    async def main():
        explicit, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0), proto=socket.IPPROTO_UDP)
        resolved, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        try:
            return explicit.get_extra_info("socket").proto, resolved.get_extra_info("socket").proto
        finally:
            explicit.close()
            resolved.close()

    # A numeric host resolves to IPPROTO_UDP even when proto=0 is passed.
    assert run(main()) == (socket.IPPROTO_UDP, socket.IPPROTO_UDP)


def test_flags_reach_getaddrinfo(loop, run):
    # AI_NUMERICHOST forbids resolving "localhost" (no lookup leaves the host either way).
    with pytest.raises(socket.gaierror) as info:
        run(
            _endpoint(
                loop,
                local_addr=("localhost", 0),
                family=socket.AF_INET,
                flags=socket.AI_NUMERICHOST,
            )
        )
    assert info.value.errno == socket.EAI_NONAME


def test_reuse_port(loop, run):
    async def main():
        first, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0), reuse_port=True)
        port = first.get_extra_info("sockname")[1]
        try:
            second, _ = await _endpoint(loop, local_addr=("127.0.0.1", port), reuse_port=True)
            options = [
                t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
                for t in (first, second)
            ]
            second.close()
            with pytest.raises(OSError) as info:
                await _endpoint(loop, local_addr=("127.0.0.1", port))
            return options, info.value.errno
        finally:
            first.close()

    options, code = run(main())
    assert all(options)
    assert code == errno.EADDRINUSE


def test_address_in_use_leaks_no_socket(loop, run):
    holder = _udp_socket()
    try:
        fds = net.open_fds()
        for _ in range(3):
            with pytest.raises(OSError) as info:
                run(_endpoint(loop, local_addr=holder.getsockname()))
            assert info.value.errno == errno.EADDRINUSE
        assert net.open_fds() == fds
    finally:
        holder.close()


def test_allow_broadcast_does_not_connect(loop, run):
    peer = _udp_socket()
    other = _udp_socket()
    peer_addr = peer.getsockname()
    other_addr = other.getsockname()

    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer_addr, allow_broadcast=True)
        try:
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            # With allow_broadcast asyncio skips connect(): no peer name, but sendto
            # without an address still goes to remote_addr, and other addresses are refused.
            assert transport.get_extra_info("peername") is None
            transport.sendto(b"to remote")
            data, me = await _recv(loop, peer)
            with pytest.raises(ValueError, match="^Invalid address: must be None or "):
                transport.sendto(b"x", other.getsockname())
            # Unconnected, so a stranger's datagram is received.
            other.sendto(b"stranger", me)
            (got,) = await proto.wait_datagrams(1)
            return data, got
        finally:
            transport.close()

    try:
        data, got = run(main())
    finally:
        peer.close()
        other.close()
    assert data == b"to remote"
    assert got == (b"stranger", other_addr)


def test_sock_argument(loop, run):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    assert sock.gettimeout() is None
    receiver = _udp_socket()

    async def main():
        transport, proto = await _endpoint(loop, sock=sock)
        assert sock.gettimeout() == 0  # made non-blocking
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        assert transport.get_extra_info("sockname") == sock.getsockname()
        transport.sendto(b"via sock=", receiver.getsockname())
        got = await _recv(loop, receiver)
        transport.close()
        await proto.lost
        return got

    try:
        data, addr = run(main())
        assert (data, addr) == (b"via sock=", ("127.0.0.1", addr[1]))
        assert sock.fileno() == -1  # the transport owned and closed it
    finally:
        sock.close()
        receiver.close()


@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_sock_of_wrong_type(loop, run, sock_type):
    sock = socket.socket(socket.AF_UNIX, sock_type)
    try:
        if sock_type == socket.SOCK_SEQPACKET and sys.version_info >= (3, 13):
            transport, _ = run(_endpoint(loop, sock=sock))
            transport.close()  # 3.13 accepts any socket that is not SOCK_STREAM
            return
        with pytest.raises(ValueError) as info:
            run(_endpoint(loop, sock=sock))
        assert str(info.value) == f"{SOCK_TYPE_MESSAGE}, got {sock!r}"
    finally:
        sock.close()


def test_sock_with_other_arguments(loop, run):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError) as info:
            run(_endpoint(loop, sock=sock, local_addr=("127.0.0.1", 0), reuse_port=True))
        message = str(info.value)
        assert message.startswith(
            "socket modifier keyword arguments can not be used when sock is specified. "
            "(local_addr=('127.0.0.1', 0)"
        )
        assert "reuse_port=True" in message
        assert sock.fileno() != -1  # not closed on the error
    finally:
        sock.close()


# --- argument errors ------------------------------------------------------------------------


def test_no_address_and_no_family(loop, run):
    with pytest.raises(ValueError, match="^unexpected address family$"):
        run(_endpoint(loop))


def test_unix_family_wants_string_addresses(loop, run):
    for kwargs in [{"local_addr": ("a", 1)}, {"remote_addr": ("a", 1)}]:
        with pytest.raises(TypeError, match="^string is expected$"):
            run(_endpoint(loop, family=socket.AF_UNIX, **kwargs))


def test_inet_address_must_be_a_pair(loop, run):
    # Python 3.10 checks with an assert statement (so AssertionError); later versions raise.
    exc_type = AssertionError if sys.version_info < (3, 11) else TypeError
    for kwargs in [{"local_addr": "127.0.0.1"}, {"remote_addr": ("127.0.0.1", 1, 2)}]:
        with pytest.raises(exc_type, match="^2-tuple is expected$"):
            run(_endpoint(loop, **kwargs))


def test_reuse_address(loop, run):
    if sys.version_info >= (3, 11):
        # The parameter is gone: an unknown keyword.
        for value in (True, False):
            with pytest.raises(TypeError, match="unexpected keyword argument 'reuse_address'"):
                run(_endpoint(loop, local_addr=("127.0.0.1", 0), reuse_address=value))
        return
    with pytest.raises(ValueError, match="^Passing `reuse_address=True` is no longer supported"):
        run(_endpoint(loop, local_addr=("127.0.0.1", 0), reuse_address=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transport, _ = run(_endpoint(loop, local_addr=("127.0.0.1", 0), reuse_address=False))
        transport.close()
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "reuse_address" in str(caught[0].message)


# --- Unix datagram sockets -------------------------------------------------------------------


def test_unix_datagrams(loop, run, tmp_path):
    a_path = net.unix_path(tmp_path, "a.sock")
    b_path = net.unix_path(tmp_path, "b.sock")
    unnamed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    async def main():
        ta, pa = await _endpoint(loop, family=socket.AF_UNIX, local_addr=a_path)
        tb, pb = await _endpoint(loop, family=socket.AF_UNIX, local_addr=b_path)
        try:
            assert ta.get_extra_info("sockname") == a_path
            assert ta.get_extra_info("peername") is None
            assert ta.get_extra_info("socket").family == socket.AF_UNIX
            ta.sendto(b"a to b", b_path)
            unnamed.sendto(b"from nobody", b_path)
            got = await pb.wait_datagrams(2)
            tb.sendto(b"b to a", a_path)
            back = await pa.wait_datagrams(1)
            return list(got), list(back)
        finally:
            ta.close()
            tb.close()

    try:
        got, back = run(main())
    finally:
        unnamed.close()
    # An unnamed sender's address is None.
    assert got == [(b"a to b", a_path), (b"from nobody", None)]
    assert back == [(b"b to a", b_path)]
    # Closing does not remove the socket files.
    assert sorted(os.listdir(tmp_path)) == ["a.sock", "b.sock"]


def test_unix_connected_datagrams(loop, run, tmp_path):
    peer_path = net.unix_path(tmp_path, "peer.sock")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(peer_path)
    peer.setblocking(False)
    me_path = net.unix_path(tmp_path, "me.sock")

    async def main():
        transport, proto = await _endpoint(
            loop, family=socket.AF_UNIX, local_addr=me_path, remote_addr=peer_path
        )
        try:
            assert transport.get_extra_info("peername") == peer_path
            transport.sendto(b"hello")
            got = await _recv(loop, peer)
            with pytest.raises(ValueError):
                transport.sendto(b"x", net.unix_path(tmp_path, "elsewhere.sock"))
            peer.sendto(b"reply", me_path)
            return got, list(await proto.wait_datagrams(1))
        finally:
            transport.close()

    try:
        got, received = run(main())
    finally:
        peer.close()
    assert got == (b"hello", me_path)
    assert received == [(b"reply", peer_path)]


def test_unix_stale_socket_file_is_replaced(loop, run, tmp_path):
    path = net.unix_path(tmp_path, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()  # the file stays
    regular = net.unix_path(tmp_path, "regular")
    with open(regular, "w") as f:
        f.write("keep me")

    async def main():
        transport, _ = await _endpoint(loop, family=socket.AF_UNIX, local_addr=path)
        transport.close()
        # Only socket files are removed; binding over a regular file fails.
        with pytest.raises(OSError) as info:
            await _endpoint(loop, family=socket.AF_UNIX, local_addr=regular)
        return info.value.errno

    assert run(main()) == errno.EADDRINUSE
    with open(regular) as f:
        assert f.read() == "keep me"


def test_unix_send_to_missing_path_is_error_received(loop, run, tmp_path):
    async def main():
        transport, proto = await _endpoint(
            loop, family=socket.AF_UNIX, local_addr=net.unix_path(tmp_path, "me.sock")
        )
        try:
            transport.sendto(b"x", net.unix_path(tmp_path, "missing.sock"))
            # Reported to the protocol at once, and the transport stays open.
            assert [type(e) for e in proto.errors] == [FileNotFoundError]
            assert not transport.is_closing()
            return proto.errors[0].errno, list(proto.events)
        finally:
            transport.close()

    code, events = run(main())
    assert code == errno.ENOENT
    assert events == ["made", "error"]


# --- volume ----------------------------------------------------------------------------------


def test_ten_thousand_datagrams_echoed_without_loss(loop, run):
    total, window = 10_000, 50
    header = struct.Struct("!I")

    async def main():
        server, echo = await loop.create_datagram_endpoint(
            dgram.DatagramEcho, local_addr=("127.0.0.1", 0)
        )
        client, proto = await _endpoint(loop, remote_addr=server.get_extra_info("sockname"))
        try:
            # At most `window` datagrams (about 50 KiB of socket memory) are ever in flight,
            # far below the default receive buffers: a loss can only be the loop's.
            for start in range(0, total, window):
                for seq in range(start, start + window):
                    client.sendto(header.pack(seq) + bytes([seq % 251]) * (seq % 61))
                await proto.wait_datagrams(start + window)
            return echo.count, echo.errors, proto.errors, proto.datagrams
        finally:
            client.close()
            server.close()

    count, server_errors, errors, datagrams = run(main(), timeout=30)
    assert count == total
    assert server_errors == [] and errors == []
    seqs = [header.unpack_from(data)[0] for data, _ in datagrams]
    assert sorted(seqs) == list(range(total))
    for data, _ in datagrams:
        seq = header.unpack_from(data)[0]
        assert data[4:] == bytes([seq % 251]) * (seq % 61)


# --- buffering and flow control ------------------------------------------------------------


def test_write_buffer_and_flow_control(loop, run, tmp_path):
    # A Unix datagram receiver that does not read fills up after a few datagrams; further
    # sends get EAGAIN and are buffered by the transport.
    path = net.unix_path(tmp_path, "slow.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    size, count = 1024, 200

    async def main():
        transport, proto = await _endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
        try:
            transport.set_write_buffer_limits(high=8 * size, low=2 * size)
            assert transport.get_write_buffer_limits() == (2 * size, 8 * size)
            sizes = []
            for i in range(count):
                transport.sendto(i.to_bytes(2, "big") * (size // 2))
                sizes.append(transport.get_write_buffer_size())
            assert proto.events[-1] == "pause_writing"
            buffered = transport.get_write_buffer_size()
            got = []
            deadline = loop.time() + 10
            while len(got) < count:
                try:
                    got.append(receiver.recv(size))
                except BlockingIOError:
                    assert loop.time() < deadline, f"only {len(got)} datagrams arrived"
                    await asyncio.sleep(0.001)
            return proto, sizes, buffered, got, transport.get_write_buffer_size()
        finally:
            transport.close()

    try:
        proto, sizes, buffered, got, after = run(main())
    finally:
        receiver.close()
    # Sent at once while the receiver had room; buffered (in order) after that.
    assert sizes[0] == 0
    queued = sum(1 for s in sizes if s)
    assert 0 < queued < count
    assert buffered == queued * (size + BUFFERED_HEADER)
    assert proto.events.count("pause_writing") == 1
    assert proto.events.count("resume_writing") == 1
    # Paused at the first buffered size above the high-water mark.
    per_datagram = size + BUFFERED_HEADER
    assert proto.pauses == [(8 * size // per_datagram + 1) * per_datagram]
    assert proto.resumes[0] <= 2 * size + 2 * BUFFERED_HEADER
    assert [int.from_bytes(d[:2], "big") for d in got] == list(range(count))
    if BUFFERED_HEADER:
        # 3.13 adds the header bytes when buffering but never subtracts them.
        assert after in (0, queued * BUFFERED_HEADER)
    else:
        assert after == 0
    assert proto.errors == []


def test_close_flushes_the_buffer_first(loop, run, tmp_path):
    path = net.unix_path(tmp_path, "slow.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    count = 100

    async def main():
        transport, proto = await _endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
        for i in range(count):
            transport.sendto(i.to_bytes(4, "big") * 256)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        assert transport.is_closing()
        await asyncio.sleep(0.02)
        assert proto.lost_exc == []  # still flushing
        got = []
        while not proto.lost.done():
            try:
                got.append(receiver.recv(2048))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        while True:
            try:
                got.append(receiver.recv(2048))
            except BlockingIOError:
                break
        return proto, got

    try:
        proto, got = run(main())
    finally:
        receiver.close()
    assert [int.from_bytes(d[:4], "big") for d in got] == list(range(count))
    assert proto.lost_exc == [None]


def test_abort_discards_the_buffer(loop, run, tmp_path):
    path = net.unix_path(tmp_path, "slow.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)

    async def main():
        transport, proto = await _endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
        for i in range(100):
            transport.sendto(i.to_bytes(4, "big") * 256)
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert await proto.lost is None
        got = []
        while True:
            try:
                got.append(receiver.recv(2048))
            except BlockingIOError:
                break
        return proto, got

    try:
        proto, got = run(main())
    finally:
        receiver.close()
    assert 0 < len(got) < 100  # only what the kernel took before the abort
    assert proto.lost_exc == [None]


# --- close, abort, connection_lost ---------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort", "close_then_abort", "abort_then_close"])
def test_connection_lost_exactly_once(loop, run, how):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        sock = transport.get_extra_info("socket")
        for step in how.split("_then_"):
            getattr(transport, step)()
            assert transport.is_closing()
        assert proto.lost_exc == []  # connection_lost is called soon, not from close()
        assert await proto.lost is None
        getattr(transport, how.split("_then_")[0])()
        await asyncio.sleep(0.01)
        return proto, sock

    proto, sock = run(main())
    assert proto.events == ["made", "lost"]
    assert proto.lost_exc == [None]
    assert sock.fileno() == -1


def test_endpoints_leak_no_fds(loop, run):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        return transport, proto

    fds = net.open_fds()
    for _ in range(20):
        transport, proto = run(main())
        transport.close()
        run(proto.lost)
    assert net.open_fds() == fds


def test_no_datagram_after_close(loop, run):
    sender = _udp_socket()

    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        name = transport.get_extra_info("sockname")
        transport.close()
        sender.sendto(b"too late", name)
        await proto.lost
        await asyncio.sleep(0.01)
        return proto.events

    try:
        assert run(main()) == ["made", "lost"]
    finally:
        sender.close()


def test_sendto_after_close_on_connected_transport_is_dropped(loop, run):
    peer = _udp_socket()

    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer.getsockname())
        transport.close()
        transport.sendto(b"after close")  # silently dropped: no exception, nothing sent
        await proto.lost
        for _ in range(10):
            transport.sendto(b"after connection_lost")
        await asyncio.sleep(0.02)
        return proto

    try:
        proto = run(main())
        assert _nothing_pending(peer)
    finally:
        peer.close()
    assert proto.events == ["made", "lost"]


# --- errors ----------------------------------------------------------------------------------


def test_error_received_for_refused_port(loop, run, kind):
    # A connected UDP socket gets the ICMP "port unreachable" as ECONNREFUSED on a later
    # receive or send; asyncio hands it to error_received and keeps the transport open.
    port = _free_udp_port(kind)

    async def main():
        transport, proto = await _endpoint(loop, remote_addr=(_host(kind), port))
        try:
            transport.sendto(b"anyone?")
            errors = list(await proto.wait_errors(1))
            assert not transport.is_closing()
            transport.sendto(b"again")
            errors = list(await proto.wait_errors(2))
            return errors, proto
        finally:
            transport.close()

    errors, proto = run(main())
    assert all(type(e) is ConnectionRefusedError for e in errors)
    assert all(e.errno == errno.ECONNREFUSED for e in errors)
    run(proto.lost)
    assert proto.lost_exc == [None]
    assert "datagram" not in proto.events


def test_unconnected_send_to_refused_port_reports_nothing(loop, run):
    # Without connect() the kernel does not report ICMP errors to the socket.
    port = _free_udp_port()

    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        try:
            for _ in range(3):
                transport.sendto(b"anyone?", ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            return list(proto.events)
        finally:
            transport.close()

    assert run(main()) == ["made"]


def test_sendto_os_errors_go_to_error_received(loop, run):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        try:
            # An IPv6 address on an IPv4 socket fails in getaddrinfo; port 0 in sendto().
            transport.sendto(b"x", ("::1", 9))
            transport.sendto(b"x", ("127.0.0.1", 0))
            assert not transport.is_closing()
            return list(proto.errors)
        finally:
            transport.close()

    errors = run(main())
    assert [type(e) for e in errors] == [socket.gaierror, OSError]
    assert errors[0].errno == socket.EAI_ADDRFAMILY
    assert errors[1].errno == errno.EINVAL


def test_sendto_other_errors_are_fatal(loop, run, loop_errors):
    # Not an OSError (a malformed address): the loop's exception handler is called and the
    # transport is closed with the exception.
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        transport.sendto(b"x", ("127.0.0.1", 70000))
        assert transport.is_closing()
        return await proto.lost, proto

    exc, proto = run(main())
    assert type(exc) is OverflowError
    assert proto.errors == []
    assert [c["message"] for c in loop_errors] == ["Fatal write error on datagram transport"]
    assert loop_errors[0]["exception"] is exc


# --- several datagrams waiting at one readable event ------------------------------------------


async def _endpoint_with_waiting(loop, sender, count, protocol_factory):
    """An endpoint whose socket already holds ``count`` datagrams from ``sender`` when the loop
    first reads it (they are sent before its reader can run)."""
    transport, proto = await loop.create_datagram_endpoint(
        protocol_factory, local_addr=("127.0.0.1", 0)
    )
    name = transport.get_extra_info("sockname")
    for i in range(count):
        sender.sendto(b"d%d" % i, name)
    return transport, proto


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio's datagram transport can pause from 3.11"
)
def test_pause_reading_in_datagram_received_keeps_the_rest_waiting(loop, run):
    sender = _udp_socket()

    class Pauser(dgram.DatagramRecorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if len(self.datagrams) == 1:
                self.transport.pause_reading()

    async def main():
        transport, proto = await _endpoint_with_waiting(loop, sender, 5, lambda: Pauser(loop))
        await asyncio.sleep(0.05)
        seen_while_paused = len(proto.datagrams)
        transport.resume_reading()
        await proto.wait_datagrams(5)
        transport.close()
        return seen_while_paused, [d for d, _ in proto.datagrams]

    try:
        assert run(main()) == (1, [b"d0", b"d1", b"d2", b"d3", b"d4"])
    finally:
        sender.close()


def test_close_in_datagram_received_delivers_no_more(loop, run):
    sender = _udp_socket()

    class Closer(dgram.DatagramRecorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    async def main():
        _, proto = await _endpoint_with_waiting(loop, sender, 5, lambda: Closer(loop))
        await proto.lost
        await asyncio.sleep(0.01)
        return proto.events

    try:
        assert run(main()) == ["made", "datagram", "lost"]
    finally:
        sender.close()


def test_exception_in_datagram_received_is_reported_and_reading_goes_on(loop, run, loop_errors):
    sender = _udp_socket()

    class Raiser(dgram.DatagramRecorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"d0":
                raise ZeroDivisionError("in datagram_received")

    async def main():
        transport, proto = await _endpoint_with_waiting(loop, sender, 3, lambda: Raiser(loop))
        await proto.wait_datagrams(3)
        transport.close()
        return [d for d, _ in proto.datagrams]

    try:
        assert run(main()) == [b"d0", b"d1", b"d2"]
    finally:
        sender.close()
    assert [type(c.get("exception")) for c in loop_errors] == [ZeroDivisionError]


def test_each_datagram_carries_its_own_sender(loop, run):
    senders = [_udp_socket() for _ in range(3)]

    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        name = transport.get_extra_info("sockname")
        expected = []
        for i in range(30):  # alternating senders, all waiting at one readable event
            sock = senders[i % 3 if i < 15 else 0]
            sock.sendto(b"%d" % i, name)
            expected.append((b"%d" % i, sock.getsockname()))
        await proto.wait_datagrams(30)
        transport.close()
        return expected, proto.datagrams

    try:
        expected, got = run(main())
        assert got == expected
    finally:
        for sock in senders:
            sock.close()
