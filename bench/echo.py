"""Echo benchmark: asyncio vs ferroloop vs uvloop servers under a Rust load generator.

Method (details in bench/README.md): every row (server style x transport x message size x
connections) runs on every loop in turn, in rounds (the starting loop rotates each round);
each measurement is a fresh server process pinned to one CPU and the load generator
(bench/loadgen, `make loadgen`) pinned to another. The report gives the median requests/s
over rounds, the spread (min-max), the ratios against asyncio and uvloop, and the server's
CPU time per request.

`limit` is no loop but a plain-Rust epoll echo server (bench/limit, built by `make
loadgen`): measured once per transport, size and connection count in each round, it shows
what this machine and load generator allow, and `LOOP/limit` the share of it each loop
reaches. rloop, rsloop and veloxloop (what `make bench-venv` installs) run in --quick or
when named in --loops.

`--tls` runs the TLS suite instead: the streams and protocol servers over TLS (a throwaway
trustme CA and certificate; the load generator verifies it), plus a handshake row where every
request comes on a new connection, so requests/s are full TLS handshakes per second.

`--http` runs the http suite instead: HTTP/1.1 keep-alive GETs at 64 connections against
three server stacks (bench/servers/web.py): a bare httptools Protocol, an aiohttp app and
uvicorn with a raw ASGI app, each answering with a 1 KiB body, on every loop that imports.

    python bench/echo.py --quick               # 9 rows over TCP: about 2 minutes
    python bench/echo.py --markdown --json bench/results/echo.json --syscalls
    python bench/echo.py --tls --quick         # 9 rows: about 2 minutes
    python bench/echo.py --http --markdown     # 3 rows, 5 loops, 3 rounds: about 2 minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import NamedTuple

import serving
from micro import machine_meta, probe, render
from ratios import LEVEL, compare, fmt_ratio
from serving import HTTP_KINDS, LIMIT

# What bench/servers/echo.py can run, and the limit server.
LOOPS = ("asyncio", "ferroloop", "uvloop", "rloop", "rsloop", "veloxloop", LIMIT)
# Comparison loops installed when they can be (`make bench-venv`): a failed measurement of
# one is reported, not retried, and does not make the run fail.
OPTIONAL = ("rloop", "rsloop", "veloxloop")
# The full run: the three reference loops, rloop, and the limit (one measurement per shape and
# round); with 1 s windows it fits `make bench` with the TLS suite in 20 minutes. veloxloop (and
# rsloop, where it installs) would add about 3 minutes each: --quick has them, and --loops.
DEFAULT_LOOPS = {
    "full": ("asyncio", "ferroloop", "uvloop", "rloop", LIMIT),
    "quick": ("asyncio", "ferroloop", "uvloop", *OPTIONAL, LIMIT),
    # 3 rows: every loop fits.
    "http": ("asyncio", "ferroloop", "uvloop", *OPTIONAL),
}
KINDS = ("sock", "streams", "protocol")
TRANSPORTS = ("tcp", "unix")
SIZES = (1024, 10 * 1024, 100 * 1024)
CONNECTIONS = (1, 64)
# --quick: the 1 KiB rows (latency-bound at 1 connection, loop-overhead-bound at 64) and
# 100 KiB at 64 connections (the buffering paths), over TCP (rloop and veloxloop have no
# Unix server), 3 rounds of short runs.
QUICK_SHAPES = ((1024, 1), (1024, 64), (100 * 1024, 64))
QUICK_TRANSPORTS = ("tcp",)
# (warm-up, measured) seconds per measurement
TIMING = {"full": (0.3, 1.0), "quick": (0.25, 0.6)}
ROUNDS = {"full": 3, "quick": 3, "http": 3}
# Syscall counts: the difference between two runs of SYSCALL_BASE and SYSCALL_BASE +
# SYSCALL_REQUESTS exchanges, so the interpreter's start-up and shutdown cancel out.
SYSCALL_BASE, SYSCALL_REQUESTS = 100, 1000
# Above this share of a window on a CPU, the load generator may be what limits a figure.
CLIENT_BUSY = 0.9
# --tls: TLS has no sock style (the sock_* methods carry raw bytes); 1 KiB and 100 KiB.
TLS_KINDS = ("streams", "protocol")
TLS_TRANSPORTS = ("tcp",)
TLS_SIZES = (1024, 100 * 1024)
# The handshake row: protocol style over TCP, this many clients each making a new connection
# for every 1 KiB request (full handshake, no resumption). Enough to keep the server busy
# while a handshake's round trips are in flight, few enough that the client is not the limit.
HANDSHAKE_CONNECTIONS = 16
# --http: every stack over TCP, a 1 KiB response body, 64 keep-alive connections.
HTTP_SIZES = (1024,)
HTTP_CONNECTIONS = (64,)


class Row(NamedTuple):
    """One line of the table: a server style, a transport, a message size, a connection
    count; with `tls` over TLS, with `reconnect` a new connection for every request."""

    kind: str
    transport: str
    size: int
    conns: int
    tls: bool = False
    reconnect: bool = False

    def transport_name(self):
        return f"{self.transport}+tls" if self.tls else self.transport

    def conns_name(self):
        return f"{self.conns} reconnect" if self.reconnect else str(self.conns)

    def label(self):
        return f"{self.kind} {self.transport_name()} {size_name(self.size)} x{self.conns_name()}"

    def ident(self):
        """As in failures: `protocol tcp 1024 64`, then `tls` and `reconnect` if set."""
        flags = [f for f, on in (("tls", self.tls), ("reconnect", self.reconnect)) if on]
        return " ".join(map(str, (*self[:4], *flags)))


def size_name(n):
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def fmt_rate(v):
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def fmt_num(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def limit_shape(row):
    """What the limit server's figure depends on: it has no styles (and no TLS)."""
    return row.transport, row.size, row.conns


