//! The loop's counters, for `loop.stats()`, the slow-callback handler and the
//! exit summary.
//!
//! Everything here is touched on the loop's thread with the GIL held, so the
//! counters are relaxed atomics updated by a plain load and store (no locked
//! instruction): an increment costs what a `u64 += 1` costs. They are atomics
//! only so that `LoopCore` stays `Sync` for PyO3; nothing relies on them for
//! cross-thread ordering.
//!
//! Clock reads are kept off the per-callback and per-iteration paths: only
//! `run_forever` as a whole is timed, and the time not blocked in epoll nor
//! polling is the loop's busy time; the time blocked reuses the measurement
//! the poll-before-block logic already takes; timer lateness uses the clock
//! reading the loop takes anyway to find due timers; and the time a callback
//! waits in the ready queue is sampled: one enqueue in [`SAMPLE_EVERY`]
//! records which handle it was and when, and only that handle reads the clock
//! when it runs. The record lives here, not in the handle, so that running a
//! handle touches no more of it than before. Per-callback timing happens only
//! while a slow-callback handler is set.
//!
//! The loop counts only through the hooks below. Built with the `no-stats`
//! feature they compile to nothing (and `loop.stats()` reads zeros): that
//! build exists to measure what counting costs, on the same code.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::histogram::{self, Histogram};
use super::LoopCore;
use crate::sys::monotonic_ns;

/// One enqueue in this many is stamped to measure its ready-queue wait.
pub(crate) const SAMPLE_EVERY: u64 = 32;

/// Whether the hooks count: false only in a `no-stats` build.
const COUNTING: bool = !cfg!(feature = "no-stats");

