"""No byte to the wrong file: a pipe transport whose pipe the program closed never reads,
writes or unregisters the file that takes the pipe's fd number next.

The program closes its pipe object while the transport is open, and a new pipe is put
at the freed number (``os.dup2``). asyncio (and uvloop, which hands libuv the number)
keeps using the number: its write transport writes into whatever file has it (the
``ferroloop_only`` test below; with a read end there it fails with EBADF instead), and
its close removes the new owner's reader. ferroloop's transports work on a descriptor
of their own: the old file still gets the transport's bytes, and its reader sees end of
file when the transport closes. The shared assertions are what both loops guarantee in
these orders: no misdelivered byte.

A program that closes the fd behind its pipe object's back is not exercised: the
transport's ``connection_lost`` closes that object, which then closes whatever file
has the number, on every loop.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings

import pytest

OLD = b"o" * 100
NEW = b"n" * 100


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc) -> None:
        self.lost = True


def _put_new_pipe_at(number: int, end: str) -> tuple[int, int]:
    """A new pipe whose read or write ``end`` takes the (freed) fd ``number``; (r, w)."""
    r, w = os.pipe()
    mine, other = (r, w) if end == "read" else (w, r)
    if mine != number:
        if other == number:  # the other end took it: move that one away first
            other = os.dup(other)
        os.dup2(mine, number, inheritable=False)
        os.close(mine)
    return (number, other) if end == "read" else (other, number)


def _read_all(fd: int) -> bytes:
    """What ``fd`` (made non-blocking) holds now; b"" also at end of file."""
    os.set_blocking(fd, False)
    data = bytearray()
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return bytes(data)


def _at_eof(fd: int) -> bool:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0.01)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class OldPipe:
    """An ``os.pipe()`` whose ``end`` ("read" or "write") the program opens as the file
    object ``pipe`` for a transport; ``reuse`` then puts a new pipe (``new_r``,
    ``new_w``) at that end's number."""

    def __init__(self, end: str) -> None:
        self.end = end
        self.r, self.w = os.pipe()
        number, self.other = (self.r, self.w) if end == "read" else (self.w, self.r)
        self.pipe = open(number, "rb" if end == "read" else "wb", buffering=0)
        self.proto = Recorder()
        self.new_r = self.new_w = -1

    async def connect(self, loop):
        if self.end == "read":
            transport, _ = await loop.connect_read_pipe(lambda: self.proto, self.pipe)
        else:
            transport, _ = await loop.connect_write_pipe(lambda: self.proto, self.pipe)
        return transport

    def reuse(self, new_end: str) -> None:
        """The program closes its pipe object; a new pipe's ``new_end`` takes the number."""
        number = self.pipe.fileno()
        self.pipe.close()
        self.new_r, self.new_w = _put_new_pipe_at(number, new_end)

    def close_other(self) -> None:
        """Closes the old pipe's end that the test kept."""
        os.close(self.other)
        self.other = -1

    def close_fds(self) -> None:
        _close_fds(self.new_r, self.new_w, self.other)


@pytest.fixture
def old_pipe():
    """Makes an ``OldPipe``; closes the fds the test still holds after it."""
    made: list[OldPipe] = []

    def make(end: str) -> OldPipe:
        made.append(OldPipe(end))
        return made[-1]

    yield make
    for p in made:
        p.close_fds()


def test_read_transport_whose_pipe_was_closed_spares_the_next_owner(loop, run, loop_kind, old_pipe):
    old = old_pipe("read")
    proto = old.proto
    calls = []

    async def main():
        transport = await old.connect(loop)
        await _settle()
        old.reuse("read")
        new_r = old.new_r
        os.write(old.new_w, NEW)
        try:
            os.write(old.w, OLD)
        except BrokenPipeError:
            # asyncio: the program's close() closed the old pipe's only read end.
            assert loop_kind == "asyncio"
        try:
            loop.add_reader(new_r, calls.append, 1)
        except FileNotFoundError:
            # asyncio: its selector still holds the transport's key for the number.
            assert loop_kind == "asyncio"
        await _settle()
        transport.pause_reading()
        transport.close()
        calls.clear()
        await _settle()
        assert b"n" not in proto.data
        if loop_kind == "ferroloop":
            # The old file is still the transport's; the new owner's reader outlives
            # the old transport's pause and close.
            assert bytes(proto.data) == OLD
            assert calls
            assert proto.lost
        loop.remove_reader(new_r)
        # Nobody read the new pipe's bytes.
        assert _read_all(new_r) == NEW

    run(main())


