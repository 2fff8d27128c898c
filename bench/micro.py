"""Micro-benchmarks of event-loop primitives: asyncio vs ferroloop vs uvloop (and rloop,
rsloop, veloxloop).

Method (details in bench/README.md): the loops take turns, benchmark by benchmark, in
rounds (the starting loop rotates each round), and every measurement runs in a fresh
subprocess pinned to one CPU, so one loop's garbage, caches or threads never affect
another's figure. The report gives the median over rounds and the spread (min-max). A loop
lacking what a benchmark needs (NotImplementedError) shows n/a there, with the reason.

    python bench/micro.py --quick              # < 60 s
    python bench/micro.py --markdown --json bench/results/micro.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import platform
import queue
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

from ratios import compare, fmt_ratio, geomean
from servers.echo import describe  # the servers' account of a NotImplementedError

clock = time.perf_counter
CHECK = 255  # round-trip loops look at the clock every CHECK + 1 iterations

# ---------------------------------------------------------------- benchmarks (child side)
# Each takes (loop, n, deadline) and returns {metric: value}, or a coroutine producing it.
# Iteration stops at n or at the deadline, whichever comes first; figures are per operation.


def per_op(t0, ops):
    return (clock() - t0) / ops * 1e6


def b_call_soon(loop, n, deadline):
    """One callback schedules n no-op callbacks at once; the last one stops the loop."""

    def start():
        for _ in range(n - 1):
            loop.call_soon(int)
        loop.call_soon(loop.stop)

    t0 = clock()
    loop.call_soon(start)
    loop.run_forever()
    return {"call_soon": per_op(t0, n)}


def b_call_soon_chain(loop, n, deadline):
    """Each callback schedules the next: one callback per loop iteration."""
    done = 0

    def step():
        nonlocal done
        done += 1
        if done < n and (done & CHECK or clock() < deadline):
            loop.call_soon(step)
        else:
            loop.stop()

    t0 = clock()
    loop.call_soon(step)
    loop.run_forever()
    return {"call_soon_chain": per_op(t0, done)}


async def b_future_wake(loop, n, deadline):
    """A task awaits a future that a callback resolves: set_result -> task wake-up."""
    t0 = clock()
    for i in range(1, n + 1):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        await fut
        if not i & CHECK and clock() > deadline:
            break
    return {"future_wake": per_op(t0, i)}


def b_timers(loop, n, deadline):
    """n call_later timers with random delays < 1 ms, all scheduled from one callback.

    Scheduling them takes longer than 1 ms, so the loop never idles: the figure is the
    loop's cost per timer (schedule + heap + fire), not waiting time."""
    delays = [random.Random(42).random() * 0.001 for _ in range(n)]
    left = n

    def fire():
        nonlocal left
        left -= 1
        if not left:
            loop.stop()

    def start():
        for d in delays:
            loop.call_later(d, fire)

    t0 = clock()
    loop.call_soon(start)
    loop.run_forever()
    return {"timers": per_op(t0, n)}


async def b_sleep0(loop, n, deadline):
    """Two tasks ping-pong with `await asyncio.sleep(0)`."""

    async def player():
        for i in range(1, n + 1):
            await asyncio.sleep(0)
            if not i & CHECK and clock() > deadline:
                break
        return i

    t0 = clock()
    switches = sum(await asyncio.gather(player(), player()))
    return {"sleep0": per_op(t0, switches)}


async def b_tasks(loop, n, deadline):
    """create_task + gather of n trivial coroutines, in batches of 10k."""

    async def nop():
        return None

    t0, done = clock(), 0
    while done < n:
        batch = min(10_000, n - done)
        await asyncio.gather(*[loop.create_task(nop()) for _ in range(batch)])
        done += batch
        if clock() > deadline:
            break
    return {"tasks": per_op(t0, done)}


async def b_threadsafe(loop, n, deadline):
    """Round trip: the loop hands a future to a worker thread (SimpleQueue), the thread
    resolves it with call_soon_threadsafe, which must wake the sleeping loop."""
    requests = queue.SimpleQueue()

    def worker():
        while (fut := requests.get()) is not None:
            loop.call_soon_threadsafe(fut.set_result, None)

    thread = threading.Thread(target=worker)
    thread.start()
    t0 = clock()
    for i in range(1, n + 1):
        fut = loop.create_future()
        requests.put(fut)
        await fut
        if not i & CHECK and clock() > deadline:
            break
    elapsed = per_op(t0, i)
    requests.put(None)
    thread.join()
    return {"threadsafe": elapsed}