/// A statistic updated only on the loop's thread (see the module docs).
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// Keeps the larger of the current value and `n`.
    #[inline]
    pub(crate) fn raise(&self, n: u64) {
        if n > self.0.load(Ordering::Relaxed) {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a loop counts about itself. See `docs/observability.md` for what
/// each figure means to a user.
pub(crate) struct LoopStats {
    /// What every callback and iteration touches.
    hot: Hot,
    /// When the sampled handle (`Hot::sample_handle`) was queued.
    sample_ns: Counter,
    /// The origin of the nanosecond timestamps below (`CLOCK_MONOTONIC`).
    origin: u64,
    /// `call_later`/`call_at` timers scheduled, cancelled (and dropped from
    /// the heap), and fired (moved to the ready queue).
    pub timers_scheduled: Counter,
    pub timers_cancelled: Counter,
    pub timers_fired: Counter,
    /// Bytes and messages delivered by transports and `sock_recv*`, and
    /// given to transports' writes and `sock_send*`.
    pub bytes_read: Counter,
    pub messages_read: Counter,
    pub bytes_written: Counter,
    pub messages_written: Counter,
    /// Time inside `run_forever` calls that ended, in nanoseconds, and when
    /// the one running now started (0: not running).
    pub run_ns: Counter,
    pub run_started_ns: Counter,
    /// Time in epoll waits that could block, and how many there were.
    pub blocked_ns: Counter,
    pub blocked_waits: Counter,
    /// Time polling before blocking; polls that found events, polls that
    /// found nothing in the window, polls the timeout cut short.
    pub poll_ns: Counter,
    pub poll_hits: Counter,
    pub poll_misses: Counter,
    pub poll_timeouts: Counter,
    /// How late timers were moved to the ready queue, after their deadline:
    /// one sample per batch of timers found due together, the earliest (so
    /// the latest) of them, which keeps the cost per batch, not per timer.
    pub timer_lag: Histogram,
    /// How long sampled handles waited in the ready queue.
    pub queue_wait: Histogram,
    /// Steps timed since a handler was set, and when the current one started
    /// (0: none running), for the watchdog.
    pub step_seq: Counter,
    pub step_start_ns: Counter,
}

/// The counters touched per callback or per iteration, side by side (40
/// bytes: one cache line, at most two), so that counting adds that much to
/// what the loop touches, not a line per counter. Not over-aligned: the
/// loop lives inside a Python object, which guarantees only 16 bytes.
#[derive(Default)]
#[repr(C)]
struct Hot {
    /// Enqueues since the last sampled one.
    sample_tick: Counter,
    /// The address of the sampled handle waiting in the ready queue (0:
    /// none). A later sample replaces it.
    sample_handle: Counter,
    /// Handles run (cancelled ones skipped are not counted).
    callbacks: Counter,
    /// Largest ready-queue depth seen at the start of a run phase.
    max_ready: Counter,
    /// A step longer than this calls `_report_slow_callback`; 0: no handler.
    slow_ns: Counter,
}

impl Default for LoopStats {
    fn default() -> Self {
        LoopStats {
            hot: Hot::default(),
            origin: monotonic_ns(),
            timers_scheduled: Counter::default(),
            timers_cancelled: Counter::default(),
            timers_fired: Counter::default(),
            bytes_read: Counter::default(),
            messages_read: Counter::default(),
            bytes_written: Counter::default(),
            messages_written: Counter::default(),
            run_ns: Counter::default(),
            run_started_ns: Counter::default(),
            blocked_ns: Counter::default(),
            blocked_waits: Counter::default(),
            poll_ns: Counter::default(),
            poll_hits: Counter::default(),
            poll_misses: Counter::default(),
            poll_timeouts: Counter::default(),
            timer_lag: Histogram::default(),
            queue_wait: Histogram::default(),
            sample_ns: Counter::default(),
            step_seq: Counter::default(),
            step_start_ns: Counter::default(),
        }
    }
}

impl LoopStats {
    /// The slow-callback threshold in nanoseconds; 0: no handler.
    #[inline]
    pub(crate) fn slow_ns(&self) -> u64 {
        self.hot.slow_ns.get()
    }

    /// Nanoseconds since the loop was created; never 0.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.origin).saturating_add(1)
    }

    /// A handle at `address` is being queued: one in [`SAMPLE_EVERY`] is
    /// recorded, with the time.
    #[inline]
    pub(crate) fn enqueued(&self, address: u64) {
        if !COUNTING {
            return;
        }
        let tick = self.hot.sample_tick.get() + 1;
        if tick < SAMPLE_EVERY {
            self.hot.sample_tick.set(tick);
            return;
        }
        self.take_sample(address);
    }

    /// Records the sampled enqueue; out of line, to keep the common path short.
    #[cold]
    #[inline(never)]
    fn take_sample(&self, address: u64) {
        self.hot.sample_tick.set(0);
        self.hot.sample_handle.set(address);
        self.sample_ns.set(self.now_ns());
    }

    /// The handle at `address` leaves the ready queue; `runs` says whether
    /// it runs (not cancelled). The sampled handle's wait is recorded.
    #[inline]
    pub(crate) fn dequeued(&self, address: u64, runs: bool) {
        if COUNTING && address == self.hot.sample_handle.get() {
            self.end_sample(runs);
        }
    }

    /// The sampled handle leaves the queue; out of line, as `take_sample`.
    #[cold]
    #[inline(never)]
    fn end_sample(&self, runs: bool) {
        self.hot.sample_handle.set(0);
        if runs {
            self.queue_wait
                .record(self.now_ns().saturating_sub(self.sample_ns.get()));
        }
    }

    /// Bytes and a message received.
    #[inline]
    pub(crate) fn read(&self, n: usize) {
        if !COUNTING {
            return;
        }
        self.bytes_read.add(n as u64);
        self.messages_read.add(1);
    }

    /// Bytes and a message sent (or given to a transport to send).
    #[inline]
    pub(crate) fn wrote(&self, n: usize) {
        if !COUNTING {
            return;
        }
        self.bytes_written.add(n as u64);
        self.messages_written.add(1);
    }

    /// A poll before blocking took `ns` and ended with `outcome`, `n` events.
    #[inline]
    pub(crate) fn polled(&self, ns: u64, outcome: super::spin::Outcome, n: usize) {
        if !COUNTING {
            return;
        }
        self.poll_ns.add(ns);
        match outcome {
            super::spin::Outcome::TimedOut if n == 0 => self.poll_timeouts.add(1),
            super::spin::Outcome::Missed | super::spin::Outcome::Lost | super::spin::Outcome::TimedOut => {
                self.poll_misses.add(1)
            }
            super::spin::Outcome::First | super::spin::Outcome::Later(_) => self.poll_hits.add(1),
        }
    }

    /// A wait that could block took `ns`.
    #[inline]
    pub(crate) fn blocked(&self, ns: u64) {
        if !COUNTING {
            return;
        }
        self.blocked_ns.add(ns);
        self.blocked_waits.add(1);
    }

    /// A `call_later`/`call_at` timer was scheduled.
    #[inline]
    pub(crate) fn timer_scheduled(&self) {
        if COUNTING {
            self.timers_scheduled.add(1);
        }
    }

    /// `n` cancelled timers left the heap.
    #[inline]
    pub(crate) fn timers_dropped(&self, n: usize) {
        if COUNTING {
            self.timers_cancelled.add(n as u64);
        }
    }

    /// `n` due timers were moved to the ready queue.
    #[inline]
    pub(crate) fn timers_fired(&self, n: u64) {
        if COUNTING {
            self.timers_fired.add(n);
        }
    }

    /// A run phase starts with `ready` handles to run.
    #[inline]
    pub(crate) fn run_phase(&self, ready: usize) {
        if COUNTING {
            self.hot.max_ready.raise(ready as u64);
        }
    }

    /// Counts the handles a run phase runs, added when it ends however it
    /// ends: the phase's result is then returned as is, not moved around a
    /// count.
    #[inline]
    pub(crate) fn ran(&self) -> Ran<'_> {
        Ran { stats: self, n: 0 }
    }

    /// `run_forever` starts running iterations.
    pub(crate) fn run_started(&self) {
        if !COUNTING {
            return;
        }
        self.run_started_ns.set(self.now_ns());
    }

    /// `run_forever` stops running iterations.
    pub(crate) fn run_ended(&self) {
        let started = self.run_started_ns.get();
        if started != 0 {
            self.run_ns.add(self.now_ns().saturating_sub(started));
            self.run_started_ns.set(0);
        }
    }

    /// A timed step starts (a slow-callback handler is set): returns its
    /// start, and publishes it for the watchdog.
    #[inline]
    pub(crate) fn step_started(&self) -> u64 {
        self.step_seq.add(1);
        let now = self.now_ns();
        self.step_start_ns.set(now);
        now
    }

    /// The first timer of a batch, due at `when`, was moved to the ready
    /// queue at loop time `now`.
    #[inline]
    pub(crate) fn timer_lag(&self, when: f64, now: f64) {
        if !COUNTING {
            return;
        }
        let late = now - when;
        let ns = if late > 0.0 { (late * 1e9) as u64 } else { 0 };
        self.timer_lag.record(ns);
    }
}

