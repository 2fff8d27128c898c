"""Memory benchmark: server RSS per idle connection of a Protocol echo server, per loop.

Method (details in bench/README.md): for each loop, in interleaved rounds (the first loop
rotating), a fresh server process (`--serve LOOP`: `loop.create_server` with an
`asyncio.Protocol` that echoes in `data_received`) listens on 127.0.0.1. This process opens
and closes a few warm-up connections, asks the server for its RSS (after `gc.collect()` and a
settle), opens N idle loopback connections (no byte sent either way) in batches, waiting after
each until the server has accepted them all, asks for its RSS again and reports the growth
divided by N. Both processes raise RLIMIT_NOFILE within the hard limit.

    python bench/memory.py --quick                      # 2,000 connections, 3 rounds
    python bench/memory.py --markdown --json bench/results/memory.json   # 10,000, 5 rounds
    python bench/memory.py --loops ferroloop --trace    # where ferroloop's growth goes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

from micro import cpu_model, machine_meta, probe, render
from ratios import compare, fmt_ratio

LOOPS = ("asyncio", "ferroloop", "uvloop", "rloop", "rsloop", "veloxloop")
OPTIONAL = ("rloop", "rsloop", "veloxloop")
DEFAULT_LOOPS = ("asyncio", "ferroloop", "uvloop", "rloop")
CONNECTIONS = {"full": 10_000, "quick": 2_000}
ROUNDS = {"full": 5, "quick": 3}
WARMUP_CONNECTIONS = 64
# Connections opened before waiting for the server to accept them: under the listen
# backlog, so no SYN is dropped (a dropped SYN is retried a second later).
BATCH = 256
BACKLOG = 1024
SETTLE = 0.3  # seconds between gc.collect() and reading the RSS
FD_MARGIN = 64  # fds besides the connections: the interpreter's, the loop's, the listener
TIMEOUT = 60  # seconds for any one step (start, a batch, a reading)
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def raise_nofile(needed):
    """Raise the soft RLIMIT_NOFILE to `needed` if the hard limit allows; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def status_kib(pid="self"):
    """{field: KiB} of STATUS_FIELDS from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                out[name] = int(value.split()[0])
    return out


# ---------------------------------------------------------------- the server (child side)


def serve(loop_name, connections, trace):
    """Listen, print `READY PORT`, then answer the commands read from stdin, one line each:
    `count` (open connections), `measure` (gc.collect, settle, then the RSS and, with
    `trace`, tracemalloc's and the live objects' figures). Stops at EOF."""
    raise_nofile(connections + FD_MARGIN)
    if trace:
        import tracemalloc

        tracemalloc.start(8)
    if loop_name == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        loop = importlib.import_module(loop_name).new_event_loop()
    asyncio.set_event_loop(loop)
    open_count = [0]

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            open_count[0] += 1

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            open_count[0] -= 1

    server = loop.run_until_complete(
        loop.create_server(Echo, "127.0.0.1", 0, backlog=BACKLOG, reuse_address=True)
    )
    port = server.sockets[0].getsockname()[1]
    baseline = {}

    def reply(text):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def measure():
        gc.collect()
        loop.call_later(SETTLE, report)

    def report():
        gc.collect()
        out = {"count": open_count[0], "status": status_kib()}
        if trace:
            out |= trace_figures(baseline)
        reply(json.dumps(out))

    def command(line):
        if line == "count":
            reply(json.dumps({"count": open_count[0]}))
        elif line == "measure":
            measure()
        else:
            reply(json.dumps({"error": f"unknown command {line!r}"}))

    def read_commands():
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line.strip())
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=read_commands, daemon=True).start()
    reply(f"READY {port}")
    loop.run_forever()
    sys.stdout.flush()
    os._exit(0)  # the connections die with the process; nothing to tidy


def trace_figures(baseline):
    """tracemalloc's traced size and the gc-tracked objects by type; the first call keeps
    them as the baseline, later ones report the difference from it."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    types = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        types[name] = types.get(name, 0) + 1
    if not baseline:
        baseline["snapshot"], baseline["types"] = snapshot, types
        return {"traced": tracemalloc.get_traced_memory()[0]}
    sites = []
    for stat in snapshot.compare_to(baseline["snapshot"], "traceback")[:25]:
        frames = [f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback[-4:])]
        sites.append({"bytes": stat.size_diff, "count": stat.count_diff, "where": frames})
    grown = {t: n - baseline["types"].get(t, 0) for t, n in types.items()}
    grown = dict(sorted(((t, n) for t, n in grown.items() if n), key=lambda kv: -kv[1])[:25])
    return {"traced": tracemalloc.get_traced_memory()[0], "sites": sites, "types": grown}


