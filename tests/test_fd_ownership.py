"""No byte to the wrong socket: pending operations, readers and transports of a socket
the program closed never act on the file that takes its fd number next.

Two ways a number changes hands are exercised. A program's ``close()``: asyncio really
closes the file and the next socket usually gets the number, while ferroloop (as uvloop)
holds the file open while it waits on the socket's behalf, so the number is not reused
under a pending operation. And a file replaced behind the socket's back (``detach()`` and
``os.dup2``), which no loop can prevent: the loop must then never hand the old operation
the new file's events. asyncio fails loudly in both (the new socket's wait raises
``FileNotFoundError``, or the old operation never completes); the shared assertions are
only what both loops guarantee: no misdelivered byte, no operation completed wrongly.
The uvloop-like outcomes are the ``ferroloop_only`` tests (uvloop's own tests describe
the same behaviour; asyncio hangs on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import pytest
from support import net

OLD = b"o" * 1000
NEW = b"n" * 1000


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _fill(sock: socket.socket) -> None:
    """Writes into ``sock`` until the kernel says it is full."""
    net.shrink_buffers(sock)
    chunk = b"f" * 65536
    try:
        while True:
            sock.send(chunk)
    except BlockingIOError:
        pass


def _drain(sock: socket.socket) -> bytes:
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return bytes(data)


def _replace_file(old: socket.socket) -> tuple[socket.socket, socket.socket]:
    """Puts a new connected socket at ``old``'s fd number behind the loop's back: ``old``
    is detached and its file closed by ``os.dup2``. (new socket at that number, its peer)"""
    fd = old.fileno()
    x, peer = _pair()
    old.detach()
    os.dup2(x.fileno(), fd)  # closes old's file, the loop is not told
    x.close()
    new = socket.socket(fileno=fd)
    new.setblocking(False)
    return new, peer


async def _settle(loop) -> None:
    for _ in range(3):
        await asyncio.sleep(0.01)


async def _new_op(loop_kind: str, coro):
    """The new socket's own operation: it must work on ferroloop; on asyncio it may
    raise FileNotFoundError (the selector's MOD finds the old file gone), RuntimeError
    (a closed transport still claims the number) or never complete (the selector keeps
    the old file's registration for the number), never return anything not its own."""
    try:
        return await asyncio.wait_for(coro, 0.5 if loop_kind == "asyncio" else 5)
    except (FileNotFoundError, RuntimeError, asyncio.TimeoutError):
        if loop_kind != "asyncio":
            raise
        return None


@contextlib.contextmanager
def _listener_to_fill():
    """A loopback listener with no room in its accept queue, and the list that
    ``_pending_connect`` puts the sockets filling it in; closes them all."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        yield listener, fillers
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def _pending_connect(loop, listener, fillers) -> tuple[socket.socket, asyncio.Task]:
    """A socket and its ``sock_connect`` to ``listener``, still in progress; skips the
    test when the kernel accepts the connection at once."""
    address = listener.getsockname()
    # Fill the accept queue so that the next SYN is dropped and connect waits.
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(address)
        except BlockingIOError:
            pass
        fillers.append(s)
    a = socket.socket()
    a.setblocking(False)
    task = loop.create_task(loop.sock_connect(a, address))
    await _settle(loop)
    if task.done():
        task.result()
        pytest.skip("the kernel accepted the connection at once")
    return a, task


def _old_outcome(task: asyncio.Task):
    """What the old operation did: None while pending, else its result or exception."""
    if not task.done():
        task.cancel()
        return None
    if task.cancelled():
        return None
    return task.exception() or task.result()


# --- the file replaced behind the socket's back: the registry never misdelivers


@pytest.mark.parametrize("op", ["recv", "recv_into"])
def test_replaced_file_under_pending_read_gets_nothing_of_the_new_file(loop, run, loop_kind, op):
    a, a_peer = _pair()

    async def main():
        buf = bytearray(4096)
        read = loop.sock_recv(a, 4096) if op == "recv" else loop.sock_recv_into(a, buf)
        old = loop.create_task(read)
        await _settle(loop)
        new, new_peer = _replace_file(a)
        with new, new_peer, a_peer:
            # The new socket waits the other way (writable), then reads its own data.
            _fill(new)
            send = loop.create_task(_new_op(loop_kind, loop.sock_sendall(new, NEW)))
            await _settle(loop)
            got_by_peer = _drain(new_peer)
            await send
            got_by_peer += _drain(new_peer)
            new_peer.send(NEW)
            await _settle(loop)
            mine = await _new_op(loop_kind, loop.sock_recv(new, 4096))
            outcome = _old_outcome(old)
            # The old read never returns the new file's bytes.
            assert not isinstance(outcome, (bytes, int)), outcome
            if loop_kind == "ferroloop":
                assert isinstance(outcome, OSError)  # EBADF: its file is gone
                assert mine == NEW
                assert got_by_peer.endswith(NEW)
            assert b"o" not in got_by_peer

    run(main())


def test_replaced_file_under_pending_sendall_sends_nothing_to_the_new_file(loop, run, loop_kind):
    a, a_peer = _pair()

    async def main():
        _fill(a)
        old = loop.create_task(loop.sock_sendall(a, OLD * 200))
        await _settle(loop)
        new, new_peer = _replace_file(a)
        with new, new_peer, a_peer:
            # The new socket waits the other way (readable).
            recv = loop.create_task(_new_op(loop_kind, loop.sock_recv(new, 4096)))
            await _settle(loop)
            new_peer.send(NEW)
            mine = await recv
            await _settle(loop)
            assert b"o" not in _drain(new_peer)
            outcome = _old_outcome(old)
            assert outcome is None or isinstance(outcome, OSError), outcome
            if loop_kind == "ferroloop":
                assert isinstance(outcome, OSError)
                assert mine == NEW

    run(main())


def test_replaced_file_under_pending_accept_accepts_nothing(loop, run, loop_kind, tmp_path):
    listener = net.listening_socket("tcp4", tmp_path)
    listener.setblocking(False)

    async def main():
        old = loop.create_task(loop.sock_accept(listener))
        await _settle(loop)
        new, new_peer = _replace_file(listener)
        with new, new_peer:
            recv = loop.create_task(_new_op(loop_kind, loop.sock_recv(new, 4096)))
            await _settle(loop)
            new_peer.send(NEW)
            mine = await recv
            outcome = _old_outcome(old)
            assert not isinstance(outcome, tuple), outcome
            if loop_kind == "ferroloop":
                assert isinstance(outcome, OSError)
                assert mine == NEW

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sock_recvfrom arrived in 3.11")
@pytest.mark.parametrize("op", ["recvfrom", "recvfrom_into"])
def test_replaced_file_under_pending_recvfrom_gets_nothing(loop, run, loop_kind, op):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    a.setblocking(False)

    async def main():
        buf = bytearray(4096)
        read = loop.sock_recvfrom(a, 4096) if op == "recvfrom" else loop.sock_recvfrom_into(a, buf)
        old = loop.create_task(read)
        await _settle(loop)
        new, new_peer = _replace_file(a)
        with new, new_peer:
            _fill(new)
            send = loop.create_task(_new_op(loop_kind, loop.sock_sendall(new, NEW)))
            await _settle(loop)
            got = _drain(new_peer)
            await send
            new_peer.send(NEW)
            await _settle(loop)
            mine = await _new_op(loop_kind, loop.sock_recv(new, 4096))
            outcome = _old_outcome(old)
            assert not isinstance(outcome, tuple), outcome
            if loop_kind == "ferroloop":
                assert isinstance(outcome, OSError)
                assert mine == NEW
                assert got

    run(main())


def test_replaced_file_under_an_add_reader_callback_is_not_called(loop, run, loop_kind):
    a, a_peer = _pair()
    calls = []

    async def main():
        loop.add_reader(a, calls.append, "old")
        await _settle(loop)
        new, new_peer = _replace_file(a)
        with new, new_peer, a_peer:
            _fill(new)
            send = loop.create_task(_new_op(loop_kind, loop.sock_sendall(new, NEW)))
            await _settle(loop)
            new_peer.send(NEW)
            _drain(new_peer)
            await send
            await _settle(loop)
            assert calls == []
            loop.remove_reader(new.fileno())

    run(main())


# --- a program's close(): the number is not reused under a pending operation


@pytest.mark.parametrize("op", ["recv", "recv_into", "sendall", "sendfile", "accept"])
def test_close_under_pending_op_then_new_socket(loop, run, loop_kind, op, tmp_path):
    """The program closes the socket of a pending operation and opens new ones (on
    asyncio one of them usually takes the number): nothing crosses over."""
    if op == "accept":
        a = net.listening_socket("tcp4", tmp_path)
        a.setblocking(False)
        a_peer = None
    else:
        a, a_peer = _pair()

    stack = contextlib.ExitStack()

    async def main():
        if op == "recv":
            old = loop.create_task(loop.sock_recv(a, 4096))
        elif op == "recv_into":
            old = loop.create_task(loop.sock_recv_into(a, bytearray(4096)))
        elif op == "sendall":
            _fill(a)
            old = loop.create_task(loop.sock_sendall(a, OLD * 200))
        elif op == "sendfile":
            _fill(a)
            path = tmp_path / "old"
            path.write_bytes(OLD * 200)
            file = stack.enter_context(open(path, "rb"))
            old = loop.create_task(loop.sock_sendfile(a, file))
        else:
            old = loop.create_task(loop.sock_accept(a))
        await _settle(loop)
        fd = a.fileno()
        a.close()
        pairs = [_pair() for _ in range(2)]
        try:
            for new, new_peer in pairs:
                # Each new socket waits for its own data, then answers.
                recv = loop.create_task(_new_op(loop_kind, loop.sock_recv(new, 4096)))
                await _settle(loop)
                new_peer.send(NEW)
                mine = await recv
                assert mine in (NEW, None)
                if mine is not None:
                    await loop.sock_sendall(new, NEW)
                    await _settle(loop)
                    assert _drain(new_peer) == NEW
                if loop_kind == "ferroloop":
                    assert new.fileno() != fd  # the old file is still open
                    assert mine == NEW
            outcome = _old_outcome(old)
            if isinstance(outcome, bytes):
                assert b"n" not in outcome
            assert not isinstance(outcome, (int, tuple)) or loop_kind == "ferroloop"
        finally:
            for s in (x for p in pairs for x in p):
                s.close()
            if a_peer is not None:
                a_peer.close()

    with stack:
        run(main())


def test_connect_closed_while_pending_does_not_connect_a_new_socket(loop, run, loop_kind):
    """A connect still in progress (the listener's backlog is full), its socket closed:
    the new socket at that number is not connected by it and its own wait works."""

    async def main():
        a, old = await _pending_connect(loop, listener, fillers)
        new, new_peer = _replace_file(a)
        with new, new_peer:
            recv = loop.create_task(_new_op(loop_kind, loop.sock_recv(new, 4096)))
            await _settle(loop)
            new_peer.send(NEW)
            mine = await recv
            outcome = _old_outcome(old)
            assert outcome is None or isinstance(outcome, OSError), outcome
            if loop_kind == "ferroloop":
                assert mine == NEW

    with _listener_to_fill() as (listener, fillers):
        run(main())


# --- remove_reader / remove_writer with a socket object closed since


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_remove_reader_writer_of_a_closed_socket(loop, side):
    a, b = _pair()
    add = loop.add_reader if side == "reader" else loop.add_writer
    remove = loop.remove_reader if side == "reader" else loop.remove_writer
    add(a, lambda: None)
    a.close()
    # asyncio finds the registration by the object (its fileno() is -1 now); ferroloop
    # holds the file open until then. uvloop returns None here.
    assert remove(a) is True
    assert a.fileno() == -1
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        remove(a)
    b.close()


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_remove_reader_writer_of_a_detached_socket(loop, side):
    a, b = _pair()
    add = loop.add_reader if side == "reader" else loop.add_writer
    remove = loop.remove_reader if side == "reader" else loop.remove_writer
    add(a, lambda: None)
    os.close(a.detach())
    assert remove(a) is True
    b.close()


@pytest.mark.parametrize("side", ["reader", "writer"])
@pytest.mark.parametrize("by", ["fileno", "object"])
def test_replaced_registrations_give_the_socket_back(loop, side, by):
    """Registering a socket again releases what the replaced registration held: after
    the last removal, close() really closes, however the socket was named."""
    s = socket.socket()
    s.setblocking(False)
    add = loop.add_reader if side == "reader" else loop.add_writer
    remove = loop.remove_reader if side == "reader" else loop.remove_writer
    for _ in range(3):
        add(s, lambda: None)
    assert remove(s.fileno() if by == "fileno" else s) is True
    s.close()
    assert s.fileno() == -1


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_registered_by_number_removed_by_object_keeps_the_socket_open(loop, side):
    s = socket.socket()
    s.setblocking(False)
    add = loop.add_reader if side == "reader" else loop.add_writer
    remove = loop.remove_reader if side == "reader" else loop.remove_writer
    add(s.fileno(), lambda: None)
    assert remove(s) is True
    assert s.fileno() != -1
    s.close()
    assert s.fileno() == -1


# --- transports made with sock= whose socket the program closes


def test_transport_whose_socket_the_program_closed_spares_the_next_owner(loop, run, loop_kind):
    a, a_peer = _pair()

    async def main():
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=a)
        await _settle(loop)
        a.close()
        pairs = [_pair() for _ in range(2)]
        try:
            recvs = [
                loop.create_task(_new_op(loop_kind, loop.sock_recv(new, 4096))) for new, _ in pairs
            ]
            await _settle(loop)
            transport.write(OLD)
            transport.close()
            await _settle(loop)
            for (_new, new_peer), recv in zip(pairs, recvs, strict=True):
                new_peer.send(NEW)
                assert await recv in (NEW, None)
                assert b"o" not in _drain(new_peer)
                if loop_kind == "ferroloop":
                    assert recv.result() == NEW
        finally:
            for s in (x for p in pairs for x in p):
                s.close()
            a_peer.close()

    run(main())


# --- ferroloop (as uvloop): the file stays open for what the loop waits on


@pytest.mark.ferroloop_only
def test_pending_recv_survives_close_and_gets_the_peers_data(loop, run):
    a, a_peer = _pair()

    async def main():
        task = loop.create_task(loop.sock_recv(a, 4096))
        await _settle(loop)
        a.close()
        assert a.fileno() != -1  # the loop's io reference keeps the file
        a_peer.send(OLD)
        assert await task == OLD
        assert a.fileno() == -1  # really closed once the operation ended

    run(main())
    a_peer.close()


@pytest.mark.ferroloop_only
def test_pending_sendall_survives_close_and_delivers(loop, run):
    a, a_peer = _pair()

    async def main():
        _fill(a)
        sent = _drain(a_peer)
        task = loop.create_task(loop.sock_sendall(a, OLD * 100))
        await _settle(loop)
        a.close()
        got = bytearray()
        while not task.done():
            got += _drain(a_peer)
            await asyncio.sleep(0.001)
        await task
        got += _drain(a_peer)
        assert len(sent) + len(got) > len(OLD * 100)
        assert bytes(got).endswith(OLD)
        assert a.fileno() == -1

    run(main())
    a_peer.close()


@pytest.mark.ferroloop_only
def test_pending_connect_survives_close(loop, run):
    """A connect in progress whose socket the program closes still completes (asyncio:
    it never completes); the socket is really closed once it did."""

    async def main():
        a, task = await _pending_connect(loop, listener, fillers)
        a.close()
        assert a.fileno() != -1
        # Room in the accept queue: the retransmitted SYN gets through.
        for s in fillers:
            s.close()
        conns = []
        while not task.done():
            try:
                conns.append(listener.accept()[0])
            except BlockingIOError:
                pass
            await asyncio.sleep(0.01)
        await task
        assert a.fileno() == -1
        for c in conns:
            c.close()

    with _listener_to_fill() as (listener, fillers):
        listener.setblocking(False)
        run(main())


@pytest.mark.ferroloop_only
def test_cancelled_op_on_a_closed_socket_really_closes_it(loop, run):
    a, a_peer = _pair()

    async def main():
        task = loop.create_task(loop.sock_recv(a, 4096))
        await _settle(loop)
        a.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _settle(loop)
        assert a.fileno() == -1

    run(main())
    a_peer.close()


@pytest.mark.ferroloop_only
def test_loop_close_releases_registered_sockets(loop, run):
    a, a_peer = _pair()
    loop.add_reader(a, lambda: None)
    a.close()
    assert a.fileno() != -1
    loop.close()
    assert a.fileno() == -1
    a_peer.close()


@pytest.mark.ferroloop_only
def test_loop_close_releases_pending_operations(loop, loop_errors):
    a, a_peer = _pair()
    task = loop.create_task(loop.sock_recv(a, 4096))
    loop.run_until_complete(asyncio.sleep(0.01))
    a.close()
    assert a.fileno() != -1
    loop.close()
    assert a.fileno() == -1
    a_peer.close()
    del task


@pytest.mark.ferroloop_only
def test_pending_recv_into_keeps_the_buffer_exported(loop, run):
    a, a_peer = _pair()

    async def main():
        buf = bytearray(16)
        task = loop.create_task(loop.sock_recv_into(a, buf))
        await _settle(loop)
        with pytest.raises(BufferError):
            buf.extend(b"x" * 100)
        a_peer.send(b"data")
        assert await task == 4
        buf.extend(b"x")  # released once the operation ended

    run(main())
    a.close()
    a_peer.close()


def test_pending_sendall_keeps_the_buffer_exported(loop, run):
    a, a_peer = _pair()

    async def main():
        _fill(a)
        data = bytearray(OLD * 100)
        task = loop.create_task(loop.sock_sendall(a, data))
        await _settle(loop)
        with pytest.raises(BufferError):
            del data[10:]
        with pytest.raises(BufferError):
            data.extend(b"x" * 100)
        while not task.done():
            _drain(a_peer)
            await asyncio.sleep(0.001)
        await task
        data.extend(b"x")

    run(main())
    a.close()
    a_peer.close()


def test_sock_recv_argument_errors(loop, run):
    a, b = _pair()

    async def main():
        with pytest.raises(ValueError, match="negative buffersize in recv"):
            await loop.sock_recv(a, -1)
        with pytest.raises(TypeError):
            await loop.sock_recv(a, "x")
        with pytest.raises(TypeError):
            await loop.sock_recv(a, 1.5)
        with pytest.raises(OverflowError):
            await loop.sock_recv(a, 1 << 80)

    run(main())
    a.close()
    b.close()
