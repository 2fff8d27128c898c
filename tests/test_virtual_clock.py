"""ferroloop.testing's virtual clock: time moves only when the loop is idle.

The same program gives the same trace (timer order, results, timeouts, loop.time() deltas)
on a real loop with short waits as on a virtual loop with long ones, only faster. Real I/O
still works under a virtual clock; executor jobs, child processes and explicit holds keep
the clock from jumping, as the hold policy says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from support import loops

pytestmark = pytest.mark.timeout(60)

# Real seconds a virtual-clock test may take, whatever loop time it covers.
FAST = 1.0


@pytest.fixture
def testing(ferroloop_module: Any) -> Any:
    import ferroloop.testing

    return ferroloop.testing


@pytest.fixture
def vrun(testing: Any) -> Iterator[Callable[..., Any]]:
    """``vrun(coro, **clock_options)``: run ``coro`` on a new virtual loop; the loop's
    exception handler must not be called; a hang is stopped after 20 real seconds."""
    made: list[Any] = []

    def runner(coro: Coroutine[Any, Any, Any], **options: Any) -> Any:
        loop = testing.new_virtual_loop(**options)
        made.append(loop)
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        guard = threading.Timer(20.0, lambda: loop.call_soon_threadsafe(loop.stop))
        guard.start()
        try:
            result = loop.run_until_complete(coro)
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            guard.cancel()
        assert not errors, errors
        return result

    yield runner
    for loop in made:
        loop.close()


# --- the same program on real and virtual clocks


async def program(unit: float) -> list[tuple[str, Any, float]]:
    """Timers, sleeps, timeouts and waits whose outcome depends only on loop time.
    Every event is at least one ``unit`` from any other, so a real loop's jitter
    cannot reorder them. Returns (event, result, loop time in units)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    trace: list[tuple[str, Any, float]] = []

    def mark(what: str, result: Any = None) -> None:
        trace.append((what, result, (loop.time() - t0) / unit))

    for name, units in (("c3", 3), ("c1", 1), ("c2", 2), ("c1b", 1)):
        loop.call_later(units * unit, mark, name)
    loop.call_at(t0 + 2.5 * unit, mark, "at2.5")
    await asyncio.sleep(4 * unit)
    mark("slept")
    mark("wait_for", await asyncio.wait_for(asyncio.sleep(unit, "ok"), 2 * unit))
    try:
        await asyncio.wait_for(asyncio.sleep(3 * unit), unit)
    except asyncio.TimeoutError:
        mark("wait_for timed out")
    if sys.version_info >= (3, 11):
        try:
            async with asyncio.timeout(2 * unit):
                await asyncio.sleep(5 * unit)
        except TimeoutError:
            mark("timeout")
    else:
        await asyncio.sleep(2 * unit)
        mark("timeout")
    done_order: list[str] = []

    async def worker(name: str, units: int) -> str:
        await asyncio.sleep(units * unit)
        done_order.append(name)
        return name

    mark("gather", await asyncio.gather(worker("a", 3), worker("b", 1), worker("c", 2)))
    mark("done order", list(done_order))
    tasks = [asyncio.ensure_future(worker("d", 1)), asyncio.ensure_future(worker("e", 3))]
    done, pending = await asyncio.wait(tasks, timeout=2 * unit)
    mark("wait", (sorted(t.result() for t in done), len(pending)))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    event = asyncio.Event()
    loop.call_later(2 * unit, event.set)
    await event.wait()
    mark("event")
    queue: asyncio.Queue[str] = asyncio.Queue()
    loop.call_later(unit, queue.put_nowait, "item")
    mark("queue", await asyncio.wait_for(queue.get(), 5 * unit))
    return trace


def _steps(trace: list[tuple[str, Any, float]]) -> list[float]:
    """The loop time from each event to the next: a real loop's lateness adds up over the
    program, but each step is off by at most two events' lateness."""
    times = [units for _, _, units in trace]
    return [b - a for a, b in zip([0.0, *times[:-1]], times, strict=True)]