async def b_executor(loop, n, deadline):
    """Round trip through the default executor: `await loop.run_in_executor(None, f)`."""
    await loop.run_in_executor(None, int)  # start the pool's thread outside the timing
    t0 = clock()
    for i in range(1, n + 1):
        await loop.run_in_executor(None, int)
        if not i & CHECK and clock() > deadline:
            break
    return {"executor": per_op(t0, i)}


def b_add_reader(loop, n, deadline):
    """1-byte ping-pong over a socketpair, both ends served by add_reader callbacks."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    done = 0

    def echo():  # b's end: read the byte and send it back
        b.send(b.recv(1))

    def pong():  # a's end: one round trip completed; start the next one
        nonlocal done
        a.recv(1)
        done += 1
        if done < n and (done & CHECK or clock() < deadline):
            a.send(b"x")
        else:
            loop.stop()

    loop.add_reader(b.fileno(), echo)
    loop.add_reader(a.fileno(), pong)
    t0 = clock()
    loop.call_soon(a.send, b"x")
    loop.run_forever()
    elapsed = per_op(t0, done)
    loop.remove_reader(a.fileno())
    loop.remove_reader(b.fileno())
    a.close()
    b.close()
    return {"add_reader": elapsed}


async def b_sleep_precision(loop, n, deadline):
    """Actual duration of `await asyncio.sleep(0.0005)`; early = returned before 0.5 ms."""
    ms = []
    for _ in range(n):
        t = clock()
        await asyncio.sleep(0.0005)
        ms.append((clock() - t) * 1e3)
        if clock() > deadline:
            break
    ms.sort()
    return {
        "sleep_precision_median": statistics.median(ms),
        "sleep_precision_p99": ms[max(0, -(-len(ms) * 99 // 100) - 1)],  # nearest rank
        "sleep_precision_early": float(sum(x < 0.5 for x in ms)),
    }


async def b_idle(loop, n, deadline):
    """The process sleeps n ms in `asyncio.sleep`: its voluntary context switches (each is a
    blocking wait that returned, i.e. a wake-up; ideal is 1 per sleep) and the CPU it burns
    (catches busy-polling, which has no switches), both per second."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), clock()
    await asyncio.sleep(n / 1000)
    r1, dt = resource.getrusage(resource.RUSAGE_SELF), clock() - t0
    switches = r1.ru_nvcsw - r0.ru_nvcsw
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"idle_wakeups": switches / dt, "idle_cpu": cpu * 1e3 / dt}


