"""What the loop's counting (loop.stats()) costs: one commit built with and without it.

Builds two release wheels of the checkout, `maturin build --release` and the same with
`--features no-stats` (the counters compiled to nothing), unpacks each into its own
directory, then runs the micro suite's rows and the echo suite's Protocol TCP rows on both,
in pairs whose order alternates (counting first, then not; then the other way round). Each
run is a fresh `micro.py` or `echo.py` process (`--loops ferroloop --rounds 1`) whose
PYTHONPATH points at one build, so every other figure on the machine is shared by the two.

`--cpu` measures the micro rows differently, for a machine that other work keeps busy: each
run is one process that runs every row `--reps` times in a row on the same loop and keeps the
best CPU time (`time.process_time`) per operation, so time spent descheduled does not count
and the best of several repetitions sheds most of the rest.

Per row it reports the median over all runs of each build with the spread (min-max), the
cost of counting (median of the counting build against the other's, positive = counting is
slower) and the spread of the paired costs. Echo rows also give the server's CPU time per
request, which moves less than requests/s on a busy machine.

    python bench/stats_overhead.py                            # two release builds + ~3 min
    python bench/stats_overhead.py --pairs 3 --no-echo        # micro only
    python bench/stats_overhead.py --builds /tmp/so --reuse   # keep builds between runs
    python bench/stats_overhead.py --cpu --pairs 10 --no-echo # micro rows, CPU time
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILDS = {"counting": [], "no-stats": ["--features", "no-stats"]}
MICRO_ROWS = (
    "call_soon,call_soon_chain,future_wake,timers,sleep0,tasks,threadsafe,add_reader,udp_64"
)


def build(name, where, reuse):
    """Unpacks a release wheel of the checkout, built as `name`, into where/name."""
    out = os.path.join(where, name)
    if reuse and os.path.isdir(os.path.join(out, "ferroloop")):
        return out
    wheels = os.path.join(where, name + "-wheel")
    for old in glob.glob(os.path.join(wheels, "*.whl")):
        os.remove(old)
    cmd = ["maturin", "build", "-q", "--release", "--interpreter", sys.executable, "-o", wheels]
    subprocess.run(cmd + BUILDS[name], cwd=ROOT, check=True)
    (wheel,) = glob.glob(os.path.join(wheels, "*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out)
    return out


def run(script, args, path, out):
    """One suite run on the build at `path`; returns its JSON."""
    env = dict(os.environ, PYTHONPATH=path)
    cmd = [sys.executable, os.path.join(HERE, script), "--loops", "ferroloop"]
    subprocess.run(cmd + args + ["--json", out], env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def cpu_child(rows, reps):
    """Child side of --cpu: the best CPU time per op of each row over `reps` runs."""
    import asyncio

    import ferroloop
    import micro

    micro.clock = time.process_time  # the bodies time themselves with micro.clock
    loop = ferroloop.new_event_loop()
    best = {}
    for row in rows.split(","):
        fn, n = micro.BENCHES[row][:2]
        for i in range(reps + 1):  # the first run warms up
            result = fn(loop, n, micro.clock() + 60)
            if asyncio.iscoroutine(result):
                result = loop.run_until_complete(result)
            if i:
                for metric, value in result.items():
                    best[metric] = min(value, best.get(metric, value))
    loop.close()
    print(json.dumps(best))


def run_cpu(rows, reps, path):
    """One --cpu run on the build at `path`: {row: best CPU µs per op}."""
    env = dict(os.environ, PYTHONPATH=path)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", rows, str(reps)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def micro_samples(result):
    """{row: µs per op} of one micro run (the median of its rounds)."""
    return {m: statistics.median(v) for m, v in result["samples"].get("ferroloop", {}).items() if v}


def echo_samples(result):
    """{row: requests/s} and {row: server CPU µs per request} of one echo run."""
    rate, cpu = {}, {}
    for row in result["rows"]:
        name = f"{row['server']} {row['transport']} {row['size']} B x{row['connections']}"
        ms = [m for m in row["loops"]["ferroloop"]["measurements"] if m["status"] == "ok"]
        if ms:
            rate[name] = ms[0]["result"]["requests_per_s"]
            cpu[name] = ms[0]["result"]["server_cpu_us_per_request"]
    return rate, cpu


def report(title, unit, pairs, higher_is_better):
    """One table: pairs is [({row: counting}, {row: no-stats})]."""
    if not pairs:
        return
    print(f"\n{title} ({unit}; cost > 0: counting is slower)\n")
    print("| row | counting | no-stats | cost of counting | paired costs |")
    print("| --- | --- | --- | --- | --- |")
    rows = [r for r in pairs[0][0] if all(r in a and r in b for a, b in pairs)]
    for r in rows:
        on = [a[r] for a, _ in pairs if a[r] is not None]
        off = [b[r] for _, b in pairs if b[r] is not None]
        if not on or not off:
            continue

        def cost(x, y):
            return (y / x - 1) if higher_is_better else (x / y - 1)

        paired = sorted(cost(a[r], b[r]) for a, b in pairs if a[r] and b[r])
        mon, moff = statistics.median(on), statistics.median(off)
        print(
            f"| {r} | {mon:.4g} ({min(on):.4g}-{max(on):.4g}) "
            f"| {moff:.4g} ({min(off):.4g}-{max(off):.4g}) | {cost(mon, moff):+.1%} "
            f"| {statistics.median(paired):+.1%} ({paired[0]:+.1%}..{paired[-1]:+.1%}) |"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=6, help="runs of each build (default 6)")
    p.add_argument("--micro", default=MICRO_ROWS, help="micro rows (comma-separated)")
    p.add_argument("--micro-rounds", type=int, default=1, help="micro rounds per run")
    p.add_argument("--no-echo", action="store_true", help="skip the echo rows")
    p.add_argument("--no-micro", action="store_true", help="skip the micro rows")
    p.add_argument("--echo-sizes", default="1024", help="echo message sizes")
    p.add_argument("--echo-connections", default="1,64", help="echo connection counts")
    p.add_argument("--builds", help="directory for the two builds (default: a temporary one)")
    p.add_argument("--reuse", action="store_true", help="reuse builds already in --builds")
    p.add_argument("--cpu", action="store_true", help="micro rows in CPU time, best of --reps")
    p.add_argument("--reps", type=int, default=5, help="repetitions per --cpu run (default 5)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return cpu_child(args.child[0], int(args.child[1]))

    where = args.builds or tempfile.mkdtemp(prefix="stats-overhead-")
    os.makedirs(where, exist_ok=True)
    paths = {name: build(name, where, args.reuse) for name in BUILDS}
    micro_args = ["--bench", args.micro, "--rounds", str(args.micro_rounds)]
    echo_args = [
        "--rounds", "1",
        "--kinds", "protocol", "--transports", "tcp",
        "--sizes", args.echo_sizes, "--connections", args.echo_connections,
    ]  # fmt: skip
    micro, rate, cpu = [], [], []
    print(f"load average {os.getloadavg()[0]:.1f} at the start", file=sys.stderr)
    for i in range(args.pairs):
        order = list(BUILDS) if i % 2 == 0 else list(reversed(BUILDS))
        got = {}
        for name in order:
            out = os.path.join(where, f"{name}-{i}")
            if args.no_micro:
                m = {}
            elif args.cpu:
                m = run_cpu(args.micro, args.reps, paths[name])
            else:
                m = micro_samples(run("micro.py", micro_args, paths[name], out + "-micro.json"))
            e = ({}, {}) if args.no_echo else echo_samples(
                run("echo.py", echo_args, paths[name], out + "-echo.json")
            )  # fmt: skip
            got[name] = (m, *e)
        micro.append((got["counting"][0], got["no-stats"][0]))
        rate.append((got["counting"][1], got["no-stats"][1]))
        cpu.append((got["counting"][2], got["no-stats"][2]))
        print(f"pair {i + 1}/{args.pairs} done ({' then '.join(order)})", file=sys.stderr)
    print(f"load average {os.getloadavg()[0]:.1f} at the end; builds in {where}", file=sys.stderr)
    unit = f"CPU µs per op, best of {args.reps}" if args.cpu else "µs per op"
    if not args.no_micro:
        report(f"micro, {args.pairs} runs each", unit, micro, False)
    if not args.no_echo:
        report(f"echo, {args.pairs} runs each", "requests/s", rate, True)
        report(f"echo server CPU, {args.pairs} runs each", "µs per request", cpu, False)


if __name__ == "__main__":
    sys.exit(main())
