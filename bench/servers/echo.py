"""Echo server for the socket benchmarks: one event loop, one API style, TCP or Unix.

    python bench/servers/echo.py --loop uvloop --kind protocol --tcp 127.0.0.1:0
    python bench/servers/echo.py --loop asyncio --kind streams --unix /tmp/echo.sock
    python bench/servers/echo.py --loop ferroloop --tcp 127.0.0.1:0 --tls-cert c.pem --tls-key k.pem

Styles: `sock` (loop.sock_accept, sock_recv, sock_sendall), `streams` (asyncio.start_server /
start_unix_server) and `protocol` (asyncio.Protocol with loop.create_server /
create_unix_server). Once listening it prints `READY <address> pid=<pid>`, the address in the
form the load generator takes (`tcp:127.0.0.1:PORT`, `unix:PATH`), and serves until SIGTERM
or SIGINT, then exits 0. A loop lacking a method the style needs (NotImplementedError, at
start or on the first connection) makes it print `NOTIMPL <message>` on stderr and exit 3,
so the benchmark reports that row as not available instead of timing out.

With `--tls-cert` and `--tls-key` the `streams` and `protocol` servers speak TLS (an
`ssl.SSLContext` passed as `ssl=` to start_server / create_server); `sock` has no TLS (the
sock_* methods move raw bytes), so it reports `NOTIMPL` and exits 3.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import ipaddress
import os
import signal
import socket
import ssl
import sys
import traceback

LOOPS = ("asyncio", "uvloop", "ferroloop", "rloop", "rsloop", "veloxloop")
# What sock_recv and StreamReader.read ask for. Under glibc's 128 KiB mmap threshold, so
# sock_recv's bytes buffer comes from the heap: asking for more costs an mmap, an mremap and
# a munmap per call (asyncio's own transports read 256 KiB at a time and pay exactly that).
READ_SIZE = 64 * 1024
BACKLOG = 1024  # 64 clients connect at once; asyncio's default of 100 would also do
EXIT_NOTIMPL = 3
SIGNAL_TICK = 0.05  # seconds; see stop_on_signals


class Run:
    """What the handlers share: the stop event and the first NotImplementedError."""

    def __init__(self):
        self.stopped = asyncio.Event()
        self.notimpl = None

    def not_implemented(self, exc):
        if self.notimpl is None:
            self.notimpl = describe(exc)
        self.stopped.set()


def describe(exc):
    """A NotImplementedError's message or, for a bare one (an asyncio.AbstractEventLoop
    method the loop does not override), the method that raised it."""
    if str(exc):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].name}: NotImplementedError" if frames else repr(exc)


# ---------------------------------------------------------------- the three styles
# Each returns (listening socket, coroutine function that stops serving).


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve_protocol(run, tcp, unix, tls):
    loop = asyncio.get_running_loop()
    if tcp:
        server = await loop.create_server(EchoProtocol, *tcp, backlog=BACKLOG, ssl=tls)
    else:
        server = await loop.create_unix_server(EchoProtocol, unix, backlog=BACKLOG, ssl=tls)
    return server.sockets[0], lambda: close_server(server)


async def serve_streams(run, tcp, unix, tls):
    async def echo(reader, writer):
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away mid-exchange (or mid-handshake): the run is over
        except NotImplementedError as exc:
            run.not_implemented(exc)
        finally:
            writer.close()

    if tcp:
        server = await asyncio.start_server(echo, *tcp, backlog=BACKLOG, ssl=tls)
    else:
        server = await asyncio.start_unix_server(echo, unix, backlog=BACKLOG, ssl=tls)
    return server.sockets[0], lambda: close_server(server)


async def close_server(server):
    server.close()
    try:  # on 3.12+ this also waits for the connections; the clients have gone by now
        await asyncio.wait_for(server.wait_closed(), 2)
    except asyncio.TimeoutError:
        pass


async def serve_sock(run, tcp, unix, tls):
    if tls is not None:
        raise NotImplementedError("TLS: the sock_* methods carry raw bytes, not TLS")
    loop = asyncio.get_running_loop()
    if tcp:
        family = socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(tcp)
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(unix)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    tasks = set()

    async def echo(conn):
        with conn:
            try:
                while data := await loop.sock_recv(conn, READ_SIZE):
                    await loop.sock_sendall(conn, data)
            except ConnectionError:
                pass
            except NotImplementedError as exc:
                run.not_implemented(exc)

    async def accept():
        try:
            while True:
                conn, _ = await loop.sock_accept(listener)
                conn.setblocking(False)
                if tcp:  # as asyncio's transports do, so every style sends alike
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                task = loop.create_task(echo(conn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except NotImplementedError as exc:
            run.not_implemented(exc)

    acceptor = loop.create_task(accept())

    async def stop():
        for task in (acceptor, *tasks):
            task.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)
        listener.close()

    await asyncio.sleep(0)  # let the acceptor start, so a missing sock_accept shows now
    return listener, stop


KINDS = {"sock": serve_sock, "streams": serve_streams, "protocol": serve_protocol}

# ---------------------------------------------------------------- process


async def serve(args):
    loop = asyncio.get_running_loop()
    run = Run()

    def on_error(loop, context):  # a NotImplementedError deep in a transport, say
        if isinstance(context.get("exception"), NotImplementedError):
            run.not_implemented(context["exception"])
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    stop_on_signals(loop, run.stopped.set)
    tcp = parse_tcp(args.tcp) if args.tcp else None
    if args.unix and os.path.exists(args.unix):
        os.unlink(args.unix)  # a stale socket file from an earlier run
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    try:
        sock, stop = await KINDS[args.kind](run, tcp, args.unix, tls)
    except NotImplementedError as exc:
        run.not_implemented(exc)
        return run.notimpl
    if run.notimpl is None:
        if tcp:
            host, port = sock.getsockname()[:2]
            address = f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
        else:
            address = f"unix:{args.unix}"
        print(f"READY {address} pid={os.getpid()}", flush=True)
        await run.stopped.wait()
    await stop()
    if args.unix and os.path.exists(args.unix):
        os.unlink(args.unix)
    return run.notimpl


def stop_on_signals(loop, stop):
    """SIGTERM and SIGINT call `stop` in the loop. A loop without add_signal_handler (it
    raises NotImplementedError) gets Python signal handlers instead, plus a timer every
    50 ms, so the interpreter gets to run them even while the loop waits in native code."""
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop)
        return
    except NotImplementedError:
        pass
    for sig in signals:
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop))

    def tick():
        loop.call_later(SIGNAL_TICK, tick)

    tick()


def parse_tcp(text):
    """HOST:PORT on loopback only ([::1]:PORT for IPv6): the benchmark never leaves the box."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"echo.py: {host} is not a loopback address")
    return host, int(port)


def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", choices=LOOPS, default="asyncio")
    p.add_argument("--kind", choices=tuple(KINDS), default="protocol")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="loopback address; port 0 picks one")
    where.add_argument("--unix", metavar="PATH", help="Unix socket path")
    p.add_argument("--cpu", type=int, help="pin the server to this CPU")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (chain)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    loop = new_loop(args.loop)
    try:
        notimpl = loop.run_until_complete(serve(args))
    finally:
        loop.close()
    if notimpl:
        print(f"NOTIMPL {notimpl}", file=sys.stderr, flush=True)
        return EXIT_NOTIMPL
    return 0


if __name__ == "__main__":
    sys.exit(main())
