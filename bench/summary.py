"""The README's "How fast" table, from the suites' JSON files, so it is never typed by hand.

    python bench/summary.py                      # print it
    python bench/summary.py --readme README.md   # and write it between the bench:summary markers

A few rows of each suite (bench/results/{micro,echo,http,memory}.json): the target's ratio
against uvloop and asyncio with the range of the per-round ratios, uvloop's verdict, and the
micro suite's loop-owned geomean. Ratios are recomputed from each file's samples, so files
written before the JSON carried ratios work too. A file or row that is missing is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from echo import LIMIT, compare_loops, ok_rates
from memory import compare_kib, kib_figures
from micro import GEOMEAN_BASE, loop_owned, loop_owned_metrics, summarize
from ratios import fmt_ratio

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# (metric, label): the micro rows the README shows.
MICRO_ROWS = (
    ("call_soon_chain", "callbacks in a chain (`call_soon`)"),
    ("future_wake", "waking a task on a future"),
    ("timers", "timers (`call_later`)"),
    ("call_soon", "a burst of `call_soon` callbacks"),
    ("tasks", "`create_task` + `gather` of many tasks"),
    ("threadsafe", "`call_soon_threadsafe` round trip with a thread"),
    ("executor", "`run_in_executor` round trip"),
)
# (server, label): the echo rows, TCP, 1 KiB, 64 connections.
ECHO_ROWS = (
    ("sock", "echo, `sock_recv`/`sock_sendall`, 64 connections, 1 KiB"),
    ("streams", "echo, streams (`start_server`), 64 connections, 1 KiB"),
    ("protocol", "echo, `asyncio.Protocol`, 64 connections, 1 KiB"),
)
# (server, label): the http rows, 64 connections.
HTTP_ROWS = (
    ("uvicorn", "HTTP, uvicorn, 64 connections"),
    ("aiohttp", "HTTP, aiohttp, 64 connections"),
)
BASES = ("uvloop", "asyncio")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def micro_rows(data):
    """[(label, {base: comparison})] and the loop-owned geomean, from micro.json."""
    meta, samples = data["meta"], data["samples"]
    target = meta.get("target", "ferroloop")
    loops = [loop for loop in meta.get("loops", samples) if loop in samples]
    _, _, _, ratios = summarize(samples, loops, target, None, data.get("sample_rounds"))
    rows = [(label, ratios.get(m, {})) for m, label in MICRO_ROWS if m in ratios]
    return rows, loop_owned(ratios) if target != GEOMEAN_BASE else None


def tcp_rows(data, size, connections):
    """{server: row} of the plain (not TLS) TCP rows of one size and connection count, from
    echo/http.json."""
    return {
        row["server"]: row
        for row in data["rows"]
        if row["transport"] == "tcp"
        and row["size"] == size
        and row["connections"] == connections
        and not row.get("tls")
    }


def socket_rows(data, wanted, size=1024, connections=64):
    """[(label, {base: comparison})] of the `wanted` servers' TCP rows, from echo/http.json."""
    target = data["meta"].get("target", "ferroloop")
    found = tcp_rows(data, size, connections)
    rows = []
    for server, label in wanted:
        if server in found:
            per_loop = {k: v["measurements"] for k, v in found[server]["loops"].items()}
            rows.append((label, {b: compare_loops(per_loop, target, b) for b in BASES}))
    return rows


def limit_line(data, servers=("streams", "protocol"), size=1024, connections=64):
    """How much of the plain-Rust limit server's requests/s the target and uvloop reach on
    the `servers`' TCP rows, from echo.json; None without limit figures."""
    target = data["meta"].get("target", "ferroloop")
    found = tcp_rows(data, size, connections)
    parts = []
    for server in servers:
        if server not in found:
            continue
        loops = found[server]["loops"]
        limit = ok_rates(loops.get(LIMIT, {}).get("measurements", []))[0]
        if not limit:
            continue
        shares = []
        for loop in (target, "uvloop"):
            rates = ok_rates(loops.get(loop, {}).get("measurements", []))[0]
            if rates:
                shares.append(f"{loop} {statistics.median(rates) / statistics.median(limit):.0%}")
        parts.append(f"{server} {', '.join(shares)}")
    if not parts:
        return None
    return (
        f"**Share of the limit server** (plain-Rust epoll echo, no Python; TCP, "
        f"{size // 1024} KiB, {connections} connections, medians): " + "; ".join(parts) + "."
    )


