"""What a running loop can tell about itself: ``loop.stats()``, the slow-callback
handler with its optional watchdog, and the ``FERROLOOP_STATS=1`` exit summary.

The counters are native (``LoopCore._stats_raw``) and cost a few plain integer
adds per callback; this module only shapes them. See ``docs/observability.md``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import traceback
import weakref
from asyncio import format_helpers
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _ferroloop

#: Upper bounds, in microseconds, of the lag histograms' buckets: bucket 0 is
#: under 1 µs, bucket ``i`` is ``[2**(i-1), 2**i)`` µs, and the last bucket
#: (bound ``None``) holds everything from ``2**24`` µs (about 16.8 s) up.
BUCKET_BOUNDS_US: tuple[int | None, ...] = tuple(_ferroloop.LoopCore._stats_bucket_bounds_us())

#: One ready-queue enqueue in this many is timed for ``queue_wait``.
QUEUE_WAIT_SAMPLE_EVERY: int = _ferroloop.LoopCore._stats_sample_every()


class LagHistogram(NamedTuple):
    """Durations in seconds: the last, the largest, how many (``samples``),
    their sum, and counts per bucket (bounds in :data:`BUCKET_BOUNDS_US`)."""

    last: float
    max: float
    samples: int
    total: float
    buckets: tuple[int, ...]

    @property
    def mean(self) -> float:
        """The mean duration, 0.0 when none was recorded."""
        return self.total / self.samples if self.samples else 0.0


class LoopStats(NamedTuple):
    """A snapshot of a loop's counters, from :meth:`ferroloop.Loop.stats`: a named
    tuple (attribute access, ``_asdict()``, in which the two histograms stay
    :class:`LagHistogram` named tuples).

    Counts are totals since the loop was created; ``ready``, ``readers``,
    ``writers``, ``transports`` and ``servers`` are the values now. Times are
    seconds.
    """

    #: Loop iterations (one poll for I/O and one run phase each).
    iterations: int
    #: Callbacks and task steps run.
    callbacks: int
    #: Callbacks in the ready queue now, and the most at the start of a run phase.
    ready: int
    ready_max: int
    #: ``call_later``/``call_at`` timers scheduled, cancelled and fired.
    timers_scheduled: int
    timers_cancelled: int
    timers_fired: int
    #: fds with a reader, fds with a writer (transports' and sock_* waits included).
    readers: int
    writers: int
    #: Socket transports (TCP, Unix, UDP) not yet collected.
    transports: int
    #: Listening sockets being served (a server on IPv4 and IPv6 counts two).
    servers: int
    #: Bytes and messages (data_received, buffer_updated, datagram_received
    #: calls; sock_recv/sock_recv_into results) received, and given to
    #: write()/writelines()/sendto() and sock_sendall.
    bytes_read: int
    messages_read: int
    bytes_written: int
    messages_written: int
    #: Time inside run_forever; of it, busy (running callbacks and the loop's
    #: own work), blocked in epoll (and how many such waits), polling before
    #: blocking, and polls that found events, found nothing, or were cut
    #: short by a timer.
    run_time: float
    busy_time: float
    blocked_time: float
    blocked_waits: int
    poll_time: float
    poll_hits: int
    poll_misses: int
    poll_timeouts: int
    #: How late timers were queued after their deadline: one sample per batch
    #: of timers found due together, the earliest (so the latest) of them.
    timer_lag: LagHistogram
    #: How long callbacks waited in the ready queue (one enqueue in
    #: :data:`QUEUE_WAIT_SAMPLE_EVERY` is timed).
    queue_wait: LagHistogram
    #: Seconds since the loop was created.
    uptime: float


class SlowCallback(NamedTuple):
    """What :meth:`ferroloop.Loop.set_slow_callback_handler`'s handler receives."""

    #: One line: what ran and for how long.
    description: str
    #: How long the callback or task step ran, in seconds.
    duration: float
    #: The callback's qualified name (for a task step, the coroutine's).
    callback: str
    #: ``file:line`` of the callback's definition, or for a task step of where
    #: its coroutine is suspended (where it started, once it has finished).
    location: str | None
    #: The task a task step belongs to, and its name.
    task: asyncio.Task[Any] | None
    task_name: str | None
    #: The loop thread's stack, captured by the watchdog while the step was
    #: still running past ``stuck_threshold``; ``None`` otherwise.
    stack: str | None


