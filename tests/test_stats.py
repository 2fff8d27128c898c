"""``loop.stats()``: what a running loop counts about itself, and the
``FERROLOOP_STATS=1`` summary. asyncio has nothing comparable, so these tests are
ferroloop's own."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import time

import pytest
from support import loops, net

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(60)]


def test_snapshot_is_frozen_typed_and_exported(loop) -> None:
    import ferroloop

    stats = loop.stats()
    assert isinstance(stats, ferroloop.LoopStats)
    with pytest.raises(AttributeError):
        stats.callbacks = 1  # type: ignore[misc]
    as_dict = stats._asdict()
    assert as_dict["iterations"] == stats.iterations
    assert list(as_dict) == list(stats._fields)
    assert set(as_dict["timer_lag"]._asdict()) == {"last", "max", "samples", "total", "buckets"}
    assert isinstance(stats.timer_lag, ferroloop.LagHistogram)


def test_bucket_bounds_are_powers_of_two_microseconds(loop) -> None:
    from ferroloop._observe import BUCKET_BOUNDS_US

    buckets = loop.stats().queue_wait.buckets
    assert len(BUCKET_BOUNDS_US) == len(buckets)
    assert BUCKET_BOUNDS_US[:4] == (1, 2, 4, 8)
    assert BUCKET_BOUNDS_US[-2] == 2**24 and BUCKET_BOUNDS_US[-1] is None


def test_counts_callbacks_iterations_and_ready_depth(loop) -> None:
    ran = []
    for i in range(50):
        loop.call_soon(ran.append, i)
    assert loop.stats().ready == 50
    before = loop.stats()
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    after = loop.stats()
    assert ran == list(range(50))
    assert after.callbacks - before.callbacks == 51
    assert after.iterations >= 1
    assert after.ready == 0
    assert after.ready_max >= 51


def test_cancelled_callbacks_are_not_counted(loop, run) -> None:
    handles = [loop.call_soon(lambda: None) for _ in range(10)]
    for h in handles[:4]:
        h.cancel()
    before = loop.stats().callbacks

    async def main() -> None:
        pass

    run(main())
    # 6 plain callbacks, plus what run_until_complete's own task and wait_for ran.
    ran = loop.stats().callbacks - before
    assert 6 < ran < 20


def test_counts_timers_and_their_lateness(loop, run) -> None:
    fired = []
    timers = [loop.call_later(0.01 * i, fired.append, i) for i in range(5)]
    timers[1].cancel()
    timers[3].cancel()

    async def main() -> None:
        await asyncio.sleep(0.1)

    run(main())
    stats = loop.stats()
    assert fired == [0, 2, 4]
    # The sleep and wait_for's timeout are timers too.
    assert stats.timers_scheduled >= 6
    assert stats.timers_cancelled >= 2
    assert stats.timers_fired >= 4
    lag = stats.timer_lag
    # One sample per batch of timers found due together.
    assert 1 <= lag.samples <= stats.timers_fired
    assert sum(lag.buckets) == lag.samples
    assert 0 <= lag.last <= lag.max < 5
    assert lag.mean <= lag.max


def test_time_in_callbacks_and_blocked_in_epoll(loop, run) -> None:
    async def main() -> None:
        time.sleep(0.05)
        await asyncio.sleep(0.05)

    run(main())
    stats = loop.stats()
    assert stats.busy_time >= 0.05
    assert stats.run_time >= stats.busy_time + stats.blocked_time - 1e-6
    assert stats.blocked_time >= 0.03
    assert stats.blocked_waits >= 1
    assert stats.uptime >= stats.run_time
    assert stats.poll_time >= 0
    assert min(stats.poll_hits, stats.poll_misses, stats.poll_timeouts) >= 0


def test_ready_queue_wait_is_sampled(loop, run) -> None:
    from ferroloop._observe import QUEUE_WAIT_SAMPLE_EVERY

    async def main() -> None:
        for _ in range(40 * QUEUE_WAIT_SAMPLE_EVERY):
            await asyncio.sleep(0)

    run(main())
    wait = loop.stats().queue_wait
    assert 30 <= wait.samples <= 50
    assert sum(wait.buckets) == wait.samples
    assert 0 < wait.max < 5
    assert wait.last <= wait.max


def test_counts_readers_and_writers(loop) -> None:
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, lambda: None)
        loop.add_writer(b, lambda: None)
        loop.add_writer(a, lambda: None)
        stats = loop.stats()
        assert (stats.readers, stats.writers) == (1, 2)
        loop.remove_reader(a)
        loop.remove_writer(a)
        loop.remove_writer(b)
        stats = loop.stats()
        assert (stats.readers, stats.writers) == (0, 0)
    finally:
        a.close()
        b.close()


def test_counts_sock_operations(loop, run) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main() -> None:
        await loop.sock_sendall(a, b"x" * 1000)
        got = await net.recv_exactly(loop, b, 1000)
        assert len(got) == 1000
        buf = bytearray(10)
        await loop.sock_sendall(b, b"y" * 10)
        assert await loop.sock_recv_into(a, buf) == 10

    try:
        run(main())
    finally:
        a.close()
        b.close()
    stats = loop.stats()
    assert stats.bytes_written == 1010
    assert stats.messages_written == 2
    assert stats.bytes_read == 1010
    assert stats.messages_read >= 2


class _Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.mark.parametrize("kind", net.kind_params("tcp4", "unix"))
def test_counts_transports_servers_and_bytes(loop, run, kind, tmp_path) -> None:
    async def main() -> None:
        server = await net.start_server(loop, kind, _Echo, tmp_path)
        assert loop.stats().servers == 1
        reader, writer = await net.open_connection(kind, net.address_of(server))
        for _ in range(3):
            writer.write(b"z" * 1000)
            await reader.readexactly(1000)
        during = loop.stats()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return during

    during = run(main())
    assert during.transports >= 2
    # The client writes 3 KB and the server echoes it: 6 KB each way in all.
    assert during.bytes_written == 6000
    assert during.messages_written == 6
    assert during.bytes_read == 6000
    assert during.messages_read >= 6
    assert loop.stats().servers == 0


def test_counts_datagrams(loop, run) -> None:
    received: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
            received.append(data)

    async def main() -> None:
        sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        address = sink.get_extra_info("sockname")
        source, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=address
        )
        for _ in range(3):
            source.sendto(b"d" * 100)
        for _ in range(200):
            if len(received) == 3:
                break
            await asyncio.sleep(0.005)
        source.close()
        sink.close()

    run(main())
    stats = loop.stats()
    assert len(received) == 3
    assert stats.bytes_written == 300 and stats.messages_written == 3
    assert stats.bytes_read == 300 and stats.messages_read == 3


def test_stats_after_close(loop) -> None:
    loop.call_soon(loop.stop)
    loops.run_forever_bounded(loop)
    loop.close()
    stats = loop.stats()
    assert stats.callbacks >= 1
    assert stats.ready == 0


_SUMMARY_SCRIPT = textwrap.dedent(
    """
    import asyncio, ferroloop
    async def main():
        await asyncio.sleep(0.01)
    ferroloop.run(main())
    left_open = ferroloop.new_event_loop()
    left_open.run_until_complete(asyncio.sleep(0))
    """
)


def test_environment_variable_prints_a_summary_per_loop(ferroloop_module) -> None:
    child = loops.run_child(_SUMMARY_SCRIPT, env={"FERROLOOP_STATS": "1"})
    assert child.returncode == 0, child.stderr
    # One for the loop ferroloop.run closed, one at exit for the loop left open.
    assert child.stderr.count("ferroloop stats (loop at") == 2, child.stderr
    assert "iterations" in child.stderr and "timers:" in child.stderr and "io:" in child.stderr
    assert child.stdout == ""
    assert len(child.stderr.splitlines()) == 10


@pytest.mark.parametrize("value", ["", "0"])
def test_no_summary_unless_asked(ferroloop_module, value) -> None:
    child = loops.run_child(_SUMMARY_SCRIPT, env={"FERROLOOP_STATS": value})
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""
