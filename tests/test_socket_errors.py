"""Socket errors: refused, reset, broken pipe, address in use, fd exhaustion on accept; and
no file descriptor left behind on any of these paths."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import struct

import pytest
from support import net

RESET_OR_PIPE = (ConnectionResetError, BrokenPipeError)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` so that its peer sees a reset rather than EOF."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # A Unix stream socket closed with unread data resets its peer the same way.
    sock.close()


@pytest.mark.parametrize("kind", net.kind_params("tcp4", "tcp6"))
def test_connection_refused(loop, run, kind):
    port = net.free_port(net.FAMILY[kind], net.HOST[kind])
    fds = net.open_fds()
    with pytest.raises(ConnectionRefusedError) as info:
        run(loop.create_connection(asyncio.Protocol, net.HOST[kind], port))
    assert info.value.errno == errno.ECONNREFUSED
    assert net.open_fds() == fds


def test_peer_reset_while_writing(loop, run, pair, kind):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await net.wrap(loop, kind, lambda: net.RecordingProtocol(loop), ours)
        transport.set_write_buffer_limits(high=64 * net.MiB)
        transport.write(net.payload(4 * net.MiB))
        assert transport.get_write_buffer_size() > 0
        await asyncio.sleep(0.01)
        _reset(peer)
        exc = await proto.lost
        await asyncio.sleep(0.01)
        return exc, proto.lost_exc, transport.get_write_buffer_size(), transport.is_closing()

    exc, lost, buffered, closing = run(main())
    assert isinstance(exc, RESET_OR_PIPE)
    assert lost == [exc]  # once, and not through the exception handler
    assert buffered == 0 and closing


def test_write_after_peer_closed(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await net.wrap(
            loop, kind, lambda: net.RecordingProtocol(loop, keep_open_on_eof=True), ours
        )
        peer.close()
        await proto.eof
        for _ in range(50):  # TCP: the first write is answered by a reset, a later one fails
            transport.write(b"into the void")
            if proto.lost.done():
                break
            await asyncio.sleep(0.01)
        return await proto.lost, proto.lost_exc

    exc, lost = run(main())
    if kind == "unix":
        assert isinstance(exc, BrokenPipeError)
        assert exc.errno == errno.EPIPE
    else:
        assert isinstance(exc, RESET_OR_PIPE)
    assert lost == [exc]


def test_sock_sendall_to_reset_peer(loop, run, pair):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        send = asyncio.ensure_future(loop.sock_sendall(ours, net.payload(8 * net.MiB)))
        await asyncio.sleep(0.02)
        assert not send.done()
        _reset(peer)
        with pytest.raises(RESET_OR_PIPE):
            await send

    run(main())


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_recv_after_reset(loop, run, pair):
    ours, peer = pair

    async def main():
        await loop.sock_sendall(ours, b"unread")
        await asyncio.sleep(0.01)
        _reset(peer)
        with pytest.raises(ConnectionResetError) as info:
            await loop.sock_recv(ours, 10)
        return info.value.errno

    assert run(main()) == errno.ECONNRESET


def _ipv6_holder_of_a_port_free_on_ipv4() -> tuple[socket.socket, int]:
    """A socket bound to ::1 on a port 127.0.0.1 can bind too: an ephemeral port may
    still be held there by an earlier test's connection in TIME_WAIT."""
    for _ in range(50):
        holder = socket.socket(socket.AF_INET6)
        holder.bind(("::1", 0))
        port = holder.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                holder.close()
                continue
        return holder, port
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


@net.needs_ipv6
def test_failed_multi_host_bind_closes_every_socket(loop, run):
    # 127.0.0.1 binds, ::1 is taken: the socket already bound must be closed too.
    holder, port = _ipv6_holder_of_a_port_free_on_ipv4()
    with holder:
        holder.listen()
        fds = net.open_fds()
        with pytest.raises(OSError) as info:
            run(loop.create_server(asyncio.Protocol, ["127.0.0.1", "::1"], port))
        assert info.value.errno == errno.EADDRINUSE
        assert net.open_fds() == fds
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # released


def test_error_paths_leave_no_fds(loop, run, tmp_path):
    refused_port = net.free_port()
    regular = net.unix_path(tmp_path, "regular")
    with open(regular, "wb"):
        pass
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()

    attempts = {
        "refused": lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", refused_port),
        "refused_streams": lambda: asyncio.open_connection("127.0.0.1", refused_port),
        "local_addr_in_use": lambda: loop.create_connection(
            asyncio.Protocol, *taken, local_addr=taken
        ),
        "server_in_use": lambda: loop.create_server(asyncio.Protocol, *taken),
        "unix_missing": lambda: loop.create_unix_connection(
            asyncio.Protocol, net.unix_path(tmp_path, "missing")
        ),
        "unix_regular_file": lambda: loop.create_unix_server(asyncio.Protocol, regular),
    }

    async def main():
        failures = {}
        for name, attempt in attempts.items():
            await asyncio.sleep(0)
            before = net.open_fds()
            for _ in range(10):
                with pytest.raises(OSError):
                    await attempt()
            await asyncio.sleep(0)
            failures[name] = net.open_fds() - before
        return failures

    try:
        failures = run(main())
    finally:
        holder.close()
    assert failures == dict.fromkeys(attempts, 0)


def test_cancelled_connection_attempt_leaves_no_fds(loop, run):
    # The listener's accept queue is full, so the attempt hangs until it is cancelled.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.socket()
    filler.settimeout(2)
    filler.connect(listener.getsockname())

    async def main():
        before = net.open_fds()
        for _ in range(5):
            attempt = asyncio.ensure_future(
                loop.create_connection(asyncio.Protocol, *listener.getsockname())
            )
            await asyncio.sleep(0.05)
            if attempt.done():
                transport, _ = attempt.result()
                transport.close()
                pytest.skip("the kernel accepted past a full accept queue")
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
        await asyncio.sleep(0)
        return net.open_fds() - before

    try:
        assert run(main()) == 0
    finally:
        filler.close()
        listener.close()


def test_accept_out_of_fds_backs_off_and_keeps_serving(loop, run, loop_errors):
    """EMFILE on accept: reported to the exception handler, accepting pauses for a while
    (asyncio: one second) and then resumes; the pending connection is served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    backlog = 5

    async def main():
        server = await loop.create_server(net.EchoProtocol, "127.0.0.1", 0, backlog=backlog)
        async with server:
            client = socket.socket()
            client.setblocking(False)
            hogs: list[int] = []
            try:
                highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
                try:
                    while len(hogs) < highest + 1:
                        hogs.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                client.connect_ex(net.address_of(server))
                for _ in range(200):
                    if loop_errors:
                        break
                    await asyncio.sleep(0.01)
            finally:
                for fd in hogs:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            try:
                await loop.sock_sendall(client, b"served after all")
                client.shutdown(socket.SHUT_WR)
                echoed = await net.recv_until_eof(loop, client)
            finally:
                client.close()
            return echoed

    assert run(main()) == b"served after all"
    # asyncio keeps calling accept() up to backlog times in the failing round, reporting
    # each EMFILE, so there may be several reports but never more than the backlog.
    assert 1 <= len(loop_errors) <= backlog
    assert {c["message"] for c in loop_errors} == {"socket.accept() out of system resource"}
    assert {c["exception"].errno for c in loop_errors} == {errno.EMFILE}
