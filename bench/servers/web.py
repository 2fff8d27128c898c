"""HTTP server for the http benchmark: one event loop, one server stack, HTTP/1.1 keep-alive.

    python bench/servers/web.py --loop ferroloop --kind uvicorn --tcp 127.0.0.1:0 --size 1024

Stacks, each answering every GET with `200 OK` and a `--size`-byte text body:

- `httptools`: an `asyncio.Protocol` that parses with httptools and writes a prepared response,
  the least a Python HTTP server can do per request;
- `aiohttp`: an aiohttp `web.Application` with one route, on aiohttp's own server;
- `uvicorn`: a raw ASGI app (no framework) served by uvicorn with its httptools parser. The
  loop is chosen the way a user chooses it, through uvicorn's `loop` setting (the `--loop`
  command-line option): `asyncio`, `uvloop`, or an import string naming a loop factory, such
  as `ferroloop:new_event_loop` (uvicorn 0.36 and later).

The protocol with the load generator is that of bench/servers/echo.py, whose plumbing this
reuses: `READY <address> pid=<pid>` once serving, SIGTERM or SIGINT to stop, `NOTIMPL` on
stderr and exit 3 if the loop lacks a method the stack needs. TCP on loopback only.

(Not `http.py`: that name would shadow the standard library's `http` package.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

from echo import (
    BACKLOG,
    EXIT_NOTIMPL,
    LOOPS,
    Run,
    close_server,
    describe,
    new_loop,
    parse_tcp,
    stop_on_signals,
)


def response_head(size):
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode()
    )


def body(size):
    return b"x" * size


def listen(tcp):
    host, port = tcp
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, as getaddrinfo gives it: asyncio turns Nagle off (TCP_NODELAY) on a
    # transport only when its socket says so, and a server that binds by host and port has
    # it. With proto 0, a response written in two parts waits for a delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def address(sock):
    """The load generator's form of the address; read before a loop takes the socket (one
    that detaches it leaves the Python object closed)."""
    host, port = sock.getsockname()[:2]
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


def ready(where):
    print(f"READY {where} pid={os.getpid()}", flush=True)


# ---------------------------------------------------------------- httptools


class HttptoolsProtocol(asyncio.Protocol):
    """Parses requests with httptools and answers each complete one; a parse error closes
    the connection, as a real server's 400 would end it."""

    response = b""

    def connection_made(self, transport):
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self):
        self.transport.write(self.response)


def run_httptools(loop_name, sock, size):
    HttptoolsProtocol.response = response_head(size) + body(size)

    async def serve():
        loop = asyncio.get_running_loop()
        run = Run()
        stop_on_signals(loop, run.stopped.set)
        where = address(sock)
        server = await loop.create_server(HttptoolsProtocol, sock=sock, backlog=BACKLOG)
        ready(where)
        await run.stopped.wait()
        await close_server(server)

    return run_in(loop_name, serve())


# ---------------------------------------------------------------- aiohttp


def run_aiohttp(loop_name, sock, size):
    from aiohttp import web

    payload = body(size)

    async def handle(request):
        return web.Response(body=payload, content_type="text/plain")

    async def serve():
        loop = asyncio.get_running_loop()
        run = Run()
        stop_on_signals(loop, run.stopped.set)
        app = web.Application()
        app.router.add_get("/bench", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        where = address(sock)
        await web.SockSite(runner, sock, backlog=BACKLOG).start()
        ready(where)
        await run.stopped.wait()
        await runner.cleanup()

    return run_in(loop_name, serve())


# ---------------------------------------------------------------- uvicorn


def asgi_app(size):
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(size).encode())],
    }
    reply = {"type": "http.response.body", "body": body(size)}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError(f"unexpected ASGI scope {scope['type']!r}")
        await send(start)
        await send(reply)

    return app


def uvicorn_loop_setting(loop_name):
    """What a user would pass as uvicorn's `--loop`."""
    if loop_name in ("asyncio", "uvloop"):
        return loop_name
    return f"{loop_name}:new_event_loop"


def run_uvicorn(loop_name, sock, size):
    import uvicorn

    where = address(sock)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            ready(where)

    config = uvicorn.Config(
        asgi_app(size),
        loop=uvicorn_loop_setting(loop_name),
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
    )
    # uvicorn makes the loop itself from `loop`. It stops on SIGTERM and SIGINT and then
    # raises the signal again for the handler it found; a no-op one lets the process exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    Server(config).run(sockets=[sock])
    return None


# ---------------------------------------------------------------- process


def run_in(loop_name, coro):
    """Runs `coro` on a new loop of `loop_name`; returns a NotImplementedError's message
    or None."""
    loop = new_loop(loop_name)
    try:
        loop.run_until_complete(coro)
    except NotImplementedError as exc:
        return describe(exc)
    finally:
        loop.close()
    return None


KINDS = {"httptools": run_httptools, "aiohttp": run_aiohttp, "uvicorn": run_uvicorn}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", choices=LOOPS, default="asyncio")
    p.add_argument("--kind", choices=tuple(KINDS), default="httptools")
    p.add_argument("--tcp", metavar="HOST:PORT", required=True, help="loopback; port 0 picks")
    p.add_argument("--size", type=int, default=1024, help="response body bytes")
    p.add_argument("--cpu", type=int, help="pin the server to this CPU")
    args = p.parse_args()
    if not 0 <= args.size <= 64 << 20:
        p.error("--size must be from 0 to 64 MiB")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    sock = listen(parse_tcp(args.tcp))
    notimpl = KINDS[args.kind](args.loop, sock, args.size)
    if notimpl:
        print(f"NOTIMPL {notimpl}", file=sys.stderr, flush=True)
        return EXIT_NOTIMPL
    return 0


if __name__ == "__main__":
    sys.exit(main())
