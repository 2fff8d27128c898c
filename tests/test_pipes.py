"""connect_read_pipe / connect_write_pipe over pipes, socketpairs, FIFOs and ptys."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
import tty

import pytest
from support import net, proc

KINDS = ["pipe", "socketpair", "fifo", "pty"]
# Kinds whose far end reports EOF with an empty read (a pty master gets EIO instead).
EOF_KINDS = ["pipe", "socketpair", "fifo"]


def _has_pty() -> bool:
    try:
        master, slave = os.openpty()
    except OSError:
        return False
    os.close(master)
    os.close(slave)
    return True


HAS_PTY = _has_pty()


def _params(kinds):
    return [
        pytest.param(
            k, id=k, marks=[pytest.mark.skipif(not HAS_PTY, reason="no pty")] if k == "pty" else []
        )
        for k in kinds
    ]


class Ends:
    """One end of a channel for the loop (a file object or socket), the other a raw fd.

    ``direction`` is the loop's: "read" means the test writes to ``fd`` and the loop reads.
    """

    def __init__(self, kind: str, direction: str, tmp_path):
        self.kind = kind
        self.fds: list[int] = []
        self.objects: list = []
        if kind == "pipe":
            r, w = os.pipe()
            mine, other, mode = (r, w, "rb") if direction == "read" else (w, r, "wb")
            self.pipe = open(mine, mode, buffering=0)
        elif kind == "socketpair":
            a, b = socket.socketpair()
            self.pipe = a
            other = b.detach()
        elif kind == "fifo":
            path = tmp_path / "fifo"
            os.mkfifo(path)
            r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            w = os.open(path, os.O_WRONLY)
            mine, other, mode = (r, w, "rb") if direction == "read" else (w, r, "wb")
            self.pipe = open(mine, mode, buffering=0)
        elif kind == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no newline translation
            # The loop reads the master, or writes the slave (whose reader is the master).
            if direction == "read":
                self.pipe, other = open(master, "rb", buffering=0), slave
            else:
                self.pipe, other = open(slave, "wb", buffering=0), master
        else:
            raise ValueError(kind)
        os.set_blocking(other, False)
        self.fd = other
        self.objects.append(self.pipe)

    def close_other(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.close_other()
        for obj in self.objects:
            obj.close()


@pytest.fixture
def ends_factory(tmp_path):
    made: list[Ends] = []

    def factory(kind: str, direction: str) -> Ends:
        made.append(Ends(kind, direction, tmp_path))
        return made[-1]

    yield factory
    for ends in made:
        ends.close()


async def _read_fd(loop, fd: int, n: int, timeout: float = 5.0) -> bytes:
    """Exactly ``n`` bytes from a non-blocking fd (fails at EOF or after ``timeout``)."""
    data = bytearray()
    deadline = loop.time() + timeout
    while len(data) < n:
        try:
            chunk = os.read(fd, n - len(data))
        except BlockingIOError:
            assert loop.time() < deadline, f"only {len(data)} of {n} bytes arrived"
            await asyncio.sleep(0.001)
            continue
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


async def _read_to_eof(loop, fd: int, timeout: float = 5.0) -> bytes:
    """Everything until EOF (an empty read, or EIO from a pty master)."""
    data = bytearray()
    deadline = loop.time() + timeout
    while True:
        try:
            chunk = os.read(fd, 1024 * 1024)
        except BlockingIOError:
            assert loop.time() < deadline, f"no EOF after {len(data)} bytes"
            await asyncio.sleep(0.001)
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return bytes(data)
            raise
        if not chunk:
            return bytes(data)
        data += chunk


async def _read_pipe(loop, pipe, **kwargs):
    return await loop.connect_read_pipe(lambda: net.RecordingProtocol(loop, **kwargs), pipe)


async def _write_pipe(loop, pipe):
    return await loop.connect_write_pipe(lambda: net.RecordingProtocol(loop), pipe)


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", _params(EOF_KINDS))
@pytest.mark.parametrize("keep_open", [False, True], ids=["eof-false", "eof-true"])
def test_read_pipe_data_then_eof(loop, run, ends_factory, kind, keep_open):
    ends = ends_factory(kind, "read")
    data = net.payload(300_000)

    async def main():
        transport, proto = await _read_pipe(loop, ends.pipe, keep_open_on_eof=keep_open)
        assert proto.events == ["made"]
        assert transport.get_extra_info("pipe") is ends.pipe
        assert transport.get_extra_info("nothing", 7) == 7
        assert not transport.is_closing()
        view = memoryview(data)
        while view:
            try:
                n = os.write(ends.fd, view[:65536])
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            view = view[n:]
        await proto.wait_bytes(len(data))
        ends.close_other()
        # eof_received's return value does not matter: a read pipe closes at EOF.
        assert await proto.lost is None
        assert transport.is_closing()
        return proto

    proto = run(main())
    assert net.digest(bytes(proto.data)) == net.digest(data)
    assert proto.events == ["made", "data", "eof", "lost"]
    assert ends.pipe.fileno() == -1 if kind == "socketpair" else ends.pipe.closed


def test_read_pipe_pty_hangup_is_eio(loop, run, ends_factory):
    if not HAS_PTY:
        pytest.skip("no pty")
    ends = ends_factory("pty", "read")

    async def main():
        transport, proto = await _read_pipe(loop, ends.pipe)
        os.write(ends.fd, b"line\n")
        await proto.wait_bytes(5)
        ends.close_other()
        return await proto.lost, proto

    exc, proto = run(main())
    # Reading a pty master whose slave is closed fails with EIO; asyncio passes that to
    # connection_lost (without calling eof_received or the exception handler).
    assert type(exc) is OSError and exc.errno == errno.EIO
    assert proto.events == ["made", "data", "lost"]
    assert bytes(proto.data) == b"line\n"
    assert ends.pipe.closed


@pytest.mark.parametrize("kind", _params(KINDS))
def test_read_pipe_close(loop, run, ends_factory, kind):
    ends = ends_factory(kind, "read")

    async def main():
        transport, proto = await _read_pipe(loop, ends.pipe)
        transport.close()
        assert transport.is_closing()
        assert proto.events == ["made"]  # connection_lost comes soon, not from close()
        os.write(ends.fd, b"unread")
        assert await proto.lost is None
        transport.close()
        await asyncio.sleep(0.01)
        return proto

    proto = run(main())
    assert proto.events == ["made", "lost"]
    assert proto.lost_exc == [None]
    assert bytes(proto.data) == b""
    assert ends.pipe.fileno() == -1 if kind == "socketpair" else ends.pipe.closed
    if kind in ("pipe", "fifo"):
        with pytest.raises(BrokenPipeError):
            os.write(ends.fd, b"nobody reads")


def test_pause_and_resume_reading(loop, run, ends_factory):
    ends = ends_factory("pipe", "read")

    async def main():
        transport, proto = await _read_pipe(loop, ends.pipe)
        os.write(ends.fd, b"first")
        await proto.wait_bytes(5)
        transport.pause_reading()
        transport.pause_reading()  # idempotent
        if sys.version_info >= (3, 11):
            assert not transport.is_reading()
        os.write(ends.fd, b"second")
        await asyncio.sleep(0.05)
        assert bytes(proto.data) == b"first"
        transport.resume_reading()
        transport.resume_reading()
        if sys.version_info >= (3, 11):
            assert transport.is_reading()
        await proto.wait_bytes(11)
        ends.close_other()
        await proto.lost
        return proto

    proto = run(main())
    assert bytes(proto.data) == b"firstsecond"
    assert proto.events == ["made", "data", "eof", "lost"]


def test_eof_is_seen_only_after_resume(loop, run, ends_factory):
    ends = ends_factory("pipe", "read")

    async def main():
        transport, proto = await _read_pipe(loop, ends.pipe)
        transport.pause_reading()
        os.write(ends.fd, b"tail")
        ends.close_other()
        await asyncio.sleep(0.05)
        assert proto.events == ["made"]
        transport.resume_reading()
        await proto.lost
        return proto

    proto = run(main())
    assert proto.events == ["made", "data", "eof", "lost"]
    assert bytes(proto.data) == b"tail"


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="3.10's pipe transport starts reading after connection_made even if it paused",
)
def test_pause_reading_in_connection_made(loop, run, ends_factory):
    ends = ends_factory("pipe", "read")

    class PausingProtocol(net.RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        os.write(ends.fd, b"waiting")
        transport, proto = await loop.connect_read_pipe(lambda: PausingProtocol(loop), ends.pipe)
        await asyncio.sleep(0.05)
        before = bytes(proto.data)
        transport.resume_reading()
        await proto.wait_bytes(7)
        transport.close()
        await proto.lost
        return before

    assert run(main()) == b""


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", _params(KINDS))
def test_write_pipe_then_write_eof(loop, run, ends_factory, kind):
    ends = ends_factory(kind, "write")
    data = net.payload(1_000_000, seed=1)

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        assert transport.get_extra_info("pipe") is ends.pipe
        assert transport.can_write_eof()
        assert transport.get_write_buffer_size() == 0
        transport.write(data[:1000])
        transport.write(bytearray(data[1000:2000]))
        transport.write(memoryview(data)[2000:])
        transport.write(b"")
        # The kernel took what fits; the rest waits in the transport.
        assert 0 < transport.get_write_buffer_size() < len(data)
        transport.write_eof()
        assert transport.is_closing()
        received = await _read_to_eof(loop, ends.fd)
        assert await proto.lost is None
        return received, proto

    received, proto = run(main())
    assert net.digest(received) == net.digest(data)
    # More than the default high-water mark (64 KiB) was buffered, then drained.
    assert proto.events == ["made", "pause_writing", "resume_writing", "lost"]
    assert proto.resumes == [0]
    assert ends.pipe.fileno() == -1 if kind == "socketpair" else ends.pipe.closed


@pytest.mark.parametrize("method", ["close", "write_eof"])
def test_close_and_write_eof_flush_first(loop, run, ends_factory, method):
    ends = ends_factory("pipe", "write")
    data = net.payload(500_000, seed=2)

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        transport.write(data)
        getattr(transport, method)()
        transport.write(b"dropped")  # after close/write_eof: silently ignored
        await asyncio.sleep(0.02)
        assert proto.lost_exc == []  # waiting for the reader
        received = await _read_to_eof(loop, ends.fd)
        assert await proto.lost is None
        return received

    assert run(main()) == data


def test_abort_discards_buffered_data(loop, run, ends_factory):
    ends = ends_factory("pipe", "write")
    data = net.payload(500_000, seed=3)

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        transport.write(data)
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert transport.is_closing()
        assert await proto.lost is None
        return await _read_to_eof(loop, ends.fd), proto

    received, proto = run(main())
    assert 0 < len(received) < len(data)
    assert received == data[: len(received)]
    # The discarded buffer brings no resume_writing.
    assert proto.events == ["made", "pause_writing", "lost"]


@pytest.mark.parametrize("kind", _params(EOF_KINDS))
def test_write_pipe_reader_closes_idle(loop, run, ends_factory, kind):
    # Nothing buffered: the far end closing is noticed while idle, connection_lost(None).
    ends = ends_factory(kind, "write")

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        ends.close_other()
        exc = await proto.lost
        transport.write(b"after the loss")  # dropped, no exception
        await asyncio.sleep(0.01)
        return exc, proto

    exc, proto = run(main())
    assert exc is None
    assert proto.events == ["made", "lost"]


@pytest.mark.parametrize("kind", _params(EOF_KINDS))
def test_write_pipe_reader_closes_with_data_buffered(loop, run, ends_factory, kind):
    ends = ends_factory(kind, "write")

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        transport.write(net.payload(1_000_000, seed=4))
        assert transport.get_write_buffer_size() > 0
        ends.close_other()
        exc = await proto.lost
        assert transport.get_write_buffer_size() == 0
        return exc, proto

    exc, proto = run(main())
    assert type(exc) is BrokenPipeError
    assert proto.events == ["made", "pause_writing", "lost"]


def test_write_after_reader_closed_is_broken_pipe(loop, run):
    # The loss surfaces from the write itself (EPIPE); no exception handler call.
    r2, w2 = os.pipe()
    os.close(r2)
    pipe = open(w2, "wb", buffering=0)

    async def main():
        transport, proto = await _write_pipe(loop, pipe)
        transport.write(b"into the void")
        assert transport.is_closing()
        return await proto.lost

    try:
        exc = run(main())
    finally:
        pipe.close()
    assert type(exc) is BrokenPipeError and exc.errno == errno.EPIPE


def test_write_pipe_pty_hangup_is_eio(loop, run, ends_factory):
    if not HAS_PTY:
        pytest.skip("no pty")
    ends = ends_factory("pty", "write")

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        transport.write(b"seen\n")
        assert await _read_fd(loop, ends.fd, 5) == b"seen\n"
        ends.close_other()
        await asyncio.sleep(0.01)
        # A character device is not watched for hang-up: the next write finds out.
        assert proto.events == ["made"]
        transport.write(b"lost\n")
        return await proto.lost

    exc = run(main())
    assert type(exc) is OSError and exc.errno == errno.EIO


def test_write_flow_control_with_slow_reader(loop, run, ends_factory):
    ends = ends_factory("pipe", "write")
    data = net.payload(2 * net.MiB, seed=5)
    high, low = 64 * 1024, 16 * 1024

    class Writer(net.RecordingProtocol):
        def __init__(self, loop):
            super().__init__(loop)
            self.can_write = asyncio.Event()
            self.can_write.set()

        def pause_writing(self):
            super().pause_writing()
            self.can_write.clear()

        def resume_writing(self):
            super().resume_writing()
            self.can_write.set()

    async def write_all(transport, proto):
        for i in range(0, len(data), 16 * 1024):
            await proto.can_write.wait()
            transport.write(data[i : i + 16 * 1024])
            assert transport.get_write_buffer_size() <= high + 16 * 1024
        transport.write_eof()

    async def main():
        transport, proto = await loop.connect_write_pipe(lambda: Writer(loop), ends.pipe)
        transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == (low, high)
        writer = asyncio.ensure_future(write_all(transport, proto))
        received = bytearray()
        while len(received) < len(data):
            received += await _read_fd(loop, ends.fd, min(32 * 1024, len(data) - len(received)))
            await asyncio.sleep(0.0005)
        await writer
        assert await proto.lost is None
        return bytes(received), proto

    received, proto = run(main(), timeout=20)
    assert net.digest(received) == net.digest(data)
    assert len(proto.pauses) >= 2
    assert len(proto.resumes) == len(proto.pauses)
    assert all(size > high for size in proto.pauses)
    assert all(size <= low for size in proto.resumes)
    assert proto.events[-1] == "lost"


def test_buffered_bytearray_is_copied(loop, run, ends_factory):
    ends = ends_factory("pipe", "write")

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        transport.write(b"x" * 100_000)  # the pipe is full: what follows is buffered
        assert transport.get_write_buffer_size() > 0
        chunk = bytearray(b"original")
        transport.write(chunk)
        chunk[:] = b"MUTATED!"
        transport.write_eof()
        received = await _read_to_eof(loop, ends.fd)
        await proto.lost
        return received

    received = run(main())
    assert received == b"x" * 100_000 + b"original"


def test_write_rejects_non_bytes(loop, run, ends_factory):
    ends = ends_factory("pipe", "write")

    async def main():
        transport, proto = await _write_pipe(loop, ends.pipe)
        try:
            # asyncio checks with an assert statement.
            with pytest.raises(AssertionError):
                transport.write("text")
            assert not transport.is_closing()
            transport.write(b"ok")
            return await _read_fd(loop, ends.fd, 2)
        finally:
            transport.close()
            await proto.lost

    assert run(main()) == b"ok"


# --- what is accepted --------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["read", "write"])
def test_regular_file_is_refused(loop, run, tmp_path, direction):
    path = tmp_path / "regular"
    path.write_bytes(b"contents")
    message = {
        "read": "^Pipe transport is for pipes/sockets only.$",
        "write": "^Pipe transport is only for pipes, sockets and character devices$",
    }[direction]
    fds = net.open_fds()
    made = []
    with open(path, "rb" if direction == "read" else "ab", buffering=0) as f:
        connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
        with pytest.raises(ValueError, match=message):
            run(connect(lambda: made.append(1) or asyncio.Protocol(), f))
        assert not f.closed  # the caller still owns it
        assert os.get_blocking(f.fileno())
    assert made == [1]  # the protocol is made before the pipe is checked
    assert net.open_fds() == fds


def test_write_pipe_to_character_device(loop, run):
    with open(os.devnull, "wb", buffering=0) as f:

        async def main():
            transport, proto = await _write_pipe(loop, f)
            transport.write(b"x" * 1_000_000)
            assert transport.get_write_buffer_size() == 0  # /dev/null takes everything
            transport.close()
            return await proto.lost

        assert run(main()) is None
        assert f.closed


def test_pipe_is_made_non_blocking(loop, run):
    r, w = proc.pipe_files()
    try:
        assert os.get_blocking(r.fileno()) and os.get_blocking(w.fileno())

        async def main():
            rt, rp = await _read_pipe(loop, r)
            wt, wp = await _write_pipe(loop, w)
            blocking = os.get_blocking(r.fileno()), os.get_blocking(w.fileno())
            wt.write(b"through")
            await rp.wait_bytes(7)
            wt.close()
            await rp.lost
            await wp.lost
            return blocking, bytes(rp.data)

        assert run(main()) == ((False, False), b"through")
    finally:
        r.close()
        w.close()


def test_pipe_transports_leak_no_fds(loop, run):
    async def once():
        r, w = proc.pipe_files()
        rt, rp = await _read_pipe(loop, r)
        wt, wp = await _write_pipe(loop, w)
        wt.write(b"x")
        await rp.wait_bytes(1)
        wt.close()
        await rp.lost
        await wp.lost

    run(once())
    fds = net.open_fds()
    for _ in range(20):
        run(once())
    assert net.open_fds() == fds


# --- between processes -----------------------------------------------------------------------

_UPPER = """
import sys
while True:
    chunk = sys.stdin.buffer.read1(65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk.upper())
    sys.stdout.buffer.flush()
