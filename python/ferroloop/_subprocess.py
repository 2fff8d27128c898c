"""Pipes and subprocesses for ``ferroloop.Loop``.

``connect_read_pipe``, ``connect_write_pipe``, ``subprocess_exec`` and
``subprocess_shell`` are ``BaseEventLoop``'s own methods; they call the
factories here. A subprocess transport is asyncio's own
``_UnixSubprocessTransport`` (``Popen`` with every argument asyncio accepts,
pipes connected through the loop's native pipe transports).

Child exit is watched by the loop itself, not by asyncio's child watchers
(deprecated since 3.12, gone in 3.14), with no thread and no SIGCHLD handler:

- a pidfd (``os.pidfd_open``, Linux >= 5.3) registered as a reader: it becomes
  readable when the child exits, then ``waitpid`` collects exactly that child;
- where pidfds are unavailable (older kernels, seccomp), the loop polls the
  child with ``waitpid(pid, WNOHANG)`` on a timer that backs off from 1 ms to
  100 ms. Only the loop's own children are ever waited for, so no other code's
  children are stolen and no signal races are possible.

Closing the loop while children still run kills them and reaps them, so no
zombie outlives the loop (asyncio would kill them later, when the unclosed
transport is garbage collected, and leave a zombie until the next ``Popen``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from asyncio import unix_events
from asyncio.log import logger
from typing import Any

from ._pipes import ReadPipeTransport, WritePipeTransport

# 3.10 and 3.11 deliver the exit one iteration later than 3.12+ (their child
# watcher callback goes through call_soon_threadsafe(call_soon, ...)).
_EXTRA_HOP = sys.version_info < (3, 12)
_POLL_FIRST = 0.001
_POLL_MAX = 0.1
# How long close() waits for a killed child to be reaped.
_REAP_TIMEOUT = 5.0


def _returncode(status: int) -> int:
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        # Not a status waitpid reports for an exited child; asyncio passes it on.
        return status


class SubprocessAPI:
    """Mixin for ``ferroloop.Loop``: pipe transports and child processes."""

    # pid -> (pidfd or None, transport, poll timer or None)
    _children: dict[int, Any]

    def _init_subprocess(self) -> None:
        self._children = {}

    def _make_read_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> ReadPipeTransport:
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> WritePipeTransport:
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: Any,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: Any,
        extra: Any = None,
        **kwargs: Any,
    ) -> Any:
        waiter = self.create_future()  # type: ignore[attr-defined]
        transp = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        self._watch_child(transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _watch_child(self, transp: Any) -> None:
        pid = transp.get_pid()
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is None:
            self._children[pid] = (None, transp, None)
            self._poll_child(pid, _POLL_FIRST)
            return
        try:
            self._add_reader(pidfd, self._pidfd_ready, pid)  # type: ignore[attr-defined]
        except BaseException:
            os.close(pidfd)
            raise
        self._children[pid] = (pidfd, transp, None)

    def _pidfd_ready(self, pid: int) -> None:
        pidfd, transp, _ = self._children.pop(pid)
        self._remove_reader(pidfd)  # type: ignore[attr-defined]
        os.close(pidfd)
        self._reap(pid, transp, 0)

    def _poll_child(self, pid: int, delay: float) -> None:
        entry = self._children.get(pid)
        if entry is None:
            return
        if self._reap(pid, entry[1], os.WNOHANG):
            del self._children[pid]
            return
        timer = self.call_later(delay, self._poll_child, pid, min(delay * 2, _POLL_MAX))  # type: ignore[attr-defined]
        self._children[pid] = (None, entry[1], timer)

    def _reap(self, pid: int, transp: Any, flags: int) -> bool:
        """Collects the child's status and tells the transport; False if it still runs."""
        try:
            wpid, status = os.waitpid(pid, flags)
        except ChildProcessError:
            # Someone else reaped it: Popen (poll() in transport.close(), a
            # direct wait()) keeps the status; otherwise asyncio's 255.
            proc = transp._proc
            returncode = proc.returncode if proc is not None else None
            if returncode is None:
                returncode = 255
                logger.warning(
                    "child process pid %d exit status already read:  will report returncode 255",
                    pid,
                )
        else:
            if wpid == 0:
                return False
            returncode = _returncode(status)
            if self.get_debug():  # type: ignore[attr-defined]
                logger.debug("process %s exited with returncode %s", pid, returncode)
        if _EXTRA_HOP:
            self.call_soon(self.call_soon, transp._process_exited, returncode)  # type: ignore[attr-defined]
        else:
            self.call_soon(transp._process_exited, returncode)  # type: ignore[attr-defined]
        return True

    def _forget_parent_children(self) -> None:
        """In a forked child: the parent's children are not the child's to wait
        for or kill; close this process's copies of their pidfds."""
        children, self._children = self._children, {}
        for pidfd, _transp, timer in children.values():
            if timer is not None:
                timer.cancel()
            if pidfd is not None:
                os.close(pidfd)

    def _close_subprocess(self) -> None:
        """Stops watching; kills and reaps children that still run."""
        children, self._children = self._children, {}
        for pid, (pidfd, transp, timer) in children.items():
            if timer is not None:
                timer.cancel()
            if pidfd is not None:
                self._remove_reader(pidfd)  # type: ignore[attr-defined]
                os.close(pidfd)
            proc = transp._proc
            if proc is None:
                continue
            if proc.poll() is None:
                if self.get_debug():  # type: ignore[attr-defined]
                    logger.warning(
                        "Loop closed with child process %d running: kill %r", pid, transp
                    )
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(_REAP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    logger.error("child process %d did not exit after SIGKILL", pid)
