"""`make compat`: released test suites of the ecosystem, on asyncio, uvloop and ferroloop.

    python tests/compat/compat.py                  # --check: every suite; fail below tracked
    python tests/compat/compat.py --update         # rewrite results.json (never lowers a pass)
    python tests/compat/compat.py --suites uvloop  # a subset; --quick: the CI subset

Each suite's sdist is downloaded from PyPI (pinned in suites.py) into target/compat/, which is
outside git; only its tests are copied into a run directory, and pytest runs them in a venv of
their own with ferroloop (this checkout's python/ directory) importable. compat_plugin.py picks
the loop and records every test's outcome; results.json holds, per suite, the pass counts on
each loop and the tests that pass on asyncio (or uvloop) but not on ferroloop, with the cause
recorded in causes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from services import SERVICES
from suites import SUITES, Suite

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("COMPAT_CACHE", REPO / "target" / "compat"))
RESULTS = Path(os.environ.get("COMPAT_RESULTS", HERE / "results.json"))
CAUSES = HERE / "causes.json"
LOOPS = ("asyncio", "uvloop", "ferroloop")
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass")
BASE_DEPS = ("pytest==9.0.3", "pytest-timeout==2.4.0")
# The CI subset (`make compat-check`): suite -> extra pytest arguments narrowing it.
# Only the ferroloop runs; a test that fails there and is not in the tracked ferroloop_not_pass
# list is a lost pass.
QUICK = {
    "uvloop": (("tests",), ("-k", "(Test_UV_TCP or Test_UV_Context or Test_UV_Unix) and not SSL")),
    "anyio": (("tests/test_sockets.py",), ()),
}


def log(msg: str) -> None:
    print(msg, flush=True)


def sdist(suite: Suite) -> Path:
    """The unpacked sdist (downloaded once; pip verifies it against PyPI's hashes)."""
    root = CACHE / "src" / f"{suite.package}-{suite.version}"
    if root.is_dir():
        return root
    dl = CACHE / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    name = f"{suite.package.replace('-', '_')}-{suite.version}.tar.gz"
    found = [
        p
        for p in dl.glob("*.tar.gz")
        if p.name.lower() in (name.lower(), f"{suite.package}-{suite.version}.tar.gz".lower())
    ]
    if not found:
        log(f"[{suite.name}] downloading the {suite.package}=={suite.version} sdist")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                suite.package,
                "-d",
                str(dl),
                f"{suite.package}=={suite.version}",
            ],
            check=True,
        )
        found = [
            p
            for p in dl.glob("*.tar.gz")
            if p.name.lower().startswith(
                suite.package.replace("-", "_").lower() + "-" + suite.version
            )
            or p.name.lower().startswith(suite.package.lower() + "-" + suite.version)
        ]
    tmp = CACHE / "src" / ".unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(found[0]) as tar:
        tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(
            tmp
        )
    (inner,) = list(tmp.iterdir())
    inner.rename(root)
    tmp.rmdir()
    return root


def venv(suite: Suite, src: Path) -> Path:
    """target/compat/venv-<suite>: the suite's test dependencies and this checkout's ferroloop."""
    spec = [*BASE_DEPS, *suite.deps, *(f"-r{src / r}" for r in suite.requirements)]
    stamp = hashlib.sha1("\n".join(spec).encode()).hexdigest()[:12]
    path = CACHE / f"venv-{suite.name}"
    py = path / "bin" / "python"
    if (path / f".stamp-{stamp}").exists():
        return py
    log(f"[{suite.name}] creating {path}")
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *spec], check=True)
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "ferroloop-checkout.pth").write_text(str(REPO / "python") + "\n")
    (path / f".stamp-{stamp}").touch()
    return py


def rundir(suite: Suite, src: Path) -> Path:
    """Only the tests (and the pytest configuration) of the sdist: its package source stays out,
    so the installed package, or the uvloop shim, is what the tests import."""
    path = CACHE / "run" / suite.name
    if path.is_dir():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel in suite.tests:
        s, d = src / rel, tmp / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(s, d) if s.is_dir() else shutil.copy2(s, d)
    if not any(
        (tmp / n).exists() for n in ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
    ):
        # Without a configuration file of its own pytest would take this checkout's.
        (tmp / "pytest.ini").write_text("[pytest]\n")
    tmp.rename(path)
    return path