/// Handles run in one run phase (see [`LoopStats::ran`]).
pub(crate) struct Ran<'a> {
    stats: &'a LoopStats,
    n: u64,
}

impl Ran<'_> {
    /// One more handle ran.
    #[inline]
    pub(crate) fn one(&mut self) {
        self.n += 1;
    }
}

impl Drop for Ran<'_> {
    #[inline]
    fn drop(&mut self) {
        if COUNTING {
            self.stats.hot.callbacks.add(self.n);
        }
    }
}

/// A histogram as a dict: last, max, count, total (seconds) and counts.
fn histogram_dict<'py>(py: Python<'py>, h: &Histogram) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("last", secs(h.last_ns()))?;
    d.set_item("max", secs(h.max_ns()))?;
    d.set_item("count", h.count())?;
    d.set_item("total", secs(h.total_ns()))?;
    d.set_item("buckets", h.counts().to_vec())?;
    Ok(d)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// The native counters as a dict; `ferroloop.Loop.stats()` wraps it.
    fn _stats_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.stats;
        let d = PyDict::new(py);
        let (ready, readers, writers, cancelled_in_heap) = {
            let st = self.state.borrow(py);
            let (r, w) = st.io.counts();
            let in_heap = self.shared.cancelled_timers.load(Ordering::Relaxed) as u64;
            (st.ready.len(), r, w, in_heap)
        };
        d.set_item("iterations", self.iterations.load(Ordering::Relaxed))?;
        d.set_item("callbacks", s.hot.callbacks.get())?;
        d.set_item("ready", ready)?;
        d.set_item("ready_max", s.hot.max_ready.get().max(ready as u64))?;
        d.set_item("timers_scheduled", s.timers_scheduled.get())?;
        d.set_item("timers_cancelled", s.timers_cancelled.get() + cancelled_in_heap)?;
        d.set_item("timers_fired", s.timers_fired.get())?;
        d.set_item("readers", readers)?;
        d.set_item("writers", writers)?;
        d.set_item("bytes_read", s.bytes_read.get())?;
        d.set_item("messages_read", s.messages_read.get())?;
        d.set_item("bytes_written", s.bytes_written.get())?;
        d.set_item("messages_written", s.messages_written.get())?;
        let running = match s.run_started_ns.get() {
            0 => 0,
            started => s.now_ns().saturating_sub(started),
        };
        let run_ns = s.run_ns.get() + running;
        let idle_ns = s.blocked_ns.get() + s.poll_ns.get();
        d.set_item("run_time", secs(run_ns))?;
        d.set_item("busy_time", secs(run_ns.saturating_sub(idle_ns)))?;
        d.set_item("blocked_time", secs(s.blocked_ns.get()))?;
        d.set_item("blocked_waits", s.blocked_waits.get())?;
        d.set_item("poll_time", secs(s.poll_ns.get()))?;
        d.set_item("poll_hits", s.poll_hits.get())?;
        d.set_item("poll_misses", s.poll_misses.get())?;
        d.set_item("poll_timeouts", s.poll_timeouts.get())?;
        d.set_item("timer_lag", histogram_dict(py, &s.timer_lag)?)?;
        d.set_item("queue_wait", histogram_dict(py, &s.queue_wait)?)?;
        d.set_item("uptime", secs(s.now_ns()))?;
        Ok(d)
    }

    /// Upper bounds of the lag histograms' buckets in microseconds (`None`
    /// for the last, open-ended one).
    #[staticmethod]
    fn _stats_bucket_bounds_us() -> Vec<Option<u64>> {
        histogram::upper_bounds_us().to_vec()
    }

    /// How often a ready-queue enqueue is sampled for `queue_wait`.
    #[staticmethod]
    fn _stats_sample_every() -> u64 {
        SAMPLE_EVERY
    }

    /// Times every step and reports those that take `threshold` seconds or
    /// more to `_report_slow_callback`; `None` stops it.
    fn _set_slow_threshold(&self, threshold: Option<f64>) -> PyResult<()> {
        let ns = match threshold {
            None => 0,
            Some(t) if t.is_finite() && t >= 0.0 && t * 1e9 < u64::MAX as f64 => ((t * 1e9) as u64).max(1),
            Some(_) => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "threshold must be a finite number of seconds, 0 or more",
                ))
            }
        };
        self.stats.hot.slow_ns.set(ns);
        Ok(())
    }

    /// The step running now, as (sequence number, seconds it has run), or
    /// `None`; only tracked while a slow-callback handler is set.
    fn _step_in_progress(&self) -> Option<(u64, f64)> {
        let start = self.stats.step_start_ns.get();
        if start == 0 {
            return None;
        }
        let ran = self.stats.now_ns().saturating_sub(start);
        Some((self.stats.step_seq.get(), secs(ran)))
    }
}