def _coro_location(coro: Any) -> str | None:
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    return None


def _describe(handle: Any, duration: float, stack: str | None) -> SlowCallback:
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    task = owner if isinstance(owner, asyncio.Task) else None
    if task is not None:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        where = _coro_location(coro)
        what = f"Task {task.get_name()!r} step of {name}()"
    else:
        name = getattr(callback, "__qualname__", None) or repr(callback)
        source = format_helpers._get_function_source(callback) if callback is not None else None
        where = f"{source[0]}:{source[1]}" if source else None
        what = f"Callback {name}()"
    if where:
        what += f" at {where}"
    return SlowCallback(
        description=f"{what} took {duration:.3f} seconds",
        duration=duration,
        callback=name,
        location=where,
        task=task,
        task_name=task.get_name() if task is not None else None,
        stack=stack,
    )


class _Watchdog:
    """One thread per loop that, while a step runs past ``stuck``, captures the
    loop thread's Python stack. It sleeps until the running step would cross the
    threshold (or half of it when the loop is idle), and ends when the loop
    closes, is collected, or the handler is removed."""

    def __init__(self, loop: Any, stuck: float) -> None:
        self._loop = weakref.ref(loop)
        self._stuck = stuck
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._captured: tuple[int, str] | None = None
        self._thread = threading.Thread(target=self._run, name="ferroloop-watchdog", daemon=True)
        self._thread.start()

    def take(self, seq: int) -> str | None:
        """The stack captured during step ``seq``, if any."""
        with self._lock:
            captured, self._captured = self._captured, None
        if captured is not None and captured[0] == seq:
            return captured[1]
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        done_seq = -1
        while not self._stop.is_set():
            loop = self._loop()
            if loop is None or loop.is_closed():
                return
            wait = self._stuck / 2
            step = loop._step_in_progress()
            thread_id = loop._thread_id
            del loop
            if step is not None and thread_id is not None:
                seq, ran = step
                if ran < self._stuck:
                    wait = self._stuck - ran
                elif seq != done_seq:
                    done_seq = seq
                    frame = sys._current_frames().get(thread_id)
                    if frame is not None:
                        stack = "".join(traceback.format_stack(frame))
                        with self._lock:
                            self._captured = (seq, stack)
                        del frame
            self._stop.wait(max(wait, 0.001))


SlowCallbackHandler = Callable[[SlowCallback], object]

# Loops to summarise at exit under FERROLOOP_STATS=1.
_summarised: weakref.WeakSet[Any] = weakref.WeakSet()


def _stats_enabled() -> bool:
    return os.environ.get("FERROLOOP_STATS", "").strip() not in ("", "0")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def format_summary(stats: LoopStats, label: str = "ferroloop") -> str:
    """A few readable lines about ``stats``, as ``FERROLOOP_STATS=1`` prints."""
    s = stats
    return "\n".join(
        [
            f"{label}: {s.uptime:.2f} s, {s.iterations:,} iterations, {s.callbacks:,} callbacks "
            f"(ready queue max {s.ready_max:,})",
            f"  time: running {s.run_time:.3f} s: busy {s.busy_time:.3f} s, "
            f"blocked in epoll {s.blocked_time:.3f} s "
            f"({s.blocked_waits:,} waits), polling {s.poll_time:.3f} s "
            f"({s.poll_hits:,} hits, {s.poll_misses:,} misses)",
            f"  timers: {s.timers_scheduled:,} scheduled, {s.timers_cancelled:,} cancelled, "
            f"{s.timers_fired:,} fired; late by max {_ms(s.timer_lag.max)}, "
            f"mean {_ms(s.timer_lag.mean)}",
            f"  ready-queue wait (1 in {QUEUE_WAIT_SAMPLE_EVERY} sampled): "
            f"max {_ms(s.queue_wait.max)}, mean {_ms(s.queue_wait.mean)}",
            f"  io: read {_size(s.bytes_read)} in {s.messages_read:,} messages, wrote "
            f"{_size(s.bytes_written)} in {s.messages_written:,} messages",
        ]
    )