def _late_steps(real: list[tuple[str, Any, float]], virtual: list[tuple[str, Any, float]]) -> list:
    """The steps where the real loop was off by more than 0.45 units."""
    names = [what for what, _, _ in real]
    return [
        (what, real_step, virtual_step)
        for what, real_step, virtual_step in zip(names, _steps(real), _steps(virtual), strict=True)
        if abs(real_step - virtual_step) >= 0.45
    ]


def test_same_program_same_trace_real_and_virtual(
    loop: asyncio.AbstractEventLoop, vrun: Any
) -> None:
    start = time.monotonic()
    virtual = vrun(program(3600.0))  # one-hour units
    took = time.monotonic() - start
    assert took < FAST, f"{took:.3f} s for {virtual[-1][2]:.0f} hours of loop time"
    # Real clock: 50 ms units (under a second a run). A loaded machine can make one
    # step late by more than the tolerance: up to three runs, all with the same results.
    for _ in range(3):
        real = loops.run(loop, program(0.05), timeout=20)
        assert [(what, result) for what, result, _ in real] == [
            (what, result) for what, result, _ in virtual
        ]
        late = _late_steps(real, virtual)
        if not late:
            break
    assert not late, late
    # On the virtual clock every event is exactly on its (half) unit.
    assert [units for _, _, units in virtual] == [
        1.0,
        1.0,
        2.0,
        2.5,
        3.0,
        4.0,
        5.0,
        6.0,
        8.0,
        11.0,
        11.0,
        13.0,
        15.0,
        16.0,
    ], virtual
    assert [what for what, _, _ in virtual][:5] == ["c1", "c1b", "c2", "at2.5", "c3"]


def test_hour_long_sleep_takes_milliseconds(testing: Any) -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return t0, loop.time()

    start = time.monotonic()
    t0, t1 = testing.run(main())
    took = time.monotonic() - start
    assert (t0, t1) == (0.0, 3600.0)
    assert took < FAST


def test_start_time(vrun: Any) -> None:
    async def now() -> float:
        return asyncio.get_running_loop().time()

    assert vrun(now()) == 0.0
    assert vrun(now(), start=1000.5) == 1000.5
    real = time.monotonic()
    assert abs(vrun(now(), start=None) - real) < 5.0


def test_equal_deadlines_fire_in_order_in_one_jump(vrun: Any) -> None:
    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[int, float]] = []
        for i in range(50):
            loop.call_at(100.0, lambda i=i: fired.append((i, loop.time())))
        loop.call_at(100.0 + 1e-6, lambda: fired.append((-1, loop.time())))
        await asyncio.sleep(200)
        return fired

    fired = vrun(main())
    assert fired[:50] == [(i, 100.0) for i in range(50)]
    assert fired[50] == (-1, 100.0 + 1e-6)


def test_run_forever_until_a_late_stop(testing: Any) -> None:
    loop = testing.new_virtual_loop()
    try:
        loop.call_later(86400 * 365, loop.stop)
        start = time.monotonic()
        loop.run_forever()
        assert time.monotonic() - start < FAST
        assert loop.time() == 86400 * 365
    finally:
        loop.close()


def test_cancelled_timers_are_not_jumped_to(vrun: Any) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        for _ in range(5):
            loop.call_later(50, lambda: None).cancel()
        await asyncio.sleep(70)
        return loop.time()

    # 70, not 50: the loop skipped the cancelled deadlines.
    assert vrun(main()) == 70.0


def test_timer_at_infinity_is_never_reached(vrun: Any) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        handle = loop.call_at(float("inf"), lambda: None)
        await asyncio.sleep(5)
        handle.cancel()
        return loop.time()

    assert vrun(main()) == 5.0


# --- manual stepping


def test_advance_without_autojump(testing: Any) -> None:
    loop = testing.new_virtual_loop(autojump=False)
    try:
        fired: list[float] = []
        loop.call_later(10, lambda: fired.append(loop.time()))

        async def step(seconds: float) -> None:
            loop.advance(seconds)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        loop.run_until_complete(step(5))
        assert fired == [] and loop.time() == 5.0
        loop.run_until_complete(step(5))
        assert fired == [10.0]
    finally:
        loop.close()


