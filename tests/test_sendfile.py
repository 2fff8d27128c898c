"""loop.sock_sendfile and loop.sendfile: the os.sendfile path, offset/count, the fallback.

What selects each path (as in asyncio): a regular file with a fileno() goes through
os.sendfile; an object without a usable fileno() (BytesIO) raises SendfileNotAvailableError
("not a regular file") from the native path, and so does an fd os.sendfile refuses on its first
call (a pipe); with fallback=True those are read into a buffer and sent with sock_sendall
(sock_sendfile) or transport.write (loop.sendfile) instead.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket

import pytest
from support import net

SIZE = 50 * net.MiB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """50 MiB of random data; each MiB starts with its index, so misplaced offsets show."""
    block = net.payload(net.MiB, seed=50)
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    with open(path, "wb") as f:
        for i in range(SIZE // net.MiB):
            f.write(i.to_bytes(8, "big") + block[8:])
    return path


def _content(path, offset: int = 0, count: int | None = None) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read() if count is None else f.read(count)


# --- loop.sock_sendfile -----------------------------------------------------------------


def test_sock_sendfile_50mib(loop, run, pair, big_file):
    ours, peer = pair

    async def main():
        with open(big_file, "rb") as f:
            reader = asyncio.ensure_future(net.recv_exactly(loop, peer, SIZE))
            sent = await loop.sock_sendfile(ours, f)
            return sent, f.tell(), await reader

    sent, position, received = run(main(), timeout=30)
    assert sent == SIZE
    assert position == SIZE  # the file position follows what was sent
    assert net.digest(received) == net.digest(_content(big_file))


def _read_to_eof(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(10)
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def test_sock_sendfile_cancelled_leaves_the_position_at_what_was_sent(
    loop, run, pair, big_file, loop_kind
):
    """The peer gets a prefix of the file. ferroloop moves the file position past exactly
    those bytes, as asyncio does when a transfer ends; asyncio's cancellation removes the
    writer before its step could update the position, which stays where it was."""
    ours, peer = pair
    net.shrink_buffers(ours)

    async def main():
        with open(big_file, "rb") as f:
            task = asyncio.ensure_future(loop.sock_sendfile(ours, f))
            await asyncio.sleep(0.05)  # the peer reads nothing: the send waits
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return f.tell()

    position = run(main(), timeout=30)
    ours.close()
    received = _read_to_eof(peer)
    assert 0 < len(received) < SIZE
    assert received == _content(big_file, 0, len(received))
    assert position == (0 if loop_kind == "asyncio" else len(received))


def test_sock_sendfile_to_a_peer_that_went_away_is_a_connection_error(loop, run, pair, big_file):
    ours, peer = pair
    net.shrink_buffers(ours)

    async def main():
        with open(big_file, "rb") as f:
            task = asyncio.ensure_future(loop.sock_sendfile(ours, f))
            await asyncio.sleep(0.05)
            assert not task.done()
            peer.close()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(task, 10)

    run(main(), timeout=30)


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_sendfile_offset_and_count(loop, run, pair, big_file):
    ours, peer = pair
    offset, count = net.MiB + 3, 5 * net.MiB + 7

    async def main():
        with open(big_file, "rb") as f:
            reader = asyncio.ensure_future(net.recv_exactly(loop, peer, count))
            sent = await loop.sock_sendfile(ours, f, offset, count)
            received = await reader
            ours.shutdown(socket.SHUT_WR)
            assert await net.recv_until_eof(loop, peer) == b""  # exactly count bytes
            return sent, f.tell(), received

    sent, position, received = run(main())
    assert sent == count
    assert position == offset + count
    assert received == _content(big_file, offset, count)


def test_sock_sendfile_past_end_and_empty_file(loop, run, tmp_path):
    ours, peer = net.connected_pair("unix", tmp_path)
    small = tmp_path / "small.bin"
    small.write_bytes(b"0123456789")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    async def main():
        with open(small, "rb") as f, open(empty, "rb") as e:
            results = [
                await loop.sock_sendfile(ours, f, offset=20),
                f.tell(),
                await loop.sock_sendfile(ours, e),
                await loop.sock_sendfile(ours, f, offset=7),
                f.tell(),
            ]
        ours.shutdown(socket.SHUT_WR)
        return results, await net.recv_until_eof(loop, peer)

    try:
        results, received = run(main())
    finally:
        ours.close()
        peer.close()
    assert results == [0, 0, 0, 3, 10]
    assert received == b"789"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_sendfile_fallback_for_object_without_fileno(loop, run, pair):
    ours, peer = pair
    data = net.payload(3 * net.MiB, seed=6)
    source = io.BytesIO(data)

    async def main():
        reader = asyncio.ensure_future(net.recv_exactly(loop, peer, len(data) - 100 - 10))
        sent = await loop.sock_sendfile(ours, source, offset=100, count=len(data) - 110)
        return sent, source.tell(), await reader

    sent, position, received = run(main())
    assert sent == len(data) - 110
    assert position == len(data) - 10
    assert received == data[100:-10]


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_sock_sendfile_without_fallback_raises(loop, run, pair):
    ours, peer = pair
    source = io.BytesIO(b"never sent")

    async def main():
        with pytest.raises(asyncio.SendfileNotAvailableError, match="^not a regular file$"):
            await loop.sock_sendfile(ours, source, fallback=False)
        await loop.sock_sendall(ours, b"marker")
        return await net.recv_exactly(loop, peer, 6), source.tell()

    assert run(main()) == (b"marker", 0)


def test_sock_sendfile_from_a_pipe(loop, run, tmp_path):
    # os.sendfile cannot read from a pipe. Without count the pipe's st_size (0) makes it an
    # empty file and nothing is sent; with count the native attempt fails first, the
    # fallback reads and sends the data, then its final seek() fails on the pipe.
    ours, peer = net.connected_pair("unix", tmp_path)
    r, w = os.pipe()
    os.write(w, b"p" * 60000)
    os.close(w)
    pipe = os.fdopen(r, "rb")

    async def main():
        results = [await loop.sock_sendfile(ours, pipe)]
        with pytest.raises(asyncio.SendfileNotAvailableError, match="^os.sendfile call failed$"):
            await loop.sock_sendfile(ours, pipe, count=1000, fallback=False)
        with pytest.raises(io.UnsupportedOperation):
            await loop.sock_sendfile(ours, pipe, count=60000)
        results.append(await net.recv_exactly(loop, peer, 60000))
        return results

    try:
        assert run(main()) == [0, b"p" * 60000]
    finally:
        pipe.close()
        ours.close()
        peer.close()


def test_sock_sendfile_argument_errors(loop, run, tmp_path, big_file):
    ours, peer = net.connected_pair("unix", tmp_path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)  # in debug mode a blocking socket is rejected first
    text = tmp_path / "text.txt"
    text.write_text("text")
    cases = [
        (dict(file="text"), ValueError, "^file should be opened in binary mode$"),
        (dict(sock=udp), ValueError, "^only SOCK_STREAM type sockets are supported$"),
        (dict(count=0), ValueError, r"^count must be a positive integer \(got 0\)$"),
        (dict(count="1"), TypeError, r"^count must be a positive integer \(got '1'\)$"),
        (dict(offset=-1), ValueError, r"^offset must be a non-negative integer \(got -1\)$"),
        (dict(offset=1.5), TypeError, r"^offset must be a non-negative integer \(got 1.5\)$"),
    ]
    try:
        with open(big_file, "rb") as binary, open(text) as text_file:
            for kwargs, exc_type, pattern in cases:
                args = {"sock": ours, "file": binary, "offset": 0, "count": None}
                args.update(kwargs)
                if args["file"] == "text":
                    args["file"] = text_file
                with pytest.raises(exc_type, match=pattern):
                    run(
                        loop.sock_sendfile(
                            args["sock"], args["file"], args["offset"], args["count"]
                        )
                    )
            loop.set_debug(True)
            ours.setblocking(True)
            with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
                run(loop.sock_sendfile(ours, binary))
            assert binary.tell() == 0
    finally:
        ours.close()
        peer.close()
        udp.close()


# --- loop.sendfile ----------------------------------------------------------------------


async def _transport(loop, kind, sock):
    return await net.wrap(loop, kind, lambda: net.RecordingProtocol(loop), sock)


def test_loop_sendfile_50mib(loop, run, pair, kind, big_file):
    ours, peer = pair

    async def main():
        transport, proto = await _transport(loop, kind, ours)
        reader = asyncio.ensure_future(net.recv_until_eof(loop, peer))
        with open(big_file, "rb") as f:
            transport.write(b"header:")
            sent = await loop.sendfile(transport, f)
            position = f.tell()
        transport.write(b":trailer")
        assert transport.is_reading()
        await loop.sock_sendall(peer, b"still reading")
        await proto.wait_bytes(13)
        transport.close()
        received = await reader
        await proto.lost
        return sent, position, received

    sent, position, received = run(main(), timeout=30)
    assert sent == SIZE and position == SIZE
    assert received[:7] == b"header:" and received[-8:] == b":trailer"
    assert net.digest(received[7:-8]) == net.digest(_content(big_file))


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_loop_sendfile_offset_and_count(loop, run, pair, kind, big_file):
    ours, peer = pair
    offset, count = 7 * net.MiB - 1, 2 * net.MiB + 1

    async def main():
        transport, proto = await _transport(loop, kind, ours)
        reader = asyncio.ensure_future(net.recv_until_eof(loop, peer))
        with open(big_file, "rb") as f:
            sent = await loop.sendfile(transport, f, offset, count)
            position = f.tell()
        transport.close()
        received = await reader
        await proto.lost
        return sent, position, received

    sent, position, received = run(main())
    assert sent == count and position == offset + count
    assert received == _content(big_file, offset, count)


def test_loop_sendfile_fallback(loop, run, pair, kind):
    ours, peer = pair
    data = net.payload(2 * net.MiB, seed=7)
    source = io.BytesIO(data)

    async def main():
        transport, proto = await _transport(loop, kind, ours)
        reader = asyncio.ensure_future(net.recv_until_eof(loop, peer))
        sent = await loop.sendfile(transport, source, offset=10)
        transport.write(b"after")
        transport.close()
        received = await reader
        await proto.lost
        return sent, source.tell(), received

    sent, position, received = run(main())
    assert sent == len(data) - 10 and position == len(data)
    assert received == data[10:] + b"after"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_loop_sendfile_without_fallback_raises(loop, run, pair, kind):
    ours, peer = pair

    async def main():
        transport, proto = await _transport(loop, kind, ours)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(transport, io.BytesIO(b"unsent"), fallback=False)
        assert transport.is_reading()  # the transport is handed back intact
        transport.write(b"usable")
        transport.close()
        received = await net.recv_until_eof(loop, peer)
        await proto.lost
        return received

    assert run(main()) == b"usable"


@pytest.mark.parametrize("kind", net.TCP4_AND_UNIX)
def test_loop_sendfile_rejects_closing_and_foreign_transports(loop, run, pair, kind, big_file):
    ours, _ = pair

    class Foreign(asyncio.Transport):
        def is_closing(self):
            return False

    async def main():
        with open(big_file, "rb") as f:
            with pytest.raises(RuntimeError, match="^sendfile is not supported for transport "):
                await loop.sendfile(Foreign(), f)
            transport, proto = await _transport(loop, kind, ours)
            transport.close()
            with pytest.raises(RuntimeError, match="^Transport is closing$"):
                await loop.sendfile(transport, f)
            await proto.lost
            return f.tell()

    assert run(main()) == 0


def test_write_during_sendfile_raises(loop, run, pair, kind, big_file):
    ours, peer = pair
    net.shrink_buffers(ours)
    net.shrink_buffers(peer)

    async def main():
        transport, proto = await _transport(loop, kind, ours)
        with open(big_file, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(transport, f, count=4 * net.MiB))
            await asyncio.sleep(0.02)  # the peer reads nothing: the sendfile is under way
            assert not task.done()
            with pytest.raises(RuntimeError, match="^unable to write; sendfile is in progress$"):
                transport.write(b"x")
            received = await net.recv_exactly(loop, peer, 4 * net.MiB)
            sent = await task
        transport.close()
        await proto.lost
        return sent, received

    sent, received = run(main())
    assert sent == 4 * net.MiB
    assert received == _content(big_file, 0, 4 * net.MiB)