async def _udp_echo(loop, n, deadline, size):
    """Round trips of `size`-byte datagrams between two endpoints of the loop, 32 in flight."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.sent = self.received = 0
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def send(self):
            self.sent += 1
            self.transport.sendto(payload)

        def datagram_received(self, data, addr):
            self.received += 1
            if self.received >= n or (not self.received & CHECK and clock() > deadline):
                if not self.done.done():
                    self.done.set_result(None)
            elif self.sent < n:
                self.send()

    payload = b"x" * size
    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, proto = await loop.create_datagram_endpoint(
        Client, remote_addr=server.get_extra_info("sockname")
    )
    t0 = clock()
    for _ in range(min(32, n)):
        proto.send()
    # A lost datagram (loopback drops only under overload) ends the run at the deadline.
    try:
        await asyncio.wait_for(proto.done, max(1.0, deadline - clock() + 1.0))
    except asyncio.TimeoutError:
        pass
    elapsed = per_op(t0, proto.received)
    client.close()
    server.close()
    await asyncio.sleep(0)
    return elapsed


async def b_udp_64(loop, n, deadline):
    """UDP echo on loopback, 64-byte datagrams: µs per round trip (both ends on the loop)."""
    return {"udp_64": await _udp_echo(loop, n, deadline, 64)}


async def b_udp_1k(loop, n, deadline):
    """UDP echo on loopback, 1 KiB datagrams: µs per round trip (both ends on the loop)."""
    return {"udp_1k": await _udp_echo(loop, n, deadline, 1024)}


async def b_subprocess(loop, n, deadline):
    """`create_subprocess_exec("true")` then `wait()`: spawn-to-exit latency."""
    t0, done = clock(), 0
    while done < n and (done == 0 or clock() < deadline):
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        done += 1
    return {"subprocess": per_op(t0, done)}


# name: (function, n full, n quick). Timing budget per measurement: 2 s full, 0.4 s quick.
BENCHES = {
    "call_soon": (b_call_soon, 200_000, 50_000),
    "call_soon_chain": (b_call_soon_chain, 100_000, 20_000),
    "future_wake": (b_future_wake, 100_000, 10_000),
    "timers": (b_timers, 50_000, 20_000),
    "sleep0": (b_sleep0, 50_000, 5_000),
    "tasks": (b_tasks, 50_000, 10_000),
    "threadsafe": (b_threadsafe, 20_000, 2_000),
    "executor": (b_executor, 10_000, 1_000),
    "add_reader": (b_add_reader, 50_000, 5_000),
    "sleep_precision": (b_sleep_precision, 1_000, 200),
    "idle": (b_idle, 1_000, 1_000),  # n = milliseconds asleep: sleep(1)
    "udp_64": (b_udp_64, 50_000, 5_000),
    "udp_1k": (b_udp_1k, 50_000, 5_000),
    "subprocess": (b_subprocess, 500, 50),
}
METRICS = {  # metric: (unit, ratio shown). Lower is better, except for sleep precision:
    # there the ideal is just over 0.5 ms and never early, so a ratio would mislead.
    "call_soon": ("µs/callback", True),
    "call_soon_chain": ("µs/callback", True),
    "future_wake": ("µs/round trip", True),
    "timers": ("µs/timer", True),
    "sleep0": ("µs/switch", True),
    "tasks": ("µs/task", True),
    "threadsafe": ("µs/round trip", True),
    "executor": ("µs/round trip", True),
    "add_reader": ("µs/round trip", True),
    "sleep_precision_median": ("ms", False),
    "sleep_precision_p99": ("ms", False),
    "sleep_precision_early": ("count of n", False),
    "idle_wakeups": ("wake-ups/s", True),
    "idle_cpu": ("ms CPU/s", True),
    "udp_64": ("µs/round trip", True),
    "udp_1k": ("µs/round trip", True),
    "subprocess": ("µs/spawn+wait", True),
}
# The rows with a ratio that are not a cost the loop owns: idle wake-ups are a rate the
# benchmark's sleep(1) fixes (every loop reads 1 a second). The loop-owned geomean leaves
# them out.
NOT_COSTS = ("idle_wakeups",)
# The loop-owned geomean's base, and the ratio below which a row is listed under it.
GEOMEAN_BASE, GEOMEAN_FLOOR = "uvloop", 1.2


def loop_owned_metrics():
    """The rows the loop-owned geomean covers: every row with a ratio but NOT_COSTS."""
    return [m for m, (_, ratio) in METRICS.items() if ratio and m not in NOT_COSTS]


def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


def child(spec):
    """Run one measurement (after a 1/10-size warm-up) and print its metrics as JSON, or
    {"n/a": reason} if the loop raised NotImplementedError."""
    if spec["cpu"] is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    fn, n, budget = BENCHES[spec["bench"]][0], spec["n"], spec["budget"]
    loop = new_loop(spec["loop"])
    errors, notimpl = [], []

    def on_error(loop, context):  # a failing callback must not leave run_forever hanging
        exc = context.get("exception")
        if isinstance(exc, NotImplementedError):
            notimpl.append(exc)
        errors.append(f"{context.get('message')}: {exc!r}")
        loop.stop()

    loop.set_exception_handler(on_error)

    def run(size):
        result = fn(loop, size, clock() + budget)
        return loop.run_until_complete(result) if asyncio.iscoroutine(result) else result

    try:
        if fn is not b_idle:
            run(max(1, n // 10))
        gc.collect()
        result = run(n)
    except NotImplementedError as exc:
        notimpl.append(exc)
    except Exception:
        if not errors:  # else the handler's report below names the real cause
            raise
    finally:
        loop.close()
    if notimpl:
        print(json.dumps({"n/a": describe(notimpl[0])}))
        return
    if errors:
        sys.exit("exception handler called: " + errors[0])
    print(json.dumps(result))


# ---------------------------------------------------------------- driver (parent side)

# Comparison loops installed when they can be (`make bench-venv`): a failed measurement of
# one is reported, not retried in later rounds, and does not make the run fail.
OPTIONAL = ("rloop", "rsloop", "veloxloop")


def probe(name):
    """(version, None) if `name` gives a working loop in a subprocess, else (None, reason)."""
    code = (
        f"import {name}; {name}.new_event_loop().close(); "
        f"print(getattr({name}, '__version__', '?'))"
    )
    if name == "asyncio":
        return platform.python_version(), None
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return proc.stdout.strip(), None


def measure(loop, bench, n, budget, cpu):
    """Run one measurement in a fresh interpreter; returns (metrics or None, error)."""
    spec = json.dumps({"loop": loop, "bench": bench, "n": n, "budget": budget, "cpu": cpu})
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget * 3 + 30)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    if proc.returncode:
        return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def fmt(v):
    if v == int(v) and v < 1e5:  # counts and exact values
        return str(int(v))
    return (
        f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"
    )


def bench_of(metric):
    """The benchmark that reports `metric` (sleep_precision_p99: sleep_precision)."""
    return next(
        b for b in BENCHES if metric == b or (metric.startswith(b + "_") and metric not in BENCHES)
    )


def summarize(samples, loops, target, unavailable=None, rounds_of=None):
    """Table rows: metric, unit, 'median (min-max)' per loop, then the target's speed against
    each base: the base's median over the target's (above 1 the target is faster, or lower),
    with the range of the per-round ratios. `unavailable`: {(loop, benchmark): reason}; those
    cells read n/a. `rounds_of`: {loop: {metric: [round of each sample]}}, to pair samples by
    round (without it they pair by position). Returns header, rows, summary (per metric and
    loop: median, min, max, n) and ratios ({metric: {base: ratios.compare(...)}})."""
    bases = [b for b in ("asyncio", "uvloop") if b in loops and b != target and target]
    header = ["benchmark", "unit", *loops, *(f"{target}/{b} speed" for b in bases)]
    rows, summary, ratios = [], {}, {}
    for metric, (unit, ratio) in METRICS.items():
        med = {}
        cells = [metric, unit]
        for loop in loops:
            vals = samples[loop].get(metric, [])
            if not vals:
                na = (loop, bench_of(metric)) in (unavailable or {})
                cells.append("n/a" if na else "-")
                continue
            med[loop] = statistics.median(vals)
            summary.setdefault(metric, {})[loop] = {
                "median": med[loop],
                "min": min(vals),
                "max": max(vals),
                "n": len(vals),
            }
            cells.append(f"{fmt(med[loop])} ({fmt(min(vals))}-{fmt(max(vals))})")
        if not med:
            continue
        for base in bases:
            c = None
            if ratio and target in med and base in med:
                c = compare(
                    samples[target][metric],
                    samples[base][metric],
                    False,  # times, CPU and rates: lower is better
                    *sample_rounds(rounds_of, samples, (target, base), metric),
                )
            if c:
                ratios.setdefault(metric, {})[base] = c
            cells.append(fmt_ratio(c))
        rows.append(cells)
    return header, rows, summary, ratios


def sample_rounds(rounds_of, samples, loops, metric):
    """Each loop's list of rounds for `metric`, or Nones to pair by position."""
    if rounds_of is None:
        return [None] * len(loops)
    got = [rounds_of.get(loop, {}).get(metric) for loop in loops]
    ok = all(
        r is not None and len(r) == len(samples[loop][metric])
        for loop, r in zip(loops, got, strict=True)
    )
    return got if ok else [None] * len(loops)


