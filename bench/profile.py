"""Where a server's time goes on one benchmark row, per loop: perf's CPU samples by library
and function, and callgrind's instructions per request.

    python bench/profile.py --loops ferroloop,uvloop --kind protocol --transport unix \\
        --size 102400 --connections 64
    python bench/profile.py --loops ferroloop,uvloop --kind uvicorn --size 1024 --callgrind

The server is the benchmark's own (bench/servers/echo.py, web.py for the http stacks), pinned
as in bench/echo.py, under the same load generator.

- **perf** (default): `perf record -e cpu-clock` on the server process over a measured window
  (this machine has no hardware counters: the samples are timer ticks, kernel included), and
  how often the server went to sleep per request (voluntary context switches). The
  report gives the share of samples per library (`[kernel.kallsyms]`, libpython, the loop's
  extension, libc...) and the top functions, so a gap between two loops can be put on the
  kernel, the interpreter or the loop.
- **callgrind** (`--callgrind`): the server under `valgrind --tool=callgrind` for two runs of
  a fixed number of requests; the difference, divided by the requests, gives user-space
  instructions per request by function, with start-up and shutdown cancelled out. Repeatable
  to a fraction of a percent where timings on this machine are not; slow (about 50 times), so
  it uses few requests. It does not see the kernel.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

import serving
from serving import HTTP_KINDS

KINDS = ("sock", "streams", "protocol", *HTTP_KINDS)
TOP = 15


def perf_profile(loadgen, loop, row, cpus, seconds, workdir):
    """{'rate': req/s, 'cpu_us': server CPU µs/req, 'dso': [(share, dso)], 'sym': [(share,
    symbol, dso)]} or {'error': reason}."""
    kind, transport, size, conns = row
    data = os.path.join(workdir, f"perf-{loop}.data")
    srv = serving.Server(loop, kind, transport, cpus[0], workdir, size=size)
    if not srv.address:
        return {"error": f"{loop} server did not start: {srv.stop()[2]}"}
    perf = None
    try:
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-p", str(srv.pid)]
            + ["-o", data, "--", "sleep", str(seconds + 0.5)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        args = ["--connections", conns, "--size", size, "--warmup", 0.5, "--duration", seconds]
        args += ["--server-pid", srv.pid] + (["--mode", "http"] if kind in HTTP_KINDS else [])
        sleeps = voluntary_switches(srv.pid)
        result, err = serving.run_loadgen(loadgen, srv.address, args, cpus[1], seconds + 1)
        sleeps = voluntary_switches(srv.pid) - sleeps
        perf_err = perf.communicate(timeout=seconds + 30)[1].decode(errors="replace")
    finally:
        if perf and perf.poll() is None:
            perf.kill()
        srv.stop()
    if err:
        return {"error": err}
    if not os.path.exists(data):
        return {"error": f"perf record failed: {perf_err.strip()}"}
    return {
        "rate": result["requests_per_s"],
        "cpu_us": result["server_cpu_us_per_request"],
        # Over warm-up and window alike, so per request only roughly.
        "sleeps": sleeps / (result["requests_per_s"] * (seconds + 0.5)),
        "dso": perf_report(data, "dso"),
        "sym": perf_report(data, "sym,dso"),
    }


def voluntary_switches(pid):
    """How often the process has gone to sleep (blocked) so far, all its threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def perf_report(data, sort):
    """[(percent, name...)] from `perf report --stdio --sort SORT`."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--sort", sort, "--percent-limit", "0.5"],
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m and not line.lstrip().startswith("#"):
            rows.append((float(m[1]), *re.split(r"\s{2,}", m[2])))
    return rows


def callgrind_profile(loadgen, loop, row, cpus, requests, workdir):
    """{'total': instructions per request, 'fn': [(per request, function)]} or {'error'}."""
    kind, transport, size, conns = row
    counts = []
    for n in (requests, 2 * requests):
        out = os.path.join(workdir, f"callgrind-{loop}-{n}.out")
        prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q")
        srv = serving.Server(loop, kind, transport, cpus[0], workdir, prefix=prefix, size=size)
        err = None
        try:
            if not srv.address:
                return {"error": f"{loop} server did not start under valgrind"}
            args = ["--connections", conns, "--size", size, "--requests", n, "--timeout", 60]
            args += ["--mode", "http"] if kind in HTTP_KINDS else []
            _, err = serving.run_loadgen(loadgen, srv.address, args, cpus[1], 600)
        finally:
            srv.stop(timeout=120)  # valgrind writes its profile on the way out
        if err:
            return {"error": err}
        counts.append(annotate(out))
    small, big = counts
    per_fn = {fn: (big.get(fn, 0) - small.get(fn, 0)) / requests for fn in set(big) | set(small)}
    total = sum(per_fn.values())
    top = sorted(((v, fn) for fn, v in per_fn.items()), reverse=True)[:TOP]
    return {"total": total, "fn": top}


def annotate(path):
    """{function: instructions} from callgrind_annotate (exclusive counts, every function)."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", path],
        capture_output=True,
        text=True,
    ).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if m and ":" in m[2] and not m[2].startswith("PROGRAM TOTALS"):
            where, _, fn = m[2].split(" [")[0].rpartition(":")
            name = fn if where == "???" else f"{os.path.basename(where)}:{fn}"
            counts[name] += int(m[1].replace(",", ""))
    return counts


