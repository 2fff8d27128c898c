"""`python -m ferroloop`: a program runs on ferroloop exactly as `python program.py` runs it.

Each program runs twice in a child process, once as `python -m ferroloop ...` and once as
plain `python ...` on asyncio, and the two must agree (output, exit status, traceback)
except for the loop's class. ferroloop-only: asyncio has no such command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(60)]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FERROLOOP = [sys.executable, "-m", "ferroloop"]
# stderr is compared exactly: without asyncio's debug mode (the suite's second run), whose
# slow-callback lines depend on the machine's load.
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}


@pytest.fixture(autouse=True)
def _ferroloop(ferroloop_module):
    return ferroloop_module


def run(args, *, cwd=None, ferroloop=True, env=None, input=None):
    cmd = [*(FERROLOOP if ferroloop else [sys.executable]), *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
        env={**BASE_ENV, **(env or {})},
        input=input,
    )


def both(args, **kw):
    """(ferroloop's run, python's run) of the same command line."""
    return run(args, **kw), run(args, ferroloop=False, **kw)


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# Prints what a program sees of how it was started, and the loop it gets.
REPORT = textwrap.dedent(
    """
    import asyncio, json, sys

    async def main():
        return type(asyncio.get_running_loop()).__name__

    def report(**extra):
        print(json.dumps(dict(
            argv=sys.argv,
            name=__name__,
            file=globals().get("__file__"),
            path0=sys.path[0],
            spec=getattr(__spec__, "name", None),
            main_is_me=sys.modules["__main__"].__dict__ is globals(),
            names=sorted(globals()),
            builtins=type(__builtins__).__name__,
            loader=type(__loader__).__name__,
            run_loop=asyncio.run(main()),
            **extra,
        )))
    """
)

LOOPS = {"ferroloop": "Loop", "asyncio": "_UnixSelectorEventLoop"}


def reports(proc_ferroloop, proc_python):
    assert proc_ferroloop.returncode == proc_python.returncode == 0, (
        proc_ferroloop.stderr + proc_python.stderr
    )
    assert proc_ferroloop.stderr == proc_python.stderr
    got, expected = json.loads(proc_ferroloop.stdout), json.loads(proc_python.stdout)
    assert (got.pop("run_loop"), expected.pop("run_loop")) == (LOOPS["ferroloop"], LOOPS["asyncio"])
    return got, expected


def test_tutorial_runs_unmodified():
    # --loop asyncio: the tutorial's ferroloop block is skipped, the program is asyncio's own.
    args = [str(EXAMPLES / "tutorial.py"), "--loop", "asyncio"]
    got, expected = both(args)
    assert got.returncode == expected.returncode == 0, got.stderr
    assert got.stderr == expected.stderr  # 3.12+: the same get_event_loop() warning
    assert got.stdout.splitlines()[0] == "loop: ferroloop.Loop"
    assert expected.stdout.splitlines()[0] == "loop: asyncio.unix_events._UnixSelectorEventLoop"
    assert got.stdout.splitlines()[1:] == expected.stdout.splitlines()[1:]
    assert "results: ['Ax2', 'Bx3', 'Cx4']" in got.stdout


def test_script_sees_what_python_gives_it(tmp_path):
    script = write(tmp_path / "prog" / "prog.py", REPORT + "\nreport()\n")
    # A relative path from another directory, and arguments that look like options.
    got, expected = reports(*both(["prog/prog.py", "-m", "x", "--info"], cwd=tmp_path))
    assert got == expected
    assert got["argv"] == ["prog/prog.py", "-m", "x", "--info"]
    assert got["file"] == str(script) and got["path0"] == str(script.parent)
    assert got["name"] == "__main__" and got["main_is_me"]


def test_get_event_loop_and_new_event_loop_are_ferroloops(tmp_path):
    write(
        tmp_path / "loops.py",
        """
        import asyncio, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        for loop in (asyncio.get_event_loop(), asyncio.new_event_loop()):
            print(type(loop).__name__)
            loop.close()
        """,
    )
    got, expected = both(["loops.py"], cwd=tmp_path)
    assert got.stdout.split() == ["Loop", "Loop"], got.stderr
    assert expected.stdout.split() == ["_UnixSelectorEventLoop"] * 2


def test_module_sees_what_python_gives_it(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "tool.py", REPORT + "\nreport(package=__package__)\n")
    got, expected = reports(*both(["-m", "pkg.tool", "a", "-c"], cwd=tmp_path))
    assert got == expected
    assert got["argv"] == [str(tmp_path / "pkg" / "tool.py"), "a", "-c"]
    assert got["path0"] == str(tmp_path) and got["spec"] == "pkg.tool"
    assert got["package"] == "pkg"


def test_missing_module_and_file_are_reported_as_python_does(tmp_path):
    for args in (["-m", "no_such_module_here"], ["no_such_file.py"]):
        got, expected = both(args, cwd=tmp_path)
        assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)
        assert got.returncode in (1, 2) and got.stderr


def test_command_and_stdin(tmp_path):
    code = REPORT + "\nreport()\n"
    got, expected = reports(*both(["-c", code, "arg"], cwd=tmp_path))
    assert got == expected and got["argv"] == ["-c", "arg"] and got["path0"] == ""
    got, expected = reports(*both(["-", "arg"], cwd=tmp_path, input=code))
    assert got == expected and got["argv"] == ["-", "arg"]


@pytest.mark.parametrize(
    "ending",
    ["pass", "sys.exit(3)", "sys.exit('bye')", "raise SystemExit(None)", "sys.exit(256 + 7)"],
)
def test_exit_status_is_pythons(tmp_path, ending):
    write(tmp_path / "ending.py", f"import asyncio, sys\nasyncio.run(asyncio.sleep(0))\n{ending}\n")
    got, expected = both(["ending.py"], cwd=tmp_path)
    assert (got.returncode, got.stdout, got.stderr) == (
        expected.returncode,
        expected.stdout,
        expected.stderr,
    )


def _frames(stderr):
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith("File ")]


def test_uncaught_exception_traceback_has_no_runner_frames(tmp_path):
    write(
        tmp_path / "top.py",
        "import asyncio\nasyncio.run(asyncio.sleep(0))\nraise KeyError('top')\n",
    )
    got, expected = both(["top.py"], cwd=tmp_path)
    # Raised by the program itself: the very same report.
    assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)
    assert got.returncode == 1 and got.stderr.startswith("Traceback")

    write(
        tmp_path / "inner.py",
        """
        import asyncio

        async def main():
            await asyncio.sleep(0)
            raise ValueError("from the loop")

        asyncio.run(main())
        """,
    )
    got, expected = both(["inner.py"], cwd=tmp_path)
    assert got.returncode == expected.returncode == 1
    # The loop's own frames differ; the program's first frame and the error do not.
    assert _frames(got.stderr)[0] == _frames(expected.stderr)[0]
    assert _frames(got.stderr)[0].startswith(f'File "{tmp_path / "inner.py"}"')
    assert got.stderr.splitlines()[-1] == expected.stderr.splitlines()[-1]
    assert not any("ferroloop/_program.py" in f or "runpy" in f for f in _frames(got.stderr))


def test_syntax_error_is_reported_as_python_does(tmp_path):
    write(tmp_path / "bad.py", "x = (\n")
    got, expected = both(["bad.py"], cwd=tmp_path)
    assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)
    assert got.returncode == 1 and "SyntaxError" in got.stderr


def test_module_traceback_is_python_ms(tmp_path):
    write(tmp_path / "failing.py", "raise RuntimeError('in a module')\n")
    got, expected = both(["-m", "failing"], cwd=tmp_path)
    assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)


def test_keyboard_interrupt_exits_as_python_does(tmp_path):
    write(tmp_path / "raise_ki.py", "raise KeyboardInterrupt\n")
    got, expected = both(["raise_ki.py"], cwd=tmp_path)
    assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)
    assert got.returncode == -signal.SIGINT


def _interrupted(script, *, ferroloop):
    cmd = [*(FERROLOOP if ferroloop else [sys.executable]), str(script)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=BASE_ENV
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, out, err


def test_ctrl_c_during_asyncio_run(tmp_path):
    script = write(
        tmp_path / "sleeper.py",
        """
        import asyncio

        async def main():
            print("ready", flush=True)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                print("cancelled", flush=True)
                raise

        asyncio.run(main())
        """,
    )
    code, out, err = _interrupted(script, ferroloop=True)
    ref_code, ref_out, ref_err = _interrupted(script, ferroloop=False)
    assert (code, out) == (ref_code, ref_out)
    assert code == -signal.SIGINT
    assert err.splitlines()[-1] == ref_err.splitlines()[-1] == "KeyboardInterrupt"
    assert _frames(err)[0] == _frames(ref_err)[0]


def test_stats_flag_sets_the_environment_variable(tmp_path):
    write(tmp_path / "env.py", "import os\nprint(os.environ.get('FERROLOOP_STATS'))\n")
    assert run(["--stats", "env.py"], cwd=tmp_path).stdout == "1\n"
    assert run(["env.py"], cwd=tmp_path, env={"FERROLOOP_STATS": ""}).stdout == "\n"


def test_version(ferroloop_module):
    proc = run(["--version"])
    assert proc.returncode == 0 and proc.stderr == ""
    version = ".".join(map(str, sys.version_info[:3]))
    assert proc.stdout == f"ferroloop {ferroloop_module.__version__} (CPython {version})\n"


def test_info():
    proc = run(["--info"], env={"FERROLOOP_POLL_US": "7"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ferroloop ")
    assert any(line.startswith("kernel: Linux ") for line in lines)
    for feature in ("epoll_pwait2 (Linux 5.11+): ", "pidfd_open (Linux 5.3+): "):
        (line,) = [line for line in lines if line.startswith(feature)]
        assert line[len(feature) :].startswith(("yes: ", "no: ")), line
    assert lines[-1] == "poll window: 7 us (FERROLOOP_POLL_US=7)"
    proc = run(["--info"], env={"FERROLOOP_POLL_US": "0"})
    assert proc.stdout.splitlines()[-1] == "poll window: off (FERROLOOP_POLL_US=0)"
    proc = run(["--info"], env={"FERROLOOP_POLL_US": "soon"})
    assert proc.stdout.splitlines()[-1].startswith("poll window: error: FERROLOOP_POLL_US must be")


def test_kernel_features_match_what_python_sees(ferroloop_module):
    from ferroloop import _ferroloop

    features = _ferroloop.kernel_features()
    assert set(features) == {"epoll_pwait2", "pidfd_open"}
    if hasattr(os, "pidfd_open"):
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            works = False
        else:
            works = True
        assert features["pidfd_open"] is works


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "no program to run"), (["--bogus"], "unknown option --bogus"), (["-m"], "-m option")],
)
def test_usage_errors(args, message):
    proc = run(args)
    assert proc.returncode == 2
    assert message in proc.stderr and "usage: python -m ferroloop" in proc.stderr


def test_help():
    proc = run(["--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m ferroloop")


def test_directory_and_zip_with_main(tmp_path):
    app = write(tmp_path / "app" / "__main__.py", REPORT + "\nreport()\n")
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.write(app, "__main__.py")
    for target in ("app", "app.zip"):
        got, expected = reports(*both([target, "x"], cwd=tmp_path))
        assert got == expected
        assert got["argv"] == [target, "x"] and got["path0"] == str(tmp_path / target)
    write(tmp_path / "app" / "__main__.py", "raise KeyError('in a directory')\n")
    got, expected = both(["app"], cwd=tmp_path)
    assert (got.returncode, got.stderr) == (expected.returncode, expected.stderr)


def test_asyncio_repl_runs_on_ferroloop():
    proc = run(["-m", "asyncio"], input="print(type(asyncio.get_running_loop()))\n")
    assert proc.returncode == 0, proc.stderr
    assert "<class 'ferroloop.Loop'>" in proc.stdout + proc.stderr
