"""The stress scenarios: each pushes one resource of the loop to a limit and checks that the loop
stays correct and gives everything back. Each returns a row of figures; ``failures`` lists
what broke a promise.

- hold: COUNT connections open at once on one server (the clients in another process,
  stress_peers.py), one request and reply on each, then all closed.
- churn: COUNT connect / request / reply / close cycles, CONCURRENCY at a time.
- slow: readers that take a little every 50 ms from a server that writes as fast as
  pause_writing lets it: the server's write buffer stays at the water marks, memory bounded.
- reset: peers that read a little of a large write and close with SO_LINGER 0 (a reset
  while the server's write is pending): every transport reports connection_lost, no handler.
- emfile: a server whose process runs out of fds (stress_peers.py lowers its RLIMIT_NOFILE):
  accept hits EMFILE while connections queue; the server must keep running and serve them
  all once fds free, and a new connection after the storm. On ferroloop, the exception
  handler hears of it once per pause, not once per failed accept.
- timers: COUNT timers over a span, half of them cancelled by other timers' callbacks, each
  at a random moment before it is due: no cancelled timer runs, every other one runs, none
  more than 1 ms early.
- signals: SIGUSR1 from a thread (pthread_kill and kill, alternating) during echo traffic:
  the traffic is undisturbed, the handler runs, and a signal after the storm still arrives.

Every scenario runs on a loop of its own (run_fresh), sampled (RSS, fds) every 0.25 s, and
checks that the process has no more fds open once that loop is closed than before it was made.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

from support import sampling

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stress_peers.py")
MIB = 1024 * 1024
HIGH_WATER = 64 * 1024
CHUNK = 16 * 1024
# Slow readers: RSS may grow by no more than this while they are held at the water marks
# (every byte the server may buffer is CONNECTIONS x (HIGH_WATER + CHUNK), far below it).
SLOW_RSS_BOUND = 32 * MIB
# Churn: fitted RSS growth after the first fifth of the run (support/sampling.py).
CHURN_RSS_BOUND = 16 * MIB

SHORT = {
    "hold": {"count": 1000},
    "churn": {"count": 3000, "concurrency": 32},
    "slow": {"connections": 16, "seconds": 2.0},
    "reset": {"count": 200, "concurrency": 32},
    "emfile": {"count": 80, "headroom": 12},
    "timers": {"count": 20000, "span": 0.5},
    "signals": {"seconds": 2.0, "signals": 1000},
}
LONG = {
    "hold": {"count": 10000},
    "churn": {"count": 1_000_000, "concurrency": 64},
    "slow": {"connections": 200, "seconds": 20.0},
    "reset": {"count": 5000, "concurrency": 64},
    "emfile": {"count": 400, "headroom": 16},
    "timers": {"count": 100_000, "span": 2.0},
    "signals": {"seconds": 10.0, "signals": 10000},
}


class Row(dict):
    def fail(self, what: str) -> None:
        self.setdefault("failures", []).append(what)


async def _sampled(loop, scenario, row: Row, **kwargs) -> Row:
    """Run one scenario with RSS and fds sampled; add peaks, slopes and the fd balance."""
    gc.collect()
    fds_before = sampling.open_fds()
    samples: list[dict] = []
    started = time.monotonic()
    stop = False

    async def sampler() -> None:
        while not stop:
            samples.append(
                {"t": time.monotonic() - started, "rss": sampling.rss(), "fds": sampling.open_fds()}
            )
            await asyncio.sleep(0.25)

    task = loop.create_task(sampler())
    try:
        await scenario(loop, row, **kwargs)
    finally:
        stop = True
        await task
    row["duration"] = round(time.monotonic() - started, 2)
    # The first fifth is left out of the fit, when there are samples enough to spare it.
    warmup = row["duration"] / 5 if len(samples) >= 10 else 0.0
    for key in ("rss", "fds"):
        fit = sampling.growth(samples, key, warmup)
        if fit is not None:
            row[f"{key}_peak"] = fit["peak"]
            row[f"{key}_per_min"] = round(fit["per_min"], 1)
            row[f"{key}_fitted"] = round(fit["fitted"], 1)
    if samples:
        row["rss_start"] = samples[0]["rss"]
    # What the scenario left open on its loop; the loop's own lazily made objects (the
    # signal wake-up socketpair, say) count here but not in the balance across the loop's
    # life, which run_fresh checks.
    row["fds_after"] = sampling.open_fds() - fds_before
    return row


# --- hold


async def hold(loop, row: Row, count: int) -> None:
    live = 0
    lost = asyncio.Event()

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            nonlocal live
            live += 1
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            nonlocal live
            live -= 1
            if live == 0:
                lost.set()

    server = await loop.create_server(Server, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        PEERS,
        "hold-client",
        str(port),
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 300)).decode().split()
        held, failed = int(line[1]), int(line[2])
        row["connections"] = held
        row["server_live"] = live
        row["requests"] = held
        row["bytes"] = held * 128
        row["rss_held_mib"] = round(sampling.rss() / MIB)
        row["fds_held"] = sampling.open_fds()
        if held != count or failed or live != count:
            row.fail(f"held {held} of {count} (client failures {failed}, server live {live})")
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.stdout.readline(), 120)
        await asyncio.wait_for(lost.wait(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        server.close()
        await server.wait_closed()
    if live:
        row.fail(f"{live} server connections never reported connection_lost")


# --- churn


async def churn(loop, row: Row, count: int, concurrency: int) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done = done
            self.got = b""

        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"ping")

        def data_received(self, data):
            self.got += data
            if len(self.got) >= 4:
                self.transport.close()

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(self.got == b"ping")

    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    left = count
    done_ok = errors = 0
    samples: list[str] = []

    async def worker() -> None:
        nonlocal left, done_ok, errors
        while left > 0:
            left -= 1
            done = loop.create_future()
            try:
                await loop.create_connection(lambda done=done: Client(done), "127.0.0.1", port)
                if await asyncio.wait_for(done, 10):
                    done_ok += 1
                else:
                    errors += 1
            except (OSError, asyncio.TimeoutError) as exc:
                errors += 1
                if len(samples) < 3:
                    samples.append(repr(exc))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        server.close()
        await server.wait_closed()
    row["connections"] = done_ok
    row["requests"] = done_ok
    row["bytes"] = done_ok * 8
    if errors:
        row.fail(f"{errors} of {count} cycles failed: {samples}")


# --- slow readers


async def slow(loop, row: Row, connections: int, seconds: float) -> None:
    chunk = b"s" * CHUNK
    stats = {"pauses": 0, "max_buffer": 0, "sent": 0, "received": 0}
    ending = False

    class Writer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 4)
            self.paused = False
            self.pump()

        def pump(self):
            while not self.paused and not ending and not self.transport.is_closing():
                self.transport.write(chunk)
                stats["sent"] += CHUNK
                size = self.transport.get_write_buffer_size()
                stats["max_buffer"] = max(stats["max_buffer"], size)

        def pause_writing(self):
            self.paused = True
            stats["pauses"] += 1

        def resume_writing(self):
            self.paused = False
            loop.call_soon(self.pump)

    class SlowReader(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.pause_reading()
            self.handle = loop.call_later(0.05, self.nibble)

        def nibble(self):
            if not self.transport.is_closing():
                self.transport.resume_reading()

        def data_received(self, data):
            stats["received"] += len(data)
            self.transport.pause_reading()
            self.handle = loop.call_later(0.05, self.nibble)

        def connection_lost(self, exc):
            self.handle.cancel()

    server = await loop.create_server(Writer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rss_before = sampling.rss()
    clients = []
    try:
        for _ in range(connections):
            transport, _ = await loop.create_connection(SlowReader, "127.0.0.1", port)
            clients.append(transport)
        await asyncio.sleep(seconds)
        row["rss_growth_kib"] = (sampling.rss() - rss_before) // 1024
    finally:
        ending = True
        for transport in clients:
            transport.abort()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.1)
    row["connections"] = len(clients)
    row["bytes"] = stats["received"]
    row["pauses"] = stats["pauses"]
    row["max_buffer"] = stats["max_buffer"]
    if stats["pauses"] < connections:
        row.fail(f"pause_writing called {stats['pauses']} times for {connections} writers")
    if stats["max_buffer"] > HIGH_WATER + CHUNK:
        row.fail(f"a write buffer reached {stats['max_buffer']} bytes (high water {HIGH_WATER})")
    if row["rss_growth_kib"] * 1024 > SLOW_RSS_BOUND:
        row.fail(f"RSS grew {row['rss_growth_kib'] // 1024} MiB holding slow readers")


# --- resets mid-write


async def reset(loop, row: Row, count: int, concurrency: int) -> None:
    chunk = b"r" * (256 * 1024)
    lost: list[object] = []
    made = 0

    class Writer(asyncio.Protocol):
        def connection_made(self, transport):
            nonlocal made
            made += 1
            self.transport = transport
            for _ in range(4):
                transport.write(chunk)

        def connection_lost(self, exc):
            lost.append(exc)

    server = await loop.create_server(Writer, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    left = count
    received = errors = 0

    async def peer() -> None:
        nonlocal left, received, errors
        while left > 0:
            left -= 1
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await loop.sock_connect(sock, ("127.0.0.1", port))
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                received += len(data)
            except (OSError, asyncio.TimeoutError):
                errors += 1
            finally:
                sock.close()

    try:
        await asyncio.gather(*(peer() for _ in range(concurrency)))
        deadline = time.monotonic() + 30
        while len(lost) < made and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    row["connections"] = made
    row["bytes"] = received
    row["resets_seen"] = sum(1 for e in lost if isinstance(e, ConnectionError))
    if errors:
        row.fail(f"{errors} peers failed to connect or read")
    if len(lost) != made:
        row.fail(f"{made - len(lost)} of {made} transports never reported connection_lost")


# --- EMFILE on accept


async def emfile(loop, row: Row, count: int, headroom: int, kind: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        PEERS,
        "emfile-server",
        kind,
        str(headroom),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        result = await loop.run_in_executor(None, _emfile_clients, port, count)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    row.update(result)
    try:
        child = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        row.fail(f"the server process ended without its report: {err.decode()[-400:]}")
        return
    row["accepted"] = child["accepted"]
    row["emfile_reports"] = child["emfile_reports"]
    row["server_cpu"] = child["cpu"]
    row["connections"] = result["served"]
    if result["timeouts"]:
        row.fail(f"{result['timeouts']} queued connections were never answered")
    if not result["recovered"]:
        row.fail("the server did not serve a new connection after the storm")
    # ferroloop reports once per pause (asyncio and its accept code: up to the backlog per
    # wake-up), and a pause lasts ACCEPT_RETRY_DELAY (1 s in the server process).
    pauses = result["storm_seconds"] / 1.0 + 2
    if kind == "ferroloop" and child["emfile_reports"] > pauses:
        row.fail(f"{child['emfile_reports']} EMFILE reports in {result['storm_seconds']} s")


def _emfile_clients(port: int, count: int) -> dict:
    """Blocking clients: queue COUNT connections at once, each sends a line; then take the
    replies in order, closing each (which frees the server's fd for the next accept)."""
    started = time.monotonic()
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"ping\n")
        socks.append(sock)
    served = dropped = timeouts = 0
    for sock in socks:
        try:
            if sock.recv(16) == b"ping\n":
                served += 1
            else:
                dropped += 1  # closed unanswered (EOF)
        except TimeoutError:
            timeouts += 1
        except OSError:
            dropped += 1  # reset unanswered
        sock.close()
    recovered = False
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"after\n")
        recovered = sock.recv(16) == b"after\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"quit\n")
    return {
        "served": served,
        "dropped": dropped,
        "timeouts": timeouts,
        "recovered": recovered,
        "requests": served,
        "bytes": served * 10,
        "storm_seconds": round(time.monotonic() - started, 2),
    }