def loop_owned(ratios, base=GEOMEAN_BASE, floor=GEOMEAN_FLOOR):
    """The geometric mean of the target's speed against `base` over the loop-owned rows
    this run measured, the range of the per-round geomeans (rounds where every such row has
    both figures), and the rows below `floor`. None without any such row."""
    rows = {m: ratios[m][base] for m in loop_owned_metrics() if base in ratios.get(m, {})}
    if not rows:
        return None
    by_round = {}
    for c in rows.values():
        for r, v in zip(c["rounds"], c["per_round"], strict=True):
            by_round.setdefault(r, []).append(v)
    per_round = [geomean(v) for v in by_round.values() if len(v) == len(rows)]
    return {
        "base": base,
        "geomean": geomean(c["ratio"] for c in rows.values()),
        "round_min": min(per_round, default=None),
        "round_max": max(per_round, default=None),
        "per_round": per_round,
        "metrics": list(rows),
        "floor": floor,
        "below_floor": {m: c["ratio"] for m, c in rows.items() if c["ratio"] < floor},
    }


def loop_owned_text(lo, target):
    """One paragraph on the loop-owned geomean, for the text and markdown output."""
    if lo is None:
        return f"loop-owned geomean: no row with both {target} and {GEOMEAN_BASE} figures"
    spread = ""
    if lo["round_min"] is not None and len(lo["per_round"]) > 1:
        spread = f" (per-round geomeans {lo['round_min']:.2f}-{lo['round_max']:.2f})"
    below = ", ".join(f"{m} {v:.2f}x" for m, v in lo["below_floor"].items()) or "none"
    return (
        f"Loop-owned costs, {target} against {lo['base']}: geometric mean of the speed ratios "
        f"{lo['geomean']:.2f}x{spread} over {len(lo['metrics'])} rows "
        f"({', '.join(lo['metrics'])}; not idle_wakeups, a rate the benchmark's sleep(1) "
        f"fixes, nor the sleep-precision rows, which have no ratio). "
        f"Rows below {lo['floor']:.1f}x {lo['base']}: {below}."
    )


