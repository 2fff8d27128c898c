"""A server's accept running out of fds (EMFILE, ENFILE, ENOBUFS, ENOMEM): the server pauses
accepting for ``asyncio.constants.ACCEPT_RETRY_DELAY``, reports the error to the exception
handler, and then serves the connections that waited.

Most tests make the error with a listening socket whose ``accept()`` fails on demand (both
loops call ``sock.accept()`` on the socket given to ``create_server``), with the pause
shortened; one runs a server in a child process whose RLIMIT_NOFILE is lowered until accept
really fails (tests/support/stress_peers.py ``emfile-server``).

asyncio goes on accepting after the first error of a wake-up, so it reports and schedules a
restart up to ``backlog`` times per wake-up; ferroloop stops at the first and keeps one
restart pending per socket. The counts are therefore asserted on ferroloop only.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import socket
import subprocess
import sys
import time
import warnings
import weakref
from asyncio import constants, trsock

import pytest
from support import net, stress

DELAY = 0.05
BACKLOG = 32


@pytest.fixture(autouse=True)
def short_pause(monkeypatch):
    # Both loops read the constant when they pause.
    monkeypatch.setattr(constants, "ACCEPT_RETRY_DELAY", DELAY)


class FlakyListener(socket.socket):
    """A listening socket whose ``accept()`` raises ``OSError(code)`` while ``failing`` is
    set, or for the next ``fail_next`` calls; it records when each call was made."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.code = errno.EMFILE
        self.failing = False
        self.fail_next = 0
        self.calls: list[tuple[float, bool]] = []  # (monotonic time, whether it failed)

    def accept(self):
        fail = self.failing or self.fail_next > 0
        self.calls.append((time.monotonic(), fail))
        if fail:
            self.fail_next = max(0, self.fail_next - 1)
            raise OSError(self.code, os.strerror(self.code))
        return super().accept()


class Greeter(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"hi")
        transport.close()