# --- timers


async def timers(loop, row: Row, count: int, span: float) -> None:
    rng = random.Random(18)
    handles = []
    due: list[float] = []
    fired_at: dict[int, float] = {}
    cancelled_before: set[int] = set()
    early = 0

    def fire(i: int) -> None:
        nonlocal early
        now = loop.time()
        fired_at[i] = now
        # Its own record of the due time: uvloop gives a plain Handle (no when()) for
        # a delay that rounds to 0 ms.
        if now < due[i] - 0.001:
            early += 1

    def cancel(i: int) -> None:
        if i not in fired_at and not handles[i].cancelled():
            cancelled_before.add(i)
        handles[i].cancel()

    # Half of them cancelled by other callbacks, each at a random moment before it is due.
    cancellers = []
    for i in range(count):
        delay = rng.uniform(0, span)
        due.append(loop.time() + delay)
        handles.append(loop.call_later(delay, fire, i))
        if rng.random() < 0.5:
            cancellers.append(loop.call_later(rng.uniform(0, delay * 0.99), cancel, i))
    await asyncio.sleep(span + 0.5)
    ran_cancelled = len(cancelled_before & fired_at.keys())
    missing = count - len(cancelled_before) - len(fired_at.keys() - cancelled_before)
    row["timers"] = count
    row["cancelled"] = len(cancelled_before)
    row["fired"] = len(fired_at)
    counts = sampling.loop_counts(loop)
    if "loop_timers" in counts:
        row["timers_left"] = counts["loop_timers"]
    del cancellers
    if ran_cancelled:
        row.fail(f"{ran_cancelled} timers ran after cancel()")
    if missing:
        row.fail(f"{missing} timers never ran")
    if early:
        row.fail(f"{early} timers ran more than 1 ms early")


