"""Waiting for a peer that answers within microseconds, and for one that does not.

ferroloop polls for a few microseconds before it blocks when the last events came back
quickly (src/loop_core/spin.rs). None of that may be visible: every byte arrives once and
in order, timers never fire early, Ctrl-C still interrupts, and a loop whose peer is slow
does not burn its CPU waiting. Each case runs on asyncio too, with the same outcome, and
the loop cases run twice: with every CPU, and with the loop and its peer thread pinned to
one CPU, where ferroloop's poll yields the CPU between checks instead of spinning.
"""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
import threading
import time

import pytest
from support import loops, net

CLOCK_SLACK = time.get_clock_info("monotonic").resolution


class EchoPeer(threading.Thread):
    """The far end of a socketpair, echoing each message back after `delay` seconds."""

    def __init__(self, sock: socket.socket, delay: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.sock, self.delay = sock, delay

    def run(self) -> None:
        with self.sock:
            while data := self.sock.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                self.sock.sendall(data)


async def ping_pong(loop, sock: socket.socket, rounds: int, seed: int = 0) -> int:
    """Sends `rounds` messages of varying size, checks each echo; returns the bytes echoed."""
    total = 0
    for i in range(rounds):
        message = net.payload(1 + (i * 37) % 3000, seed=seed + i)
        await loop.sock_sendall(sock, message)
        got = b""
        while len(got) < len(message):
            chunk = await loop.sock_recv(sock, len(message) - len(got))
            assert chunk, "peer closed early"
            got += chunk
        assert got == message, f"round {i}: echo differs"
        total += len(got)
    return total


@pytest.fixture(params=["all-cpus", "one-cpu"])
def cpus(request):
    """Every CPU, or one: the thread that makes the loop, and every thread it starts
    (each echo peer), run on a single CPU. Requested before `loop`, so the loop chooses
    its poll window under that affinity."""
    before = os.sched_getaffinity(0)
    if request.param == "one-cpu":
        os.sched_setaffinity(0, {min(before)})
    try:
        yield request.param
    finally:
        os.sched_setaffinity(0, before)


def echo_pair(delay: float = 0.0) -> tuple[socket.socket, EchoPeer]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    peer = EchoPeer(theirs, delay)
    peer.start()
    return ours, peer


@pytest.mark.timeout(60)
def test_a_fast_peer_gets_every_byte_once_and_in_order(cpus, loop, run):
    window = getattr(loop, "_poll_window", None)
    if cpus == "one-cpu" and window is not None and "quota" not in window[1]:
        assert "yielding" in window[1], window  # the peer thread shares this CPU
    sock, peer = echo_pair()
    with sock:
        total = run(ping_pong(loop, sock, 3000))
    peer.join(5)
    assert total == sum(1 + (i * 37) % 3000 for i in range(3000))


@pytest.mark.timeout(60)
def test_timers_do_not_fire_early_beside_a_fast_peer(cpus, loop, run):
    sock, peer = echo_pair()
    late = []

    def fired(when):
        late.append(loop.time() - when)

    async def main():
        traffic = asyncio.ensure_future(ping_pong(loop, sock, 2000, seed=1))
        for i in range(200):
            delay = (i % 20) * 50e-6  # 0 to 0.95 ms: shorter and longer than a poll
            loop.call_later(delay, fired, loop.time() + delay)
            await asyncio.sleep(0.0003)
        await traffic
        await asyncio.sleep(0.002)

    with sock:
        run(main())
    peer.join(5)
    assert len(late) == 200
    assert min(late) >= -CLOCK_SLACK, f"a timer fired {-min(late) * 1e6:.1f} µs early"


@pytest.mark.timeout(60)
def test_a_slow_peer_does_not_keep_the_loop_busy(cpus, loop, run):
    # First a fast exchange, which is when ferroloop polls before blocking, then a peer
    # that takes 2 ms per answer and a quiet sleep: waiting for them must cost next to no
    # CPU, on either loop.
    sock, peer = echo_pair()
    slow_sock, slow_peer = echo_pair(delay=0.002)

    async def main():
        await ping_pong(loop, sock, 500)
        cpu, wall = time.thread_time(), time.monotonic()
        await ping_pong(loop, slow_sock, 100, seed=2)
        await asyncio.sleep(0.2)
        return time.thread_time() - cpu, time.monotonic() - wall

    with sock, slow_sock:
        cpu, wall = run(main())
    peer.join(5)
    slow_peer.join(5)
    assert wall >= 0.4
    assert cpu < 0.25 * wall, f"{cpu * 1e3:.0f} ms of CPU in {wall * 1e3:.0f} ms of waiting"


CTRL_C_CHILD = textwrap.dedent(
    """
    import asyncio, socket, sys, threading

    def echo(sock):
        with sock:
            while data := sock.recv(65536):
                sock.sendall(data)

    async def main():
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        threading.Thread(target=echo, args=(theirs,), daemon=True).start()
        for i in range(10**9):
            await loop.sock_sendall(ours, b"x" * 100)
            got = b""
            while len(got) < 100:
                got += await loop.sock_recv(ours, 100 - len(got))
            if i == 1000:
                print("busy", flush=True)

    if sys.argv[1] == "ferroloop":
        import ferroloop
        loop = ferroloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


@pytest.mark.timeout(60)
def test_ctrl_c_reaches_a_loop_serving_a_fast_peer(loop_kind, tmp_path):
    code, out, err = loops.interrupt_child(CTRL_C_CHILD, loop_kind, tmp_path, ready="busy")
    assert (code, out.split()) == (0, ["interrupted"]), err


SETTING_CHILD = textwrap.dedent(
    """
    import socket, threading
    import ferroloop

    loop = ferroloop.new_event_loop()
    a, b = socket.socketpair()
    a.setblocking(False)

    def echo():
        with b:
            while data := b.recv(100):
                b.sendall(data)

    threading.Thread(target=echo, daemon=True).start()

    async def main():
        for _ in range(200):
            await loop.sock_sendall(a, b"ping")
            assert await loop.sock_recv(a, 100) == b"ping"

    loop.run_until_complete(main())
    loop.close()
    print("ok")
    """
)


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("value", ["0", "5", " 20 ", "1000", "", "  "])
def test_the_poll_setting_takes_microseconds(value):
    # Empty or blank counts as unset.
    done = loops.run_child(SETTING_CHILD, env={"FERROLOOP_POLL_US": value})
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("value", ["abc", "-1", "2.5", "1001"])
def test_a_bad_poll_setting_is_a_clear_error(value):
    done = loops.run_child(SETTING_CHILD, env={"FERROLOOP_POLL_US": value})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ValueError: FERROLOOP_POLL_US must be a whole number of microseconds"
    ), done.stderr


WINDOW_CHILD = textwrap.dedent(
    """
    import os, sys
    if sys.argv[1] == "one-cpu":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import ferroloop
    from ferroloop import _ferroloop

    loop = ferroloop.new_event_loop()
    assert loop._poll_window == _ferroloop.poll_window(), loop._poll_window
    loop.close()
    us, reason = _ferroloop.poll_window()
    print(us)
    print(reason)
    """
)


def poll_window_in_child(cpus: str, setting: str | None = None) -> tuple[int, str]:
    # Blank: the same as unset, whatever this process's environment says.
    done = loops.run_child(WINDOW_CHILD, env={"FERROLOOP_POLL_US": setting or ""}, argv=(cpus,))
    assert done.returncode == 0, done.stderr
    us, reason = done.stdout.strip().split("\n")
    return int(us), reason


YIELDING = "yielding between checks: 1 CPU in this process's affinity mask"


@pytest.mark.ferroloop_only
def test_one_cpu_polls_yielding_by_default():
    us, reason = poll_window_in_child("one-cpu")
    if "quota" in reason:
        assert us == 0 and reason.startswith("default, off: cgroup CPU quota of "), reason
    else:
        assert (us, reason) == (20, f"default, {YIELDING}")


@pytest.mark.ferroloop_only
def test_the_setting_sets_the_one_cpu_window_not_its_pace():
    assert poll_window_in_child("one-cpu", " 30 ") == (30, f"FERROLOOP_POLL_US=30, {YIELDING}")
    assert poll_window_in_child("one-cpu", "0") == (0, f"FERROLOOP_POLL_US=0, {YIELDING}")


@pytest.mark.ferroloop_only
def test_the_default_with_every_cpu_says_why():
    us, reason = poll_window_in_child("all")
    if "quota" in reason and us == 0:
        assert reason.startswith("default, off: cgroup CPU quota of "), reason
    elif len(os.sched_getaffinity(0)) < 2:
        assert (us, reason) == (20, f"default, {YIELDING}")
    else:
        assert us == 20, reason
        assert reason.startswith(f"default: {len(os.sched_getaffinity(0))} CPUs usable, "), reason
