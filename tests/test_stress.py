"""Issue 18 §2's stress: connections held by the thousand, connect/close churn, slow readers at
the water marks, peers resetting mid-write, EMFILE on accept, timers cancelled at random and
signals from threads during traffic (tests/support/stress.py describes each and its checks).

In ``make test`` (once, not per Python or debug run: its own target, ``stress-short``, sets
FERROLOOP_STRESS): the short sizes (support/stress.py SHORT), on asyncio and ferroloop, a
few seconds each. The long run compares loops, each in its own process, one table row per
scenario and loop (``make stress``):

    python tests/test_stress.py --loop asyncio,uvloop,ferroloop

with support/stress.py LONG: 10,000 connections held, 1,000,000 churned, 100,000 timers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys

import pytest
from support import sampling, stress, table

pytestmark = pytest.mark.skipif(
    not os.environ.get("FERROLOOP_STRESS"),
    reason="run once by `make stress-short` (FERROLOOP_STRESS=1), `make stress` at length",
)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", list(stress.SCENARIOS))
def test_stress(loop_kind, scenario):
    # Its own loop, not the fixture's: the fd balance spans the loop's whole life.
    _raise_nofile()
    row = stress.run_fresh(
        lambda: _new_loop(loop_kind), scenario, stress.SHORT[scenario], loop_kind
    )
    assert row["failures"] == [], json.dumps(row, indent=1, default=str)


# --- the long run


COLUMNS = (
    ("scenario", "scenario"),
    ("loop", "loop"),
    ("connections", "connections"),
    ("requests", "requests"),
    ("kib", "KiB"),
    ("duration", "seconds"),
    ("rate", "per second"),
    ("rss_peak_mib", "peak RSS MiB"),
    ("rss_slope", "RSS KiB/min"),
    ("fds_peak", "peak fds"),
    ("fds_slope", "fds/min"),
    ("notes", "notes"),
    ("failed", "failures"),
)
STEADY = ("churn", "slow", "signals")
NOTES = {
    "hold": ("server_live", "fds_held", "rss_held_mib"),
    "slow": ("pauses", "max_buffer", "rss_growth_kib"),
    "reset": ("resets_seen",),
    "emfile": ("accepted", "dropped", "emfile_reports", "server_cpu", "storm_seconds"),
    "timers": ("timers", "cancelled", "fired", "timers_left"),
    "signals": ("signals_sent", "signals_handled"),
}


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    from support import loops

    return loops.new_loop(kind)


def _one(args) -> list[dict]:
    _raise_nofile()
    sizes = stress.SHORT if args.short else stress.LONG
    sampling.prime(lambda: _new_loop(args.loop))
    rows = []
    for name in args.scenario.split(","):
        scenario_sizes = dict(sizes[name])
        if name == "churn" and args.churn:
            scenario_sizes["count"] = args.churn
        if name == "hold" and args.hold:
            scenario_sizes["count"] = args.hold
        # A fresh loop per scenario: one scenario's state cannot help or hurt the next.
        row = stress.run_fresh(lambda: _new_loop(args.loop), name, scenario_sizes, args.loop)
        row["loop"] = args.loop
        rows.append(row)
        print(json.dumps(row, default=str), file=sys.stderr, flush=True)
    return rows


def _cells(row: dict) -> dict:
    cells = dict(row)
    if isinstance(row.get("bytes"), int):
        cells["kib"] = row["bytes"] // 1024
    if "rss_peak" in row:
        cells["rss_peak_mib"] = round(row["rss_peak"] / 2**20)
    # Slopes only where the load is steady: elsewhere the fit is over a ramp (connections
    # opened then closed, timers scheduled then run) and says nothing about leaks.
    if row.get("scenario") in STEADY:
        if "rss_per_min" in row:
            cells["rss_slope"] = f"{row['rss_per_min'] / 1024:+.0f}"
        if "fds_per_min" in row:
            cells["fds_slope"] = f"{row['fds_per_min']:+.0f}"
    cells["notes"] = ", ".join(
        f"{k.replace('_', ' ')} {row[k]}" for k in NOTES.get(row.get("scenario"), ()) if k in row
    )
    cells["failed"] = "; ".join(row.get("failures", [])) or "0"
    return cells


def _table(rows: list[dict]) -> str:
    return table.markdown(COLUMNS, [_cells(r) for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="asyncio,uvloop,ferroloop")
    parser.add_argument("--scenario", default=",".join(stress.SCENARIOS))
    parser.add_argument("--short", action="store_true", help="the sizes make test uses")
    parser.add_argument("--churn", type=int, default=0, help="connect/close cycles")
    parser.add_argument("--hold", type=int, default=0, help="connections held at once")
    parser.add_argument("--json", action="store_true", help="print JSON rows (one loop)")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(_one(args), default=str))
        return 0
    argv = list(argv if argv is not None else sys.argv[1:])
    rows = []
    for kind in args.loop.split(","):
        # Each loop in its own process: RSS and fds are that loop's alone.
        child = [sys.executable, __file__, *argv, "--loop", kind, "--json"]
        proc = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            rows.append(
                {"scenario": "all", "loop": kind, "failures": [f"crashed ({proc.returncode})"]}
            )
            continue
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows.sort(
        key=lambda r: (
            list(stress.SCENARIOS).index(r["scenario"]) if r["scenario"] in stress.SCENARIOS else -1
        )
    )
    print(_table(rows))
    bad = sorted({f"{r['scenario']}/{r['loop']}" for r in rows if r.get("failures")})
    if bad:
        print(f"\nstress failures on: {', '.join(bad)}")
    # The other loops are the comparison: their rows are reported, ferroloop's decide.
    return 1 if any(b.endswith("/ferroloop") for b in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
