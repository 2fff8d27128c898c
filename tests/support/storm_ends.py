"""The ends of a storm connection: each sends its connection's id byte and checks what it reads.

An end writes nothing but its connection's id byte and accepts nothing else: any other byte
it receives came from another connection (misdelivered). What it sent successfully and what
it received are counted, so the storm can check that completed sends reached their own peer.
Every end reads until EOF or an error; the storm bounds each connection with a deadline.
"""

from __future__ import annotations

import asyncio
import socket

CHUNKS = (1, 100, 4096, 16384, 65536)
READ_SIZE = 65536


class End:
    """One end of a connection: what it sent and received, and how its reading ended."""

    def __init__(self, conn, name: str):
        self.conn = conn
        self.name = name
        self.sent_ok = 0  # bytes of sends that completed successfully
        self.received = 0  # own-id bytes received
        self.eof = False  # reading ended at a clean EOF
        self.error: BaseException | None = None
        self.closed = False  # the adversary closed it (its socket or transport)
        self.tasks: list[asyncio.Task] = []

    def got(self, data) -> None:
        """Count ``data``: the id byte is ours, any other byte was misdelivered."""
        if not data:
            return
        data = bytes(data)
        own = data.count(self.conn.byte)
        self.received += own
        if own != len(data):
            self.conn.storm.misdelivered(self, data)
        if self.closed:
            self.conn.storm.stats["late_completions"] += 1

    def sent(self, n: int) -> None:
        """A send of ``n`` bytes completed (sock_sendall, sock_sendfile, socket.send)."""
        self.sent_ok += n
        if self.closed:
            self.conn.storm.stats["late_completions"] += 1

    def failed(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.conn.storm.error(self, exc)


def chunk_sizes(rng, total: int):
    while total > 0:
        n = min(total, rng.choice(CHUNKS))
        total -= n
        yield n


# --- sock_* API


async def sock_sender(end: End, sock: socket.socket, total: int, delay: float, rng) -> None:
    storm = end.conn.storm
    loop = storm.loop
    try:
        if delay:
            await asyncio.sleep(delay)
        for n in chunk_sizes(rng, total):
            if n >= 4096 and storm.sendfile and rng.random() < 0.2:
                # From a file of the id byte; each send opens its own (the fallback, where
                # sock_sendfile is not native, moves the file position).
                with open(storm.id_file(end.conn.byte), "rb") as file:
                    try:
                        end.sent(await loop.sock_sendfile(sock, file, 0, n))
                        continue
                    except NotImplementedError:  # uvloop has no sock_sendfile
                        storm.sendfile = False
            await loop.sock_sendall(sock, end.conn.pattern[:n])
            end.sent(n)
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        end.failed(exc)


async def sock_receiver(end: End, sock: socket.socket, into: bool, pause: float) -> None:
    loop = end.conn.storm.loop
    buf = bytearray(READ_SIZE) if into else None
    try:
        while True:
            if buf is not None:
                n = await loop.sock_recv_into(sock, buf)
                data = buf[:n]
            else:
                data = await loop.sock_recv(sock, READ_SIZE)
            if not data:
                end.eof = True
                return
            end.got(data)
            if pause:
                await asyncio.sleep(pause)
    except OSError as exc:
        end.failed(exc)


def start_sock_end(end: End, sock: socket.socket, total: int, rng) -> None:
    """Send ``total`` id bytes and read until EOF, concurrently, with the sock_* API."""
    loop = end.conn.storm.loop
    send_delay = rng.choice((0, 0, 0.001, 0.003))  # a delay leaves the peer's receive pending
    pause = rng.choice((0, 0, 0, 0.001))  # a slow reader leaves the peer's sendall pending
    end.tasks += [
        loop.create_task(sock_sender(end, sock, total, send_delay, rng)),
        loop.create_task(sock_receiver(end, sock, rng.random() < 0.5, pause)),
    ]


# --- add_reader / add_writer with the socket object


class ReaderEnd:
    """An end driven by add_reader/add_writer callbacks on the socket object itself."""

    def __init__(self, end: End, sock: socket.socket, total: int):
        self.end = end
        self.sock = sock
        self.left = total
        self.loop = end.conn.storm.loop
        self.done = self.loop.create_future()
        self.reading = True
        self.writing = True
        self.loop.add_reader(sock, self._readable)
        if total:
            self.loop.add_writer(sock, self._writable)
        else:
            self._write_done(shutdown=True)

    def _stale(self) -> bool:
        # Called for a socket closed since: the registration outlived it.
        if self.sock.fileno() == -1:
            self.end.conn.storm.stats["stale_callbacks"] += 1
            return True
        return False

    def _readable(self) -> None:
        if self._stale():
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.end.failed(exc)
            data = b""
        if data:
            self.end.got(data)
            return
        self.end.eof = self.end.error is None
        self.reading = False
        self.loop.remove_reader(self.sock)
        self._check_done()

    def _writable(self) -> None:
        if self._stale():
            return
        try:
            n = self.sock.send(self.end.conn.pattern[: min(self.left, 65536)])
        except BlockingIOError:
            return
        except OSError as exc:
            self.end.failed(exc)
            self._write_done(shutdown=False)
            return
        self.end.sent(n)
        self.left -= n
        if not self.left:
            self._write_done(shutdown=True)

    def _write_done(self, shutdown: bool) -> None:
        self.writing = False
        self.loop.remove_writer(self.sock)
        if shutdown:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.end.failed(exc)
        self._check_done()

    def _check_done(self) -> None:
        if not self.reading and not self.writing and not self.done.done():
            self.done.set_result(None)

    def unregister(self) -> None:
        """remove_reader/remove_writer with the (maybe closed) socket object, for each
        registration it still has (asyncio finds a closed object's by identity)."""
        for registered, remove in (
            (self.reading, self.loop.remove_reader),
            (self.writing, self.loop.remove_writer),
        ):
            if not registered:
                continue
            try:
                remove(self.sock)
            except Exception as exc:
                self.end.conn.storm.remove_error(exc)
        self.reading = self.writing = False
        if not self.done.done():
            self.done.set_result(None)


# --- transports: asyncio.Protocol and asyncio.BufferedProtocol


class StormProtocol(asyncio.Protocol):
    """Checks every byte; records EOF and connection_lost; flow control for the writer."""

    def __init__(self, storm):
        self.storm = storm
        self.end: End | None = None
        self.transport = None
        self.lost = storm.loop.create_future()
        self.read_done = storm.loop.create_future()  # EOF or connection_lost
        self.resumed: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.storm.server_connection(self, transport)

    def data_received(self, data):
        if self.end is not None:  # None: a connection the storm did not ask for, aborted
            self.end.got(data)

    def eof_received(self):
        if self.end is not None:
            self.end.eof = True
        _set(self.read_done)
        return True  # the writer side closes when it is done

    def connection_lost(self, exc):
        if exc is not None and self.end is not None and not self.end.closed:
            self.end.failed(exc)
        _set(self.lost, exc)
        _set(self.read_done)
        self._resume()

    def pause_writing(self):
        self.resumed = self.storm.loop.create_future()

    def resume_writing(self):
        self._resume()

    def _resume(self):
        if self.resumed is not None:
            _set(self.resumed)


def _set(fut: asyncio.Future, result=None) -> None:
    if not fut.done():
        fut.set_result(result)


class StormBufferedProtocol(StormProtocol, asyncio.BufferedProtocol):
    def __init__(self, storm):
        super().__init__(storm)
        self.buffer = bytearray(READ_SIZE)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        if self.end is not None:
            self.end.got(self.buffer[:nbytes])


async def flushed(end: End, transport, total: int) -> None:
    """Credit ``total`` once the transport has handed all of it to the kernel.

    Bytes in the kernel are ahead of the FIN, so a clean EOF at the peer proves they arrived;
    bytes still in the transport's buffer could be dropped by an abort.
    """
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(0.001)
    if not end.closed and not transport.is_closing():
        end.sent_ok = total


async def protocol_end(end: End, proto: StormProtocol, total: int, rng) -> None:
    """Write ``total`` id bytes and half-close; done at the peer's EOF or connection_lost."""
    transport = proto.transport
    for n in chunk_sizes(rng, total):
        if transport.is_closing():
            break
        transport.write(end.conn.pattern[:n])
        if proto.resumed is not None:
            await proto.resumed
        await asyncio.sleep(0)
    else:
        if not transport.is_closing():
            transport.write_eof()
            await flushed(end, transport, total)
    await proto.read_done


# --- streams


async def stream_writer(end: End, writer: asyncio.StreamWriter, total: int, rng) -> None:
    try:
        for n in chunk_sizes(rng, total):
            writer.write(end.conn.pattern[:n])
            await writer.drain()
        writer.write_eof()
        await flushed(end, writer.transport, total)
    except (OSError, RuntimeError) as exc:  # RuntimeError: 3.10's drain on a closed transport
        end.failed(exc)


async def stream_reader(end: End, reader: asyncio.StreamReader) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            end.got(data)
        end.eof = True
    except OSError as exc:
        end.failed(exc)


def start_stream_end(end: End, reader, writer, total: int, rng) -> None:
    loop = end.conn.storm.loop
    end.tasks += [
        loop.create_task(stream_writer(end, writer, total, rng)),
        loop.create_task(stream_reader(end, reader)),
    ]
