"""Issue 18 §2's soak: TCP, Unix, TLS, UDP, pipes, subprocesses, timers and executor calls on
one loop at once, with RSS, open fds, tracemalloc's total, the collector's object count and
the loop's own object counts sampled as it runs (tests/support/soak.py, support/sampling.py).

It fails when a worker errs, the exception handler is called, an fd is left open, or a
sampled figure's least-squares slope after the warm-up makes more growth over the rest of
the run than its bound in support/soak.py BOUNDS (RSS 16 MiB, tracemalloc 4 MiB, 20,000
objects, 24 fds, 32 tasks; the loop's counts 48 to 256).

In ``make test`` (once, not per Python or debug run: its own target, ``soak-short``, sets
FERROLOOP_SOAK): 60 s on ferroloop, sampled every 2 s after a 15 s warm-up. The long run
compares loops, each in its own process, one table row per loop (``make soak``):

    python tests/test_soak.py --loop asyncio,uvloop,ferroloop --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys

import pytest
from support import sampling, soak, table

SHORT = dict(seconds=60.0, interval=2.0, warmup=15.0)

pytestmark = pytest.mark.skipif(
    not os.environ.get("FERROLOOP_SOAK"),
    reason="a minute long: run once by `make soak-short` (FERROLOOP_SOAK=1), `make soak` at length",
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["ferroloop"])
def test_soak(kind):
    # Its own process: the samples are of that process alone, with nothing of the suite's.
    row = _child(
        kind,
        [
            "--seconds",
            str(SHORT["seconds"]),
            "--interval",
            str(SHORT["interval"]),
            "--warmup",
            str(SHORT["warmup"]),
        ],
    )
    report = json.dumps(row, indent=1, default=str)
    assert isinstance(row.get("requests"), int), report
    assert row["requests"] > 100 and row["processes"] > 10 and row["timers_fired"] > 1000, report
    assert row["failures"] == [], report


# --- the long run


COLUMNS = (
    ("loop", "loop"),
    ("duration", "seconds"),
    ("connections", "connections"),
    ("requests", "requests"),
    ("mib", "MiB moved"),
    ("processes", "processes"),
    ("timers_fired", "timers fired"),
    ("executor_calls", "executor calls"),
    ("rss_peak", "peak RSS MiB"),
    ("rss_slope", "RSS KiB/min"),
    ("traced_slope", "traced KiB/min"),
    ("fds_peak", "peak fds"),
    ("fds_slope", "fds/min"),
    ("tasks_slope", "tasks/min"),
    ("failed", "failures"),
)


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    from support import loops

    return loops.new_loop(kind)


def _one(args) -> dict:
    sampling.prime(lambda: _new_loop(args.loop))
    gc.collect()
    fds_before = sampling.open_fds()
    loop = _new_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        run = soak.Soak(
            loop,
            seconds=args.seconds,
            interval=args.interval,
            warmup=args.warmup,
            seed=args.seed,
            trace=not args.no_tracemalloc,
        )
        result = loop.run_until_complete(run.run())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    gc.collect()
    result["fd_leak"] = sampling.open_fds() - fds_before
    if result["fd_leak"] > 0:
        result["failures"].append(
            f"{result['fd_leak']} fds open after the loop closed that were not before it"
        )
    result["loop"] = args.loop
    if args.samples:
        result["sample_list"] = run.samples
    return result


def _child(kind: str, extra: list[str]) -> dict:
    child = [sys.executable, __file__, *extra, "--loop", kind, "--json"]
    proc = subprocess.run(child, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"loop": kind, "requests": f"failed ({proc.returncode})", "failures": ["crashed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cells(row: dict) -> dict:
    fits = row.get("fits", {})
    cells = dict(row)
    cells["mib"] = round(row.get("bytes", 0) / 2**20) if isinstance(row.get("bytes"), int) else ""
    for key, scale in (("rss", 2**20), ("fds", 1)):
        if key in fits:
            cells[f"{key}_peak"] = round(fits[key]["peak"] / scale)
    for key, scale in (("rss", 1024), ("traced", 1024), ("fds", 1), ("tasks", 1)):
        if key in fits:
            cells[f"{key}_slope"] = f"{fits[key]['per_min'] / scale:+.1f}"
    cells["failed"] = len(row.get("failures", [])) if "failures" in row else ""
    return cells


def _table(rows: list[dict]) -> str:
    return table.markdown(COLUMNS, [_cells(r) for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="asyncio,uvloop,ferroloop")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds left out of the fit (default 1/6)"
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON result (one loop)")
    parser.add_argument("--samples", action="store_true", help="keep every sample in the JSON")
    parser.add_argument("--verbose", action="store_true", help="fits and failures too")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.seconds / 6
    kinds = args.loop.split(",")
    if args.json:
        print(json.dumps(_one(args), default=str))
        return 0
    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    rows = []
    for kind in kinds:
        # Each loop in its own process: RSS and fds are that loop's alone.
        rows.append(_child(kind, [*argv, "--warmup", str(args.warmup)]))
    print(_table(rows))
    for row in rows:
        if args.verbose or row.get("failures"):
            print(f"\n{row['loop']}:", json.dumps(row, indent=1, default=str))
    bad = [r["loop"] for r in rows if r.get("failures")]
    if bad:
        print(f"\nsoak failures on: {', '.join(bad)}")
    # The other loops are the comparison: their rows are reported, ferroloop's decide.
    return 1 if "ferroloop" in bad else 0


if __name__ == "__main__":
    sys.exit(main())