def logs_dir(quick: bool) -> Path:
    return CACHE / ("logs-quick" if quick else "logs")


def ipv6_localhost() -> bool:
    try:
        return bool(socket.getaddrinfo("localhost", 0, socket.AF_INET6, socket.SOCK_STREAM))
    except OSError:
        return False


def _default_signals() -> None:
    # Started in the background, this process may ignore SIGINT (and, under nohup, SIGHUP),
    # and so would every process it spawns, as an ignored signal stays ignored across exec:
    # the suites' Ctrl-C tests and uvloop's test_send_signal (SIGHUP to a child) need the
    # default dispositions.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def run_suite(suite: Suite, py: Path, where: Path, src: Path, label: str, paths, extra, args):
    r = suite.runs[label]
    out = logs_dir(args.quick) / f"{suite.name}.{label}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COMPAT_"))}
    path = [str(HERE)]
    if r.shim:
        path.insert(0, str(HERE / "shims"))
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        COMPAT_LOOP=r.loop,
        COMPAT_OUT=str(out),
        COMPAT_UVLOOP_SRC=str(src / "uvloop") if suite.name == "uvloop" else "",
        PYTHONDONTWRITEBYTECODE="1",
        **r.env,
    )
    if suite.ipv6_localhost and not ipv6_localhost():
        drop = env.get("COMPAT_DROP")
        env["COMPAT_DROP"] = f"{drop}|{suite.ipv6_localhost}" if drop else suite.ipv6_localhost
    cmd = [
        str(py),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "compat_plugin",
        f"--rootdir={where}",
        f"--timeout={args.per_test_timeout}",
        "--continue-on-collection-errors",
        *suite.args,
        *r.args,
        *extra,
        *paths,
    ]
    t0 = time.monotonic()
    with open(out.with_suffix(".log"), "w") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=where,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
        try:
            rc = proc.wait(timeout=suite.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = proc.wait()
    return read_run(suite, label, rc, time.monotonic() - t0, args.quick)


def read_run(
    suite: Suite, label: str, rc: int | None, wall: float | None, quick: bool = False
) -> dict:
    """One run's recorded outcomes (COMPAT_OUT); rc None: read an earlier run's log."""
    r = suite.runs[label]
    out = logs_dir(quick) / f"{suite.name}.{label}.jsonl"
    tests, done = [], None
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                break
            (tests.append(rec) if "id" in rec else None)
            done = rec if rec.get("done") else done
    broken = None
    if done is None:
        broken = f"pytest did not finish (exit code {rc}; log {out.with_suffix('.log')})"
    elif not tests:
        broken = f"no test ran (exit code {rc}; log {out.with_suffix('.log')})"
    elif r.loop == "ferroloop" and done["ferroloop_loops"] == 0:
        broken = "no ferroloop loop was created"
    elif rc not in (0, 1, None):
        broken = f"pytest exit code {rc} (log {out.with_suffix('.log')})"
    if wall is None:
        wall = (done or {}).get("seconds", 0)
    log(
        f"[{suite.name}] {label}: {len(tests)} tests in {wall:.0f}s, exit {rc}"
        + (f"; BROKEN: {broken}" if broken else "")
    )
    return {"label": label, "tests": tests, "wall": wall, "broken": broken}


def key_of(suite: Suite, label: str, rec: dict) -> str | None:
    """The id a ferroloop record is tracked under (None: not a ferroloop result)."""
    fam = suite.runs[label].family
    got = fam(rec) if fam else (suite.runs[label].loop, rec["id"])
    return got[1] if got is not None and got[0] == "ferroloop" else None


def summarize(suite: Suite, runs: list[dict], causes: dict) -> dict:
    by_loop: dict[str, dict[str, dict]] = {}
    for res in runs:
        fam = suite.runs[res["label"]].family
        for rec in res["tests"]:
            got = fam(rec) if fam else (suite.runs[res["label"]].loop, rec["id"])
            if got is None:
                continue
            loop, key = got
            by_loop.setdefault(loop, {})[key] = rec
    entry: dict = {"version": suite.version, "note": suite.note, "loops": {}}
    for loop in LOOPS:
        recs = by_loop.get(loop)
        if recs is None:
            continue
        counts = dict.fromkeys(OUTCOMES, 0)
        for rec in recs.values():
            counts[rec["outcome"]] += 1
        entry["loops"][loop] = {k: v for k, v in counts.items() if v or k == "pass"}
        entry["loops"][loop]["total"] = len(recs)
    f = by_loop.get("ferroloop", {})
    f_pass = {k for k, r in f.items() if r["outcome"] == "pass"}
    suite_causes = causes.get(suite.name, {})

    def cause(key: str) -> str:
        if key in suite_causes:  # exact ids first: theirs contain [ ], which fnmatch reads
            return suite_causes[key]
        for pat, why in suite_causes.items():
            if fnmatch.fnmatchcase(key, pat):
                return why
        rec = f.get(key)
        if rec is None:
            return "unexplained: not collected on ferroloop"
        return "unexplained: " + (rec.get("why") or rec["outcome"])

    for ref in ("asyncio", "uvloop"):
        if ref not in by_loop or not f:
            continue
        ref_pass = {k for k, r in by_loop[ref].items() if r["outcome"] == "pass"}
        # A test with no twin on ferroloop's side (neither in the ferroloop nor the uvloop run:
        # e.g. anyio tests parametrized for plain asyncio only) is not comparable.
        alt = set(f) | set(by_loop.get("uvloop", {}))
        lost = sorted(k for k in ref_pass - f_pass if k in alt)
        entry[f"{ref}_pass_ferroloop_not"] = {k: cause(k) for k in lost}
        both = set(by_loop[ref]) & set(f)
        entry[f"common_with_{ref}"] = {
            "tests": len(both),
            ref: len(ref_pass & both),
            "ferroloop": len(f_pass & both),
        }
    # Every test ferroloop does not pass: the CI subset fails on any test outside this list.
    entry["ferroloop_not_pass"] = sorted(k for k, r in f.items() if r["outcome"] != "pass")
    entry["ran_on_ferroloop"] = sum(
        1 for r in f.values() if r["outcome"] == "pass" and r.get("ferroloop_loops")
    )
    entry["wall_seconds"] = {res["label"]: round(res["wall"]) for res in runs}
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="the default")
    mode.add_argument("--update", action="store_true", help=f"rewrite {RESULTS.name}")
    ap.add_argument("--allow-lower", action="store_true")
    ap.add_argument("--suites", help=f"comma-separated, of: {', '.join(SUITES)}")
    ap.add_argument("--quick", action="store_true", help="the CI subset (compares those tests)")
    ap.add_argument("--runs", help="comma-separated run labels (default: all of each suite)")
    ap.add_argument("--per-test-timeout", type=float, default=60)
    ap.add_argument("--prepare", action="store_true", help="download and set up only")
    ap.add_argument(
        "--from-logs", action="store_true", help="summarize the last runs' logs, run nothing"
    )
    ap.add_argument("--markdown", action="store_true", help="print results.json as a table")
    args = ap.parse_args(argv)
    if args.markdown:
        markdown(json.loads(RESULTS.read_text()))
        return 0

    names = args.suites.split(",") if args.suites else (list(QUICK) if args.quick else list(SUITES))
    tracked = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"suites": {}}
    causes = json.loads(CAUSES.read_text()) if CAUSES.exists() else {}
    if args.prepare:
        for name in names:
            suite = SUITES[name]
            src = sdist(suite)
            venv(suite, src)
            rundir(suite, src)
        return 0
    t_all = time.monotonic()
    fresh, problems, regressions = {}, [], []
    for name in names:
        suite = SUITES[name]
        src = sdist(suite)
        py = venv(suite, src)
        where = rundir(suite, src)
        labels = args.runs.split(",") if args.runs else list(suite.runs)
        if args.quick:
            labels = [lb for lb in labels if suite.runs[lb].loop == "ferroloop"]
        paths, extra = QUICK[name] if args.quick else (suite.paths, ())
        if args.from_logs:
            runs = [read_run(suite, lb, None, None, args.quick) for lb in labels]
        else:
            with contextlib.ExitStack() as stack:
                extra = list(extra)
                for svc in suite.services:
                    extra += stack.enter_context(SERVICES[svc](CACHE / "services" / svc))
                runs = [run_suite(suite, py, where, src, lb, paths, extra, args) for lb in labels]
        problems += [f"{name} [{r['label']}]: {r['broken']}" for r in runs if r["broken"]]
        entry = summarize(suite, runs, causes)
        fresh[name] = entry
        old = tracked["suites"].get(name, {})
        if args.quick:
            # The subset: no tracked figure to compare counts with; a tracked ferroloop pass
            # that fails now is the regression.
            if not old:
                problems.append(f"{name}: no tracked results to compare the subset with")
            known = set(old.get("ferroloop_not_pass", []))
            new = [k for k in entry.get("ferroloop_not_pass", []) if k not in known]
            # Once more in a fresh process, as the conformance gate does: a test that passes
            # then is reported as flaky, not as a lost pass.
            ids = [
                rec["id"]
                for res in runs
                for rec in res["tests"]
                if key_of(suite, res["label"], rec) in new
            ]
            if ids and len(ids) <= 20:
                log(f"[{name}] rerunning {len(ids)} tests that failed")
                again = run_suite(suite, py, where, src, runs[0]["label"], ids, [], args)
                passed = {rec["id"] for rec in again["tests"] if rec["outcome"] == "pass"}
                flaky = [i for i in ids if i in passed]
                if flaky:
                    log(f"[{name}] flaky (passed when rerun): {', '.join(flaky)}")
                fixed = {
                    key_of(suite, again["label"], rec)
                    for rec in again["tests"]
                    if rec["id"] in passed
                }
                new = [k for k in new if k not in fixed]
            for k in new:
                regressions.append(f"{name}: {k} passed on ferroloop, does not now")
            continue
        for loop in ("ferroloop",):
            now = entry["loops"].get(loop, {}).get("pass")
            was = old.get("loops", {}).get(loop, {}).get("pass")
            if now is not None and was is not None and now < was:
                regressions.append(f"{name}: ferroloop passes {now} < tracked {was}")
    table(fresh)
    log(f"\nwall time {time.monotonic() - t_all:.0f}s; logs in {CACHE / 'logs'}")
    unexplained = [
        f"{n}: {k}"
        for n, e in fresh.items()
        for ref in ("asyncio", "uvloop")
        for k, why in e.get(f"{ref}_pass_ferroloop_not", {}).items()
        if why.startswith("unexplained") and ref == "asyncio"
    ]
    if unexplained:
        log(
            "\npass on asyncio, not on ferroloop, no cause in causes.json:\n  "
            + "\n  ".join(unexplained)
        )
    if problems:
        log("\nFAIL: runs that did not complete:\n  " + "\n  ".join(problems))
        return 2
    if regressions and not (args.update and args.allow_lower):
        log("\nFAIL: ferroloop lost tracked passes:\n  " + "\n  ".join(regressions))
        return 1
    if args.update and not args.quick:
        out = {
            "note": "written by compat.py --update; --check fails below loops.ferroloop.pass",
            "python": sys.version.split()[0],
            "suites": {**tracked["suites"], **fresh},
        }
        RESULTS.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        log(f"\nwrote {RESULTS}")
    log("\nOK: no suite lost ferroloop passes")
    return 0