def _print_summary(loop: Any) -> None:
    try:
        text = format_summary(loop.stats(), f"ferroloop stats (loop at {id(loop):#x})")
        print(text, file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - a summary must never break shutdown
        pass


@atexit.register
def _summarise_open_loops() -> None:
    for loop in list(_summarised):
        if not loop.is_closed():
            _print_summary(loop)


class ObservabilityAPI:
    """Mixin for ``ferroloop.Loop``: stats, slow-callback reports, exit summary."""

    _slow_handler: SlowCallbackHandler | None
    _slow_threshold: float | None
    _watchdog: _Watchdog | None
    _servers_alive: int
    _transports: Any

    def _init_observe(self) -> None:
        self._slow_handler = None
        self._slow_threshold = None
        self._watchdog = None
        self._servers_alive = 0
        if _stats_enabled():
            _summarised.add(self)

    def _close_observe(self) -> None:
        if self in _summarised:
            _summarised.discard(self)
            _print_summary(self)
        self._stop_watchdog()

    def stats(self) -> LoopStats:
        """A snapshot of the loop's counters (see :class:`ferroloop.LoopStats`)."""
        raw = self._stats_raw()  # type: ignore[attr-defined]
        raw["transports"] = len(self._transports)
        raw["servers"] = self._servers_alive
        for name in ("timer_lag", "queue_wait"):
            raw[name] = _histogram(raw[name])
        return LoopStats(**{name: raw[name] for name in LoopStats._fields})

    def set_slow_callback_handler(
        self,
        handler: SlowCallbackHandler | None,
        threshold: float | None = None,
        *,
        stuck_threshold: float | None = None,
    ) -> None:
        """Call ``handler(info)`` after every callback or task step that ran
        ``threshold`` seconds or more (default: ``loop.slow_callback_duration``),
        in or out of debug mode; ``None`` removes it. With ``stuck_threshold``
        (at least ``threshold``), a watchdog thread captures the loop thread's
        stack while a step is still running past it, and ``info.stack`` carries
        it. Exceptions from the handler go to the loop's exception handler."""
        if handler is not None and not callable(handler):
            raise TypeError(
                f"a slow-callback handler must be callable or None, not {type(handler).__name__}"
            )
        if handler is None:
            self._stop_watchdog()
            self._set_slow_threshold(None)  # type: ignore[attr-defined]
            self._slow_handler = None
            self._slow_threshold = None
            return
        if threshold is None:
            threshold = float(self.slow_callback_duration)  # type: ignore[attr-defined]
        threshold = _seconds(threshold, "threshold")
        if stuck_threshold is not None:
            stuck_threshold = _seconds(stuck_threshold, "stuck_threshold")
            if stuck_threshold < threshold or stuck_threshold <= 0:
                raise ValueError("stuck_threshold must be positive and at least threshold")
        self._set_slow_threshold(threshold)  # type: ignore[attr-defined]
        self._slow_handler = handler
        self._slow_threshold = threshold
        self._stop_watchdog()
        if stuck_threshold is not None:
            self._watchdog = _Watchdog(self, stuck_threshold)

    def get_slow_callback_handler(self) -> SlowCallbackHandler | None:
        """The handler :meth:`set_slow_callback_handler` set, or ``None``."""
        return self._slow_handler

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()

    def _report_slow_callback(self, handle: Any, duration: float, seq: int) -> None:
        handler = self._slow_handler
        if handler is None:
            return
        watchdog = self._watchdog
        stack = watchdog.take(seq) if watchdog is not None else None
        try:
            handler(_describe(handle, duration, stack))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.call_exception_handler(  # type: ignore[attr-defined]
                {
                    "message": "Exception in the slow-callback handler",
                    "exception": exc,
                    "handler": handler,
                }
            )

    def _start_serving(self, *args: Any, **kwargs: Any) -> None:
        super()._start_serving(*args, **kwargs)  # type: ignore[misc]
        self._servers_alive += 1

    def _stop_serving(self, sock: Any) -> None:
        super()._stop_serving(sock)  # type: ignore[misc]
        self._servers_alive = max(0, self._servers_alive - 1)


def _histogram(raw: dict[str, Any]) -> LagHistogram:
    return LagHistogram(
        last=raw["last"],
        max=raw["max"],
        samples=raw["count"],
        total=raw["total"],
        buckets=tuple(raw["buckets"]),
    )


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds, 0 or more")
    return seconds
