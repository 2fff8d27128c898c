"""The loop's io references on ``socket.socket`` objects (``_io_refs``/``_closed``) for
socket subclasses: ferroloop reads and writes those ``__slots__`` directly for a type
whose attribute lookup is the generic one, and must still behave as ``getattr``/
``setattr`` would when a class shadows them, overrides the lookup, or changes after
its first use. asyncio never touches these attributes, so the tests are
``ferroloop_only`` (uvloop holds the same references)."""

from __future__ import annotations

import asyncio
import socket

import pytest


class SubSocket(socket.socket):
    pass


class SlottedSubSocket(socket.socket):
    __slots__ = ("extra",)


class LoggedSocket(socket.socket):
    """Counts the reads of ``_closed`` that go through its own lookup."""

    reads = 0

    def __getattribute__(self, name):
        if name == "_closed":
            type(self).reads += 1
        return super().__getattribute__(name)


def _pair(cls=socket.socket) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    if cls is not socket.socket:
        a = cls(a.family, a.type, a.proto, fileno=a.detach())
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def _pending_recv_survives_close(loop, cls=socket.socket) -> socket.socket:
    """A pending ``sock_recv`` on a ``cls`` socket the program closes still gets the
    peer's data; the socket is really closed once it ends."""
    a, peer = _pair(cls)
    try:
        task = loop.create_task(loop.sock_recv(a, 100))
        for _ in range(3):
            await asyncio.sleep(0.01)
        a.close()
        assert a.fileno() != -1
        peer.send(b"x")
        assert await task == b"x"
        assert a.fileno() == -1
        assert a._io_refs == 0
    finally:
        a.close()
        peer.close()
    return a


@pytest.mark.ferroloop_only
def test_subclasses_and_socket_alternately(loop, run):
    async def main():
        for cls in (socket.socket, SubSocket, SlottedSubSocket, socket.socket, SubSocket):
            await _pending_recv_survives_close(loop, cls)

    run(main())


@pytest.mark.ferroloop_only
def test_a_class_changed_after_use_is_seen(loop, run):
    class Changing(socket.socket):
        pass

    seen = []

    def get(self):
        return self.__dict__.get("refs", 0)

    def set_(self, value):
        seen.append(value)
        self.__dict__["refs"] = value

    async def main():
        await _pending_recv_survives_close(loop, Changing)
        Changing._io_refs = property(get, set_)
        await _pending_recv_survives_close(loop, Changing)
        assert seen == [0, 1, 0]  # __init__ sets 0, then the pending operation
        del Changing._io_refs
        await _pending_recv_survives_close(loop, Changing)
        assert seen == [0, 1, 0]

    run(main())


@pytest.mark.ferroloop_only
def test_an_overridden_attribute_lookup_is_used(loop, run):
    async def main():
        await _pending_recv_survives_close(loop, socket.socket)
        LoggedSocket.reads = 0
        await _pending_recv_survives_close(loop, LoggedSocket)
        # One for the attempt's ownership check, one when the reference is given back.
        assert LoggedSocket.reads >= 2

    run(main())


@pytest.mark.ferroloop_only
def test_a_class_swapped_under_a_pending_op(loop, run):
    """``sock.__class__`` reassigned while an operation waits: the next access uses the
    new class's lookup."""

    async def main():
        a, peer = _pair(SubSocket)
        try:
            task = loop.create_task(loop.sock_recv(a, 100))
            for _ in range(3):
                await asyncio.sleep(0.01)
            LoggedSocket.reads = 0
            a.__class__ = LoggedSocket
            peer.send(b"x")
            assert await task == b"x"
            assert LoggedSocket.reads >= 2
            assert a._io_refs == 0
        finally:
            a.close()
            peer.close()

    run(main())
