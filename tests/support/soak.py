"""The soak: every kind of traffic on one loop at once, for minutes, with the process and the
loop sampled at a fixed interval.

Workers, each repeating its exchange until the run ends: TCP, Unix and TLS stream echo
(clients reconnect every few requests, so connections churn as well as carry bytes), UDP
echo, pipe round trips (pipes replaced every few rounds), ``cat`` subprocesses, timers
scheduled and cancelled at random, ``wait_for`` timeouts, and executor calls. A worker's
unexpected error is counted and the worker goes on.

Between samples nothing is paused: a sample sees whatever is in flight, which is why growth
is judged by a fitted slope over many samples (support/sampling.py), and why the bounds
below leave room for the in-flight noise (at most a few dozen fds, tasks and timers, and some
MiB of buffers) but not for anything that grows with the work done.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import tracemalloc

from support import sampling, tls

MIB = 1024 * 1024
# Fitted growth allowed over the window after the warm-up (see support/sampling.py). A leak
# of one small object per request, connection, timer or process exceeds these within the
# 60 s run already; the in-flight noise of the workers stays well inside them.
BOUNDS = {
    "rss": 16 * MIB,
    "traced": 4 * MIB,
    "objects": 20_000,
    "fds": 24,
    "tasks": 32,
    "loop_ready": 256,
    "loop_timers": 256,
    "loop_readers": 48,
    "loop_writers": 48,
    "loop_transports": 48,
    "loop_handles": 256,
}
WORKERS = {"tcp": 3, "unix": 3, "tls": 2, "udp": 2, "pipe": 2, "proc": 1, "timers": 2, "exec": 2}
REQUESTS_PER_CONNECTION = 20
SIZES = (1, 100, 4096, 65536)


class Soak:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        seconds: float,
        interval: float,
        warmup: float,
        seed: int = 18,
        trace: bool = True,
    ) -> None:
        self.loop = loop
        self.seconds = seconds
        self.interval = interval
        self.warmup = warmup
        self.rng = random.Random(seed)
        self.trace = trace
        self.stopping = False
        self.counts = dict.fromkeys(
            (
                "connections",
                "requests",
                "bytes",
                "datagrams",
                "udp_timeouts",
                "pipe_rounds",
                "processes",
                "timers_fired",
                "timers_cancelled",
                "wait_for_timeouts",
                "executor_calls",
                "errors",
                "handler_calls",
            ),
            0,
        )
        self.error_samples: list[str] = []
        self.samples: list[dict] = []
        self.tmp = tempfile.mkdtemp(prefix="ferroloop-soak-")

    # --- bookkeeping

    def _error(self, where: str, exc: BaseException) -> None:
        self.counts["errors"] += 1
        if len(self.error_samples) < 8:
            self.error_samples.append(f"{where}: {exc!r}")

    def _handler(self, loop, context) -> None:
        self.counts["handler_calls"] += 1
        if len(self.error_samples) < 8:
            self.error_samples.append(
                f"handler: {context.get('message')} {context.get('exception')!r}"
            )

    def _payload(self) -> bytes:
        return os.urandom(self.rng.choice(SIZES))

    # --- servers

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # --- workers

    async def _stream_client(self, name: str, connect) -> None:
        while not self.stopping:
            try:
                reader, writer = await asyncio.wait_for(connect(), 10)
            except Exception as exc:  # noqa: BLE001 - counted, the worker goes on
                self._error(f"{name} connect", exc)
                await asyncio.sleep(0.1)
                continue
            self.counts["connections"] += 1
            try:
                for _ in range(REQUESTS_PER_CONNECTION):
                    if self.stopping:
                        break
                    data = self._payload()
                    writer.write(data)
                    echoed = await asyncio.wait_for(reader.readexactly(len(data)), 10)
                    if echoed != data:
                        raise AssertionError(f"{name}: echo differs")
                    self.counts["requests"] += 1
                    self.counts["bytes"] += 2 * len(data)
            except Exception as exc:  # noqa: BLE001
                self._error(name, exc)
            finally:
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 10)
                except Exception as exc:  # noqa: BLE001
                    if not isinstance(exc, ConnectionError):
                        self._error(f"{name} close", exc)

    async def _udp_client(self, address) -> None:
        loop = self.loop
        replies: asyncio.Queue = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                replies.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=address)
        try:
            while not self.stopping:
                data = os.urandom(self.rng.choice((1, 100, 1400)))
                transport.sendto(data)
                try:
                    got = await asyncio.wait_for(replies.get(), 2)
                except asyncio.TimeoutError:
                    self.counts["udp_timeouts"] += 1
                    continue
                if got != data:
                    # A late reply to a timed-out datagram: drain and go on.
                    while not replies.empty():
                        replies.get_nowait()
                    continue
                self.counts["datagrams"] += 1
                self.counts["bytes"] += 2 * len(data)
        finally:
            transport.close()

    async def _pipes(self) -> None:
        loop = self.loop
        while not self.stopping:
            r, w = os.pipe()
            rfile, wfile = open(r, "rb", 0), open(w, "wb", 0)
            reader = asyncio.StreamReader()
            rtransport = wtransport = None
            try:
                rtransport, _ = await loop.connect_read_pipe(
                    lambda reader=reader: asyncio.StreamReaderProtocol(reader), rfile
                )
                wtransport, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
                for _ in range(REQUESTS_PER_CONNECTION):
                    if self.stopping:
                        break
                    data = self._payload()
                    wtransport.write(data)
                    got = await asyncio.wait_for(reader.readexactly(len(data)), 10)
                    if got != data:
                        raise AssertionError("pipe: bytes differ")
                    self.counts["pipe_rounds"] += 1
                    self.counts["bytes"] += len(data)
            except Exception as exc:  # noqa: BLE001
                self._error("pipe", exc)
            finally:
                if wtransport is not None:
                    wtransport.close()
                else:
                    wfile.close()
                if rtransport is not None:
                    rtransport.close()
                else:
                    rfile.close()
            await asyncio.sleep(0)

    async def _processes(self) -> None:
        cat = shutil.which("cat") or "/bin/cat"
        while not self.stopping:
            try:
                proc = await asyncio.create_subprocess_exec(
                    cat,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                data = self._payload()
                out, _ = await asyncio.wait_for(proc.communicate(data), 10)
                if out != data or proc.returncode != 0:
                    raise AssertionError(f"cat: {len(out)} bytes back, exit {proc.returncode}")
                self.counts["processes"] += 1
                self.counts["bytes"] += 2 * len(data)
            except Exception as exc:  # noqa: BLE001
                self._error("subprocess", exc)
            # Process creation is the costliest exchange here: a few per second are enough.
            await asyncio.sleep(0.1)

    async def _timers(self) -> None:
        loop = self.loop
        while not self.stopping:
            done = loop.create_future()
            handles = []
            pending = 0

            def fired(done: asyncio.Future = done) -> None:
                nonlocal pending
                self.counts["timers_fired"] += 1
                pending -= 1
                if pending == 0 and not done.done():
                    done.set_result(None)

            for _ in range(200):
                handles.append(loop.call_later(self.rng.uniform(0, 0.05), fired))
            for handle in self.rng.sample(handles, 100):
                handle.cancel()
                self.counts["timers_cancelled"] += 1
            pending = sum(1 for h in handles if not h.cancelled())
            try:
                await asyncio.wait_for(done, 10)
                await asyncio.wait_for(asyncio.sleep(1), 0.001)
            except asyncio.TimeoutError:
                if not done.done():
                    self._error("timers", TimeoutError("timers did not fire"))
                else:
                    self.counts["wait_for_timeouts"] += 1

    async def _executor(self) -> None:
        loop = self.loop
        while not self.stopping:
            data = self._payload()
            try:
                digest = await loop.run_in_executor(None, hashlib.sha256, data)
                if digest.digest() != hashlib.sha256(data).digest():
                    raise AssertionError("executor: wrong digest")
                await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
                self.counts["executor_calls"] += 2
            except Exception as exc:  # noqa: BLE001
                self._error("executor", exc)

    async def _sampler(self, started: float) -> None:
        while not self.stopping:
            gc.collect()
            self.samples.append(sampling.sample(self.loop, started))
            await asyncio.sleep(self.interval)

    # --- the run

    async def run(self) -> dict:
        loop = self.loop
        loop.set_exception_handler(self._handler)
        gc.collect()
        fds_before = sampling.open_fds()
        if self.trace:
            tracemalloc.start(1)
        started = time.monotonic()
        tcp = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        unix_path = os.path.join(self.tmp, "soak.sock")
        unix = await asyncio.start_unix_server(self._echo, unix_path)
        secure = await asyncio.start_server(self._echo, "127.0.0.1", 0, ssl=tls.server_context())
        tcp_port = tcp.sockets[0].getsockname()[1]
        tls_port = secure.sockets[0].getsockname()[1]
        client_ctx = tls.client_context()

        class UDPEcho(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(data, addr)

        udp, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", 0))
        udp_address = udp.get_extra_info("sockname")

        work = []
        for _ in range(WORKERS["tcp"]):
            work.append(
                self._stream_client("tcp", lambda: asyncio.open_connection("127.0.0.1", tcp_port))
            )
        for _ in range(WORKERS["unix"]):
            work.append(
                self._stream_client("unix", lambda: asyncio.open_unix_connection(unix_path))
            )
        for _ in range(WORKERS["tls"]):
            work.append(
                self._stream_client(
                    "tls",
                    lambda: asyncio.open_connection(
                        "127.0.0.1", tls_port, ssl=client_ctx, server_hostname=tls.HOSTNAME
                    ),
                )
            )
        work += [self._udp_client(udp_address) for _ in range(WORKERS["udp"])]
        work += [self._pipes() for _ in range(WORKERS["pipe"])]
        work += [self._processes() for _ in range(WORKERS["proc"])]
        work += [self._timers() for _ in range(WORKERS["timers"])]
        work += [self._executor() for _ in range(WORKERS["exec"])]
        tasks = [loop.create_task(w) for w in work]
        sampler = loop.create_task(self._sampler(started))
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.stopping = True
            done, stuck = await asyncio.wait([*tasks, sampler], timeout=30)
            for task in stuck:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self._error("worker", task.exception())
            udp.close()
            for server in (tcp, unix, secure):
                server.close()
                await server.wait_closed()
        duration = time.monotonic() - started
        if self.trace:
            tracemalloc.stop()
        await asyncio.sleep(0.1)
        gc.collect()
        shutil.rmtree(self.tmp, ignore_errors=True)
        fits, failures = sampling.check(self.samples, BOUNDS, self.warmup)
        # Still open from the run, the loop's lazily made objects among them (uvloop keeps
        # a /dev/null open from its first child process): informative. The leak check is
        # across the loop's whole life (check_fd_balance).
        fds_left = sampling.open_fds() - fds_before
        if stuck:
            failures.append(f"{len(stuck)} workers did not finish within 30 s of the stop")
        if self.counts["errors"] or self.counts["handler_calls"]:
            failures.append(
                f"{self.counts['errors']} worker errors, "
                f"{self.counts['handler_calls']} exception handler calls"
            )
        return {
            **self.counts,
            "duration": round(duration, 1),
            "samples": len(self.samples),
            "warmup": self.warmup,
            "fits": fits,
            "fds_left": fds_left,
            "failures": failures,
            "error_samples": self.error_samples,
            "python": sys.version.split()[0],
        }
