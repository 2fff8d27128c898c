"""``VirtualClockLoop``: a ferroloop loop whose time moves only when it is idle.

The clock itself is native (``src/loop_core/clock.rs``): the timer heap, the
poll timeout and ``loop.time()`` all read it. This module chooses it for a new
loop, exposes its options, and counts the work outside the loop that *holds*
it: executor jobs, child processes and explicit :meth:`VirtualClockLoop.hold_clock`
blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._loop import Loop

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

_T = TypeVar("_T")

HoldPolicy = Literal["real", "freeze", "ignore"]
_POLICIES: tuple[HoldPolicy, ...] = ("real", "freeze", "ignore")


class ClockHold:
    """A hold on a virtual clock: no jump while it is held (see ``hold_policy``).

    Use it as a context manager, or call :meth:`release` once. Taking and
    releasing it is safe from any thread.
    """

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._lock = threading.Lock()
        self._loop: VirtualClockLoop | None = loop
        loop._vclock_hold()

    def release(self) -> None:
        """Release the hold; a second call (from any thread) does nothing."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop._vclock_release()

    def __enter__(self) -> ClockHold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class _Submission:
    """Passed to ``BaseEventLoop.run_in_executor`` in place of the executor, to
    see the ``concurrent.futures.Future`` it submits."""

    __slots__ = ("executor", "future")

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor
        self.future: concurrent.futures.Future[Any] | None = None

    def submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        future = self.executor.submit(fn, *args)
        self.future = future
        return future


def _release_from_job(loop: VirtualClockLoop, _future: concurrent.futures.Future[Any]) -> None:
    # Runs where the job finished (a worker thread, or here if it was done
    # already). Queued after asyncio's own callback that delivers the result,
    # so the loop sees the result before the hold goes.
    try:
        loop.call_soon_threadsafe(loop._vclock_release)
    except RuntimeError:
        pass  # the loop is closed: its holds no longer matter


