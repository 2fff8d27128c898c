"""ferroloop's own choices for pipes and child processes.

ferroloop_only: asyncio watches children through its (deprecated) child watchers and
leaves a child running when its loop closes; ferroloop watches with a pidfd (or a
waitpid timer where pidfds are unavailable) and kills and reaps what still runs at close.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys

import pytest

pytestmark = pytest.mark.ferroloop_only


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def _exit_codes(loop) -> list:
    quick = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(7)")
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    sleeper.send_signal(signal.SIGTERM)
    return [await quick.wait(), await sleeper.wait()]


def test_exit_codes_without_pidfd(loop, run, monkeypatch):
    # Kernels before 5.3 (or a seccomp filter) refuse pidfd_open: the waitpid timer takes over.
    def refused(pid, flags=0):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", refused, raising=False)
    assert run(_exit_codes(loop), timeout=20) == [7, -signal.SIGTERM]


def test_exit_codes_with_pidfd_leave_no_fd(loop, run):
    run(_exit_codes(loop), timeout=20)  # warm-up: lazily opened fds (executor, urandom)
    before = _open_fds()
    assert run(_exit_codes(loop), timeout=20) == [7, -signal.SIGTERM]
    assert _open_fds() == before


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "timer"])
def test_close_kills_and_reaps_running_children(new_loop, monkeypatch, pidfd):
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    loop = new_loop()
    try:

        async def start():
            return await loop.subprocess_exec(
                asyncio.SubprocessProtocol,
                sys.executable,
                "-c",
                "import time; time.sleep(30)",
                stdin=None,
                stdout=None,
                stderr=None,
            )

        transport, _ = loop.run_until_complete(asyncio.wait_for(start(), 10))
        pid = transport.get_pid()
        assert not _gone(pid)
    finally:
        loop.close()
    # No zombie: the child was killed and its status collected by close().
    assert _gone(pid)
    proc = transport.get_extra_info("subprocess")
    assert proc.returncode == -signal.SIGKILL
    transport.close()  # nothing left to kill


def test_abort_after_close_loses_the_connection_once(loop, run):
    # asyncio's write pipe schedules connection_lost again on abort() after close().
    async def main():
        r, w = os.pipe()
        lost = []
        done = loop.create_future()

        class Proto(asyncio.BaseProtocol):
            def connection_lost(self, exc):
                lost.append(exc)
                loop.call_later(0.05, done.set_result, None)

        transport, _ = await loop.connect_write_pipe(Proto, open(w, "wb", 0))
        transport.close()
        transport.abort()
        await done
        os.close(r)
        return lost

    assert run(main()) == [None]