def test_write_transport_whose_pipe_was_closed_spares_the_next_owner(
    loop, run, loop_kind, old_pipe
):
    """The new file at the number is a read end: asyncio's write fails (EBADF)."""
    old = old_pipe("write")
    proto, r = old.proto, old.r
    calls = []

    async def main():
        transport = await old.connect(loop)
        await _settle()
        old.reuse("read")
        new_r = old.new_r
        os.write(old.new_w, NEW)
        try:
            loop.add_reader(new_r, calls.append, 1)
        except FileNotFoundError:
            assert loop_kind == "asyncio"
        transport.write(OLD)
        transport.close()
        calls.clear()
        await _settle()
        if loop_kind == "ferroloop":
            assert calls
            assert proto.lost
            # The old pipe got the bytes, then end of file: the transport closed the
            # last write end.
            assert _read_all(r) == OLD
            assert _at_eof(r)
        loop.remove_reader(new_r)
        assert _read_all(new_r) == NEW

    run(main())


@pytest.mark.ferroloop_only
def test_write_transport_never_writes_into_a_new_write_end(loop, run, old_pipe):
    """asyncio writes into the new pipe here (``os.write`` on the number)."""
    old = old_pipe("write")

    async def main():
        transport = await old.connect(loop)
        await _settle()
        old.reuse("write")
        transport.write(OLD)
        await _settle()
        assert _read_all(old.new_r) == b""
        assert _read_all(old.r) == OLD
        transport.abort()
        await _settle()
        assert old.proto.lost
        assert _at_eof(old.r)
        # The new write end is untouched: its reader is not at end of file.
        os.write(old.new_w, NEW)
        assert _read_all(old.new_r) == NEW

    run(main())


@pytest.mark.ferroloop_only
def test_read_transport_resumed_after_reuse_reads_its_own_file(loop, run, old_pipe):
    """asyncio's resume_reading registers the number, so it reads the new pipe here."""
    old = old_pipe("read")

    async def main():
        transport = await old.connect(loop)
        await _settle()
        transport.pause_reading()
        old.reuse("read")
        os.write(old.new_w, NEW)
        os.write(old.w, OLD)
        transport.resume_reading()
        await _settle()
        assert bytes(old.proto.data) == OLD
        old.close_other()
        await _settle()
        assert old.proto.lost  # end of file of the old pipe
        assert _read_all(old.new_r) == NEW

    run(main())


@pytest.mark.ferroloop_only
def test_write_transport_fills_and_closes_its_own_file(loop, run, old_pipe):
    """A buffered write flushed after the program closed its pipe goes to the old file."""
    old = old_pipe("write")
    r = old.r
    big = b"b" * (1 << 20)

    async def main():
        transport = await old.connect(loop)
        transport.write(big)
        assert transport.get_write_buffer_size() > 0
        old.reuse("write")
        transport.close()  # flushes first
        got = bytearray()
        for _ in range(500):
            got += _read_all(r)
            await asyncio.sleep(0)
            if old.proto.lost:
                break
        got += _read_all(r)
        assert bytes(got) == big
        assert _at_eof(r)
        assert _read_all(old.new_r) == b""

    run(main())


def test_repr_shows_the_pipes_number_and_polling(loop, run, old_pipe):
    old = old_pipe("read")

    async def main():
        transport = await old.connect(loop)
        await _settle()
        text = repr(transport)
        assert f"fd={old.r}" in text and "polling" in text, text
        transport.pause_reading()
        assert "idle" in repr(transport)
        transport.close()
        await _settle()
        assert "closed" in repr(transport)

    run(main())


@pytest.mark.parametrize("end", ["abort", "write_eof", "error"])
def test_every_end_of_a_write_transport_gives_its_reader_eof(loop, run, end, old_pipe):
    old = old_pipe("write")
    proto, r = old.proto, old.r

    async def main():
        transport = await old.connect(loop)
        transport.write(b"x")
        if end == "abort":
            transport.abort()
        elif end == "write_eof":
            transport.write_eof()
        else:
            transport._fatal_error(OSError(5, "test"))
        await _settle()
        assert proto.lost
        assert _read_all(r) in (b"x",)
        assert _at_eof(r)

    run(main())


def test_unclosed_write_transport_gives_its_reader_eof_when_collected(loop, run):
    r, w = os.pipe()
    pipes = [open(w, "wb", buffering=0)]

    async def main():
        # Only the transport holds the pipe object.
        await loop.connect_write_pipe(Recorder, pipes.pop())

    try:
        run(main())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            loop.close()
            for _ in range(3):
                gc.collect()
        assert _at_eof(r)
    finally:
        os.close(r)