def memory_row(data):
    """(label, {base: comparison}) from memory.json: the base's KiB per connection over the
    target's, so above 1 the target uses less."""
    meta, samples = data["meta"], data["samples"]
    target = meta.get("target", "ferroloop")
    if not kib_figures(samples, target)[0]:
        return None
    comparisons = {b: compare_kib(samples, target, b, less_is_above=True) for b in BASES}
    kib = ", ".join(
        f"{loop} {statistics.median(figures):.2f}"
        for loop in (target, *BASES)
        if (figures := kib_figures(samples, loop)[0])
    )
    held = meta.get("connections")
    label = "memory per idle connection" + (f", {held:,} connections" if held else "")
    return label + f" (KiB: {kib})", comparisons


def run_line(name, data):
    meta = data["meta"]
    return f"{name} {meta.get('date', '?')}, {meta.get('rounds', '?')} rounds"


def build(paths, target="ferroloop"):
    """The markdown block: caption, table, loop-owned line. None if no file has a row."""
    runs, rows, lo, meta = [], [], None, None
    data = {name: load(path) for name, path in paths.items()}
    if data.get("micro"):
        micro, lo = micro_rows(data["micro"])
        rows += micro
    for name, wanted in (("echo", ECHO_ROWS), ("http", HTTP_ROWS)):
        if data.get(name):
            rows += socket_rows(data[name], wanted)
    if data.get("memory"):
        row = memory_row(data["memory"])
        rows += [row] if row else []
    for name, d in data.items():
        if d:
            runs.append(run_line(name, d))
            meta = meta or d["meta"]
    if not rows:
        return None
    versions = {k: v for d in data.values() if d for k, v in d["meta"].get("loops", {}).items()}
    header = [
        "benchmark",
        f"{target} / uvloop",
        "every round vs uvloop",
        f"{target} / asyncio",
    ]
    lines = [header, ["---"] * len(header)]
    for label, c in rows:
        uv, aio = c.get("uvloop"), c.get("asyncio")
        lines.append([label, fmt_ratio(uv), (uv or {}).get("verdict") or "-", fmt_ratio(aio)])
    table = "\n".join("| " + " | ".join(r) + " |" for r in lines)
    caption = (
        f"Times as fast as uvloop {versions.get('uvloop', '')} and asyncio "
        f"{versions.get('asyncio', '')} (above 1: {target} is faster; for memory, the other "
        f"loop's KiB per connection over {target}'s, so above 1 {target} uses less): the ratio "
        "of the medians over interleaved rounds, in brackets the lowest and highest of the "
        "per-round ratios (each round measures every loop, so its figures pair up). "
        "`every round vs uvloop`: faster if every round's ratio is above 1, slower if every "
        "one is below, else level (within spread), a difference within the run's noise. "
        f"Python {meta['python']}, {meta['cpu_model']} ({meta['cpus']} CPUs); runs: "
        + "; ".join(runs)
        + ". Generated by `make bench` (bench/summary.py) from bench/results; the full "
        "tables are in docs/benchmarks.md."
    )
    text = caption + "\n\n" + table
    if data.get("echo") and (line := limit_line(data["echo"])):
        text += "\n\n" + line
    if lo:
        text += "\n\n" + geomean_line(lo, target)
    elif data.get("micro"):
        text += f"\n\nLoop-owned costs: no micro row has both {target} and uvloop figures."
    return text


def geomean_line(lo, target):
    spread = ""
    if lo["round_min"] is not None and len(lo["per_round"]) > 1:
        spread = f" (per-round {lo['round_min']:.2f}-{lo['round_max']:.2f})"
    below = ", ".join(f"{m} {v:.2f}x" for m, v in lo["below_floor"].items()) or "none"
    if len(lo["metrics"]) == len(loop_owned_metrics()):
        rows = "every micro row with a ratio except idle wake-ups (a rate the benchmark fixes)"
    else:
        rows = f"the {len(lo['metrics'])} loop-owned micro rows the run measured"
    return (
        f"**Loop-owned costs**: {target} is {lo['geomean']:.2f}x as fast as {lo['base']}"
        f"{spread}, the geometric mean over {rows}: {', '.join(lo['metrics'])}. "
        f"Below {lo['floor']:.1f}x {lo['base']}: {below}."
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("micro", "echo", "http", "memory"):
        p.add_argument(f"--{name}", default=os.path.join(RESULTS, f"{name}.json"))
    p.add_argument("--readme", metavar="PATH", help="also write it between PATH's markers")
    args = p.parse_args()
    paths = {name: getattr(args, name) for name in ("micro", "echo", "http", "memory")}
    text = build(paths)
    if text is None:
        sys.exit("summary.py: no results with rows in " + ", ".join(paths.values()))
    print(text)
    if args.readme:
        from readme import update_readme

        update_readme(args.readme, "summary", text)


if __name__ == "__main__":
    sys.exit(main())
