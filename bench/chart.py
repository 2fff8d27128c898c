"""The README's chart: every loop's speed relative to asyncio, from the suites' JSON files.

    python bench/chart.py --out bench/results/bench.png bench/results/*.json

One panel per suite file given (micro, echo, echo-tls, http), one group of bars per row,
one bar per loop from asyncio's line at 1x: how many times faster than asyncio the loop's
median is (requests/s over asyncio's for the socket suites, asyncio's time over the loop's
for the micro-benchmarks), on a log scale so 2x faster and 2x slower look alike. The title
gives the machine, the Python and the dates of the runs. Rows where a loop has no figure
leave its bar out. Needs matplotlib (`make bench-venv` installs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from micro import METRICS

# Fixed colours, so a loop looks the same in every panel and every chart.
COLOURS = {
    "ferroloop": "#d9480f",
    "uvloop": "#1c7ed6",
    "rloop": "#37b24d",
    "rsloop": "#ae3ec9",
    "veloxloop": "#f59f00",
    "limit": "#212529",
}
SIZES = {1024: "1K", 10 * 1024: "10K", 100 * 1024: "100K"}


def micro_rows(data):
    """[(label, {loop: speed-up over asyncio})] for the timed micro-benchmarks."""
    rows = []
    for metric, per_loop in data["summary"].items():
        unit, ratio = METRICS.get(metric, ("", False))
        base = (per_loop.get("asyncio") or {}).get("median")
        if not ratio or not unit.startswith("µs") or not base:
            continue  # sleep precision and idle rows have no "faster"
        speed = {loop: base / v["median"] for loop, v in per_loop.items() if v.get("median")}
        rows.append((metric, speed))
    return rows


def socket_rows(data):
    """[(label, {loop: requests/s over asyncio's})] for the echo, TLS and http suites."""
    rows = []
    for row in data["rows"]:
        loops = row["loops"]
        base = (loops.get("asyncio") or {}).get("median")
        if not base:
            continue
        size = SIZES.get(row["size"], f"{row['size']}B")
        conns = f"{row['connections']}r" if row.get("reconnect") else str(row["connections"])
        transport = row["transport"] + ("+tls" if row.get("tls") else "")
        label = f"{row['server']} {transport} {size} x{conns}"
        speed = {loop: v["median"] / base for loop, v in loops.items() if v.get("median")}
        rows.append((label, speed))
    return rows


def panel_title(path, data):
    name = os.path.splitext(os.path.basename(path))[0]
    meta = data["meta"]
    when = meta.get("date") or time_of(path)
    return f"{name}: {meta.get('rounds', '?')} rounds, {when}"


def time_of(path):
    import time

    return time.strftime("%Y-%m-%d", time.localtime(os.path.getmtime(path)))


def minor_label(v, _):
    """Labels 2x, 3x, 5x (and 0.2x, 0.5x...) between the decades, the rest left blank."""
    lead = round(v / 10 ** math.floor(math.log10(v)), 3)
    return f"{v:g}x" if lead in (2, 3, 5) else ""


def draw(paths, out):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        rows = micro_rows(data) if "summary" in data else socket_rows(data)
        if rows:
            panels.append((panel_title(path, data), rows, data["meta"]))
    if not panels:
        sys.exit("chart.py: no rows with an asyncio figure in the files given")
    heights = [max(2.0, 0.32 * len(rows) + 0.9) for _, rows, _ in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, rows, _) in zip(axes, panels, strict=True):
        loops = [loop for loop in COLOURS if any(loop in r for _, r in rows)]
        loops += sorted({loop for _, r in rows for loop in r} - set(loops) - {"asyncio"})
        bar = 0.8 / len(loops)
        for i, loop in enumerate(loops):
            ys = [n - 0.4 + bar * (i + 0.5) for n in range(len(rows))]
            xs = [r.get(loop, 0) for _, r in rows]
            kept = [(y, x) for y, x in zip(ys, xs, strict=True) if x > 0]
            if kept:
                ax.barh(  # from asyncio's 1x, so a slower loop's bar points left
                    [y for y, _ in kept],
                    [x - 1 for _, x in kept],
                    left=1,
                    height=bar,
                    color=COLOURS.get(loop, "#868e96"),
                    label=loop,
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(minor_label))
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([label for label, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.set_xlabel("times as fast as asyncio (log scale; right is better)", fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    meta = panels[0][2]
    fig.suptitle(
        f"ferroloop benchmarks: Python {meta['python']}, {meta['cpu_model']} "
        f"({meta['cpus']} CPUs), {meta['platform'].split('-with')[0]}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"chart: {out} ({len(panels)} panels)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="results files of bench/micro.py or bench/echo.py")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("chart.py: needs matplotlib (`make bench-venv` installs it)")
    draw(args.json, args.out)


if __name__ == "__main__":
    main()
