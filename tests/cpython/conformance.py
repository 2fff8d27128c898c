"""Conformance gate: CPython's own test.test_asyncio modules, on asyncio and on ferroloop.

    python tests/cpython/conformance.py            # --check: fail if ferroloop passes fewer
    python tests/cpython/conformance.py --update   # rewrite results-<X.Y>.json

Each module runs in its own process (run_module.py), once per loop, two processes at a time.
The tracked file results-<X.Y>.json holds, per module, the outcome counts on both loops and
the tests that pass on asyncio but not on ferroloop. internals.json lists tests that inspect
asyncio's own internals; they are reported apart and are not ferroloop failures.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_module.py"
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
# CONFORMANCE_RESULTS points elsewhere, e.g. to try a stand-in without touching the tracked file.
RESULTS = Path(os.environ.get("CONFORMANCE_RESULTS", HERE / f"results-{VERSION}.json"))
INTERNALS = HERE / "internals.json"
LOGS = HERE / ".runs" / VERSION  # raw per-run output, untracked
PREFIX = "test.test_asyncio."
OUTCOMES = ("pass", "fail", "error", "skip", "expectedFailure", "unexpectedSuccess")
LOOPS = ("asyncio", "ferroloop")

# The foundation, socket, subprocess and TLS sets; a module this interpreter lacks is skipped
# (e.g. test_timeouts on 3.10).
DEFAULT_MODULES = [
    "test_futures",
    "test_futures2",
    "test_tasks",
    "test_locks",
    "test_queues",
    "test_timeouts",
    "test_taskgroups",
    "test_runners",
    "test_context",
    "test_pep492",
    "test_waitfor",
    "test_threads",
    "test_events",
    "test_sock_lowlevel",
    "test_streams",
    "test_server",
    "test_sendfile",
    "test_buffered_proto",
    "test_protocols",
    "test_subprocess",
    "test_ssl",
    "test_sslproto",
]
# Longest first, so that two workers finish together.
SLOW_FIRST = ["test_tasks", "test_events", "test_taskgroups", "test_futures"]
INCIDENT = "[runner] "  # marks outcomes the runner recorded for a test that never reported
MAX_RESUMES = 10  # how many hung/crashed tests one module run may skip past


def short(tid: str) -> str:
    return tid.replace(PREFIX, "")


def module_exists(module: str) -> bool:
    return importlib.util.find_spec(module if "." in module else PREFIX + module) is not None


def read_stream(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            break  # the process died mid-line
    return lines


def run_once(module: str, loop: str, only: list[str] | None, args, log) -> dict:
    """Run one module on one loop, resuming past tests that hang or crash the process.

    Returns {"tests": {id: record}, "wall": s, "incidents": [...], "broken": str|None}.
    """
    deadline = time.monotonic() + args.timeout
    t0 = time.monotonic()
    records: dict[str, dict] = {}
    collected: list[str] | None = None
    incidents: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for attempt in range(MAX_RESUMES + 1):
            skip = set(records)  # on a resume: everything already recorded
            skip_file, stream = tmp / f"skip{attempt}", tmp / f"stream{attempt}"
            skip_file.write_text("\n".join(sorted(skip)))
            cmd = [
                sys.executable,
                str(RUNNER),
                module,
                "--loop",
                loop,
                "--json",
                str(tmp / "out.json"),
                "--stream",
                str(stream),
                "--skip-file",
                str(skip_file),
                "--per-test-timeout",
                str(args.per_test_timeout),
            ]
            if only is not None:
                (tmp / "only").write_text("\n".join(only))
                cmd += ["--only-file", str(tmp / "only")]
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                rc, timed_out = proc.wait(), True
            started, started_at, done = None, 0.0, False
            for line in read_stream(stream):
                if "collected" in line and collected is None:
                    collected = line["collected"]
                elif "start" in line:
                    started, started_at = line["start"], line["at"]
                elif "id" in line:
                    records[line["id"]] = line
                    started = None if started == line["id"] else started
                elif "done" in line:
                    done = True
            if done:
                if rc != 0:
                    incidents.append(f"exit code {rc} after the last test")
                break
            if collected is None:
                return {
                    "tests": records,
                    "wall": time.monotonic() - t0,
                    "incidents": incidents,
                    "broken": f"exit code {rc} before any test was collected",
                }
            if timed_out:
                why = f"module timeout ({args.timeout:.0f}s)"
            elif started and time.time() - started_at >= args.per_test_timeout > 0:
                why = f"hung (per-test timeout {args.per_test_timeout:.0f}s; stacks in the log)"
            else:
                why = f"process died (exit code {rc})"
            why = INCIDENT + why
            if started is not None:
                records[started] = {"id": started, "outcome": "error", "detail": why}
                incidents.append(f"{short(started)}: {why}")
            else:
                incidents.append(f"{why} outside a test")
            if timed_out or attempt == MAX_RESUMES or started is None:
                for tid in collected:
                    records.setdefault(tid, {"id": tid, "outcome": "error", "detail": why})
                break
    return {"tests": records, "wall": time.monotonic() - t0, "incidents": incidents, "broken": None}


def run_module(module: str, loop: str, args) -> dict:
    """run_once, then one rerun of the tests that failed (as regrtest does) to spot flakes."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{module}.{loop}.log", "w") as log:
        res = run_once(module, loop, None, args, log)
        # Hung and crashed tests are not rerun: they would cost their timeout again.
        bad = [
            t
            for t, r in res["tests"].items()
            if r["outcome"] in ("fail", "error") and not r["detail"].startswith(INCIDENT)
        ]
        res["flaky"] = []
        if bad and not res["broken"] and len(bad) <= args.rerun_limit:
            log.write(f"# rerunning {len(bad)} failed tests\n")
            rerun = run_once(module, loop, bad, args, log)
            for tid in bad:
                if rerun["tests"].get(tid, {}).get("outcome") == "pass":
                    res["tests"][tid] = dict(rerun["tests"][tid], flaky=True)
                    res["flaky"].append(short(tid))
            res["wall"] += rerun["wall"]
    (LOGS / f"{module}.{loop}.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    return res


def load_internals() -> list[dict]:
    return json.loads(INTERNALS.read_text())["tests"] if INTERNALS.exists() else []


def is_internal(tid: str, internals: list[dict]) -> bool:
    return any(fnmatch.fnmatchcase(tid, e["pattern"]) for e in internals)


def summarize(module: str, runs: dict, internals: list[dict]) -> dict:
    entry: dict = {}
    for loop, res in runs.items():
        counts = dict.fromkeys(OUTCOMES, 0)
        for rec in res["tests"].values():
            counts[rec["outcome"]] += 1
        # Zero counts are left out to keep the tracked file short; "pass" always stays.
        entry[loop] = {k: v for k, v in counts.items() if v or k == "pass"}
    if "ferroloop" in runs and "asyncio" in runs:
        a, f = runs["asyncio"]["tests"], runs["ferroloop"]["tests"]
        lost = sorted(
            short(t)
            for t, r in a.items()
            if r["outcome"] == "pass" and f.get(t, {}).get("outcome") != "pass"
        )
        entry["failing"] = [t for t in lost if not is_internal(t, internals)]
        entry["internals"] = [t for t in lost if is_internal(t, internals)]
        entry["ran_on_ferroloop"] = sum(
            1 for r in f.values() if r["outcome"] == "pass" and r.get("ferroloop")
        )
    network = sorted(
        {short(r["id"]) for res in runs.values() for r in res["tests"].values() if r.get("network")}
    )
    if network:
        entry["network"] = network
    return entry


def col(value, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def check_ferroloop_importable() -> str:
    """Fail loudly if ferroloop cannot be imported: the gate must never pass without it."""
    code = "import ferroloop; print(ferroloop.__file__, ferroloop.Loop.__mro__[1].__module__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"FAIL: ferroloop cannot be imported by {sys.executable}:\n{proc.stderr}")
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="the default")
    mode.add_argument("--update", action="store_true", help=f"rewrite {RESULTS.name}")
    ap.add_argument(
        "--allow-lower", action="store_true", help="let --update lower a ferroloop pass figure"
    )
    ap.add_argument(
        "--asyncio-only",
        action="store_true",
        help="with --update: refresh only the asyncio figures (no ferroloop needed)",
    )
    ap.add_argument("--modules", help="comma-separated; default: those in the tracked file")
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per module run")
    ap.add_argument(
        "--per-test-timeout",
        type=float,
        default=60,
        help="seconds before a hung test is dumped and skipped",
    )
    ap.add_argument(
        "--rerun-limit",
        type=int,
        default=50,
        help="rerun failed tests once when at most this many failed",
    )
    args = ap.parse_args(argv)
    if args.asyncio_only and not args.update:
        ap.error("--asyncio-only goes with --update")

    tracked = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"modules": {}}
    if args.modules:
        modules = args.modules.split(",")
    elif tracked["modules"]:
        modules = list(tracked["modules"])
    elif args.update:
        modules = DEFAULT_MODULES
    else:
        sys.exit(f"FAIL: no {RESULTS.name}; create it with --update")
    missing = [m for m in modules if not module_exists(m)]
    if missing:
        print(f"skipping modules this Python lacks: {', '.join(missing)}")
    modules = [m for m in modules if m not in missing]

    loops = ("asyncio",) if args.asyncio_only else LOOPS
    if "ferroloop" in loops:
        print(f"ferroloop: {check_ferroloop_importable()}", flush=True)
    print(f"python {sys.version.split()[0]} ({sys.executable}); {len(modules)} modules")

    order = sorted(modules, key=lambda m: SLOW_FIRST.index(m) if m in SLOW_FIRST else 99)
    jobs = [(m, loop) for m in order for loop in loops]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {job: pool.submit(run_module, *job, args) for job in jobs}
        runs = {job: fut.result() for job, fut in futures.items()}
    total = time.monotonic() - t0

    internals = load_internals()
    broken = [
        f"{m} [{loop}]: {runs[m, loop]['broken']}" for m, loop in jobs if runs[m, loop]["broken"]
    ]
    new_modules, regressions = {}, []
    print(
        f"\n{'module':<16}{'asyncio':>8}{'ferro':>7}{'tracked':>8}{'failing':>8}"
        f"{'intern':>7}{'on-ferro':>9}{'wall a/f (s)':>14}"
    )
    for m in modules:
        fresh = summarize(m, {loop: runs[m, loop] for loop in loops}, internals)
        old = tracked["modules"].get(m, {})
        old_f = old.get("ferroloop", {}).get("pass")
        f_pass = fresh.get("ferroloop", {}).get("pass")
        if f_pass is not None and old_f is not None and f_pass < old_f:
            regressions.append(f"{m}: ferroloop passes {f_pass} < tracked {old_f}")

        has_f = "ferroloop" in fresh
        walls = "/".join(f"{runs[m, loop]['wall']:.0f}" for loop in loops)
        print(
            f"{m:<16}{col(fresh['asyncio']['pass'], 8)}{col(f_pass, 7)}{col(old_f, 8)}"
            f"{col(len(fresh['failing']) if has_f else None, 8)}"
            f"{col(len(fresh['internals']) if has_f else None, 7)}"
            f"{col(fresh.get('ran_on_ferroloop'), 9)}"
            f"{col(walls, 14)}"
        )
        for loop in loops:
            for note in runs[m, loop]["incidents"]:
                print(f"    {loop}: {note}")
            if runs[m, loop]["flaky"]:
                print(f"    {loop}: flaky (passed on rerun): {', '.join(runs[m, loop]['flaky'])}")
        for tid in fresh.get("network", []):
            print(f"    network access blocked: {tid}")
        # --asyncio-only keeps the tracked ferroloop figures: only a real ferroloop run makes them.
        new_modules[m] = {**old, **fresh} if args.asyncio_only else fresh
    print(f"\nwall time {total:.0f}s with {args.jobs} workers; logs in {LOGS}")

    bad = [
        f"{m}: {short(t)}"
        for m in modules
        for t, r in runs[m, "asyncio"]["tests"].items()
        if r["outcome"] in ("fail", "error")
    ]
    if bad:
        print(f"\nnote: {len(bad)} tests fail on asyncio itself:\n  " + "\n  ".join(bad))

    if broken:
        print("\nFAIL: runs that did not start:\n  " + "\n  ".join(broken))
        return 2
    if args.update:
        lowered = regressions if not args.allow_lower else []
        if lowered:
            print(
                "\nFAIL: refusing to lower tracked figures (use --allow-lower):\n  "
                + "\n  ".join(lowered)
            )
            return 1
        out = {
            "python": sys.version.split()[0],
            "note": "written by conformance.py --update; --check fails below ferroloop.pass",
            "modules": {**tracked["modules"], **new_modules},
        }
        RESULTS.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"\nwrote {RESULTS}")
        return 0
    old_entries = {m: tracked["modules"].get(m, {}) for m in modules}
    newly = [
        t
        for m, old in old_entries.items()
        if old.get("ferroloop") is not None
        for t in new_modules[m].get("failing", [])
        if t not in old.get("failing", [])
    ]
    if newly:
        print("\nnot failing in the tracked file, failing now:\n  " + "\n  ".join(newly))
    untracked = [m for m, old in old_entries.items() if old.get("ferroloop") is None]
    if untracked:
        print(
            f"\nNOTE: no tracked ferroloop figure yet (record one with --update): "
            f"{', '.join(untracked)}"
        )
    if regressions:
        print("\nFAIL: ferroloop passes fewer tests than tracked:\n  " + "\n  ".join(regressions))
        return 1
    print("\nOK: no module lost ferroloop passes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