def run_rounds(
    rows, loops, rounds, timing, cpus, loadgen, workdir, tls_files=None, limit=None, malloc="fixed"
):
    """{row: {loop: [measurement, ...]}}, interleaved: each round runs each row on every loop,
    the first loop rotating. A (loop, style, transport, TLS) found n/a is not retried, nor is
    a row that failed on an OPTIONAL loop. LIMIT runs once per shape and round (on the
    shape's first row), its measurements shared by the rows of every style."""
    results = {row: {loop: [] for loop in loops} for row in rows}
    if LIMIT in loops:
        shared = {}
        for row in rows:
            results[row][LIMIT] = shared.setdefault(limit_shape(row), [])
    unavailable = {}  # (loop, kind, transport, tls): reason
    t0 = time.monotonic()
    for r in range(rounds):
        order = loops[r % len(loops) :] + loops[: r % len(loops)]
        limit_done = set()
        for row in rows:
            kind, transport = row.kind, row.transport
            tls = tls_files if row.tls else None
            cells = []
            for loop in order:
                if loop == LIMIT:
                    if limit_shape(row) in limit_done:
                        continue
                    limit_done.add(limit_shape(row))
                known = unavailable.get((loop, kind, transport, row.tls))
                if loop in OPTIONAL and any(m["status"] == "failed" for m in results[row][loop]):
                    cells.append(f"{loop} failed before, skipped")
                    continue
                if known:
                    m = {"status": "n/a", "reason": known}
                else:
                    extra = {
                        "tls": tls,
                        "reconnect": row.reconnect,
                        "limit": limit,
                        "malloc": malloc,
                    }
                    m = serving.measure(loadgen, loop, *row[:4], timing, cpus, workdir, **extra)
                    if m["status"] == "n/a":
                        unavailable[(loop, kind, transport, row.tls)] = m["reason"]
                m["round"] = r  # pairs it with the other loops' figures of this round
                results[row][loop].append(m)
                if m["status"] == "ok":
                    cells.append(f"{loop} {fmt_rate(m['result']['requests_per_s'])}")
                else:
                    cells.append(f"{loop} {m['status']}")
                    if m["status"] == "failed":
                        print(f"  FAILED {loop}: {m['reason']}", file=sys.stderr)
            print(f"round {r + 1}/{rounds} {row.label()}: {', '.join(cells)}", file=sys.stderr)
    print(f"{rounds} rounds in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return results


def ok_rates(ms):
    """([requests/s], [round]) of a loop's measurements that succeeded. A measurement made
    before the round was recorded (older JSON) takes its position: every round appends one
    per loop, and a skipped optional loop only stops appending."""
    ok = [(i, m) for i, m in enumerate(ms) if m["status"] == "ok"]
    return [m["result"]["requests_per_s"] for _, m in ok], [m.get("round", i) for i, m in ok]


def compare_loops(per_loop, target, base):
    """ratios.compare of the target's requests/s against the base's, paired by round."""
    if target not in per_loop or base not in per_loop:
        return None
    (t, t_rounds), (b, b_rounds) = ok_rates(per_loop[target]), ok_rates(per_loop[base])
    return compare(t, b, True, t_rounds, b_rounds)


def summarize(results, loops, target):
    """Table rows and a JSON summary. Cells: median req/s (min-max); ratios of medians,
    above 1 meaning the target serves more, with the range of the per-round ratios, and
    the verdict against uvloop; each loop's share of the limit server's median; server CPU
    µs per request (median)."""
    bases = [b for b in ("asyncio", "uvloop") if b in loops and b != target and target]
    judged = [b for b in bases if b == "uvloop"]
    shares = [loop for loop in loops if loop != LIMIT] if LIMIT in loops else []
    header = ["server", "transport", "size", "conns", *loops]
    header += [f"{target}/{b}" for b in bases] + [f"{target} vs {b}" for b in judged]
    header += [f"{loop}/{LIMIT}" for loop in shares]
    header += [f"CPU µs/req {loop}" for loop in loops]
    rows, summary, reasons = [], [], {}
    for key, per_loop in results.items():
        kind, transport, size, conns = key[:4]
        med, cells, cpu_cells, entry = {}, [], [], {}
        for loop in loops:
            ms = per_loop[loop]
            rates = ok_rates(ms)[0]
            cpus = [
                m["result"]["server_cpu_us_per_request"]
                for m in ms
                if m["status"] == "ok" and m["result"]["server_cpu_us_per_request"] is not None
            ]
            na = next((m["reason"] for m in ms if m["status"] == "n/a"), None)
            if rates:
                med[loop] = statistics.median(rates)
                cells.append(
                    f"{fmt_rate(med[loop])} ({fmt_rate(min(rates))}-{fmt_rate(max(rates))})"
                )
            else:
                cells.append("n/a" if na else "failed")
            if na:
                reasons.setdefault((loop, na), []).append(f"{kind}/{key.transport_name()}")
            cpu = statistics.median(cpus) if cpus else None
            cpu_cells.append(fmt_num(cpu) if cpu is not None else "-")
            entry[loop] = {
                "median": med.get(loop),
                "min": min(rates, default=None),
                "max": max(rates, default=None),
                "cpu_us_per_request": cpu,
                "n/a": na,
                "measurements": ms,
            }
        compared = {b: compare_loops(per_loop, target, b) for b in bases}
        ratios = [fmt_ratio(compared[b]) for b in bases]
        ratios += [(compared[b] or {}).get("verdict") or "-" for b in judged]
        for loop in shares:
            ok = med.get(loop) and med.get(LIMIT)
            ratios.append(f"{med[loop] / med[LIMIT]:.0%}" if ok else "-")
        row = [kind, key.transport_name(), size_name(size), key.conns_name()]
        rows.append(row + [*cells, *ratios, *cpu_cells])
        shape = {"server": kind, "transport": transport, "size": size, "connections": conns}
        if key.tls:
            shape |= {"tls": True, "reconnect": key.reconnect}
        kept = {b: c for b, c in compared.items() if c}
        summary.append(shape | {"loops": entry, "ratios": kept})
    notes = [
        f"{loop} n/a ({', '.join(sorted(set(where)))}): {why}"
        for (loop, why), where in reasons.items()
    ]
    busy = []
    for key, per_loop in results.items():
        loops_ms = (ms for loop, ms in per_loop.items() if loop != LIMIT)  # see README
        share = max((client_share(m) for ms in loops_ms for m in ms), default=0)
        if share > CLIENT_BUSY:
            busy.append(f"{key.label()} ({share:.0%})")
    if busy:
        notes.append(
            "the load generator (mostly the kernel's loopback work, which the sender pays) was "
            f"busy over {CLIENT_BUSY:.0%} of a window in: {', '.join(busy)}; there both CPUs "
            "are saturated and the row compares loops less sharply"
        )
    return header, rows, summary, notes


VERDICTS = ("faster", LEVEL, "slower")  # the order tally_text counts them in


def tally(results, summary, base="uvloop"):
    """{verdict: [row label]} of the target against `base`, over the rows that have one."""
    out = {}
    for key, entry in zip(results, summary, strict=True):
        c = entry.get("ratios", {}).get(base)
        if c and c["verdict"]:
            out.setdefault(c["verdict"], []).append(key.label())
    return out


def tally_text(verdicts, target, base="uvloop"):
    """'ferroloop vs uvloop over 36 rows: 30 faster, 4 level (within spread), 2 slower: ...'"""
    total = sum(map(len, verdicts.values()))
    counts = ", ".join(f"{len(verdicts[v])} {v}" for v in sorted(verdicts, key=VERDICTS.index))
    text = f"{target} vs {base} over {total} row{'s' if total != 1 else ''}: {counts}"
    behind = verdicts.get("slower", []) + verdicts.get(LEVEL, [])
    return text + (f"; not ahead in every round: {', '.join(behind)}." if behind else ".")


def negotiated(results):
    """The TLS versions and cipher suites the load generator reported, sorted."""
    seen = {
        m["result"].get("tls")
        for per_loop in results.values()
        for ms in per_loop.values()
        for m in ms
        if m["status"] == "ok"
    }
    return sorted(t.replace("TLSv1_", "TLSv1.", 1) for t in seen if t)


def client_share(m):
    """Fraction of the measured window the load generator spent on a CPU."""
    r = m.get("result") or {}
    if m["status"] != "ok" or not r.get("client_cpu_s") or not r.get("duration_s"):
        return 0
    return r["client_cpu_s"] / r["duration_s"]


def measure_syscalls(loops, cpus, loadgen, workdir, kinds, transports, limit=None, malloc="fixed"):
    """Syscalls per request of each server at 1 KiB, one connection: {(kind, transport):
    {loop: ({syscall: per request}, None) or (None, reason)}}. LIMIT, which has no styles,
    is counted once per transport."""
    table, limit_counts = {}, {}
    for kind, transport in itertools.product(kinds, transports):
        cells = table.setdefault((kind, transport), {})
        for loop in loops:
            if loop == LIMIT and transport in limit_counts:
                cells[loop] = limit_counts[transport]
                continue
            cells[loop] = syscalls_per_request(
                loadgen, loop, kind, transport, cpus, workdir, limit, malloc
            )
            if loop == LIMIT:
                limit_counts[transport] = cells[loop]
            per, why = cells[loop]
            count = why if per is None else f"{sum(per.values()):.2f}"
            print(f"syscalls {kind} {transport} {loop}: {count}", file=sys.stderr)
    return table


def syscalls_per_request(loadgen, loop, kind, transport, cpus, workdir, limit, malloc):
    """({syscall: calls per request}, None) or (None, reason): the difference between a run
    of SYSCALL_BASE requests and one of SYSCALL_REQUESTS more."""
    counts = []
    for n in (SYSCALL_BASE, SYSCALL_BASE + SYSCALL_REQUESTS):
        c, why = serving.count_syscalls(
            loadgen, loop, kind, transport, n, cpus, workdir, limit, malloc
        )
        if why:
            return None, why
        counts.append(c)
    small, big = counts
    per = {
        name: (big.get(name, 0) - small.get(name, 0)) / SYSCALL_REQUESTS
        for name in set(big) | set(small)
    }
    return {k: v for k, v in per.items() if abs(v) >= 0.005}, None


def syscall_rows(table, loops):
    header = ["server", "transport", *loops]
    rows = []
    for (kind, transport), per_loop in table.items():
        cells = []
        for loop in loops:
            per, why = per_loop.get(loop, (None, "not run"))
            if per is None:
                cells.append("n/a" if why.startswith("n/a") else "failed")
                continue
            top = sorted(per.items(), key=lambda kv: -kv[1])
            detail = ", ".join(f"{name} {v:.2f}" for name, v in top if v >= 0.05)
            cells.append(f"{sum(per.values()):.2f} ({detail})")
        rows.append([kind, transport, *cells])
    return header, rows


def parse_list(text, allowed):
    values = text.split(",")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SystemExit(f"echo.py: unknown {bad}; choose from {', '.join(allowed)}")
    return values


def parse_ints(text, low, high):
    values = [int(v) for v in text.split(",")]
    if not all(low <= v <= high for v in values):
        raise SystemExit(f"echo.py: {text}: each value must be from {low} to {high}")
    return values


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rows, short runs: ~2 minutes")
    p.add_argument("--rounds", type=int, help="rounds (default 3)")
    p.add_argument(
        "--loops",
        help=f"comma-separated, from {','.join(LOOPS)} (default {','.join(DEFAULT_LOOPS['full'])}"
        f"; with --quick {','.join(DEFAULT_LOOPS['quick'])}); loops that do not import are "
        "skipped",
    )
    p.add_argument("--kinds", help="server styles (default sock,streams,protocol)")
    p.add_argument("--transports", help="default tcp,unix")
    p.add_argument("--sizes", help="message sizes in bytes (default 1024,10240,102400)")
    p.add_argument("--connections", help="connection counts (default 1,64)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="the TLS suite instead: streams and protocol over TCP with TLS, 1 KiB and "
        "100 KiB, 1 and 64 connections, and a handshake row",
    )
    p.add_argument(
        "--handshake-connections",
        type=int,
        default=HANDSHAKE_CONNECTIONS,
        help="clients of the --tls handshake row (protocol, TCP, a new connection per 1 KiB "
        f"request; default {HANDSHAKE_CONNECTIONS}; 0: no handshake row)",
    )
    p.add_argument(
        "--http",
        action="store_true",
        help="the http suite instead: httptools, aiohttp and uvicorn servers over TCP, "
        "HTTP/1.1 keep-alive, 1 KiB bodies, 64 connections",
    )
    p.add_argument("--warmup", type=float, help="seconds before measuring")
    p.add_argument("--duration", type=float, help="measured seconds")
    p.add_argument("--target", default="ferroloop", help="loop whose ratios are reported")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="pin neither server nor client")
    p.add_argument("--loadgen", default=serving.default_loadgen(), help="load generator binary")
    p.add_argument("--limit", default=serving.default_limit(), help="limit server binary")
    p.add_argument(
        "--malloc",
        choices=serving.MALLOC,
        default="fixed",
        help="servers' glibc malloc thresholds: fixed (mmap 4 MiB, trim 8 MiB; the default) "
        "or glibc's own start-up values, which a process then moves (bench/README.md)",
    )
    p.add_argument("--syscalls", action="store_true", help="also count syscalls per request")
    p.add_argument("--only-syscalls", action="store_true", help="count syscalls, nothing else")
    p.add_argument("--json", metavar="OUT", help="write every measurement and the summary")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--readme", metavar="PATH", help="also write the tables into PATH's markers")
    args = p.parse_args()

    if not os.access(args.loadgen, os.X_OK):
        sys.exit(
            f"echo.py: no load generator at {args.loadgen}; "
            "build it with `cargo build --release -p ferroloop-loadgen`"
        )
    if args.tls and args.http:
        sys.exit("echo.py: --tls and --http are separate suites; run one at a time")
    if (args.tls or args.http) and (args.syscalls or args.only_syscalls):
        sys.exit("echo.py: --syscalls counts the echo servers; run it without --tls or --http")
    mode = "http" if args.http else "quick" if args.quick else "full"
    all_kinds = HTTP_KINDS if args.http else KINDS
    default_kinds = HTTP_KINDS if args.http else TLS_KINDS if args.tls else KINDS
    kinds = parse_list(args.kinds or ",".join(default_kinds), all_kinds)
    default_transports = (
        TLS_TRANSPORTS if args.tls or args.http else QUICK_TRANSPORTS if args.quick else TRANSPORTS
    )
    allowed_transports = ("tcp",) if args.http else TRANSPORTS  # web.py serves TCP
    transports = parse_list(args.transports or ",".join(default_transports), allowed_transports)
    if args.tls or args.http or args.sizes or args.connections or not args.quick:
        default_sizes = TLS_SIZES if args.tls else HTTP_SIZES if args.http else SIZES
        default_conns = HTTP_CONNECTIONS if args.http else CONNECTIONS
        sizes = parse_ints(args.sizes, 1, 64 << 20) if args.sizes else default_sizes
        conns = parse_ints(args.connections, 1, 10_000) if args.connections else default_conns
        shapes = list(itertools.product(sizes, conns))
    else:
        shapes = list(QUICK_SHAPES)
    rows = [Row(k, t, s, c, args.tls) for (s, c) in shapes for k in kinds for t in transports]
    if args.tls and args.handshake_connections > 0:
        if not 1 <= args.handshake_connections <= 10_000:
            sys.exit("echo.py: --handshake-connections must be from 0 to 10000")
        rows.append(Row("protocol", "tcp", 1024, args.handshake_connections, True, True))
    warmup, duration = TIMING["quick" if args.quick else "full"]
    timing = (args.warmup if args.warmup is not None else warmup, args.duration or duration)
    rounds = args.rounds or ROUNDS[mode]

    loops, versions, notes = [], {}, []
    for name in parse_list(args.loops or ",".join(DEFAULT_LOOPS[mode]), LOOPS):
        if name == LIMIT:
            version, why = probe_limit(args.limit, args.tls, args.http)
            if version is None and (args.loops or not (args.tls or args.http)):
                notes.append(f"{LIMIT} server skipped: {why}")
            if version is not None:
                loops.append(name)
                versions[name] = version
            continue
        version, why = probe(name)
        if version is None:
            notes.append(f"{name} not importable, skipped ({why})")
        else:
            loops.append(name)
            versions[name] = version
    cpus = (None, None)
    allowed = os.sched_getaffinity(0)
    if not args.no_pin:
        if {args.server_cpu, args.client_cpu} <= allowed and args.server_cpu != args.client_cpu:
            cpus = (args.server_cpu, args.client_cpu)
        else:
            notes.append(
                f"CPUs {args.server_cpu} and {args.client_cpu} not both usable: not pinned"
            )
    if args.target == LIMIT:
        sys.exit(f"echo.py: --target is a loop whose ratios are reported, not {LIMIT}")
    target = args.target if args.target in loops else "uvloop" if "uvloop" in loops else None
    if target != args.target:
        notes.append(f"{args.target} did not run; ratios are for {target or 'nothing'}")
    for note in notes:
        print("note:", note, file=sys.stderr)

    stacks = http_stacks() if args.http else {}
    workdir = tempfile.mkdtemp(prefix="ferroloop-echo-")  # Unix sockets, strace output, PEM
    load = [os.getloadavg()[0]]
    t_start = time.monotonic()
    try:
        tls_files = None
        if args.tls:
            try:
                tls_files = serving.make_tls_files(workdir)
            except ImportError as exc:
                sys.exit(f"echo.py: --tls needs trustme (pip install trustme): {exc}")
        results = {}
        if not args.only_syscalls:
            results = run_rounds(
                rows,
                loops,
                rounds,
                timing,
                cpus,
                args.loadgen,
                workdir,
                tls_files,
                args.limit,
                args.malloc,
            )
        syscalls = None
        if args.syscalls or args.only_syscalls:
            if serving.have_strace():
                syscalls = measure_syscalls(
                    loops, cpus, args.loadgen, workdir, kinds, transports, args.limit, args.malloc
                )
            else:
                notes.append("strace not found (apt-get install strace): syscalls not counted")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load.append(os.getloadavg()[0])

    header, table_rows, summary, na_notes = summarize(results, loops, target)
    notes += na_notes
    failures, fatal, seen = [], False, set()
    for row, per_loop in results.items():
        for loop, ms in per_loop.items():
            for m in ms:
                if m["status"] == "failed" and id(m) not in seen:  # LIMIT's are shared
                    seen.add(id(m))
                    ident = " ".join(map(str, limit_shape(row))) if loop == LIMIT else row.ident()
                    failures.append(f"{loop} {ident}: {m['reason']}")
                    fatal = fatal or loop not in OPTIONAL
    pin = (
        f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"
        if cpus[0] is not None
        else "not pinned"
    )
    meta = {
        **machine_meta(),
        "loops": versions,
        "target": target,
        "rounds": rounds,
        "quick": args.quick,
        "warmup_s": timing[0],
        "duration_s": timing[1],
        "pinned": {"server": cpus[0], "loadgen": cpus[1]},
        "malloc": serving.FIXED_MALLOC if args.malloc == "fixed" else "glibc defaults",
        "seconds": round(time.monotonic() - t_start, 1),
        "loadavg_start_end": load,
        "notes": notes,
    }
    if args.tls:
        meta["tls"] = negotiated(results)
    if stacks:
        meta["http_stacks"] = stacks
    caption = (
        f"Python {meta['python']}, {meta['cpu_model']} ({meta['cpus']} CPUs), {pin}; "
        f"{rounds} interleaved rounds of {timing[0]:g} s warm-up + {timing[1]:g} s measured, "
        f"{time.strftime('%Y-%m-%d')}; loops: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ". Servers' glibc malloc: "
        + ("mmap threshold 4 MiB, trim threshold 8 MiB" if args.malloc == "fixed" else "defaults")
        + ". Cells: requests/s, median over rounds (min–max); ratios of medians, above 1 means "
        f"{target} serves more, then in brackets the lowest and highest of the per-round ratios "
        "(the rounds interleave, so each round's figures pair up); "
        f"`{target} vs uvloop`: faster if every round's ratio is above 1, slower if every one is "
        "below, else level (within spread): the difference is within the run's noise; "
        "CPU: server CPU time per request. "
    )
    if LIMIT in loops:
        caption += (
            f"`{LIMIT}`: a plain-Rust epoll echo server, no Python (bench/limit), measured once "
            "per transport, size and connection count, so every style's row shows the same "
            f"figure; `LOOP/{LIMIT}`: the share of it the loop reaches. "
        )
    if args.tls:
        caption += (
            f"TLS: {', '.join(meta['tls']) or 'not negotiated'}, a throwaway trustme CA and "
            "ECDSA P-256 certificate, verified by the load generator (rustls). `N reconnect`: "
            "N clients each making a new connection for every request (connect, full "
            "handshake, one echo, close), so requests/s are handshakes/s. "
            "Generated by `bench/echo.py --tls`."
        )
    elif args.http:
        caption += (
            f"HTTP/1.1 keep-alive GETs, each answered with a {size_name(sizes[0])} body "
            "(bench/servers/web.py): `httptools` an asyncio.Protocol parsing with httptools, "
            "`aiohttp` an aiohttp web.Application, `uvicorn` a raw ASGI app on uvicorn with "
            "`--http httptools`, the loop chosen through its `--loop` setting ("
            + ", ".join(f"{k} {v}" for k, v in stacks.items())
            + "). Generated by `bench/echo.py --http`."
        )
    else:
        caption += "Generated by `make bench`."
    if table_rows:
        print(f"\n{caption}")
    print(f"\nload average {load[0]:.1f} -> {load[1]:.1f}, {meta['seconds']} s")
    for note in notes:
        print("note:", note)
    text = ""
    verdicts = tally(results, summary)
    if table_rows:
        text = render(header, table_rows, True)
        print("\n" + render(header, table_rows, args.markdown))
        if verdicts:
            print("\n" + tally_text(verdicts, target))
            text += "\n\n" + tally_text(verdicts, target)
    if syscalls:
        sc_header, sc_rows = syscall_rows(syscalls, loops)
        sc_caption = (
            "Server syscalls per request, 1 KiB, one connection, 1 ms between requests "
            f"(`strace -f -c`; the difference between runs of {SYSCALL_BASE} and "
            f"{SYSCALL_BASE + SYSCALL_REQUESTS} requests, so start-up and shutdown cancel out):"
        )
        print(f"\n{sc_caption}\n\n" + render(sc_header, sc_rows, args.markdown))
        text += f"\n\n{sc_caption}\n\n" + render(sc_header, sc_rows, True)
    if args.readme:
        from readme import update_readme

        marker = "echo-tls" if args.tls else "http" if args.http else "echo"
        update_readme(args.readme, marker, caption + "\n\n" + text)
    for failure in failures:
        print("failed:", failure)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        counted = {
            f"{k}/{t}": {loop: {"per_request": per, "error": why} for loop, (per, why) in v.items()}
            for (k, t), v in (syscalls or {}).items()
        }
        with open(args.json, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "rows": summary,
                    "verdicts": verdicts,
                    "syscalls": counted,
                    "failures": failures,
                },
                f,
                indent=1,
            )
    return 1 if fatal else 0


def http_stacks():
    """{package: version} of what the http suite's servers import; exits if one is missing."""
    from importlib import metadata

    versions = {}
    for package in ("httptools", "aiohttp", "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            sys.exit(f"echo.py: --http needs {package} (`make bench-venv` installs it)")
    return versions


def probe_limit(path, tls, http):
    """(version, None) if the limit server can run here, else (None, reason)."""
    if tls or http:
        return None, "it has no TLS" if tls else "it speaks no HTTP"
    if not os.access(path, os.X_OK):
        return None, f"no binary at {path} (build it with `make loadgen`)"
    return "(bench/limit)", None


if __name__ == "__main__":
    sys.exit(main())