# ---------------------------------------------------------------- the driver (client side)


class Server:
    """A `--serve` child and its command channel."""

    def __init__(self, loop, connections, trace, malloc_env):
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", loop]
        cmd += ["--connections", str(connections)] + (["--trace"] if trace else [])
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=malloc_env
        )
        line = self._line()
        if not line.startswith("READY "):
            raise RuntimeError(f"server said {line!r}")
        self.port = int(line.split()[1])

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(TIMEOUT)
            raise RuntimeError(f"server exited with {self.proc.returncode}")
        return line.strip()

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def wait_count(self, n):
        deadline = time.monotonic() + TIMEOUT
        while (count := self.ask("count")["count"]) != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server holds {count} connections, expected {n}")
            time.sleep(0.002)

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def connect(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()
    socks.clear()


def measure_once(loop, connections, trace, env):
    """{"kib_per_conn", "before", "after", ...} for one fresh server of `loop`."""
    server = Server(loop, connections, trace, env)
    socks = []
    try:
        socks = connect(server.port, WARMUP_CONNECTIONS)
        server.wait_count(WARMUP_CONNECTIONS)
        close_all(socks)
        server.wait_count(0)
        before = server.ask("measure")
        t0 = time.monotonic()
        while len(socks) < connections:
            socks += connect(server.port, min(BATCH, connections - len(socks)))
            server.wait_count(len(socks))
        opened_s = time.monotonic() - t0
        after = server.ask("measure")
    finally:
        close_all(socks)
        server.stop()
    grown = {k: after["status"][k] - before["status"][k] for k in STATUS_FIELDS}
    out = {
        "kib_per_conn": grown["VmRSS"] / connections,
        "anon_kib_per_conn": grown["RssAnon"] / connections,
        "before_kib": before["status"],
        "after_kib": after["status"],
        "connect_s": round(opened_s, 3),
    }
    if trace:
        out["traced_bytes_per_conn"] = (after["traced"] - before["traced"]) / connections
        out["sites"] = [
            s
            | {
                "bytes_per_conn": s["bytes"] / connections,
                "count_per_conn": s["count"] / connections,
            }
            for s in after.get("sites", [])
        ]
        out["types_per_conn"] = {t: n / connections for t, n in after.get("types", {}).items()}
    return out


def print_trace(loop, m):
    print(
        f"\n{loop}: RSS {m['kib_per_conn']:.3f} KiB/conn (anonymous {m['anon_kib_per_conn']:.3f}),"
        " with tracemalloc's own overhead"
    )
    print(f"  tracemalloc (Python allocator): {m['traced_bytes_per_conn']:.0f} B/conn")
    print("  gc-tracked objects per connection:")
    for t, n in m["types_per_conn"].items():
        if abs(n) >= 0.01:
            print(f"    {n:7.2f}  {t}")
    print("  allocation sites, B/conn (count/conn), innermost frame first:")
    for s in m["sites"]:
        if abs(s["bytes_per_conn"]) >= 1:
            count = s["count_per_conn"]
            print(f"    {s['bytes_per_conn']:7.1f} ({count:+.2f})  " + " < ".join(s["where"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 connections, 3 rounds")
    p.add_argument("--connections", type=int, help="idle connections (default 10,000)")
    p.add_argument("--rounds", type=int, help="rounds (default 5; 3 with --quick)")
    p.add_argument(
        "--loops",
        default=",".join(DEFAULT_LOOPS),
        help=f"comma-separated, from {','.join(LOOPS)}; loops that do not import are skipped",
    )
    p.add_argument(
        "--malloc",
        choices=("glibc", "fixed"),
        default="glibc",
        help="servers' glibc malloc thresholds: glibc's own (the default) or echo.py's fixed ones",
    )
    p.add_argument("--trace", action="store_true", help="one tracemalloc run per loop instead")
    p.add_argument("--json", metavar="OUT", help="write every measurement and the summary")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--readme", metavar="PATH", help="also write the table into PATH's markers")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    connections = args.connections or CONNECTIONS[mode]
    if not 1 <= connections <= 60_000:
        sys.exit("memory.py: --connections must be from 1 to 60000")
    if args.serve:
        return serve(args.serve, connections, args.trace)

    limit = raise_nofile(connections + WARMUP_CONNECTIONS + FD_MARGIN)
    if limit < connections + WARMUP_CONNECTIONS + FD_MARGIN:
        connections = max(1, limit - WARMUP_CONNECTIONS - FD_MARGIN)
        print(f"note: RLIMIT_NOFILE's hard limit allows {connections} connections", file=sys.stderr)
    rounds = 1 if args.trace else args.rounds or ROUNDS[mode]
    env = dict(os.environ)
    if args.malloc == "fixed":
        from serving import FIXED_MALLOC

        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), FIXED_MALLOC)))
    loops, versions, notes = [], {}, []
    for name in args.loops.split(","):
        if name not in LOOPS:
            sys.exit(f"memory.py: unknown loop {name!r}; choose from {', '.join(LOOPS)}")
        version, why = probe(name)
        if version is None:
            notes.append(f"{name} not importable, skipped ({why})")
        else:
            loops.append(name)
            versions[name] = version
    for note in notes:
        print("note:", note, file=sys.stderr)

    samples = {loop: [] for loop in loops}
    failures, fatal = [], False
    t_start = time.monotonic()
    for r in range(rounds):
        order = loops[r % len(loops) :] + loops[: r % len(loops)]
        cells = []
        for loop in order:
            if loop in OPTIONAL and any(m.get("failed") for m in samples[loop]):
                continue
            try:
                m = measure_once(loop, connections, args.trace, env)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                m = {"failed": f"{type(exc).__name__}: {exc}"}
                failures.append(f"round {r + 1} {loop}: {m['failed']}")
                fatal = fatal or loop not in OPTIONAL
                print(f"  FAILED {loop}: {m['failed']}", file=sys.stderr)
            samples[loop].append(m)
            if "failed" not in m:
                cells.append(f"{loop} {m['kib_per_conn']:.2f}")
                if args.trace:
                    print_trace(loop, m)
        print(f"round {r + 1}/{rounds}: {', '.join(cells)} KiB/conn", file=sys.stderr)
    seconds = round(time.monotonic() - t_start, 1)

    def cell(values):
        if not values:
            return "failed"
        med = statistics.median(values)
        return f"{med:.2f} ({min(values):.2f}-{max(values):.2f})"

    header = ["server", "conns", *loops]
    header += [
        f"ferroloop/{b}" for b in ("asyncio", "uvloop") if "ferroloop" in loops and b in loops
    ]
    per_loop = {loop: kib_figures(samples, loop)[0] for loop in samples}
    row = ["protocol, idle", f"{connections:,}", *(cell(per_loop[loop]) for loop in loops)]
    for b in header[2 + len(loops) :]:
        base = b.split("/")[1]
        row.append(fmt_ratio(compare_kib(samples, "ferroloop", base)))
    rows = [row]
    caption = (
        f"Python {platform.python_version()}, {cpu_model()} ({os.cpu_count()} CPUs); "
        f"{rounds} interleaved rounds, {time.strftime('%Y-%m-%d')}; loops: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". A Protocol echo server on 127.0.0.1 holding {connections:,} idle connections: "
        "growth of its RSS (VmRSS) from before to after opening "
        "them, each reading taken after gc.collect() and a settle, divided by the connections. "
        "Cells: KiB per connection, median over rounds (min–max); ratios of medians, below 1 "
        "means ferroloop uses less, then in brackets the lowest and highest of the per-round "
        "ratios (the rounds interleave, so each round's figures pair up). Servers' glibc malloc: "
        + ("glibc's defaults" if args.malloc == "glibc" else "mmap 4 MiB, trim 8 MiB")
        + ". Generated by `make bench`."
    )
    if not args.trace:
        print(f"\n{caption}\n\n{seconds} s")
        for note in notes:
            print("note:", note)
        print("\n" + render(header, rows, args.markdown))
    if args.readme and not args.trace:
        from readme import update_readme

        update_readme(args.readme, "memory", caption + "\n\n" + render(header, rows, True))
    for failure in failures:
        print("failed:", failure)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {
            **machine_meta(),
            "loops": versions,
            "rounds": rounds,
            "connections": connections,
            "malloc": args.malloc,
            "seconds": seconds,
            "notes": notes,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "samples": samples, "failures": failures}, f, indent=1)
    return 1 if fatal else 0


def kib_figures(samples, loop):
    """([KiB per connection], [round]) of a loop's measurements that succeeded: each round
    appends one per loop (a failed optional loop only stops appending)."""
    ok = [(r, m) for r, m in enumerate(samples.get(loop, [])) if "failed" not in m]
    return [m["kib_per_conn"] for _, m in ok], [r for r, _ in ok]


def compare_kib(samples, target, base, less_is_above=False):
    """ratios.compare of the target's KiB per connection against the base's, paired by
    round: above 1 the target uses more, or with `less_is_above` (the base's over the
    target's) less."""
    (t, t_rounds), (b, b_rounds) = kib_figures(samples, target), kib_figures(samples, base)
    if less_is_above:
        return compare(t, b, False, t_rounds, b_rounds, ("less memory", "more memory"))
    return compare(t, b, True, t_rounds, b_rounds, ("more memory", "less memory"))


if __name__ == "__main__":
    sys.exit(main())