def render(header, rows, markdown):
    if markdown:
        lines = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(r) + " |" for r in lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows])
    return "\n".join(line.rstrip() for line in lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds, small n: under a minute")
    p.add_argument("--rounds", type=int, help="rounds (default 3 quick, 7 full)")
    p.add_argument(
        "--loops",
        default="asyncio,ferroloop,uvloop,rloop,rsloop,veloxloop",
        help="comma-separated; loops that do not import are skipped",
    )
    p.add_argument("--bench", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--target", default="ferroloop", help="loop whose ratios are reported")
    p.add_argument("--cpu", type=int, help="CPU to pin children to (default: last allowed)")
    p.add_argument("--no-pin", action="store_true", help="do not pin children to one CPU")
    p.add_argument("--json", metavar="OUT", help="write all samples and the summary here")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--readme", metavar="PATH", help="also write the table into PATH's markers")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(json.loads(args.child))

    benches = args.bench.split(",")
    for b in benches:
        if b not in BENCHES:
            p.error(f"unknown benchmark {b!r}; choose from {', '.join(BENCHES)}")
    loops, versions, notes = [], {}, []
    for name in args.loops.split(","):
        version, why = probe(name)
        if version is None:
            notes.append(f"{name} not importable, skipped ({why})")
        else:
            loops.append(name)
            versions[name] = version
    cpu = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    target = args.target if args.target in loops else "uvloop" if "uvloop" in loops else None
    if target != args.target:
        notes.append(f"{args.target} did not run; ratios are for {target or 'nothing'}")
    rounds = args.rounds or (3 if args.quick else 7)
    budget = 0.4 if args.quick else 2.0
    for note in notes:
        print("note:", note, file=sys.stderr)

    samples = {loop: {} for loop in loops}
    rounds_of = {loop: {} for loop in loops}  # the round of each sample, to pair them
    failures, fatal = [], False
    unavailable = {}  # (loop, bench): reason; not measured again
    given_up = set()  # (loop, bench) that failed on an OPTIONAL loop; not measured again
    load = [os.getloadavg()[0]]  # other work on the box shows up as spread; say how busy it was
    t_start = clock()
    for r in range(rounds):
        order = loops[r % len(loops) :] + loops[: r % len(loops)]  # rotate who goes first
        for bench in benches:
            n = BENCHES[bench][2 if args.quick else 1]
            for loop in order:
                if (loop, bench) in unavailable or (loop, bench) in given_up:
                    continue
                metrics, err = measure(loop, bench, n, budget, cpu)
                if err:
                    failures.append(f"round {r + 1} {bench} on {loop}: {err}")
                    if loop in OPTIONAL:
                        given_up.add((loop, bench))
                    else:
                        fatal = True
                    print(f"  FAILED {bench} on {loop}: {err}", file=sys.stderr)
                    continue
                if "n/a" in metrics:
                    unavailable[(loop, bench)] = metrics["n/a"]
                    notes.append(f"{loop} n/a for {bench}: {metrics['n/a']}")
                    print(f"  n/a {bench} on {loop}: {metrics['n/a']}", file=sys.stderr)
                    continue
                for metric, value in metrics.items():
                    samples[loop].setdefault(metric, []).append(value)
                    rounds_of[loop].setdefault(metric, []).append(r)
        print(f"round {r + 1}/{rounds} done ({clock() - t_start:.0f} s)", file=sys.stderr)

    load.append(os.getloadavg()[0])
    header, rows, summary, ratios = summarize(samples, loops, target, unavailable, rounds_of)
    lo = loop_owned(ratios) if target != GEOMEAN_BASE else None
    pin = f"pinned to CPU {cpu}" if cpu is not None else "not pinned"
    meta = {
        **machine_meta(),
        "loops": versions,
        "target": target,
        "rounds": rounds,
        "quick": args.quick,
        "pinned_cpu": cpu,
        "seconds": round(clock() - t_start, 1),
        "notes": notes,
        "loadavg_start_end": load,
    }
    print(
        f"\nPython {meta['python']} on {meta['platform']} ({meta['cpu_model']}, "
        f"{meta['cpus']} CPUs), {pin}; {rounds} rounds{' (quick)' if args.quick else ''}, "
        f"{meta['seconds']} s, load average {load[0]:.1f} -> {load[1]:.1f}"
    )
    print("loops: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for note in notes:
        print("note:", note)
    print(
        f"cells: median over rounds (min-max); {target}/LOOP speed: LOOP's median over "
        f"{target}'s (above 1 {target} is faster or lower), then the lowest-highest of the "
        "per-round ratios (rounds interleave, so round r's figures pair up)\n"
    )
    table = render(header, rows, args.markdown)
    print(table)
    if lo is not None or target != GEOMEAN_BASE:
        print("\n" + loop_owned_text(lo, target))
    if args.readme:
        from readme import update_readme

        caption = (
            f"Python {meta['python']}, {meta['cpu_model']} ({meta['cpus']} CPUs), {pin}; "
            f"{rounds} interleaved rounds, {time.strftime('%Y-%m-%d')}; loops: "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + ". Cells: median over rounds (min–max). "
            f"`{target}/LOOP speed`: LOOP's median time over {target}'s, so above 1 {target} is "
            "faster (for idle_cpu: burns less CPU), then in brackets the lowest and highest of "
            "the per-round ratios (the rounds interleave, so each round's figures pair up): "
            "where that range straddles 1, the difference is within the run's noise. "
            f"Under the table, the loop-owned geomean: the geometric mean of the "
            f"{target}/{GEOMEAN_BASE} speed ratios over every row with a ratio except "
            "idle_wakeups (a rate the benchmark's sleep(1) fixes, not a cost), with the range "
            "of the per-round geomeans, and the rows below "
            f"{GEOMEAN_FLOOR:.1f}x {GEOMEAN_BASE}. Generated by `make bench`."
        )
        text = caption + "\n\n" + render(header, rows, True)
        if lo is not None or target != GEOMEAN_BASE:
            text += "\n\n" + loop_owned_text(lo, target)
        update_readme(args.readme, "micro", text)
    for failure in failures:
        print("failed:", failure)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "summary": summary,
                    "ratios": ratios,
                    "loop_owned": lo,
                    "samples": samples,
                    "sample_rounds": rounds_of,
                    "failures": failures,
                },
                f,
                indent=1,
            )
    return 1 if fatal else 0


def machine_meta():
    """The figures every benchmark's JSON records about this machine and run."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