def report_perf(loop, p):
    if "error" in p:
        print(f"\n### {loop}: failed: {p['error']}")
        return
    print(
        f"\n### {loop}: {p['rate']:.0f} req/s, server CPU {p['cpu_us']} µs/req, "
        f"sleeps {p['sleeps']:.2f}/req\n"
    )
    print("| share | library |\n| ---: | --- |")
    for share, *name in p["dso"][:8]:
        print(f"| {share:.1f}% | {' '.join(name)} |")
    print("\n| share | function | library |\n| ---: | --- | --- |")
    for share, *name in p["sym"][:TOP]:
        sym, dso = (name + [""])[:2]
        print(f"| {share:.1f}% | `{sym.removeprefix('[k] ').removeprefix('[.] ')}` | {dso} |")


def report_callgrind(loop, c):
    if "error" in c:
        print(f"\n### {loop}: callgrind failed: {c['error']}")
        return
    print(f"\n### {loop}: {c['total']:,.0f} user-space instructions per request\n")
    print("| per request | function |\n| ---: | --- |")
    for v, fn in c["fn"]:
        print(f"| {v:,.0f} | `{fn}` |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", default="ferroloop,uvloop")
    p.add_argument("--kind", choices=KINDS, default="protocol")
    p.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0, help="perf: measured window")
    p.add_argument("--callgrind", action="store_true", help="instructions instead of perf")
    p.add_argument("--requests", type=int, default=500, help="callgrind: requests per run")
    p.add_argument("--loadgen", default=serving.default_loadgen())
    args = p.parse_args()
    if args.kind in HTTP_KINDS and args.transport != "tcp":
        sys.exit("profile.py: the http stacks serve TCP only")
    tool = "valgrind" if args.callgrind else "perf"
    if not shutil.which(tool):
        sys.exit(f"profile.py: {tool} not found (apt-get install {tool})")
    if not 0.5 <= args.seconds <= 60 or not 10 <= args.requests <= 100_000:
        sys.exit("profile.py: --seconds 0.5-60, --requests 10-100000")
    row = (args.kind, args.transport, args.size, args.connections)
    cpus = (0, 1) if {0, 1} <= os.sched_getaffinity(0) else (None, None)
    print(f"## {args.kind} {args.transport} {args.size} B x{args.connections}: {tool}")
    workdir = tempfile.mkdtemp(prefix="ferroloop-profile-")
    try:
        for loop in args.loops.split(","):
            if args.callgrind:
                report_callgrind(
                    loop, callgrind_profile(args.loadgen, loop, row, cpus, args.requests, workdir)
                )
            else:
                report_perf(
                    loop, perf_profile(args.loadgen, loop, row, cpus, args.seconds, workdir)
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