def _listener() -> FlakyListener:
    sock = FlakyListener()
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _connect(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.append(client)
    return clients


async def _greetings(loop, clients: list[socket.socket]) -> list[bytes]:
    def read_all():
        replies = []
        for client in clients:
            try:
                replies.append(client.recv(16))
            finally:
                client.close()
        return replies

    return await loop.run_in_executor(None, read_all)


async def _storm(loop, sock: FlakyListener, queued: int, seconds: float):
    """Serve on `sock`, queue `queued` connections while accept fails for `seconds`, then
    let accept succeed; returns (server, the greetings the queued clients read)."""
    server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
    sock.failing = True
    clients = _connect(sock.getsockname()[1], queued)
    await asyncio.sleep(seconds)
    sock.failing = False
    return server, await _greetings(loop, clients)


@pytest.mark.parametrize("code", sorted((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)))
def test_out_of_resource_pauses_then_serves_every_queued_connection(
    loop, loop_kind, run, loop_errors, code
):
    fds_before = net.open_fds()
    sock = _listener()
    sock.code = code

    async def main():
        server, replies = await _storm(loop, sock, queued=5, seconds=4 * DELAY)
        try:
            assert replies == [b"hi"] * 5
            # Still serving after the storm.
            assert await _greetings(loop, _connect(sock.getsockname()[1], 1)) == [b"hi"]
            assert server.is_serving()
        finally:
            server.close()
            await server.wait_closed()

    run(main())
    reports = [
        c for c in loop_errors if c.get("message") == "socket.accept() out of system resource"
    ]
    assert reports, "the resource error was never reported"
    if loop_kind == "ferroloop":
        assert reports == loop_errors
    # asyncio's pile of pending restarts (one per failed attempt) can surface a callback's
    # error as well (seen in debug mode on a loaded machine); only its resource reports
    # are compared.
    for context in reports:
        assert set(context) == {"message", "exception", "socket"}
        assert context["message"] == "socket.accept() out of system resource"
        assert isinstance(context["exception"], OSError)
        assert context["exception"].errno == code
        assert isinstance(context["socket"], trsock.TransportSocket)
    del loop_errors[:]
    assert net.open_fds() == fds_before


def test_other_accept_error_is_reported_and_serving_goes_on(loop, run, loop_errors):
    # Not a resource error: no pause, the error goes to the handler as a callback's.
    sock = _listener()
    sock.code = errno.EPERM

    async def main():
        server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        sock.fail_next = 1
        clients = _connect(sock.getsockname()[1], 2)
        try:
            return await _greetings(loop, clients)
        finally:
            server.close()
            await server.wait_closed()

    assert run(main()) == [b"hi"] * 2
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"].startswith("Exception in callback")
    assert loop_errors[0]["exception"].errno == errno.EPERM
    del loop_errors[:]


@pytest.mark.ferroloop_only
def test_accept_waits_the_retry_delay_after_an_error(loop, run, loop_errors):
    # The reader is removed during the pause: no accept is attempted before the delay.
    # (asyncio removes it too, but its loop goes on accepting in the same wake-up.)
    sock = _listener()

    async def main():
        server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        sock.fail_next = 1
        clients = _connect(sock.getsockname()[1], 3)
        try:
            assert await _greetings(loop, clients) == [b"hi"] * 3
        finally:
            server.close()
            await server.wait_closed()

    run(main())
    failed_at = next(at for at, fail in sock.calls if fail)
    later = [at for at, fail in sock.calls if at > failed_at and not fail]
    assert later and min(later) - failed_at >= DELAY * 0.9, sock.calls
    assert loop_errors


def test_full_accept_queue_waits_out_the_pause_and_is_served(loop, run, loop_errors):
    # As many connections as the listen backlog (and one wake-up's accepts) let queue.
    sock = _listener()

    async def main():
        server, replies = await _storm(loop, sock, queued=BACKLOG, seconds=2 * DELAY)
        server.close()
        await server.wait_closed()
        return replies

    assert run(main()) == [b"hi"] * BACKLOG
    assert loop_errors


@pytest.mark.ferroloop_only
def test_one_report_and_one_restart_per_pause(loop, run, loop_errors):
    # asyncio reports and schedules a restart for every attempt of a wake-up (up to
    # backlog); ferroloop stops at the first: each failed accept is one wake-up's only
    # attempt, and the pauses follow one another (no second restart pending).
    sock = _listener()
    seconds = 6 * DELAY

    async def main():
        server, replies = await _storm(loop, sock, queued=BACKLOG, seconds=seconds)
        servers = loop.stats().servers  # a restart is not a new server
        server.close()
        await server.wait_closed()
        return replies, servers

    assert run(main()) == ([b"hi"] * BACKLOG, 1)
    failures = [at for at, fail in sock.calls if fail]
    assert len(loop_errors) == len(failures)
    assert 1 <= len(failures) <= seconds / DELAY + 1
    gaps = [b - a for a, b in zip(failures[:-1], failures[1:], strict=True)]
    assert all(gap >= DELAY * 0.9 for gap in gaps), gaps
    del loop_errors[:]


@pytest.mark.ferroloop_only
def test_server_closed_during_pause_is_not_restarted(loop, run, loop_errors):
    # asyncio's restart, once the server is closed, calls add_reader(-1) and reports its
    # ValueError; ferroloop's is cancelled with the server.
    sock = _listener()

    async def main():
        server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        sock.failing = True
        client = _connect(sock.getsockname()[1], 1)[0]
        while not loop_errors:
            await asyncio.sleep(DELAY / 10)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(3 * DELAY)
        client.close()

    run(main())
    assert [c["message"] for c in loop_errors] == ["socket.accept() out of system resource"]
    assert len(sock.calls) == 1
    del loop_errors[:]


def test_restart_never_reaches_a_socket_that_took_the_closed_ones_number(loop, run, loop_errors):
    # The server closes during the pause and a new listening socket gets the old fd number:
    # whatever happens to the restart, nothing may accept on the new socket.
    sock = _listener()

    async def main():
        server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        old_fd = sock.fileno()
        sock.failing = True
        stale = _connect(sock.getsockname()[1], 1)[0]
        while not loop_errors:
            await asyncio.sleep(DELAY / 10)
        server.close()
        await server.wait_closed()
        stale.close()
        with socket.socket() as other:
            if other.fileno() != old_fd:  # the kernel hands out the lowest free number
                pytest.skip("another file took the closed socket's number first")
            other.bind(("127.0.0.1", 0))
            other.listen(8)
            other.setblocking(False)
            waiting = socket.create_connection(other.getsockname(), timeout=5)
            await asyncio.sleep(3 * DELAY)
            conn, _ = other.accept()  # still queued: the loop did not take it
            conn.close()
            waiting.close()

    run(main())
    assert loop_errors[0]["message"] == "socket.accept() out of system resource"


# --- a real EMFILE: a server in a child process with its RLIMIT_NOFILE lowered


@pytest.mark.timeout(60)
def test_real_emfile_storm_recovers(loop_kind):
    queued, headroom, delay = 30, 8, 0.1
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, stress.PEERS, "emfile-server", loop_kind, str(headroom), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(proc.stdout.readline())
        clients = stress._emfile_clients(port, queued)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    child = json.loads(out.strip().splitlines()[-1])
    assert clients["served"] == queued and clients["recovered"], clients
    assert child["accepted"] == queued + 2  # and the two connections after the storm
    assert child["emfile_reports"] >= 1
    assert child["reports"] == child["emfile_reports"], child["report_samples"]
    if loop_kind == "ferroloop":
        # One report per pause. (asyncio's is up to the backlog, 2048 here, per pause.)
        assert child["emfile_reports"] <= clients["storm_seconds"] / delay + 2, (child, clients)


@pytest.mark.ferroloop_only
def test_loop_closed_during_pause_lets_go_of_the_socket(new_loop):
    # The closed loop (still referenced) keeps no pending restart, nor the socket in it:
    # a server dropped without close() takes its socket with it, as on asyncio.
    loop = new_loop()
    calls: list[dict] = []
    loop.set_exception_handler(lambda _, context: calls.append(context))

    async def main():
        sock = _listener()
        sock.failing = True
        server = await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        client = _connect(sock.getsockname()[1], 1)[0]
        while not calls:
            await asyncio.sleep(DELAY / 10)
        client.close()
        return server, weakref.ref(sock)

    server, ref = loop.run_until_complete(main())
    loop.close()
    assert [c["message"] for c in calls] == ["socket.accept() out of system resource"]
    calls.clear()  # the exception's traceback holds the socket too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the server is never closed
        del server
        gc.collect()
        assert ref() is None


@pytest.mark.ferroloop_only
def test_restart_skips_a_socket_closed_behind_the_servers_back(loop, run, loop_errors):
    # The listening socket itself is closed during the pause (not through the server) and
    # its number goes to a new socket: the restart must not register that number. (asyncio's
    # restart calls add_reader(-1) and reports the ValueError, once per pending restart.)
    sock = _listener()

    async def main():
        await loop.create_server(Greeter, sock=sock, backlog=BACKLOG)
        old_fd = sock.fileno()
        sock.failing = True
        stale = _connect(sock.getsockname()[1], 1)[0]
        while not loop_errors:
            await asyncio.sleep(DELAY / 10)
        sock.close()
        stale.close()
        with socket.socket() as other:
            if other.fileno() != old_fd:
                pytest.skip("another file took the closed socket's number first")
            other.bind(("127.0.0.1", 0))
            other.listen(8)
            other.setblocking(False)
            waiting = socket.create_connection(other.getsockname(), timeout=5)
            await asyncio.sleep(3 * DELAY)
            conn, _ = other.accept()  # still queued: the loop did not take it
            conn.close()
            waiting.close()
        # The server is not closed: its socket is gone, and Server.close() would fail on
        # it as asyncio's does (remove_reader(-1)).

    run(main())
    assert [c["message"] for c in loop_errors] == ["socket.accept() out of system resource"]
    del loop_errors[:]
