"""The stress run's other processes (run as ``python stress_peers.py COMMAND ...``).

``hold-client PORT COUNT``: opens COUNT connections to PORT on 127.0.0.1 (asyncio's own
loop, whatever loop is under test), one request and reply on each, prints ``held N``, keeps
them open until a line arrives on stdin, closes them all and prints ``closed``. The clients
live here, not beside the server, because one process cannot hold both ends of 10,000
connections under this machine's hard RLIMIT_NOFILE.

``emfile-server KIND HEADROOM [RETRY_DELAY]``: a line-echo server on a KIND loop that lowers
its own RLIMIT_NOFILE to HEADROOM fds above the highest it has open, so accept runs into
EMFILE as soon as that many connections are held. Prints its port, then serves until a client
sends ``quit``; prints a JSON line: connections accepted, the exception handler's reports, and
the CPU time it used (a loop that retried accept without pause would burn it). RETRY_DELAY
replaces asyncio's ``constants.ACCEPT_RETRY_DELAY`` (1 s), the pause after EMFILE, so a test
can go through several pauses quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


async def _hold(port: int, count: int) -> None:
    gate = asyncio.Semaphore(256)
    writers = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 30
                )
                writer.write(b"x" * 64)
                await asyncio.wait_for(reader.readexactly(64), 30)
                writers.append(writer)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    await asyncio.gather(*(one() for _ in range(count)))
    print(f"held {len(writers)} {failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    print("closed", flush=True)


def _emfile_server(kind: str, headroom: int, retry_delay: float | None = None) -> None:
    sys.path.insert(0, os.path.dirname(HERE))
    if retry_delay is not None:
        from asyncio import constants

        constants.ACCEPT_RETRY_DELAY = retry_delay
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        from support import loops

        loop = loops.new_loop(kind)
    reports: list[str] = []
    accepted = 0

    def handler(loop, context) -> None:
        exc = context.get("exception")
        reports.append(f"{context.get('message')}: {exc!r}")

    loop.set_exception_handler(handler)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            nonlocal accepted
            accepted += 1
            self.transport = transport

        def data_received(self, data):
            if data.startswith(b"quit"):
                loop.stop()
            self.transport.write(data)

    server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0, backlog=2048))
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    # Leave room for the listing fd os.listdir itself opens.
    limit = highest + 1 + headroom
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    print(server.sockets[0].getsockname()[1], flush=True)
    loop.run_forever()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    server.close()
    loop.close()
    emfile = sum(1 for r in reports if "Too many open files" in r or "EMFILE" in r)
    print(
        json.dumps(
            {
                "accepted": accepted,
                "reports": len(reports),
                "emfile_reports": emfile,
                "report_samples": reports[:3],
                "cpu": round(usage.ru_utime + usage.ru_stime, 2),
            }
        ),
        flush=True,
    )


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "hold-client":
        raise_nofile()
        asyncio.run(_hold(int(argv[1]), int(argv[2])))
    elif command == "emfile-server":
        _emfile_server(argv[1], int(argv[2]), float(argv[3]) if len(argv) > 3 else None)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
