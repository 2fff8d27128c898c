"""A socket transport's read registration: events already queued for it do not run once
it is removed (pause_reading, close), whether or not debug mode is on."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest


class _Peer(asyncio.Protocol):
    def __init__(self, name, log, on_data=None):
        self.name = name
        self.log = log
        self.on_data = on_data
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.log.append((self.name, data))
        if self.on_data is not None:
            self.on_data(self)


async def _two_readable(loop, on_data):
    """Two transports over socketpairs, both readable before the loop polls them."""
    log = []
    pairs = [socket.socketpair() for _ in range(2)]
    protocols = []
    for name, (a, _) in zip("ab", pairs, strict=True):
        _, protocol = await loop.create_connection(lambda n=name: _Peer(n, log, on_data), sock=a)
        protocols.append(protocol)
    for _, b in pairs:
        b.send(b"x")
    return log, pairs, protocols


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("how", ["pause", "close", "pause_resume"])
def test_reader_removed_by_an_earlier_event_does_not_run(loop, run, debug, how):
    """Both sockets are ready in one poll; whichever runs first stops the other
    reading: the other's queued event is dropped, as asyncio cancels its handle."""
    loop.set_debug(debug)
    by_name = {}
    first = []

    def stop_the_other(me):
        if not first:
            # Runs at the start of the next iteration: sees this one's reads.
            loop.call_soon(lambda: first.append(list(me.log)))
        other = by_name["b" if me.name == "a" else "a"]
        if how == "close":
            other.transport.close()
        else:
            other.transport.pause_reading()
            if how == "pause_resume":
                other.transport.resume_reading()

    async def main():
        log, pairs, protocols = await _two_readable(loop, stop_the_other)
        by_name.update((p.name, p) for p in protocols)
        for _ in range(3):
            await asyncio.sleep(0)
        for p in protocols:
            if how == "pause":
                p.transport.resume_reading()
        await asyncio.sleep(0.05)
        for p in protocols:
            p.transport.close()
        await asyncio.sleep(0)
        for a, b in pairs:
            a.close()
            b.close()
        return log

    log = run(main())
    assert len(first) == 1 and len(first[0]) == 1, first
    if how == "close":
        assert log == first[0]
    else:
        # Paused then resumed: the data is read later, once.
        assert sorted(name for name, _ in log) == ["a", "b"]


def test_many_readers_echo_and_are_collected(loop, run):
    """Many connections' events in one poll (more than the loop keeps recycled
    handles for) are all delivered, in one piece, and the transports are freed."""
    n = 300

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        pairs = [socket.socketpair() for _ in range(n)]
        transports = []
        for a, b in pairs:
            b.setblocking(False)
            t, _ = await loop.create_connection(Echo, sock=a)
            transports.append(t)
        for i, (_, b) in enumerate(pairs):
            b.send(b"%d" % i)
        got = {}
        for _ in range(200):
            await asyncio.sleep(0.005)
            for i, (_, b) in enumerate(pairs):
                if i not in got:
                    try:
                        got[i] = b.recv(100)
                    except BlockingIOError:
                        pass
            if len(got) == n:
                break
        for t in transports:
            t.close()
        await asyncio.sleep(0)
        for _, b in pairs:
            b.close()
        return got

    got = run(main())
    assert got == {i: b"%d" % i for i in range(n)}
    gc.collect()
