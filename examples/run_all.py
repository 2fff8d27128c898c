"""Run every example in a subprocess and show its output (``make demo`` calls this).

    python examples/run_all.py                 # each example on ferroloop
    python examples/run_all.py --loop asyncio  # the same programs on stock asyncio
    python examples/run_all.py --compare       # also run on asyncio; outputs must match

Examples run with ``-W error``, so a warning fails them; the one exception is asyncio's own
3.12+ "There is no current event loop" deprecation, which the classic tutorial triggers on
stock asyncio and on ferroloop alike. Each
example prints a ``loop: module.Class`` line; it must name the loop asked for, and it is the
one line ``--compare`` ignores. Exits 1 if any example failed.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = ["tutorial.py", "hello_run.py", "runner.py", "threads.py"]


def run(name, loop):
    """Return (ok, stdout, stderr) of one example run on ``loop``."""
    cmd = [
        sys.executable,
        "-W",
        "error",
        "-W",
        "ignore:There is no current event loop:DeprecationWarning",
        str(HERE / name),
        "--loop",
        loop,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        return False, exc.stdout or "", f"timed out after {exc.timeout} s\n"
    loop_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("loop:")]
    if proc.returncode == 0 and not any(loop in ln for ln in loop_lines):
        return False, proc.stdout, f"ran on the wrong loop (wanted {loop}): {loop_lines}\n"
    return proc.returncode == 0, proc.stdout, proc.stderr


def without_loop_line(text):
    return [ln for ln in text.splitlines() if not ln.startswith("loop:")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["ferroloop", "asyncio"], default="ferroloop")
    parser.add_argument("--compare", action="store_true", help="check output against asyncio")
    args = parser.parse_args()
    failed = []
    for name in EXAMPLES:
        print(f"=== {name} ({args.loop}) ===", flush=True)
        ok, out, err = run(name, args.loop)
        sys.stdout.write(out + err)
        if ok and args.compare and args.loop != "asyncio":
            ref_ok, ref_out, ref_err = run(name, "asyncio")
            if not ref_ok or without_loop_line(out) != without_loop_line(ref_out):
                ok = False
                print(f"--- differs from asyncio's output:\n{ref_out}{ref_err}", end="")
        print("ok" if ok else "FAILED", end="\n\n")
        if not ok:
            failed.append(name)
    print(
        f"{len(EXAMPLES) - len(failed)}/{len(EXAMPLES)} examples ok"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
