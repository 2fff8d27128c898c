"""Datagram protocols for the UDP and Unix datagram tests: recording and echoing."""

from __future__ import annotations

import asyncio


class DatagramRecorder(asyncio.DatagramProtocol):
    """Records every callback in order; futures resolve on counts and on connection_lost."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None
        self.events: list[str] = []
        self.datagrams: list[tuple[bytes, object]] = []
        self.errors: list[Exception] = []
        self.lost_exc: list[BaseException | None] = []
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.pauses: list[int] = []
        self.resumes: list[int] = []
        self._waiting: tuple[int, int, asyncio.Future] | None = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        self.events.append("datagram")
        self.datagrams.append((data, addr))
        self._check()

    def error_received(self, exc):
        self.events.append("error")
        self.errors.append(exc)
        self._check()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_exc.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")
        self.pauses.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume_writing")
        self.resumes.append(self.transport.get_write_buffer_size())

    async def wait_datagrams(self, n: int, timeout: float = 5.0) -> list[tuple[bytes, object]]:
        """Wait until at least ``n`` datagrams arrived in total."""
        await self._wait(n, 0, timeout)
        return self.datagrams

    async def wait_errors(self, n: int, timeout: float = 5.0) -> list[Exception]:
        await self._wait(0, n, timeout)
        return self.errors

    async def _wait(self, datagrams: int, errors: int, timeout: float) -> None:
        if len(self.datagrams) >= datagrams and len(self.errors) >= errors:
            return
        fut = self.loop.create_future()
        self._waiting = (datagrams, errors, fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"waited {timeout} s: {len(self.datagrams)} of {datagrams} datagrams, "
                f"{len(self.errors)} of {errors} errors"
            ) from None
        finally:
            self._waiting = None

    def _check(self) -> None:
        if self._waiting is not None:
            datagrams, errors, fut = self._waiting
            if len(self.datagrams) >= datagrams and len(self.errors) >= errors and not fut.done():
                fut.set_result(None)


class DatagramEcho(asyncio.DatagramProtocol):
    """Sends every datagram back to where it came from; counts them."""

    def __init__(self) -> None:
        self.count = 0
        self.errors: list[Exception] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.count += 1
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        self.errors.append(exc)