def test_advance_from_another_thread_wakes_the_loop(testing: Any) -> None:
    loop = testing.new_virtual_loop(autojump=False)
    try:

        def later() -> None:
            time.sleep(0.05)
            loop.advance(30)

        thread = threading.Thread(target=later)
        thread.start()
        start = time.monotonic()
        loop.run_until_complete(asyncio.sleep(30))
        thread.join()
        assert loop.time() == 30.0
        assert time.monotonic() - start < 5.0
    finally:
        loop.close()


def test_turning_autojump_on_lets_a_blocked_loop_jump(testing: Any) -> None:
    loop = testing.new_virtual_loop(autojump=False)
    try:
        assert loop.autojump is False
        threading.Timer(0.05, lambda: setattr(loop, "autojump", True)).start()
        loop.run_until_complete(asyncio.sleep(1000))
        assert loop.time() == 1000.0 and loop.autojump is True
    finally:
        loop.close()


# --- real I/O under a virtual clock


async def _delayed_echo_server(delay: float) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        await asyncio.sleep(delay)
        writer.write(data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("delay", "timeout", "expected"), [(10, 30, b"ping\n"), (60, 30, "timeout")]
)
def test_loopback_echo_with_delay_and_client_timeout(
    vrun: Any, delay: float, timeout: float, expected: Any
) -> None:
    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        server = await _delayed_echo_server(delay)
        port = server.sockets[0].getsockname()[1]
        t0 = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        try:
            result: Any = await asyncio.wait_for(reader.readline(), timeout)
        except asyncio.TimeoutError:
            result = "timeout"
        elapsed = loop.time() - t0
        writer.close()
        server.close()
        await server.wait_closed()
        return result, elapsed

    start = time.monotonic()
    result, elapsed = vrun(main())
    assert result == expected
    assert elapsed == min(delay, timeout)
    assert time.monotonic() - start < FAST


def test_threaded_peer_within_the_autojump_threshold(vrun: Any) -> None:
    # A peer outside the loop (a thread) answers after 50 ms of real time: the
    # loop waits up to autojump_threshold for it before jumping to the timeout.
    async def main() -> bytes:
        ours, theirs = socket.socketpair()

        def peer() -> None:
            with theirs:
                theirs.recv(4)
                time.sleep(0.05)
                theirs.sendall(b"pong")

        thread = threading.Thread(target=peer)
        thread.start()
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            writer.write(b"ping")
            data = await asyncio.wait_for(reader.readexactly(4), 60)
            writer.close()
            return data
        finally:
            thread.join()

    assert vrun(main(), autojump_threshold=2.0) == b"pong"


# --- executor jobs, threads and child processes hold the clock


def test_executor_job_really_runs(vrun: Any) -> None:
    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        t0, r0 = loop.time(), time.monotonic()
        await loop.run_in_executor(None, time.sleep, 0.1)
        virtual, real = loop.time() - t0, time.monotonic() - r0
        # The hold goes with a callback the job queues right after its result.
        deadline = time.monotonic() + 5
        while loop.holds and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return virtual, real, loop.holds

    virtual, real, holds = vrun(main())
    assert real >= 0.1
    # hold_policy="real": loop time ran at real speed while the job ran.
    assert 0.05 < virtual <= real
    assert holds == 0