class VirtualClockLoop(Loop):
    """A ferroloop loop on a virtual clock, for tests.

    Loop time starts at ``start`` (``0.0`` by default; ``None`` starts at the
    real ``time.monotonic()``) and moves only when the loop is idle: when no
    callback is ready, no fd is ready (a zero-timeout poll, or a wait of
    ``autojump_threshold`` real seconds, found none) and no work outside the
    loop holds the clock, loop time jumps to the earliest timer and that timer
    runs. ``await asyncio.sleep(3600)`` returns at once, with ``loop.time()``
    3600 seconds later; timers keep asyncio's order. With nothing scheduled
    the loop waits for real I/O, as any loop does.

    Executor jobs (``run_in_executor``, ``asyncio.to_thread``, DNS), child
    processes and :meth:`hold_clock` blocks hold the clock while they run;
    ``hold_policy`` says what the clock does meanwhile:

    - ``"real"`` (default): time runs at real speed, so the loop behaves as a
      real one would (a timeout racing a job is decided by real time);
    - ``"freeze"``: time stands still until the work is done: the work takes
      no loop time and always beats a timeout (a job that waits for a timer on
      this loop then never finishes);
    - ``"ignore"``: holds are ignored and the clock jumps anyway.

    With ``autojump=False`` only :meth:`advance` moves time.
    """

    def __init__(
        self,
        *,
        autojump: bool = True,
        start: float | None = 0.0,
        autojump_threshold: float = 0.0,
        hold_policy: HoldPolicy = "real",
    ) -> None:
        super().__init__()
        # pid -> the hold its child process takes until it is reaped.
        self._child_holds: dict[int, ClockHold] = {}
        try:
            self._vclock_enable(time.monotonic() if start is None else float(start))
            self.autojump = autojump
            self.autojump_threshold = autojump_threshold
            self.hold_policy = hold_policy
        except BaseException:
            self.close()
            raise

    @property
    def autojump(self) -> bool:
        """Whether the clock jumps to the next timer when the loop is idle."""
        return self._vclock_options()[0]

    @autojump.setter
    def autojump(self, value: bool) -> None:
        self._vclock_configure(autojump=bool(value))

    @property
    def autojump_threshold(self) -> float:
        """Real seconds the idle loop waits for I/O before it jumps (0: it only
        checks, never waits)."""
        return self._vclock_options()[1]

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._vclock_configure(threshold=float(value))

    @property
    def hold_policy(self) -> HoldPolicy:
        """What the clock does while work outside the loop holds it."""
        return _POLICIES[self._vclock_options()[2]]

    @hold_policy.setter
    def hold_policy(self, value: HoldPolicy) -> None:
        if value not in _POLICIES:
            raise ValueError(
                f"hold_policy must be one of {', '.join(map(repr, _POLICIES))}, got {value!r}"
            )
        self._vclock_configure(policy=_POLICIES.index(value))

    @property
    def holds(self) -> int:
        """Holds pending now (executor jobs, children, ``hold_clock`` blocks)."""
        return self._vclock_options()[3]

    def advance(self, seconds: float) -> float:
        """Move loop time forward by ``seconds`` and return the new time. Timers
        that come due run in the next iteration. Callable from any thread."""
        return self._vclock_advance(float(seconds))

    def hold_clock(self) -> ClockHold:
        """Hold the clock until the returned :class:`ClockHold` is released, e.g.
        while a thread the program started works: ``with loop.hold_clock(): ...``."""
        return ClockHold(self)

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: Unpack[_Ts],
    ) -> asyncio.Future[_T]:
        """As asyncio's; the job holds the clock until it has finished and its
        result has reached the loop."""
        if executor is None:
            # asyncio's own checks, in its order, then the default executor it
            # would create, so the submission below can be watched.
            self._check_closed()
            if self._debug:
                self._check_callback(func, "run_in_executor")  # type: ignore[attr-defined]
            self._check_default_executor()  # type: ignore[attr-defined]
            default: concurrent.futures.Executor | None = self._default_executor
            if default is None:
                default = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = default  # type: ignore[assignment]
            executor = default
        submission = _Submission(executor)
        future = super().run_in_executor(submission, func, *args)  # type: ignore[arg-type]
        job = submission.future
        if job is not None:
            self._vclock_hold()
            job.add_done_callback(functools.partial(_release_from_job, self))
        return future

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """As asyncio's; joining the executor's threads holds the clock, so its
        timeout (300 s in ``asyncio.run`` on 3.12+) is real time."""
        policy = self.hold_policy
        if policy == "ignore":
            self.hold_policy = "real"
        try:
            with self.hold_clock():
                await super().shutdown_default_executor(*args, **kwargs)
        finally:
            if policy == "ignore" and not self.is_closed():
                self.hold_policy = policy

    def _watch_child(self, transp: Any) -> None:
        super()._watch_child(transp)
        pid = transp.get_pid()
        if pid in self._children:
            self._child_holds[pid] = ClockHold(self)

    def _reap(self, pid: int, transp: Any, flags: int) -> bool:
        done = super()._reap(pid, transp, flags)
        if done:
            hold = self._child_holds.pop(pid, None)
            if hold is not None:
                hold.release()
        return done

    def close(self) -> None:
        super().close()
        self._child_holds.clear()


def new_virtual_loop(
    *,
    autojump: bool = True,
    start: float | None = 0.0,
    autojump_threshold: float = 0.0,
    hold_policy: HoldPolicy = "real",
) -> VirtualClockLoop:
    """Return a new :class:`VirtualClockLoop` (a loop factory for
    ``asyncio.Runner``, anyio's ``loop_factory`` and pytest-asyncio)."""
    return VirtualClockLoop(
        autojump=autojump,
        start=start,
        autojump_threshold=autojump_threshold,
        hold_policy=hold_policy,
    )


class VirtualClockPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose new loops are :class:`VirtualClockLoop` s, for
    tools that take a policy (pytest-asyncio before 1.5's loop factory hook)."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._options = options

    def _loop_factory(self) -> VirtualClockLoop:
        return new_virtual_loop(**self._options)
