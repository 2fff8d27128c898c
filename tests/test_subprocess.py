"""Subprocesses: asyncio.create_subprocess_exec/shell and loop.subprocess_exec on both loops.

Every child is ``sys.executable`` running a short script (or cat/sh); nothing touches the
network, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
import signal
import sys
import time

import pytest
from support import loops, net, proc

PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL
STDOUT = asyncio.subprocess.STDOUT
# From 3.11 on, Process.wait() also waits for the child's pipes to close; 3.10 returns as
# soon as the process has exited.
WAIT_WAITS_FOR_PIPES = sys.version_info >= (3, 11)
# 3.12 and later watch children with a pidfd on the loop: once the loop is closed nobody
# reaps a child until its Process object is collected. 3.10/3.11 reap it from a thread.
REAPED_WITHOUT_LOOP = sys.version_info < (3, 12)

needs_cat = pytest.mark.skipif(shutil.which("cat") is None, reason="no cat")


async def _exec(code: str, *args: str, **kwargs) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*proc.python(code, *args), **kwargs)


async def _wait(process: asyncio.subprocess.Process, timeout: float = 5.0) -> int:
    return await asyncio.wait_for(process.wait(), timeout)


async def _readline(stream: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(stream.readline(), timeout)


async def _until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


# --- data through pipes ----------------------------------------------------------------------


@needs_cat
def test_ten_mib_through_cat(loop, run):
    data = net.payload(10 * net.MiB, seed=7)

    async def main():
        process = await asyncio.create_subprocess_exec(
            shutil.which("cat"), stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        out, err = await process.communicate(data)
        return out, err, process.returncode

    out, err, code = run(main(), timeout=30)
    assert code == 0
    assert err == b""
    assert len(out) == len(data)
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()


def test_fifty_concurrent_subprocesses(loop, run):
    code = "import sys; sys.stdout.write(sys.argv[1] * 3); sys.exit(int(sys.argv[1]) % 7)"

    async def one(i: int):
        process = await _exec(code, str(i), stdout=PIPE)
        out, _ = await process.communicate()
        return out, process.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(50)))

    results = run(main(), timeout=30)
    assert results == [(str(i).encode() * 3, i % 7) for i in range(50)]


def test_stdin_stdout_stderr_pipes(loop, run):
    code = (
        "import sys\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(data.upper())\n"
        "sys.stderr.buffer.write(b'err:' + data)\n"
        "sys.exit(3)\n"
    )

    async def main():
        process = await _exec(code, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert process.returncode is None
        assert isinstance(process.stdin, asyncio.StreamWriter)
        assert isinstance(process.stdout, asyncio.StreamReader)
        assert isinstance(process.stderr, asyncio.StreamReader)
        process.stdin.write(b"hello ")
        await process.stdin.drain()
        process.stdin.write(b"child")
        process.stdin.close()
        out = await process.stdout.read()
        err = await process.stderr.read()
        return out, err, await _wait(process), process.returncode

    assert run(main()) == (b"HELLO CHILD", b"err:hello child", 3, 3)


def test_communicate_when_the_child_does_not_read(loop, run, loop_errors):
    # The child exits without reading: the broken pipe while feeding input is ignored.
    async def main():
        process = await _exec("print('bye')", stdin=PIPE, stdout=PIPE)
        out, err = await process.communicate(b"z" * (4 * net.MiB))
        return out, err, process.returncode

    assert run(main()) == (b"bye\n", None, 0)
    loop.close()
    gc.collect()
    if sys.version_info >= (3, 11):
        assert loop_errors == []
    else:
        # 3.10 leaves the BrokenPipeError in a future nobody retrieves.
        assert [c["message"] for c in loop_errors] in ([], ["Future exception was never retrieved"])
        assert all(type(c["exception"]) is BrokenPipeError for c in loop_errors)


def test_stderr_to_stdout(loop, run):
    code = "import sys, os\nos.write(1, b'out1 '); os.write(2, b'err1 '); os.write(1, b'out2')\n"

    async def main():
        process = await _exec(code, stdout=PIPE, stderr=STDOUT)
        assert process.stderr is None
        return await process.communicate()

    assert run(main()) == (b"out1 err1 out2", None)


def test_devnull(loop, run):
    code = (
        "import sys\n"
        "assert sys.stdin.buffer.read() == b''\n"
        "print('discarded'); print('discarded too', file=sys.stderr)\n"
    )

    async def main():
        process = await _exec(code, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        assert (process.stdin, process.stdout, process.stderr) == (None, None, None)
        result = await process.communicate()
        return result, process.returncode

    assert run(main()) == ((None, None), 0)


def test_file_objects_and_fds(loop, run, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"from a file")
    code = (
        "import sys\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(b'out:' + data)\n"
        "sys.stderr.buffer.write(b'err:' + data)\n"
    )
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"

    async def main():
        with open(source, "rb") as stdin, open(out_path, "wb") as stdout:
            err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                process = await _exec(code, stdin=stdin, stdout=stdout, stderr=err_fd)
                assert (process.stdin, process.stdout, process.stderr) == (None, None, None)
                code_ = await _wait(process)
            finally:
                os.close(err_fd)
        return code_

    assert run(main()) == 0
    assert out_path.read_bytes() == b"out:from a file"
    assert err_path.read_bytes() == b"err:from a file"


def test_shell(loop, run, tmp_path):
    async def main():
        process = await asyncio.create_subprocess_shell(
            "printf 'abc' | tr a-c A-C; echo \" $PWD\"; exit 4", stdout=PIPE, cwd=tmp_path
        )
        out, _ = await process.communicate()
        missing = await asyncio.create_subprocess_shell(
            "exec /nonexistent/ferroloop-missing", stderr=DEVNULL
        )
        return out, process.returncode, await _wait(missing)

    out, code, missing_code = run(main())
    assert out == f"ABC {tmp_path}\n".encode()
    assert code == 4
    assert missing_code == 127  # the shell reports a missing command; no exception


def test_shell_accepts_bytes(loop, run):
    async def main():
        process = await asyncio.create_subprocess_shell(b"echo bytes", stdout=PIPE)
        return await process.communicate()

    assert run(main()) == (b"bytes\n", None)


# --- Popen arguments -------------------------------------------------------------------------


def test_cwd_and_env(loop, run, tmp_path):
    # LC_CTYPE may be set by the child itself (C locale coercion), so it is left out.
    code = "import os; print(os.getcwd()); print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"

    async def main():
        process = await _exec(code, stdout=PIPE, cwd=tmp_path, env={"FERRO_ONLY": "1"})
        out, _ = await process.communicate()
        return out.decode().splitlines()

    cwd, keys = run(main())
    assert cwd == str(tmp_path)
    assert keys == "['FERRO_ONLY']"


def test_pass_fds(loop, run):
    r, w = os.pipe()
    code = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "try:\n"
        "    os.write(fd, b'inherited')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )

    async def main():
        closed = await _exec(code, str(w), stdout=PIPE)
        out, _ = await closed.communicate()
        passed = await _exec(code, str(w), pass_fds=(w,))
        await _wait(passed)
        return out

    try:
        out = run(main())
        os.close(w)
        w = -1
        assert out == b"9\n"  # EBADF: not inherited without pass_fds
        assert os.read(r, 100) == b"inherited"
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


def test_start_new_session(loop, run):
    code = "import os; print(os.getpid(), os.getsid(0), os.getpgid(0))"

    async def main():
        results = []
        for new in (False, True):
            process = await _exec(code, stdout=PIPE, start_new_session=new)
            out, _ = await process.communicate()
            results.append([int(x) for x in out.split()])
        return results

    (pid1, sid1, _), (pid2, sid2, pgid2) = run(main())
    assert sid1 == os.getsid(0) != pid1
    assert sid2 == pgid2 == pid2


@pytest.mark.skipif(sys.version_info < (3, 11), reason="process_group arrived in 3.11")
def test_process_group(loop, run):
    code = "import os; print(os.getpid(), os.getsid(0), os.getpgid(0))"

    async def main():
        process = await _exec(code, stdout=PIPE, process_group=0)
        out, _ = await process.communicate()
        return [int(x) for x in out.split()]

    pid, sid, pgid = run(main())
    assert pgid == pid
    assert sid == os.getsid(0)  # same session, new group


def test_preexec_fn(loop, run):
    code = "import os; print(oct(os.umask(0)))"

    async def main():
        process = await _exec(code, stdout=PIPE, preexec_fn=lambda: os.umask(0o027))
        out, _ = await process.communicate()
        return out

    assert run(main()) == b"0o27\n"


def test_user_and_group(loop, run):
    code = "import os; print(os.getuid(), os.getgid())"

    async def main():
        process = await _exec(code, stdout=PIPE, user=os.getuid(), group=os.getgid())
        out, _ = await process.communicate()
        return out

    assert run(main()) == f"{os.getuid()} {os.getgid()}\n".encode()


def test_missing_executable(loop, run, tmp_path):
    fds = net.open_fds()

    async def main():
        with pytest.raises(FileNotFoundError) as info:
            await asyncio.create_subprocess_exec(
                str(tmp_path / "missing"), stdin=PIPE, stdout=PIPE, stderr=PIPE
            )
        return info.value

    exc = run(main())
    assert exc.filename == str(tmp_path / "missing")
    gc.collect()
    assert net.open_fds() == fds


def test_missing_cwd(loop, run, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await _exec("pass", stdout=PIPE, cwd=tmp_path / "missing")

    run(main())


def test_not_executable(loop, run, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o600)

    async def main():
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(script), stdout=PIPE)

    run(main())  # even for root: execve needs an execute bit


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"universal_newlines": True}, "universal_newlines must be False"),
        ({"shell": True}, "shell must be False"),
        ({"bufsize": 1}, "bufsize must be 0"),
        ({"text": True}, "text must be False"),
        ({"encoding": "utf-8"}, "encoding must be None"),
        ({"errors": "strict"}, "errors must be None"),
    ],
)
def test_exec_argument_errors(loop, run, kwargs, message):
    async def main():
        with pytest.raises(ValueError, match=f"^{message}$"):
            await _exec("pass", **kwargs)

    run(main())


@pytest.mark.parametrize(
    "cmd, kwargs, message",
    [
        (["echo", "x"], {}, "cmd must be a string"),
        ("echo x", {"shell": False}, "shell must be True"),
        ("echo x", {"universal_newlines": True}, "universal_newlines must be False"),
        ("echo x", {"bufsize": 1}, "bufsize must be 0"),
        ("echo x", {"text": True}, "text must be False"),
    ],
)
def test_shell_argument_errors(loop, run, cmd, kwargs, message):
    async def main():
        with pytest.raises(ValueError, match=f"^{message}$"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, cmd, **kwargs)

    run(main())


# --- signals, returncode, wait ---------------------------------------------------------------

_SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(30)"


@pytest.mark.parametrize(
    "method, expected", [("kill", -signal.SIGKILL), ("terminate", -signal.SIGTERM)]
)
def test_kill_and_terminate(loop, run, method, expected):
    async def main():
        process = await _exec(_SLEEPER, stdout=PIPE)
        assert await _readline(process.stdout) == b"ready\n"
        assert process.returncode is None
        getattr(process, method)()
        return await _wait(process), process.returncode, process.pid

    code, returncode, pid = run(main())
    assert code == returncode == expected
    assert proc.process_state(pid) is None  # reaped


def test_send_signal(loop, run):
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', flush=True), sys.exit(5)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )

    async def main():
        process = await _exec(code, stdout=PIPE)
        assert await _readline(process.stdout) == b"ready\n"
        process.send_signal(signal.SIGUSR1)
        line = await _readline(process.stdout)
        return line, await _wait(process)

    assert run(main()) == (b"usr1\n", 5)


def test_signals_after_the_process_finished(loop, run):
    async def main():
        process = await _exec("pass")
        assert await _wait(process) == 0
        # Once wait() has returned, the transport has let go of the process.
        for send in (process.kill, process.terminate, lambda: process.send_signal(signal.SIGUSR1)):
            with pytest.raises(ProcessLookupError):
                send()
        return process.returncode

    assert run(main()) == 0


def test_wait_is_repeatable_and_shared(loop, run):
    async def main():
        process = await _exec("import sys; sys.stdin.read(); sys.exit(9)", stdin=PIPE)
        waiters = [asyncio.ensure_future(process.wait()) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiters)
        process.stdin.close()
        codes = await asyncio.wait_for(asyncio.gather(*waiters), 5)
        return codes, await process.wait(), await process.wait()

    codes, again, third = run(main())
    assert codes == [9] * 5
    assert again == third == 9


def test_pid_and_transport(loop, run):
    async def main():
        # loop.subprocess_exec defaults to pipes for all three (create_subprocess_exec
        # defaults to inheriting them).
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, *proc.python("import os; print(os.getpid())")
        )
        piped = [transport.get_pipe_transport(fd) is not None for fd in (0, 1, 2)]
        transport.close()
        transport, protocol = await loop.subprocess_exec(
            lambda: RecordingSubprocess(loop),
            *proc.python("import os; print(os.getpid())"),
            stdin=DEVNULL,
            stderr=None,
        )
        pid = transport.get_pid()
        assert transport.get_pipe_transport(0) is None
        assert transport.get_pipe_transport(2) is None
        assert transport.get_pipe_transport(1) is not None
        await asyncio.wait_for(protocol.lost, 5)
        code = transport.get_returncode()
        transport.close()
        return piped, pid, code, bytes(protocol.data[1])

    piped, pid, code, out = run(main())
    assert piped == [True, True, True]
    assert code == 0
    assert out == f"{pid}\n".encode()
    assert proc.process_state(pid) is None


class RecordingSubprocess(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.events: list = []
        self.data: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        if self.events[-1] != ("data", fd):
            self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


def test_subprocess_protocol_callbacks(loop, run):
    code = "import os; os.write(1, b'out'); os.write(2, b'err')"

    async def main():
        transport, protocol = await loop.subprocess_exec(
            lambda: RecordingSubprocess(loop),
            *proc.python(code),
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
        )
        transport.get_pipe_transport(0).close()
        await asyncio.wait_for(protocol.lost, 5)
        code_ = transport.get_returncode()
        transport.close()
        return protocol, code_

    protocol, code = run(main())
    assert code == 0
    assert protocol.data == {1: bytearray(b"out"), 2: bytearray(b"err")}
    events = protocol.events
    assert events[0] == "made"
    assert events[-1] == ("lost", None)
    # Every pipe is reported lost, and connection_lost comes after the exit and all pipes.
    assert sorted(e for e in events if isinstance(e, tuple) and e[0] == "pipe_lost") == [
        ("pipe_lost", 0, None),
        ("pipe_lost", 1, None),
        ("pipe_lost", 2, None),
    ]
    assert events.count("exited") == 1
    assert events.index(("pipe_lost", 1, None)) < events.index(("lost", None))
    assert events.index("exited") < events.index(("lost", None))


def test_transport_close_kills_a_running_child(loop, run):
    async def main():
        transport, protocol = await loop.subprocess_exec(
            lambda: RecordingSubprocess(loop), *proc.python(_SLEEPER), stdout=PIPE
        )
        await _until(lambda: bytes(protocol.data[1]) == b"ready\n", what="ready")
        pid = transport.get_pid()
        transport.close()
        await asyncio.wait_for(protocol.lost, 5)
        return pid, transport.get_returncode(), protocol.events

    pid, code, events = run(main())
    assert code == -signal.SIGKILL
    assert "exited" in events
    assert proc.process_state(pid) is None


# --- pipes and exit in either order ----------------------------------------------------------


def test_child_exits_before_its_pipes_close(loop, run):
    # The child leaves a grandchild holding its stdout; the grandchild writes and exits
    # only when released through a pipe of ours.
    release_r, release_w = os.pipe()
    code = (
        "import os, subprocess, sys\n"
        "fd = sys.argv[1]\n"
        "grandchild = ('import os, sys; os.read(int(sys.argv[1]), 1); '\n"
        "              'os.write(1, b\" late\")')\n"
        "subprocess.Popen([sys.executable, '-I', '-c', grandchild, fd], pass_fds=(int(fd),))\n"
        "os.write(1, b'early')\n"
    )

    async def main():
        process = await _exec(code, str(release_r), stdout=PIPE, pass_fds=(release_r,))
        os.close(release_r)
        waiter = asyncio.ensure_future(process.wait())
        await _until(lambda: process.returncode is not None, what="the child's exit")
        await asyncio.sleep(0.1)
        done_before_release = waiter.done()
        assert process.returncode == 0
        os.write(release_w, b"x")
        out = await asyncio.wait_for(process.stdout.read(), 5)
        return done_before_release, await asyncio.wait_for(waiter, 5), out

    try:
        done_before_release, code_, out = run(main())
    finally:
        os.close(release_w)
    # returncode is set at the exit either way; wait() on 3.11+ also waits for the pipes.
    assert done_before_release is (not WAIT_WAITS_FOR_PIPES)
    assert code_ == 0
    assert out == b"early late"


def test_child_closes_its_pipes_before_it_exits(loop, run):
    code = (
        "import os, sys\n"
        "os.write(1, b'bye'); os.write(2, b'bye')\n"
        "os.close(1); os.close(2)\n"
        "sys.stdin.buffer.read()\n"  # exits at EOF on stdin
    )

    async def main():
        process = await _exec(code, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out = await asyncio.wait_for(process.stdout.read(), 5)
        err = await asyncio.wait_for(process.stderr.read(), 5)
        waiter = asyncio.ensure_future(process.wait())
        await asyncio.sleep(0.05)
        running = process.returncode is None and not waiter.done()
        process.stdin.close()
        return out, err, running, await asyncio.wait_for(waiter, 5)

    assert run(main()) == (b"bye", b"bye", True, 0)


def test_wait_for_cancels_communicate(loop, run):
    async def main():
        process = await _exec(_SLEEPER, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(process.communicate(b"input"), 0.2)
        # Cancelling communicate() leaves the process running; it is cleaned up by hand.
        assert process.returncode is None
        assert proc.process_state(process.pid) not in (None, "Z")
        process.kill()
        return process.pid, await _wait(process)

    fds = net.open_fds()
    pid, code = run(main())
    assert code == -signal.SIGKILL
    assert proc.process_state(pid) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    gc.collect()
    assert net.open_fds() == fds


def test_subprocesses_leak_no_fds(loop, run):
    async def once():
        process = await _exec(
            "import sys; sys.stdout.write(sys.stdin.read())", stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        return await process.communicate(b"echo")

    assert run(once()) == (b"echo", b"")
    gc.collect()
    fds = net.open_fds()
    for _ in range(10):
        run(once())
    gc.collect()
    assert net.open_fds() == fds


# --- zombies ---------------------------------------------------------------------------------


def test_no_zombie_after_wait(loop, run):
    async def main():
        processes = [await _exec("pass") for _ in range(5)]
        for p in processes:
            await _wait(p)
        return [p.pid for p in processes]

    for pid in run(main()):
        assert proc.process_state(pid) is None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_child_reaped_after_the_loop_is_closed(loop, loop_kind):
    release_r, release_w = os.pipe()

    async def main():
        return await _exec(
            "import os, sys; os.read(int(sys.argv[1]), 1)", str(release_r), pass_fds=(release_r,)
        )

    try:
        process = loops.run(loop, main())
        pid = process.pid
        loop.close()  # with the child still running
        if loop_kind == "asyncio":
            # asyncio's close() leaves the child running. (A loop that kills and reaps its
            # children at close leaves no zombie either, which is all this test demands.)
            assert proc.process_state(pid) not in (None, "Z")
        os.write(release_w, b"x")
        state = proc.wait_state(pid, lambda s: s in (None, "Z"))
        assert state in (None, "Z"), f"the child did not exit: {state}"
        if REAPED_WITHOUT_LOOP:
            # asyncio's watcher thread reaps it at once, loop or no loop.
            assert proc.wait_state(pid, lambda s: s is None) is None
        elif loop_kind == "asyncio":
            # The pidfd watcher went with the loop: a zombie until the Process is collected.
            # (ferroloop may do better here, not worse.)
            time.sleep(0.05)
            assert proc.process_state(pid) == "Z"
        del process
        gc.collect()
        assert proc.wait_state(pid, lambda s: s is None) is None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        os.close(release_r)
        os.close(release_w)