@pytest.mark.parametrize("policy", ["real", "freeze", "ignore"])
def test_timeout_racing_an_executor_job(vrun: Any, policy: str) -> None:
    """The documented outcome per policy of wait_for(asyncio.to_thread(time.sleep, job), timeout):
    "real" decides by real time, "freeze" lets the job win, "ignore" lets the timeout win."""

    async def race(job: float, timeout: float) -> tuple[str, float, float]:
        loop = asyncio.get_running_loop()
        t0, r0 = loop.time(), time.monotonic()
        try:
            await asyncio.wait_for(asyncio.to_thread(time.sleep, job), timeout)
            outcome = "done"
        except asyncio.TimeoutError:
            outcome = "timeout"
        return outcome, loop.time() - t0, time.monotonic() - r0

    if policy == "real":
        # As on asyncio: the timeout fires after 0.05 s of real time.
        outcome, elapsed, real = vrun(race(0.5, 0.05), hold_policy=policy)
        assert (outcome, elapsed) == ("timeout", 0.05)
        assert 0.05 <= real < 0.5
    elif policy == "freeze":
        # The job takes no loop time, so it beats any timeout.
        outcome, elapsed, real = vrun(race(0.1, 0.001), hold_policy=policy)
        assert (outcome, elapsed) == ("done", 0.0)
        assert real >= 0.1
    else:
        # The clock jumps at once, whatever the job is doing.
        outcome, elapsed, real = vrun(race(0.3, 3600), hold_policy=policy)
        assert (outcome, elapsed) == ("timeout", 3600.0)
        assert real < 0.3


def test_no_jump_while_a_thread_holds_the_clock(vrun: Any) -> None:
    # A thread the program started calls back with call_soon_threadsafe after 0.1 s;
    # a timer 1000 s away must not fire first while the thread holds the clock.
    async def main(policy: str) -> list[tuple[str, float]]:
        loop: Any = asyncio.get_running_loop()
        loop.hold_policy = policy
        order: list[tuple[str, float]] = []
        loop.call_later(1000, lambda: order.append(("timer", loop.time())))
        arrived = loop.create_future()
        hold = loop.hold_clock()

        def work() -> None:
            time.sleep(0.1)
            loop.call_soon_threadsafe(
                lambda: (order.append(("thread", loop.time())), arrived.set_result(None))
            )
            hold.release()

        thread = threading.Thread(target=work)
        thread.start()
        await arrived
        thread.join()
        await asyncio.sleep(2000)
        return order

    frozen = vrun(main("freeze"))
    assert frozen == [("thread", 0.0), ("timer", 1000.0)]
    real = vrun(main("real"))
    assert [what for what, _ in real] == ["thread", "timer"]
    # Loop time ran at real speed while the loop waited (not while it ran the test's
    # own code), so a little under the thread's 0.1 s.
    assert 0.01 < real[0][1] < 10 and real[1][1] == 1000.0


def test_hold_clock_context_manager_and_count(testing: Any) -> None:
    loop = testing.new_virtual_loop()
    try:
        assert loop.holds == 0
        with loop.hold_clock():
            with loop.hold_clock() as inner:
                assert loop.holds == 2
                inner.release()
                inner.release()  # a second release does nothing
                assert loop.holds == 1
        assert loop.holds == 0
        with pytest.raises(RuntimeError):
            loop._vclock_release()
    finally:
        loop.close()


def test_executor_hold_lasts_until_the_result_is_delivered(vrun: Any) -> None:
    # Many short jobs racing long timeouts: each result must win, every time.
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        results = []
        for i in range(30):
            results.append(await asyncio.wait_for(loop.run_in_executor(None, lambda i=i: i), 5))
        return results

    assert vrun(main(), hold_policy="freeze") == list(range(30))


def test_custom_executor_holds_the_clock(vrun: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            result = await asyncio.wait_for(
                loop.run_in_executor(pool, lambda: time.sleep(0.05) or "x"), 10
            )
        return result, loop.time()

    assert vrun(main(), hold_policy="freeze") == ("x", 0.0)


def test_child_process_wait_is_real_time(vrun: Any) -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(0.2)"
        )
        code = await asyncio.wait_for(proc.wait(), 30)
        return code, loop.time()

    code, now = vrun(main())
    assert code == 0
    # The child held the clock: loop time ran at real speed, never jumping to 30.
    assert 0.1 < now < 30


def test_closed_loop_after_executor_job(testing: Any, caplog: pytest.LogCaptureFixture) -> None:
    # A job still running when the loop closes gives its hold back to a closed
    # loop: no error in the worker thread (concurrent.futures logs a failing callback).
    loop = testing.new_virtual_loop()
    release = threading.Event()
    fut = loop.run_in_executor(None, release.wait, 5)
    executor = loop._default_executor
    loop.close()
    release.set()
    executor.shutdown(wait=True)
    with contextlib.suppress(Exception):
        fut.exception()
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()]


