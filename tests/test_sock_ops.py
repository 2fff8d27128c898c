"""loop.sock_*: the low-level operations on non-blocking sockets, and their cancellation."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import sys

import pytest
from support import net

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="sock_recvfrom/sock_sendto arrived in Python 3.11"
)


@pytest.fixture(params=net.kind_params("tcp4", "tcp6"))
def udp_pair(request):
    host = net.HOST[request.param]
    family = net.FAMILY[request.param]
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind((host, 0))
        s.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def _not_done_after(fut: asyncio.Future, delay: float = 0.02) -> None:
    await asyncio.sleep(delay)
    if fut.done():
        fut.result()  # an exception from the operation is the more useful failure
        pytest.fail("the operation completed although it had nothing to work on")


def test_sock_recv_waits_for_data(loop, run, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"hello")
        return await task

    assert run(main()) == b"hello"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_recv_returns_at_most_n_bytes(loop, run, pair):
    a, b = pair
    b.send(b"0123456789")

    async def main():
        first = await loop.sock_recv(a, 4)
        rest = await net.recv_exactly(loop, a, 6)
        return first, rest

    assert run(main()) == (b"0123", b"456789")


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_recv_at_eof_returns_empty_bytes(loop, run, pair):
    a, b = pair
    b.send(b"last")
    b.shutdown(socket.SHUT_WR)

    async def main():
        return await loop.sock_recv(a, 100), await loop.sock_recv(a, 100)

    assert run(main()) == (b"last", b"")


def test_sock_recv_into(loop, run, pair):
    a, b = pair
    buf = bytearray(16)

    async def main():
        task = loop.create_task(loop.sock_recv_into(a, memoryview(buf)[2:8]))
        await _not_done_after(task)
        b.send(b"abcdefghij")
        n = await task
        return n, await loop.sock_recv(a, 100)

    n, rest = run(main())
    assert n == 6
    assert buf[2:8] == b"abcdef" and buf[:2] == b"\0\0" and buf[8:] == bytes(8)
    assert rest == b"ghij"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_recv_into_at_eof_returns_zero(loop, run, pair):
    a, b = pair
    b.close()
    assert run(loop.sock_recv_into(a, bytearray(10))) == 0


def test_sock_sendall_large_payload_blocks_until_peer_reads(loop, run, pair):
    a, b = pair
    net.shrink_buffers(a)
    net.shrink_buffers(b)
    data = net.payload(8 * net.MiB)

    async def main():
        send = loop.create_task(loop.sock_sendall(a, data))
        await _not_done_after(send, 0.05)  # far more than the kernel buffers hold
        received = await net.recv_exactly(loop, b, len(data))
        return await send, received

    result, received = run(main())
    assert result is None
    assert net.digest(received) == net.digest(data)


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_sendall_accepts_buffer_types(loop, run, pair):
    a, b = pair

    async def main():
        await loop.sock_sendall(a, b"by")
        await loop.sock_sendall(a, bytearray(b"te"))
        await loop.sock_sendall(a, memoryview(b"xxsxx")[2:3])
        await loop.sock_sendall(a, b"")
        return await net.recv_exactly(loop, b, 5)

    assert run(main()) == b"bytes"


@needs_311
def test_sock_sendto_and_recvfrom(loop, run, udp_pair):
    a, b = udp_pair

    async def main():
        recv = loop.create_task(loop.sock_recvfrom(b, 100))
        await _not_done_after(recv)
        sent = await loop.sock_sendto(a, b"datagram", b.getsockname())
        return sent, await recv

    sent, (data, addr) = run(main())
    assert sent == 8
    assert data == b"datagram"
    assert addr == a.getsockname()


@needs_311
def test_sock_recvfrom_truncates_to_bufsize(loop, run, udp_pair):
    a, b = udp_pair
    a.sendto(b"0123456789", b.getsockname())
    a.sendto(b"next", b.getsockname())

    async def main():
        return await loop.sock_recvfrom(b, 4), await loop.sock_recvfrom(b, 100)

    (first, _), (second, _) = run(main())
    assert first == b"0123"  # the rest of that datagram is discarded
    assert second == b"next"


@needs_311
def test_sock_recvfrom_into(loop, run, udp_pair):
    a, b = udp_pair
    buf = bytearray(10)

    async def main():
        recv = loop.create_task(loop.sock_recvfrom_into(b, buf))
        await _not_done_after(recv)
        a.sendto(b"abc", b.getsockname())
        first = await recv
        a.sendto(b"0123456789", b.getsockname())
        second = await loop.sock_recvfrom_into(b, buf, 4)  # nbytes limits the read
        return first, second

    (n1, addr1), (n2, addr2) = run(main())
    assert n1 == 3 and n2 == 4
    assert addr1 == addr2 == a.getsockname()
    assert buf[:4] == b"0123" and buf[4:] == bytes(6)


@pytest.mark.parametrize("kind", net.kind_params())
def test_sock_connect_and_sock_accept(loop, run, kind, tmp_path):
    listener = net.listening_socket(kind, tmp_path)
    listener.setblocking(False)
    client = socket.socket(net.FAMILY[kind], socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        accept = loop.create_task(loop.sock_accept(listener))
        await _not_done_after(accept)
        assert await loop.sock_connect(client, listener.getsockname()) is None
        return await accept

    try:
        conn, addr = run(main())
        with conn:
            assert conn.gettimeout() == 0  # accepted sockets are non-blocking
            assert conn.family == listener.family
            assert conn.getpeername() == client.getsockname()
            assert client.getpeername() == listener.getsockname()
            if kind != "unix":
                assert addr == client.getsockname()
            client.send(b"ping")
            assert run(loop.sock_recv(conn, 10)) == b"ping"
    finally:
        client.close()
        listener.close()


def test_sock_connect_resolves_host_names(loop, run, tmp_path):
    # The name is resolved for the socket's family: an AF_INET socket gets 127.0.0.1
    # even where "localhost" also maps to ::1.
    listener = net.listening_socket("tcp4", tmp_path)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        port = listener.getsockname()[1]
        run(loop.sock_connect(client, ("localhost", port)))
        assert client.getpeername() == ("127.0.0.1", port)
    finally:
        client.close()
        listener.close()


@pytest.mark.parametrize("kind", net.kind_params("tcp4", "tcp6"))
def test_sock_connect_refused(loop, run, kind):
    port = net.free_port(net.FAMILY[kind], net.HOST[kind])
    client = socket.socket(net.FAMILY[kind], socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        with pytest.raises(ConnectionRefusedError) as info:
            run(loop.sock_connect(client, (net.HOST[kind], port)))
        assert info.value.errno == errno.ECONNREFUSED
    finally:
        client.close()


def test_sock_connect_unix_errors(loop, run, tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(net.unix_path(tmp_path, "stale.sock"))
    stale.close()  # the file stays, nobody listens
    for path, exc_type, code in [
        (net.unix_path(tmp_path, "stale.sock"), ConnectionRefusedError, errno.ECONNREFUSED),
        (net.unix_path(tmp_path, "missing.sock"), FileNotFoundError, errno.ENOENT),
    ]:
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        try:
            with pytest.raises(exc_type) as info:
                run(loop.sock_connect(client, path))
            assert info.value.errno == code
        finally:
            client.close()


# --- blocking sockets -------------------------------------------------------------------


def _blocking_op(loop, name: str):
    """(coroutine factory, sockets to close) for ``name`` on a blocking socket."""
    a, b = socket.socketpair()
    a.setblocking(True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(True)
    ops = {
        "sock_recv": lambda: loop.sock_recv(a, 1),
        "sock_recv_into": lambda: loop.sock_recv_into(a, bytearray(1)),
        "sock_sendall": lambda: loop.sock_sendall(a, b"x"),
        "sock_connect": lambda: loop.sock_connect(a, "/nonexistent"),
        "sock_accept": lambda: loop.sock_accept(a),
        "sock_recvfrom": lambda: loop.sock_recvfrom(udp, 1),
        "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(udp, bytearray(1)),
        "sock_sendto": lambda: loop.sock_sendto(udp, b"x", udp.getsockname()),
    }
    return ops[name], (a, b, udp)


BLOCKING_OPS = [
    "sock_recv",
    "sock_recv_into",
    "sock_sendall",
    "sock_connect",
    "sock_accept",
    pytest.param("sock_recvfrom", marks=needs_311),
    pytest.param("sock_recvfrom_into", marks=needs_311),
    pytest.param("sock_sendto", marks=needs_311),
]


@pytest.mark.parametrize("op", BLOCKING_OPS)
def test_blocking_socket_rejected_in_debug_mode(loop, run, op):
    loop.set_debug(True)
    make, socks = _blocking_op(loop, op)
    try:
        with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
            run(make())
    finally:
        for s in socks:
            s.close()


def test_blocking_socket_accepted_without_debug_mode(loop, run):
    # asyncio only checks the blocking flag in debug mode; otherwise the call goes ahead
    # (and would block the loop if no data were ready).
    loop.set_debug(False)
    a, b = socket.socketpair()
    try:
        b.send(b"ready")
        assert run(loop.sock_recv(a, 10)) == b"ready"
        run(loop.sock_sendall(a, b"back"))
        assert b.recv(10) == b"back"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("op", ["sock_recv", "sock_sendall", "sock_connect", "sock_accept"])
def test_ssl_socket_rejected(loop, run, op):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    raw = socket.socket()
    raw.setblocking(False)
    sock = context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    call = {
        "sock_recv": lambda: loop.sock_recv(sock, 1),
        "sock_sendall": lambda: loop.sock_sendall(sock, b"x"),
        "sock_connect": lambda: loop.sock_connect(sock, ("127.0.0.1", 1)),
        "sock_accept": lambda: loop.sock_accept(sock),
    }[op]
    try:
        with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
            run(call())
    finally:
        sock.close()
        raw.close()


def test_sock_recv_on_transport_socket_raises(loop, run, tmp_path):
    # Rejected only when the call would wait: a socket a transport reads from cannot have
    # a second reader.
    a, b = net.connected_pair("tcp4", tmp_path)

    async def main():
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(a, 10)
        finally:
            transport.close()
        await asyncio.sleep(0)

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_transport_table_lists_open_transports(loop, loop_kind, run, tmp_path):
    """``loop._transports`` names the transport on an fd while it is open; a closed one is
    not in the way (asyncio keeps it until collected, ferroloop drops it at
    connection_lost), and a transport dropped unclosed leaves no entry behind."""
    import gc
    import warnings

    a, b = net.connected_pair("tcp4", tmp_path)
    c, d = net.connected_pair("tcp4", tmp_path)
    fd, other_fd = a.fileno(), c.fileno()

    async def main():
        transport, proto = await loop.create_connection(asyncio.Protocol, sock=a)
        listed = loop._transports.get(fd) is transport and fd in loop._transports
        transport.close()
        await asyncio.sleep(0.01)
        closed = loop._transports.get(fd)
        # Unclosed and paused (nothing else holds it): collected, with a ResourceWarning.
        dropped, _ = await loop.create_connection(asyncio.Protocol, sock=c)
        dropped.pause_reading()
        del dropped
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            gc.collect()
        gone = loop._transports.get(other_fd)
        return listed, closed, gone

    try:
        listed, closed, gone = run(main())
    finally:
        for s in (a, b, c, d):
            s.close()
    assert listed
    assert gone is None
    if loop_kind == "ferroloop":
        assert closed is None
        with pytest.raises(KeyError):
            loop._transports[fd]


# --- cancellation -----------------------------------------------------------------------


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cancelled_sock_recv_loses_no_data(loop, run, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        await _cancel(task)
        assert loop.remove_reader(a) is False  # no reader left behind
        b.send(b"after cancel")
        return await net.recv_exactly(loop, a, 12)

    assert run(main()) == b"after cancel"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_cancelled_sock_recv_into_loses_no_data(loop, run, pair):
    a, b = pair
    buf = bytearray(100)

    async def main():
        task = loop.create_task(loop.sock_recv_into(a, buf))
        await _not_done_after(task)
        await _cancel(task)
        assert loop.remove_reader(a) is False
        b.send(b"kept")
        n = await loop.sock_recv_into(a, buf)
        return bytes(buf[:n])

    assert run(main()) == b"kept"


@needs_311
def test_cancelled_sock_recvfrom_loses_no_data(loop, run, udp_pair):
    a, b = udp_pair

    async def main():
        task = loop.create_task(loop.sock_recvfrom(b, 100))
        await _not_done_after(task)
        await _cancel(task)
        assert loop.remove_reader(b) is False
        await loop.sock_sendto(a, b"one", b.getsockname())
        return await loop.sock_recvfrom(b, 100)

    assert run(main()) == (b"one", a.getsockname())


def test_cancelled_sock_accept_keeps_listening(loop, run, tmp_path):
    listener = net.listening_socket("unix", tmp_path)
    listener.setblocking(False)
    client = socket.socket(socket.AF_UNIX)

    async def main():
        task = loop.create_task(loop.sock_accept(listener))
        await _not_done_after(task)
        await _cancel(task)
        assert loop.remove_reader(listener) is False
        client.connect(listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        conn.close()

    try:
        run(main())
    finally:
        client.close()
        listener.close()


def test_cancelled_sock_sendall_leaves_socket_usable(loop, run, pair):
    # What was sent before the cancellation stays sent (a prefix of the payload); the rest
    # is dropped, and the socket carries the next payload intact.
    a, b = pair
    net.shrink_buffers(a)
    net.shrink_buffers(b)
    first = net.payload(4 * net.MiB, seed=1)
    second = b"second payload"

    async def main():
        task = loop.create_task(loop.sock_sendall(a, first))
        await _not_done_after(task, 0.05)
        await _cancel(task)
        assert loop.remove_writer(a) is False
        reader = loop.create_task(net.recv_until_eof(loop, b))
        await loop.sock_sendall(a, second)
        a.shutdown(socket.SHUT_WR)
        return await reader

    received = run(main())
    assert received.endswith(second)
    prefix = received[: -len(second)]
    assert 0 < len(prefix) < len(first)
    assert prefix == first[: len(prefix)]


def test_cancelled_sock_connect_removes_writer(loop, run):
    # A listener whose accept queue is full drops new SYNs, so the connect stays pending.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []

    async def main():
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            task = loop.create_task(loop.sock_connect(filler, listener.getsockname()))
            try:
                await asyncio.wait_for(asyncio.shield(task), 0.2)
            except asyncio.TimeoutError:
                return task  # this one is pending
        pytest.skip("the kernel completed every connection to a full accept queue")

    try:
        task = run(main())
        run(_cancel(task))
        assert loop.remove_writer(fillers[-1]) is False
    finally:
        for s in (*fillers, listener):
            s.close()


# --- one socket, many waits -------------------------------------------------------------
# ferroloop keeps a socket's epoll registration from one sock_* call to the next; these
# check that what asyncio guarantees still holds whatever happens between two calls.


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_many_waits_on_one_socket(loop, run, pair):
    a, b = pair

    async def main():
        got = []
        for i in range(20):
            task = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0)  # the call waits: nothing has arrived
            b.send(b"%d" % i)
            got.append(await task)
            await loop.sock_sendall(a, got[-1])
            assert b.recv(100) == got[-1]
        return got

    assert run(main()) == [b"%d" % i for i in range(20)]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_cancel_between_waits_loses_no_data(loop, run, pair):
    a, b = pair

    async def main():
        b.send(b"one")
        first = loop.create_task(loop.sock_recv(a, 100))
        assert await first == b"one"
        waiting = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(waiting)
        await _cancel(waiting)
        assert loop.remove_reader(a) is False
        b.send(b"two")
        await asyncio.sleep(0.01)  # arrives while nothing waits
        return await loop.sock_recv(a, 100)

    assert run(main()) == b"two"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_data_arriving_between_calls_is_received(loop, run, pair):
    a, b = pair

    async def main():
        got = []
        for i in range(5):
            task = loop.create_task(loop.sock_recv(a, 100))
            await _not_done_after(task, 0.005)
            b.send(b"x%d" % i)
            got.append(await task)
            b.send(b"y%d" % i)
            await asyncio.sleep(0.005)  # polls while nothing waits on the socket
            got.append(await loop.sock_recv(a, 100))
        return got

    assert run(main()) == [p % i for i in range(5) for p in (b"x%d", b"y%d")]


def test_new_socket_on_a_reused_fd_number(loop, run, tmp_path):
    # The first socket is closed after a call that waited; the kernel hands its number
    # to the next socket, whose calls must still be woken.
    async def main():
        a, b = net.connected_pair("unix", tmp_path)
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"old")
        assert await task == b"old"
        number = a.fileno()
        a.close()
        b.close()
        c, d = socket.socketpair()
        c.setblocking(False)
        d.setblocking(False)
        try:
            if number not in (c.fileno(), d.fileno()):
                pytest.skip("the kernel did not reuse the fd number")
            ours, peer = (c, d) if c.fileno() == number else (d, c)
            task = loop.create_task(loop.sock_recv(ours, 100))
            await _not_done_after(task)
            peer.send(b"new")
            return await task
        finally:
            c.close()
            d.close()

    assert run(main()) == b"new"


def test_reused_fd_number_while_the_old_file_is_still_open(loop, run, tmp_path):
    # A duplicate (a forked child has one too) keeps the old file, and its epoll
    # registration, alive after close(): its events must not reach the new socket.
    async def main():
        a, b = net.connected_pair("unix", tmp_path)
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"old")
        assert await task == b"old"
        number = a.fileno()
        dup = a.dup()
        a.close()
        c, d = socket.socketpair()
        c.setblocking(False)
        d.setblocking(False)
        try:
            if number not in (c.fileno(), d.fileno()):
                pytest.skip("the kernel did not reuse the fd number")
            ours, peer = (c, d) if c.fileno() == number else (d, c)
            task = loop.create_task(loop.sock_recv(ours, 100))
            b.send(b"to the old file")
            await _not_done_after(task)
            peer.send(b"new")
            return await task, dup.recv(100)
        finally:
            for s in (b, dup, c, d):
                s.close()

    assert run(main()) == (b"new", b"to the old file")


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_add_reader_after_sock_recv(loop, run, pair):
    # A reader added after a call that waited is asyncio's level-triggered reader: called
    # again while the data stays unread.
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"one")
        assert await task == b"one"
        calls = []
        loop.add_reader(a, calls.append, None)
        b.send(b"two")
        for _ in range(50):
            await asyncio.sleep(0.001)
            if len(calls) >= 3:
                break
        assert loop.remove_reader(a) is True
        assert len(calls) >= 3
        assert a.recv(100) == b"two"
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"three")
        return await task

    assert run(main()) == b"three"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_transport_after_sock_recv(loop, run, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"raw")
        assert await task == b"raw"
        received = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data):
                received.set_result(data)

        transport, _ = await loop.create_connection(Proto, sock=a)
        b.send(b"via transport")
        try:
            return await asyncio.wait_for(received, 5)
        finally:
            transport.close()
            await asyncio.sleep(0)

    assert run(main()) == b"via transport"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_recv_waits_after_sendall_waited(loop, run, pair):
    # sendall waited for room, then the socket keeps becoming writable as the peer reads:
    # nothing may mistake that for the reader's event.
    a, b = pair
    net.shrink_buffers(a)
    net.shrink_buffers(b)
    data = net.payload(net.MiB, seed=2)

    async def main():
        reader = loop.create_task(net.recv_exactly(loop, b, len(data)))
        await loop.sock_sendall(a, data)
        assert await reader == data
        task = loop.create_task(loop.sock_recv(a, 100))
        await _not_done_after(task)
        b.send(b"reply")
        return await task

    assert run(main()) == b"reply"
