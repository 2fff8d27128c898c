"""add_reader / add_writer and their removal, on socketpairs and other fds."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from support.loops import run_forever_bounded


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class FileLike:
    """Not a socket: only has fileno(), which is all add_reader needs."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def test_reader_is_level_triggered(loop, pair):
    a, b = pair
    calls = 0

    def on_readable():
        nonlocal calls
        calls += 1  # deliberately not reading: the fd stays readable
        if calls == 5:
            loop.remove_reader(a)
            loop.stop()

    loop.add_reader(a, on_readable)
    b.send(b"x")
    run_forever_bounded(loop)
    assert calls == 5
    assert a.recv(10) == b"x"


def test_reader_passes_args_and_sees_data(loop, pair):
    a, b = pair
    got = []

    def on_readable(tag, sock):
        got.append((tag, sock.recv(100)))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, "tag", a)
    loop.call_soon(b.send, b"hello")
    run_forever_bounded(loop)
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(a.fileno()) is True


def test_writer_called_when_writable(loop, pair):
    a, _ = pair
    calls = []

    def on_writable():
        calls.append(a.send(b"ping"))
        loop.remove_writer(a)
        loop.stop()

    loop.add_writer(a, on_writable)
    run_forever_bounded(loop)
    assert calls == [4]


def test_remove_return_values(loop, pair):
    a, _ = pair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, print)
    loop.add_writer(a, print)
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False


def test_reader_and_writer_on_same_fd_are_independent(loop, pair):
    a, b = pair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)
        b.send(b"data")

    def on_readable():
        events.append(("r", a.recv(10)))
        loop.stop()

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    run_forever_bounded(loop)
    assert events == ["w", ("r", b"data")]
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True


def test_add_reader_with_fileno_object(loop, pair):
    a, b = pair
    obj = FileLike(a.fileno())
    got = []

    def on_readable():
        got.append(a.recv(10))
        loop.stop()

    loop.add_reader(obj, on_readable)
    b.send(b"obj")
    run_forever_bounded(loop)
    assert got == [b"obj"]
    # The registration is keyed by fd, so the int removes what the object added.
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(obj) is False


def test_add_reader_replaces_existing(loop, pair):
    a, b = pair
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append(("second", a.recv(10)))
        loop.stop()

    loop.add_reader(a, first)
    loop.add_reader(a, second)
    b.send(b"z")
    run_forever_bounded(loop)
    assert calls == [("second", b"z")]
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_invalid_fds(loop):
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        loop.add_reader(-1, print)
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        loop.add_writer(-1, print)
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        loop.remove_reader(-1)
    with pytest.raises(ValueError, match="^Invalid file object: 'abc'$"):
        loop.add_reader("abc", print)
    with pytest.raises(ValueError, match="^Invalid file object: 1.5$"):
        loop.add_writer(1.5, print)
    with pytest.raises(ValueError, match="^Invalid file object: None$"):
        loop.remove_writer(None)


def test_add_reader_on_unopened_fd_raises_ebadf(loop):
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # now a free descriptor number
    with pytest.raises(OSError) as info:
        loop.add_reader(fd, print)
    assert info.value.errno == errno.EBADF
    assert loop.remove_reader(fd) is False


def test_add_reader_on_regular_file_raises_eperm(loop, tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        with pytest.raises(PermissionError) as info:
            loop.add_reader(f, print)  # epoll refuses regular files
        assert info.value.errno == errno.EPERM
        assert info.value.strerror == os.strerror(errno.EPERM)
        assert loop.remove_reader(f) is False


def test_reader_sees_peer_close_then_removal(loop, pair):
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(10))
        loop.stop()

    loop.add_reader(a, on_readable)
    b.close()
    run_forever_bounded(loop)
    assert got == [b""]  # EOF is readable
    assert loop.remove_reader(a) is True


def test_remove_reader_after_fd_closed(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a.fileno(), print)
        fd = a.fileno()
        a.close()  # the kernel already dropped it from epoll; removal must still succeed
        assert loop.remove_reader(fd) is True
        assert loop.remove_reader(fd) is False
    finally:
        b.close()


def test_reader_removing_itself(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append(loop.remove_reader(a))

    loop.add_reader(a, on_readable)
    b.send(b"unread")  # stays readable: a live registration would fire again
    loop.call_later(0.05, loop.stop)
    run_forever_bounded(loop)
    assert calls == [True]


def test_remove_reader_cancels_callback_polled_same_iteration(loop, pair):
    # asyncio queues I/O callbacks behind the callbacks already ready, and removal cancels
    # the queued handle: a remove_reader queued first wins even though the fd was polled
    # readable in that same iteration.
    a, b = pair
    calls = []
    b.send(b"x")
    loop.add_reader(a, calls.append, "reader")
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)  # one iteration: the unread byte makes the reader run
    assert calls == ["reader"]
    loop.call_soon(lambda: calls.append(("removed", loop.remove_reader(a))))
    loop.call_soon(loop.stop)
    run_forever_bounded(loop)
    assert calls == ["reader", ("removed", True)]


def test_closed_loop(loop, pair):
    a, _ = pair
    loop.add_reader(a, print)
    loop.close()  # drops the registration
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_writer(a, print)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