# --- other frameworks and test runners


def test_anyio(testing: Any) -> None:
    anyio = pytest.importorskip("anyio")

    async def main() -> tuple[float, str]:
        t0 = anyio.current_time()
        await anyio.sleep(3600)
        outcome = "no timeout"
        with anyio.move_on_after(60) as scope:
            await anyio.sleep(120)
        if scope.cancelled_caught:
            outcome = "moved on"
        return anyio.current_time() - t0, outcome

    start = time.monotonic()
    result = anyio.run(
        main, backend="asyncio", backend_options={"loop_factory": testing.new_virtual_loop}
    )
    assert result == (3660.0, "moved on")
    assert time.monotonic() - start < FAST


def test_asyncio_runner_loop_factory(testing: Any) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.Runner is new in 3.11")
    with asyncio.Runner(loop_factory=testing.new_virtual_loop) as runner:
        assert runner.run(asyncio.sleep(7200, "late")) == "late"
        assert runner.get_loop().time() == 7200.0


def test_policy(testing: Any, restore_policy: None) -> None:
    asyncio.set_event_loop_policy(testing.VirtualClockPolicy(start=5.0))
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, testing.VirtualClockLoop) and loop.time() == 5.0
    finally:
        loop.close()


PYTEST_ASYNCIO_TESTS = """
import asyncio, time
import pytest

@pytest.mark.asyncio
async def test_sleeps_an_hour():
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    await asyncio.sleep(3600)
    assert type(loop).__name__ == "VirtualClockLoop"
    assert loop.time() == 3600.0 and time.monotonic() - start < 1.0

@pytest.mark.asyncio
@pytest.mark.virtual_clock(start=100.0, hold_policy="freeze")
async def test_marker_options():
    loop = asyncio.get_running_loop()
    assert loop.time() == 100.0 and loop.hold_policy == "freeze"
    await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), 0.001)

def test_sync_fixture(virtual_loop):
    virtual_loop.run_until_complete(asyncio.sleep(60))
    assert virtual_loop.time() == 60.0
"""


def test_pytest_asyncio_plugin(ferroloop_module: Any, tmp_path: Any) -> None:
    pytest.importorskip("pytest_asyncio")
    (tmp_path / "test_vc.py").write_text(textwrap.dedent(PYTEST_ASYNCIO_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {**os.environ, "PYTHONASYNCIODEBUG": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asyncio"]
        + ["-p", "ferroloop.testing.pytest_plugin", "test_vc.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


# --- the options and their errors


def test_options_round_trip_and_errors(testing: Any) -> None:
    loop = testing.new_virtual_loop(autojump=False, autojump_threshold=0.25, hold_policy="freeze")
    try:
        assert (loop.autojump, loop.autojump_threshold, loop.hold_policy) == (False, 0.25, "freeze")
        with pytest.raises(ValueError):
            loop.hold_policy = "sometimes"
        with pytest.raises(ValueError):
            loop.autojump_threshold = -1
        with pytest.raises(ValueError):
            loop.autojump_threshold = float("nan")
        with pytest.raises(ValueError):
            loop.advance(-1)
        with pytest.raises(ValueError):
            loop.advance(float("inf"))
        with pytest.raises(RuntimeError, match="already"):
            loop._vclock_enable(0.0)
    finally:
        loop.close()
    with pytest.raises(ValueError):
        testing.new_virtual_loop(start=float("nan")).close()


def test_real_loop_has_no_virtual_clock(ferroloop_module: Any) -> None:
    loop = ferroloop_module.new_event_loop()
    try:
        assert loop._vclock_is_virtual() is False
        with pytest.raises(RuntimeError, match="real clock"):
            loop._vclock_advance(1.0)
        loop.call_later(10, lambda: None)
        with pytest.raises(RuntimeError, match="before the loop"):
            loop._vclock_enable(0.0)
    finally:
        loop.close()