# --- signals from threads


async def signals(loop, row: Row, seconds: float, signals: int) -> None:
    received = 0
    arrived = asyncio.Event()

    def on_signal() -> None:
        nonlocal received
        received += 1
        arrived.set()

    async def echo(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = False
    requests = moved = errors = 0

    async def client() -> None:
        nonlocal requests, moved, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop:
                data = os.urandom(4096)
                writer.write(data)
                if await reader.readexactly(len(data)) != data:
                    errors += 1
                requests += 1
                moved += 2 * len(data)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    main_thread = threading.get_ident()
    sent = 0

    def sender() -> None:
        nonlocal sent
        pause = seconds / signals
        for i in range(signals):
            if i % 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            else:
                signal.pthread_kill(main_thread, signal.SIGUSR1)
            sent += 1
            time.sleep(pause)

    loop.add_signal_handler(signal.SIGUSR1, on_signal)
    try:
        clients = [loop.create_task(client()) for _ in range(8)]
        await loop.run_in_executor(None, sender)
        stop = True
        await asyncio.gather(*clients)
        arrived.clear()
        before = received
        signal.pthread_kill(main_thread, signal.SIGUSR1)
        try:
            await asyncio.wait_for(arrived.wait(), 5)
        except asyncio.TimeoutError:
            row.fail("a signal sent after the storm never reached its handler")
        row["late_signal"] = received > before
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        server.close()
        await server.wait_closed()
    row["signals_sent"] = sent
    row["signals_handled"] = received
    row["requests"] = requests
    row["bytes"] = moved
    row["connections"] = 8
    if errors:
        row.fail(f"{errors} echo errors during the signal storm")
    if received == 0:
        row.fail("no signal reached its handler")


SCENARIOS = {
    "hold": hold,
    "churn": churn,
    "slow": slow,
    "reset": reset,
    "emfile": emfile,
    "timers": timers,
    "signals": signals,
}


async def run(loop, name: str, sizes: dict, kind: str) -> Row:
    row = Row(scenario=name)
    kwargs = dict(sizes)
    if name == "emfile":
        kwargs["kind"] = kind
    try:
        await _sampled(loop, SCENARIOS[name], row, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one scenario's crash is that row's failure
        row.fail(f"raised {exc!r}")
    if name == "churn":
        fitted = row.get("rss_fitted", 0)
        if fitted > CHURN_RSS_BOUND:
            row.fail(f"RSS fitted growth {fitted / MIB:.1f} MiB over the churn")
    if "duration" in row and row.get("requests"):
        row["rate"] = round(row["requests"] / max(row["duration"], 1e-9))
    row.setdefault("failures", [])
    return row


def run_fresh(new_loop, name: str, sizes: dict, kind: str) -> Row:
    """``run`` on a new loop from ``new_loop()``, closed afterwards; fails the row when the
    process has more fds open after the close than before the loop was made."""
    gc.collect()
    before = sampling.open_fds()
    loop = new_loop()
    calls: list[str] = []
    loop.set_exception_handler(
        lambda _, context: calls.append(f"{context.get('message')}: {context.get('exception')!r}")
    )
    asyncio.set_event_loop(loop)
    try:
        row = loop.run_until_complete(run(loop, name, sizes, kind))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    if calls:
        row.fail(f"{len(calls)} exception handler calls, first: {calls[0]}")
    gc.collect()
    row["fd_leak"] = sampling.open_fds() - before
    if row["fd_leak"] > 0:
        row.fail(f"{row['fd_leak']} fds open after the loop closed that were not before it")
    return row
