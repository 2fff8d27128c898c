"""The fd-reuse storm: connections closed and cancelled at random points while new sockets
take their fd numbers, on the sock_* API, streams, Protocol and BufferedProtocol paths.

Each live connection owns one byte value (1-255) and both of its ends send nothing else, so
every byte names its sender: a byte any end receives that is not its own is misdelivered.
A value goes back to the pool only when every task, socket and transport of its connection
is finished, so no byte of an old owner can still be on its way when the value is reused.

An adversary closes one end (its socket object, its transport, or the socket passed with
``sock=``) and/or cancels its pending operations at a random moment, and at once creates the
next connections' sockets, which the kernel numbers with the lowest free fds: the one just
freed. A reuse is "hot" when the number's old owner was closed by the adversary and its
connection is not finished yet (an operation or transport of it may still be waiting).

Checks: misdelivered bytes; sends that completed but did not reach their own peer (whenever
that peer read to a clean EOF, it must have received every byte of every completed send);
connections that outlived their deadline (timeouts: asyncio hangs by design in some of these
cases, counted apart); tasks that ignored cancellation; fds left open.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import os
import random
import socket
import tempfile
import traceback

from support.storm_ends import (
    End,
    ReaderEnd,
    StormBufferedProtocol,
    StormProtocol,
    protocol_end,
    start_sock_end,
    start_stream_end,
)

PATHS = ("sock", "stream", "protocol", "buffered")
# (path, role, weight). role "client": the adversary's end is built on a socket the test made
# (a pair, or a client it connects); "server": the adversary's end was accepted by a server
# on the loop (sock_accept, start_server, create_server).
SCENARIOS = (
    ("sock", "pair", 3),
    ("sock", "client", 2),
    ("sock", "server", 2),
    ("sock", "readers", 1),
    ("sock", "connect-close", 1),
    ("sock", "accept-close", 1),
    ("stream", "client", 2),
    ("stream", "server", 2),
    ("protocol", "client", 2),
    ("protocol", "server", 2),
    ("buffered", "client", 2),
    ("buffered", "server", 2),
)
SIZES = ((0, 0), (1, 2048), (16384, 131072), (262144, 1048576))
SIZE_WEIGHTS = (1, 4, 4, 1)
SMALL_BUFFERS = 16384  # kernel buffers, so a few hundred KiB leave a sendall pending
COUNTERS = (
    "connections",
    "adversarial",
    "sockets",
    "reuse",
    "hot_reuse",
    "misdelivered",
    "undelivered",
    "late_completions",
    "timeouts",
    "stuck",
    "lost_missing",
    "errors",
    "remove_errors",
    "stale_callbacks",
    "handler_calls",
    "unmatched",
)


def _shrink(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFERS)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFERS)


def peer_key(address):
    """What identifies a client to the server that accepted it: its port, or its abstract name."""
    return address[1] if isinstance(address, tuple) else address


def _fd_target(fd: str) -> str:
    try:
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    except OSError:
        return fd


class Conn:
    """One connection: ends ``a`` (the adversary's) and ``b``, the sockets and transports."""

    def __init__(self, storm: Storm, byte: int, path: str, role: str, kind: str):
        self.storm = storm
        self.byte = byte
        self.path = path
        self.role = role
        self.kind = kind
        self.pattern = bytes([byte]) * 65536
        self.a = End(self, "a")
        self.b = End(self, "b")
        self.sockets: list[socket.socket] = []
        # (transport, a future done at its connection_lost): aborted, then waited for.
        self.closers: list[tuple[asyncio.BaseTransport, asyncio.Future]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = storm.loop.create_future()
        self.keys: list = []
        self.freed: list[int] = []  # fd numbers the adversary freed while this was running
        self.adversary: asyncio.Task | None = None
        self.reader_end: ReaderEnd | None = None
        self.name = f"{path}/{role}/{kind}"

    def tasks(self) -> list[asyncio.Task]:
        extra = [self.adversary] if self.adversary is not None else []
        return [*self.a.tasks, *self.b.tasks, *extra]


class Storm:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        connections: int,
        seconds: float,
        seed: int,
        concurrency: int = 64,
        conn_timeout: float = 1.0,
        paths: tuple[str, ...] = PATHS,
    ):
        assert concurrency < 200, "one byte value per live connection"
        self.loop = loop
        self.rng = random.Random(seed)
        self.limit = connections
        self.seconds = seconds
        self.concurrency = concurrency
        self.conn_timeout = conn_timeout
        self.scenarios = [s for s in SCENARIOS if s[0] in paths]
        self.stats = collections.Counter({name: 0 for name in COUNTERS})
        self.by_scenario: collections.Counter = collections.Counter()
        self.misdelivered_by: collections.Counter = collections.Counter()
        self.timeouts_by: collections.Counter = collections.Counter()
        self.error_kinds: collections.Counter = collections.Counter()
        self.samples: list[str] = []
        self.free_bytes = collections.deque(range(1, 256))
        self.active: dict[Conn, asyncio.Task] = {}
        self.registry: dict = {}  # peer_key -> Conn, for the servers
        self.seen_fds: set[int] = set()
        self.last_owner: dict[int, str] = {}  # fd number -> the scenario that took it last
        self.hot: dict[int, Conn] = {}  # fd number -> unfinished connection that freed it
        self.wakeup: asyncio.Future | None = None
        self.seq = itertools.count()
        self.tmpdir = tempfile.mkdtemp(prefix="fl-storm-")
        self.servers: list = []
        self.acceptors: list[asyncio.Task] = []
        self.listeners: dict = {}
        self.sendfile = True  # False once sock_sendfile raised NotImplementedError
        self.draining = False

    # --- bookkeeping

    def note(self, sock_or_fd, conn: Conn) -> None:
        """A socket was created for ``conn``: count fd number reuse."""
        fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
        self.stats["sockets"] += 1
        if fd in self.seen_fds:
            self.stats["reuse"] += 1
        self.seen_fds.add(fd)
        self.last_owner[fd] = conn.name
        old = self.hot.get(fd)
        if old is not None and old is not conn:
            self.stats["hot_reuse"] += 1

    def free(self, conn: Conn, fd: int) -> None:
        """The adversary is about to close ``fd`` of ``conn``, whose work may be pending."""
        if fd >= 0:
            self.hot[fd] = conn
            conn.freed.append(fd)

    def misdelivered(self, end: End, data: bytes) -> None:
        bad = len(data) - data.count(end.conn.byte)
        self.stats["misdelivered"] += bad
        self.misdelivered_by[f"{end.conn.name}:{end.name}"] += bad
        if len(self.samples) < 5:
            foreign = sorted(set(data) - {end.conn.byte})[:8]
            self.samples.append(
                f"{end.conn.name} end {end.name} (id {end.conn.byte}) got {bad} bytes "
                f"of ids {foreign}"
            )

    def timed_out(self, conn: Conn) -> None:
        self.stats["timeouts"] += 1
        self.timeouts_by[conn.name] += 1

    def error(self, end: End, exc: BaseException) -> None:
        self.error_kinds[type(exc).__name__] += 1

    def remove_error(self, exc: BaseException) -> None:
        # ValueError: the closed object's registration was not found. asyncio's OSErrors
        # (epoll_ctl on a number closed or reused since) are its own failures, counted apart.
        if isinstance(exc, ValueError):
            self.stats["remove_errors"] += 1
        self.error_kinds[f"remove: {type(exc).__name__}: {exc}"] += 1

    def exception_handler(self, loop, context) -> None:
        self.stats["handler_calls"] += 1
        exc = context.get("exception")
        self.error_kinds[f"handler: {context.get('message')} {exc!r}"[:200]] += 1

    # --- sockets

    def pair(self, kind: str, conn: Conn) -> tuple[socket.socket, socket.socket]:
        """A connected pair made at once (so it takes the lowest free fd numbers)."""
        if kind == "unix":
            a, b = socket.socketpair()
        else:
            a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                a.connect(self.pair_listener.getsockname())
                b, _ = self.pair_listener.accept()
            except BaseException:
                a.close()
                raise
        for s in (a, b):
            s.setblocking(False)
            _shrink(s)
            self.note(s, conn)
        conn.sockets += [a, b]
        return a, b

    def client_socket(self, kind: str, conn: Conn) -> socket.socket:
        """A client bound before it connects, so the server can tell whose connection it got."""
        family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        conn.sockets.append(sock)
        sock.setblocking(False)
        _shrink(sock)
        if kind == "unix":
            sock.bind(f"\0fl-storm-{os.getpid()}-{id(self)}-{next(self.seq)}")
        else:
            sock.bind(("127.0.0.1", 0))
        key = peer_key(sock.getsockname())
        self.registry[key] = conn
        conn.keys.append(key)
        self.note(sock, conn)
        return sock

    def id_file(self, byte: int) -> str:
        """A file of 64 KiB of ``byte``, for sock_sendfile."""
        path = os.path.join(self.tmpdir, f"id-{byte}")
        if not os.path.exists(path):
            with open(path, "wb") as file:
                file.write(bytes([byte]) * 65536)
        return path

    def _note_transport(self, transport, conn: Conn) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.note(sock.fileno(), conn)

    def track_writer(self, conn: Conn, writer: asyncio.StreamWriter) -> None:
        conn.writers.append(writer)  # a StreamWriter let go of closes its transport
        conn.closers.append((writer.transport, self.loop.create_task(_closed(writer))))

    def lookup(self, address) -> Conn | None:
        conn = self.registry.get(peer_key(address))
        if conn is None or conn.accepted.done():
            self.stats["unmatched"] += 1
            return None
        return conn

    # --- servers

    async def start(self) -> None:
        loop = self.loop
        self.pair_listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.pair_listener.bind(("127.0.0.1", 0))
        self.pair_listener.listen(128)
        self.pair_listener.settimeout(5)
        # Never accepted from, backlog 0: once its queue is full, connects to it stay pending.
        self.stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.stalled.bind(("127.0.0.1", 0))
        self.stalled.listen(0)
        for kind in ("tcp", "unix"):
            self.listeners[("sock", kind)] = sock = self._listening(kind, "sock")
            self.acceptors.append(loop.create_task(self._accept(sock)))
            self.listeners[("stream", kind)] = sock = self._listening(kind, "stream")
            server = await asyncio.start_server(self._stream_connected, sock=sock)
            self.servers.append(server)
            for path, cls in (("protocol", StormProtocol), ("buffered", StormBufferedProtocol)):
                self.listeners[(path, kind)] = sock = self._listening(kind, path)
                server = await loop.create_server(lambda cls=cls: cls(self), sock=sock)
                self.servers.append(server)

    def _listening(self, kind: str, name: str) -> socket.socket:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(os.path.join(self.tmpdir, name))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        sock.setblocking(False)
        return sock

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, address = await self.loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and such: keep serving
                self.error_kinds[f"accept: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
                continue
            conn = self.lookup(address)
            if conn is None:
                sock.close()
                continue
            _shrink(sock)
            conn.sockets.append(sock)
            self.note(sock, conn)
            conn.accepted.set_result(sock)

    def _stream_connected(self, reader, writer) -> None:
        conn = self.lookup(writer.get_extra_info("peername"))
        if conn is None:
            writer.transport.abort()
            return
        self._note_transport(writer.transport, conn)
        self.track_writer(conn, writer)
        conn.accepted.set_result((reader, writer))

    def server_connection(self, proto: StormProtocol, transport) -> None:
        """connection_made of a protocol: server-side ones find their connection here."""
        if proto.end is not None:  # made by create_connection for a known end
            return
        conn = self.lookup(transport.get_extra_info("peername"))
        if conn is None:
            transport.abort()
            return
        proto.end = conn.a
        self._note_transport(transport, conn)
        conn.closers.append((transport, proto.lost))
        conn.accepted.set_result(proto)

    async def stop(self) -> None:
        for task in self.acceptors:
            task.cancel()
        await asyncio.wait(self.acceptors, timeout=5)
        for server in self.servers:
            server.close()
        # From 3.12 wait_closed also waits for the servers' connections.
        waits = [self.loop.create_task(server.wait_closed()) for server in self.servers]
        _, pending = await asyncio.wait(waits, timeout=5)
        for task in pending:
            self.stats["lost_missing"] += 1
            self.error_kinds["server wait_closed"] += 1
            task.cancel()
        for sock in (*self.listeners.values(), self.pair_listener, self.stalled):
            sock.close()
        for name in os.listdir(self.tmpdir):
            os.unlink(os.path.join(self.tmpdir, name))
        os.rmdir(self.tmpdir)

    # --- connections

    def spawn(self) -> bool:
        """Create the next connection's sockets now and start it; False if no id is free."""
        if self.draining or not self.free_bytes or self.stats["connections"] >= self.limit:
            return False
        byte = self.free_bytes.popleft()
        weights = [w for _, _, w in self.scenarios]
        path, role, _ = self.rng.choices(self.scenarios, weights)[0]
        kind = self.rng.choice(("tcp", "unix"))
        if role in ("connect-close",):
            kind = "tcp"
        conn = Conn(self, byte, path, role, kind)
        self.stats["connections"] += 1
        self.by_scenario[conn.name] += 1
        try:
            setup = self._prepare(conn)
        except OSError as exc:
            self.error_kinds[f"setup: {type(exc).__name__}"] += 1
            for sock in conn.sockets:
                sock.close()
            self._release(conn)
            return True
        self.active[conn] = self.loop.create_task(self._run(conn, setup))
        return True

    def spawn_now(self) -> None:
        """The adversary's follow-up: new sockets at once, on the numbers just freed."""
        for _ in range(self.rng.choice((1, 1, 2))):
            if len(self.active) < 2 * self.concurrency:
                self.spawn()

    def _size(self) -> int:
        low, high = self.rng.choices(SIZES, SIZE_WEIGHTS)[0]
        return self.rng.randint(low, high)

    def _prepare(self, conn: Conn):
        """The synchronous part: the sockets this connection starts with."""
        role = conn.role
        if role in ("pair", "readers") or (conn.path != "sock" and role == "client"):
            a, b = self.pair(conn.kind, conn)
            return self._sock_pair(conn, a, b)
        if role == "client":  # sock_connect to the sock_accept server
            a = self.client_socket(conn.kind, conn)
            return self._sock_client(conn, a)
        if role == "server":
            b = self.client_socket(conn.kind, conn)
            return self._served(conn, b)
        if role == "connect-close":
            a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.sockets.append(a)
            a.setblocking(False)
            self.note(a, conn)
            return self._connect_close(conn, a)
        if role == "accept-close":
            a = self._listening(conn.kind, f"accept-{next(self.seq)}")
            conn.sockets.append(a)
            self.note(a, conn)
            return self._accept_close(conn, a)
        raise AssertionError(role)

    async def _run(self, conn: Conn, setup) -> None:
        deadline = self.loop.time() + self.conn_timeout
        try:
            try:
                await asyncio.wait_for(setup, self.conn_timeout)
            except asyncio.TimeoutError:
                self.timed_out(conn)
            except Exception as exc:  # asyncio: FileNotFoundError, "fd is used by transport"
                self.stats["errors"] += 1
                self.error_kinds[f"setup: {type(exc).__name__}: {exc}"[:100]] += 1
                if not isinstance(exc, OSError) and len(self.samples) < 10:
                    self.samples.append("".join(traceback.format_exception(exc)[-4:]))
            tasks = conn.tasks()
            if tasks:
                remaining = max(0.0, deadline - self.loop.time())
                _, pending = await asyncio.wait(tasks, timeout=remaining)
                if pending:
                    self.timed_out(conn)
                    for task in pending:
                        task.cancel()
                    _, stuck = await asyncio.wait(pending, timeout=1.0)
                    self.stats["stuck"] += len(stuck)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        self.stats["errors"] += 1
                        self.error_kinds[f"task: {type(exc).__name__}: {exc}"] += 1
            await self._close(conn)
            self._verify(conn)
        finally:
            self._release(conn)
            del self.active[conn]
            if self.wakeup is not None and not self.wakeup.done():
                self.wakeup.set_result(None)

    async def _close(self, conn: Conn) -> None:
        if not conn.accepted.done():
            conn.accepted.cancel()
        for transport, _ in conn.closers:
            if not transport.is_closing():  # closing: its connection_lost is on the way
                self._abort(transport)
        if conn.reader_end is not None:
            # A well-behaved program removes its readers before it closes their socket (on
            # uvloop, and ferroloop with fd ownership, a registration holds the file open).
            conn.reader_end.unregister()
        for sock in conn.sockets:
            sock.close()
        waits = {fut: transport for transport, fut in conn.closers}
        if waits:
            _, pending = await asyncio.wait(waits, timeout=1.0)
            if pending:
                # asyncio: a close() or abort() that failed half way (epoll_ctl on a number
                # closed or reused since) leaves the transport closing for ever.
                for fut in pending:
                    self._abort(waits[fut])
                _, pending = await asyncio.wait(pending, timeout=1.0)
                self.stats["lost_missing"] += len(pending)
        # Let connection_lost run so the transports let go of their sockets.
        await asyncio.sleep(0)

    def _abort(self, transport) -> None:
        # asyncio's abort() can fail in epoll_ctl; each failed call gets further (it clears
        # the buffer, then marks the transport closing), so the third schedules connection_lost.
        for _ in range(3):
            try:
                transport.abort()
                return
            except Exception as exc:
                self.error_kinds[f"abort: {type(exc).__name__}"] += 1

    def _verify(self, conn: Conn) -> None:
        for sender, receiver in ((conn.a, conn.b), (conn.b, conn.a)):
            # Only an EOF read from the peer proves the stream ended there; the EOF of an
            # end the adversary closed is its own transport's. After a reset (an error on
            # either of the end's tasks, whichever saw it) a later read returns EOF too.
            clean = receiver.eof and not receiver.closed and receiver.error is None
            if clean and receiver.received < sender.sent_ok:
                self.stats["undelivered"] += sender.sent_ok - receiver.received
                if len(self.samples) < 10:
                    self.samples.append(
                        f"{conn.name} end {sender.name} (id {conn.byte}): sends of "
                        f"{sender.sent_ok} bytes completed, its peer read {receiver.received} "
                        "and EOF"
                    )

    def _release(self, conn: Conn) -> None:
        for key in conn.keys:
            if self.registry.get(key) is conn:
                del self.registry[key]
        for fd in conn.freed:
            if self.hot.get(fd) is conn:
                del self.hot[fd]
        if any(not t.done() for t in conn.tasks()) or any(not f.done() for _, f in conn.closers):
            return  # a task or transport still running may deliver this byte: never reuse it
        self.free_bytes.append(conn.byte)

    # --- the adversary

    def _plan(self, conn: Conn):
        """None (a clean connection) or the delay before the adversary strikes."""
        if self.rng.random() < 0.4:
            return None
        self.stats["adversarial"] += 1
        return self.rng.choice((0, 0, 0.0005, 0.001, 0.002, 0.005))

    def _strike_sock(self, conn: Conn, sock: socket.socket, action: str) -> None:
        conn.a.closed = True
        if action in ("cancel+close", "cancel"):
            for task in conn.a.tasks:
                task.cancel()
        self.free(conn, sock.fileno())
        sock.close()
        if action == "close+cancel":
            for task in conn.a.tasks:
                task.cancel()
        self.spawn_now()

    async def _sock_adversary(self, conn: Conn, sock: socket.socket, delay: float) -> None:
        await asyncio.sleep(delay)
        action = self.rng.choice(("close", "cancel+close", "close+cancel", "cancel"))
        if action == "cancel":
            # Cancelled first, closed once the cancellations have run.
            for task in conn.a.tasks:
                task.cancel()
            await asyncio.wait(conn.a.tasks, timeout=1.0)
        self._strike_sock(conn, sock, action)

    # --- scenarios: the asynchronous part of each

    async def _sock_pair(self, conn: Conn, a: socket.socket, b: socket.socket) -> None:
        if conn.role == "readers":
            return await self._readers(conn, a, b)
        if conn.path == "sock":
            start_sock_end(conn.a, a, self._size(), self.rng)
            start_sock_end(conn.b, b, self._size(), self.rng)
            delay = self._plan(conn)
            if delay is not None:
                conn.adversary = self.loop.create_task(self._sock_adversary(conn, a, delay))
            return None
        # A transport built with sock= on one end of the pair.
        start_sock_end(conn.b, b, self._size(), self.rng)
        await self._transport_end(conn, a)
        return None

    async def _sock_client(self, conn: Conn, a: socket.socket) -> None:
        await self.loop.sock_connect(a, self.listeners[("sock", conn.kind)].getsockname())
        b = await conn.accepted
        await self._sock_pair(conn, a, b)

    async def _served(self, conn: Conn, b: socket.socket) -> None:
        """The adversary's end is the one a server on the loop accepted."""
        await self.loop.sock_connect(b, self.listeners[(conn.path, conn.kind)].getsockname())
        accepted = await conn.accepted
        start_sock_end(conn.b, b, self._size(), self.rng)
        delay = self._plan(conn)
        if conn.path == "sock":
            start_sock_end(conn.a, accepted, self._size(), self.rng)
            if delay is not None:
                conn.adversary = self.loop.create_task(self._sock_adversary(conn, accepted, delay))
        elif conn.path == "stream":
            reader, writer = accepted
            start_stream_end(conn.a, reader, writer, self._size(), self.rng)
            if delay is not None:
                conn.adversary = self.loop.create_task(
                    self._transport_adversary(conn, writer.transport, None, delay)
                )
        else:
            proto = accepted
            conn.a.tasks.append(
                self.loop.create_task(protocol_end(conn.a, proto, self._size(), self.rng))
            )
            if delay is not None:
                conn.adversary = self.loop.create_task(
                    self._transport_adversary(conn, proto.transport, None, delay)
                )

    async def _transport_end(self, conn: Conn, a: socket.socket) -> None:
        """The adversary's end: a stream or protocol over ``a`` (the sock= form)."""
        loop = self.loop
        delay = self._plan(conn)
        if conn.path == "stream":
            reader, writer = await asyncio.open_connection(sock=a)
            transport = writer.transport
            self.track_writer(conn, writer)
            start_stream_end(conn.a, reader, writer, self._size(), self.rng)
        else:
            cls = StormProtocol if conn.path == "protocol" else StormBufferedProtocol
            proto = cls(self)
            proto.end = conn.a
            if self.rng.random() < 0.5:
                transport, _ = await loop.create_connection(lambda: proto, sock=a)
            else:
                transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=a)
            conn.closers.append((transport, proto.lost))
            conn.a.tasks.append(
                loop.create_task(protocol_end(conn.a, proto, self._size(), self.rng))
            )
        if delay is not None:
            conn.adversary = loop.create_task(self._transport_adversary(conn, transport, a, delay))

    async def _transport_adversary(self, conn: Conn, transport, sock, delay: float) -> None:
        await asyncio.sleep(delay)
        actions = ["close", "abort", "cancel"] + (["sock"] * 2 if sock is not None else [])
        action = self.rng.choice(actions)
        conn.a.closed = True
        raw = transport.get_extra_info("socket")
        self.free(conn, raw.fileno() if raw is not None else -1)
        if action == "sock":
            # The socket given with sock= closed under the transport, which is closed
            # (aborted) only when the connection ends, after new sockets took the number.
            sock.close()
        elif action == "abort":
            transport.abort()
        else:
            if action == "cancel":
                for task in conn.a.tasks:
                    task.cancel()
            transport.close()
        self.spawn_now()

    async def _readers(self, conn: Conn, a: socket.socket, b: socket.socket) -> None:
        start_sock_end(conn.b, b, self._size(), self.rng)
        end = conn.reader_end = ReaderEnd(conn.a, a, self._size())
        conn.a.tasks.append(self.loop.create_task(_wait(end.done)))
        delay = self._plan(conn)
        if delay is not None:
            conn.adversary = self.loop.create_task(self._readers_adversary(conn, end, delay))

    async def _readers_adversary(self, conn: Conn, end: ReaderEnd, delay: float) -> None:
        await asyncio.sleep(delay)
        conn.a.closed = True
        self.free(conn, end.sock.fileno())
        end.sock.close()
        self.spawn_now()
        if self.rng.random() < 0.5:
            # After the new sockets' operations registered their number.
            await asyncio.sleep(0)
        end.unregister()

    async def _connect_close(self, conn: Conn, a: socket.socket) -> None:
        task = self.loop.create_task(self.loop.sock_connect(a, self.stalled.getsockname()))
        conn.a.tasks.append(task)
        conn.adversary = self.loop.create_task(self._close_later(conn, a, task))
        self.stats["adversarial"] += 1

    async def _accept_close(self, conn: Conn, a: socket.socket) -> None:
        task = self.loop.create_task(self.loop.sock_accept(a))
        conn.a.tasks.append(task)
        conn.adversary = self.loop.create_task(self._close_later(conn, a, task))
        self.stats["adversarial"] += 1

    async def _close_later(self, conn: Conn, sock: socket.socket, task: asyncio.Task) -> None:
        await asyncio.sleep(self.rng.choice((0, 0.0005, 0.002)))
        conn.a.closed = True
        was_done = task.done()
        self.free(conn, sock.fileno())
        sock.close()
        self.spawn_now()
        await asyncio.wait([task], timeout=self.conn_timeout / 2)
        if not task.done():
            self.timed_out(conn)  # asyncio: the operation waits for an fd that is gone
            task.cancel()
            return
        if was_done:
            if not task.cancelled() and isinstance(task.exception() or task.result(), tuple):
                task.result()[0].close()
            return
        if not task.cancelled() and task.exception() is None:
            # It "completed" on a closed socket: against the number's new owner.
            self.stats["late_completions"] += 1
            result = task.result()
            if isinstance(result, tuple):
                result[0].close()
        elif task.exception() is not None:
            self.error(conn.a, task.exception())

    # --- the whole storm

    async def run(self) -> dict:
        loop = self.loop
        handler = loop.get_exception_handler()
        loop.set_exception_handler(self.exception_handler)
        start = loop.time()
        fds_before = set(os.listdir("/proc/self/fd"))
        try:
            await self.start()
            end = start + self.seconds
            while self.stats["connections"] < self.limit and loop.time() < end:
                while len(self.active) < self.concurrency and self.spawn():
                    pass
                self.wakeup = loop.create_future()
                await asyncio.wait([self.wakeup], timeout=0.05)
            self.draining = True  # the adversary's follow-ups stop too
            if self.active:
                await asyncio.wait(list(self.active.values()), timeout=self.conn_timeout + 5)
            await self.stop()
        finally:
            loop.set_exception_handler(handler)
        for _ in range(3):
            if not gc.collect():
                break
        await asyncio.sleep(0)
        result = dict(self.stats)
        # Sockets left open; other new fds are the loop's own (uvloop opens /dev/null lazily).
        new_fds = [
            f"{_fd_target(fd)} (last taken by {self.last_owner.get(int(fd), 'the loop')})"
            for fd in sorted(set(os.listdir("/proc/self/fd")) - fds_before)
        ]
        result["fd_leak"] = sum("socket:" in target for target in new_fds)
        result["new_fds"] = new_fds[:5]
        result["duration"] = round(loop.time() - start, 2)
        result["unfinished"] = len(self.active)
        result["pending_tasks"] = len(asyncio.all_tasks(loop)) - 1
        result["by_scenario"] = dict(self.by_scenario)
        result["misdelivered_by"] = dict(self.misdelivered_by)
        result["timeouts_by"] = dict(self.timeouts_by)
        result["error_kinds"] = dict(self.error_kinds.most_common(12))
        result["samples"] = self.samples
        return result


async def _wait(fut: asyncio.Future) -> None:
    await fut


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except Exception:  # the connection's error: its ends have seen it already
        pass