def markdown(tracked: dict) -> None:
    """The tracked figures as the README's table."""
    print("| suite | asyncio | uvloop | ferroloop | pass on asyncio, not on ferroloop | run time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, e in tracked["suites"].items():
        lp = e["loops"]
        cells = [f"{lp[lo]['pass']} / {lp[lo]['total']}" if lo in lp else "-" for lo in LOOPS]
        lost = len(e.get("asyncio_pass_ferroloop_not", {}))
        wall = sum(e.get("wall_seconds", {}).values())
        print(f"| {name} {e['version']} | {' | '.join(cells)} | {lost} | {wall / 60:.0f} min |")


def table(fresh: dict) -> None:
    log(
        f"\n{'suite':<10}{'tests':>7}{'asyncio':>9}{'uvloop':>8}{'ferro':>7}"
        f"{'a-pass/f-not':>14}{'u-pass/f-not':>14}"
    )
    for name, e in fresh.items():
        lp = e["loops"]
        total = max((v["total"] for v in lp.values()), default=0)
        cells = [str(lp[lo]["pass"]) if lo in lp else "-" for lo in LOOPS]
        a = e.get("asyncio_pass_ferroloop_not")
        u = e.get("uvloop_pass_ferroloop_not")
        log(
            f"{name:<10}{total:>7}{cells[0]:>9}{cells[1]:>8}{cells[2]:>7}"
            f"{'-' if a is None else len(a):>14}{'-' if u is None else len(u):>14}"
        )


if __name__ == "__main__":
    sys.exit(main())