/// A handle's identity for the ready-queue wait sample.
#[inline]
pub(crate) fn address(handle: &crate::handles::Handle) -> u64 {
    std::ptr::from_ref(handle) as usize as u64
}

impl LoopCore {
    /// Counts `handle`'s enqueue for the ready-queue wait sample.
    #[inline]
    pub(crate) fn sample_enqueue(&self, handle: &crate::handles::Handle) {
        self.stats.enqueued(address(handle));
    }
}

/// After a timed step that started at `started`: reports it to
/// `_report_slow_callback(handle, seconds, seq)` when it ran `slow_ns` or more.
/// The Python side sends the handler's own exceptions to the exception
/// handler; only what escapes that (`KeyboardInterrupt`, `SystemExit`)
/// leaves the loop.
pub(crate) fn report_if_slow(
    slf: &Bound<'_, LoopCore>,
    handle: &Bound<'_, crate::handles::Handle>,
    started: u64,
    slow_ns: u64,
) -> PyResult<()> {
    let stats = &slf.get().stats;
    let took = stats.now_ns().saturating_sub(started);
    stats.step_start_ns.set(0);
    if took < slow_ns {
        return Ok(());
    }
    let py = slf.py();
    let seq = stats.step_seq.get();
    slf.call_method1(pyo3::intern!(py, "_report_slow_callback"), (handle, secs(took), seq))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_count_unless_compiled_out() {
        let stats = LoopStats::default();
        {
            let mut ran = stats.ran();
            ran.one();
            ran.one();
        }
        stats.read(10);
        stats.timer_scheduled();
        for address in 1..=SAMPLE_EVERY {
            stats.enqueued(address);
        }
        let counted = |n: u64| if COUNTING { n } else { 0 };
        assert_eq!(stats.hot.callbacks.get(), counted(2));
        assert_eq!(stats.bytes_read.get(), counted(10));
        assert_eq!(stats.messages_read.get(), counted(1));
        assert_eq!(stats.timers_scheduled.get(), counted(1));
        assert_eq!(
            stats.hot.sample_handle.get(),
            counted(SAMPLE_EVERY),
            "the 32nd enqueue is sampled"
        );
        stats.dequeued(SAMPLE_EVERY, true);
        assert_eq!(stats.queue_wait.count(), counted(1));
    }
}