"""


def test_pipes_both_ways_with_a_child_process(loop, run):
    # The child reads one pipe and writes another; the loop holds the other ends of both.
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    child = subprocess.Popen(proc.python(_UPPER), stdin=to_child_r, stdout=from_child_w)
    os.close(to_child_r)
    os.close(from_child_w)
    data = net.payload(1_000_000, seed=6).hex().encode()  # 2 MB of lowercase hex

    async def main():
        wt, wp = await _write_pipe(loop, open(to_child_w, "wb", buffering=0))
        rt, rp = await _read_pipe(loop, open(from_child_r, "rb", buffering=0))
        wt.write(data)
        wt.write_eof()
        await rp.lost  # the child exits at EOF, closing its end
        await wp.lost
        return rp, wp

    try:
        rp, wp = run(main(), timeout=20)
        assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert net.digest(bytes(rp.data)) == net.digest(data.upper())
    assert rp.events == ["made", "data", "eof", "lost"]
    assert wp.lost_exc == [None]


def test_child_exiting_early_breaks_the_write_pipe(loop, run):
    to_child_r, to_child_w = os.pipe()
    child = subprocess.Popen(proc.python("import sys; sys.stdin.buffer.read(10)"), stdin=to_child_r)
    os.close(to_child_r)

    async def main():
        wt, wp = await _write_pipe(loop, open(to_child_w, "wb", buffering=0))
        wt.write(b"y" * 1_000_000)
        return await wp.lost

    try:
        exc = run(main())
        assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert type(exc) is BrokenPipeError
