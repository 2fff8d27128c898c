//! The event loop core: ready queue, timer heap, poller and the iteration that
//! drives them. Transports and servers live elsewhere; this module only knows
//! handles.
//!
//! One iteration ([`LoopCore::run_once`]) mirrors asyncio's
//! `BaseEventLoop._run_once`: compute the poll timeout (zero when callbacks are
//! ready), wait for I/O with the GIL released, queue the handles of ready fds
//! and of due timers, then run exactly the callbacks that were ready when the
//! run phase began. Callbacks scheduled by those callbacks wait for the next
//! iteration, so a callback that reschedules itself cannot starve I/O.

mod clock;
mod fork;
mod histogram;
pub(crate) mod io_callback;
pub(crate) mod io_refs;
pub(crate) mod poll_window;
pub(crate) mod reader_api;
pub mod readers;
mod schedule;
mod shelter;
pub(crate) use schedule::install_raw_methods;
mod spin;
pub(crate) mod stats;
mod tasks;
pub mod timers;

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::handles::{Handle, LoopShared, TimerHandle};
use crate::panic_guard;
use crate::py::helpers;
use crate::sys::epoll::{Epoll, READABLE};
use crate::sys::eventfd::EventFd;
use crate::sys::{monotonic, Errno};
use readers::Registry;
use timers::TimerHeap;

/// epoll user data of the cross-thread waker; fd tokens never reach it
/// because their generation half is below `u32::MAX`.
const WAKER_TOKEN: u64 = u64::MAX;
/// asyncio never sleeps longer than a day in one wait.
const MAX_WAIT_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Busy (non-blocking) iterations between two checks for pending signals.
const SIGNAL_CHECK_EVERY: u64 = 64;
/// Most emptied handles a loop keeps for reuse.
const POOL_MAX: usize = 256;
/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 256;
/// `time.get_clock_info('monotonic').resolution` on Linux; timers due within
/// it run now, as asyncio does.
const CLOCK_RESOLUTION: f64 = 1e-9;

/// Loop state touched only with the GIL held.
#[derive(Default)]
pub(crate) struct State {
    /// Handles to run, in order.
    pub ready: VecDeque<Py<Handle>>,
    /// Pending `call_later`/`call_at` timers.
    pub timers: TimerHeap<Py<TimerHandle>>,
    /// `add_reader`/`add_writer` registrations; the owners are weak
    /// references to the sockets of `sock_*` operations, the files the
    /// objects registrations were made for.
    pub io: Registry<io_callback::IoCallback, Py<PyAny>, Py<PyAny>>,
    /// `threading.get_ident()` of the thread running the loop, if running.
    pub thread_id: Option<Py<PyAny>>,
    /// Reused buffer for epoll events.
    events: Vec<libc::epoll_event>,
    /// Run handles nobody else referenced, emptied, kept for the next
    /// `call_soon`: saves an allocation and a deallocation per callback.
    pool: Vec<Py<Handle>>,
}

impl Drop for State {
    /// A loop dropped or cleared by the collector without `close()` tracks
    /// its queued handles again on the way out (see `shelter`).
    fn drop(&mut self) {
        if self.ready.is_empty() && self.timers.len() == 0 {
            return;
        }
        // SAFETY: `PyGILState_Check` has no preconditions.
        if unsafe { pyo3::ffi::PyGILState_Check() } == 0 {
            return;
        }
        // SAFETY: checked just above, this thread holds the GIL.
        let py = unsafe { Python::assume_attached() };
        shelter::release_all(py, &self.ready);
        shelter::release_all(py, self.timers.iter());
    }
}

/// The kernel objects the loop owns; dropped (closed) by `close()`.
pub(crate) struct Sys {
    pub epoll: Epoll,
    /// Shared so a thread can write it with the GIL released (see
    /// `wake_from_thread`) while a `close()` on the loop's thread drops `Sys`.
    pub waker: Arc<EventFd>,
}

/// The native half of `ferroloop.Loop`. The Python class adds the parts of
/// asyncio's API that are not per-event (run_until_complete, executors, DNS,
/// signals) on top of these methods.
#[pyclass(module = "ferroloop._ferroloop", subclass, frozen)]
pub struct LoopCore {
    /// Debug flag and timer bookkeeping, shared with handles.
    pub(crate) shared: Arc<LoopShared>,
    /// Queues and registries.
    pub(crate) state: GilCell<State>,
    /// epoll and the waker; `None` once the loop is closed.
    pub(crate) sys: GilCell<Option<Sys>>,
    /// `close()` was called.
    pub(crate) closed: AtomicBool,
    /// `stop()` was called; the loop stops after the current iteration.
    pub(crate) stopping: AtomicBool,
    /// The loop is about to wait or waiting in epoll: another thread that
    /// queues a callback must write the waker.
    pub(crate) polling: AtomicBool,
    /// The waker was written and not yet drained; saves redundant writes.
    pub(crate) woken: AtomicBool,
    /// Iterations run, for spacing out signal checks.
    pub(crate) iterations: AtomicU64,
    /// The last poll queued I/O handles, so the callbacks they schedule can
    /// run without another zero-timeout poll first (see `poll`).
    pub(crate) io_just_polled: AtomicBool,
    /// When to poll before blocking, learned from recent waits.
    pub(crate) spinner: GilCell<spin::Spinner>,
    /// The last iteration's I/O phase panicked (see `run_once`).
    io_panicked: AtomicBool,
    /// Where loop time comes from: the monotonic clock, or a virtual one.
    pub(crate) clock: clock::Clock,
    /// Counters for `loop.stats()` and the slow-callback handler.
    pub(crate) stats: stats::LoopStats,
}

impl LoopCore {
    /// Builds a handle for `callback(*args)` in `context` (a copy of the
    /// current context when `None`), recording its origin in debug mode.
    pub(crate) fn make_handle(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let context = context_or_copy(py, context)?;
        let source_traceback = if self.shared.debug.load(Ordering::Relaxed) {
            Some(helpers::source_traceback(py)?.call0()?.unbind())
        } else {
            None
        };
        Ok(Handle::new(
            callback.clone().unbind(),
            args.clone().unbind(),
            context,
            source_traceback,
            self.shared.clone(),
        ))
    }

    /// A queueable handle object for `callback(*args)`: a recycled one when
    /// the pool has one (never in debug mode, where handles record their
    /// origin), else a new allocation.
    pub(crate) fn new_handle(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        if !self.debug() {
            let recycled = self.state.borrow_mut(py).pool.pop();
            if let Some(handle) = recycled {
                let context = context_or_copy(py, context)?;
                handle
                    .get()
                    .refill(py, callback.clone().unbind(), args.clone().unbind(), context);
                return Ok(handle);
            }
        }
        Py::new(py, self.make_handle(py, callback, args, context)?)
    }

    /// Keeps a handle that just ran for reuse if nothing else can see it: the
    /// loop holds the only reference, nothing weakly references it, and it is
    /// a plain `Handle` (not a timer or a subclass).
    fn recycle(&self, py: Python<'_>, handle: Py<Handle>) {
        if self.debug()
            || handle.get().has_origin()
            || self.state.borrow(py).pool.len() >= POOL_MAX
            || !is_unshared_plain_handle(py, &handle)
        {
            return;
        }
        let contents = handle.get().empty(py);
        // Dropped before the handle joins the pool: a decref can run any code.
        drop(contents);
        self.state.borrow_mut(py).pool.push(handle);
    }

    pub(crate) fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(crate::errors::loop_closed());
        }
        Ok(())
    }

    pub(crate) fn debug(&self) -> bool {
        self.shared.debug.load(Ordering::Relaxed)
    }

    /// Wakes the loop if it is (about to be) blocked in epoll. Callers hold
    /// the GIL, and the loop sets `polling` with the GIL held before it
    /// computes its timeout, so a callback queued before that point is seen
    /// by the timeout computation and one queued after it writes the waker.
    pub(crate) fn wake(&self, py: Python<'_>) {
        if self.polling.load(Ordering::SeqCst) && !self.woken.swap(true, Ordering::SeqCst) {
            if let Some(sys) = self.sys.borrow(py).as_ref() {
                sys.waker.notify();
            }
        }
    }

    /// Drops cancelled timers: all of them when they are the majority (the
    /// heap is rebuilt), else only those at the top. Returns what to drop
    /// once no borrow is held.
    fn purge_timers(&self, py: Python<'_>, st: &mut State) -> Vec<Py<TimerHandle>> {
        let cancelled_count = &self.shared.cancelled_timers;
        let cancelled = |t: &Py<TimerHandle>| t.bind(py).as_super().get().is_cancelled();
        let mut gone = Vec::new();
        if timers::should_purge(st.timers.len(), cancelled_count.load(Ordering::Relaxed)) {
            gone = st.timers.remove_where(cancelled);
            cancelled_count.store(0, Ordering::Relaxed);
        } else {
            while st.timers.peek().is_some_and(|(_, t)| cancelled(t)) {
                gone.extend(st.timers.pop());
                let _ = cancelled_count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
        for t in &gone {
            t.get().unschedule();
        }
        shelter::release_all(py, &gone);
        self.stats.timers_dropped(gone.len());
        gone
    }

    /// How long the next wait may block: not at all when callbacks are ready
    /// or a stop is pending, else until the earliest timer (rounded up to the
    /// nanosecond, so it never fires early), else indefinitely.
    fn wait_timeout(&self, st: &State) -> Option<u64> {
        if !st.ready.is_empty() || self.stopping.load(Ordering::Relaxed) {
            return Some(0);
        }
        let (when, _) = st.timers.peek()?;
        let delay = when - self.clock.now();
        if delay <= 0.0 {
            Some(0)
        } else if delay * 1e9 >= MAX_WAIT_NS as f64 {
            Some(MAX_WAIT_NS)
        } else {
            Some((delay * 1e9).ceil() as u64)
        }
    }

    /// A wait that may block: polls first while events have been arriving
    /// within microseconds of going idle (see `spin`), then blocks. Both run
    /// with the GIL released.
    fn wait_or_poll(
        &self,
        py: Python<'_>,
        epfd: std::os::fd::RawFd,
        events: &mut [libc::epoll_event],
        timeout: Option<u64>,
    ) -> PyResult<Result<usize, Errno>> {
        let plan = self.spinner.borrow(py).plan(timeout);
        let mut remaining = timeout;
        if let Some(plan) = plan {
            let (n, outcome, polled_ns) =
                py.detach(|| spin::poll_for(plan, || crate::sys::epoll::wait_fd(epfd, events, Some(0)).unwrap_or(0)));
            self.stats.polled(polled_ns, outcome, n);
            // Polling is for peers outside the process. A wake-up from one of
            // our own threads (an executor's result, `call_soon_threadsafe`)
            // may come from a thread that needs this very CPU: never poll for
            // those.
            let outcome = if n > 0 && !from_peers(&events[..n]) {
                outcome.for_own_threads()
            } else {
                outcome
            };
            self.spinner.borrow_mut(py).after_poll(outcome);
            if n > 0 || outcome == spin::Outcome::TimedOut {
                return Ok(Ok(n));
            }
            // A signal caught while polling has no system call to interrupt:
            // handle it before blocking, as `poll` does.
            py.check_signals()?;
            // What the poll took (a poll that found nothing ran at least to
            // its window's end), not what it planned: a poll that lost the
            // CPU must not make the timeout late.
            remaining = timeout.map(|t| t.saturating_sub(polled_ns));
        }
        let start = std::time::Instant::now();
        let result = py.detach(|| crate::sys::epoll::wait_fd(epfd, events, remaining));
        let blocked = start.elapsed().as_nanos() as u64;
        self.stats.blocked(blocked);
        self.spinner
            .borrow_mut(py)
            .after_block(blocked, matches!(result, Ok(n) if from_peers(&events[..n])));
        Ok(result)
    }

    /// Waits for I/O with the GIL released and queues the handles of ready fds.
    fn poll(&self, py: Python<'_>, timeout: Option<u64>) -> PyResult<()> {
        // A signal that arrived while native code or a C callback ran (no
        // bytecode, so the eval loop never noticed it) is handled here: always
        // before blocking, since in epoll only EINTR or the wakeup fd would
        // surface it, and every few busy iterations so a loop that only runs
        // C callbacks still reacts to Ctrl-C.
        let iteration = self.iterations.fetch_add(1, Ordering::Relaxed);
        if timeout != Some(0) || iteration % SIGNAL_CHECK_EVERY == 0 {
            if let Err(err) = py.check_signals() {
                self.polling.store(false, Ordering::SeqCst);
                return Err(err);
            }
        }
        // An I/O callback typically wakes a task, which runs in the next
        // iteration. Polling again (with a zero timeout, because that task is
        // ready) right before it would be a system call that can find only
        // what arrived in the last few microseconds, so it is skipped once:
        // the iteration after the one that ran I/O handles goes straight to
        // its callbacks. Every other iteration polls, so I/O is never delayed
        // by more than one iteration, however busy the loop is.
        if timeout == Some(0) && self.io_just_polled.swap(false, Ordering::Relaxed) {
            self.polling.store(false, Ordering::SeqCst);
            return Ok(());
        }
        // `os.fork` already gave a child's copy its own epoll; a fork that
        // skipped Python's hooks must not wait on the parent's.
        if let Err(err) = self.leave_parent(py) {
            self.polling.store(false, Ordering::SeqCst);
            return Err(err);
        }
        let (epfd, mut events) = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else {
                return Err(crate::errors::loop_closed());
            };
            let mut st = self.state.borrow_mut(py);
            let mut events = std::mem::take(&mut st.events);
            events.resize(EVENTS_PER_WAIT, libc::epoll_event { events: 0, u64: 0 });
            (sys.epoll.as_raw_fd(), events)
        };
        let result = if timeout == Some(0) {
            // A zero-timeout poll cannot block: releasing the GIL for it would
            // only cost a hand-off. With no fd registered there is nothing it
            // could report (a cross-thread callback is already in the queue),
            // so the system call is skipped altogether.
            if self.state.borrow(py).io.is_empty() {
                if self.woken.swap(false, Ordering::SeqCst) {
                    if let Some(sys) = self.sys.borrow(py).as_ref() {
                        sys.waker.drain();
                    }
                }
                Ok(0)
            } else {
                crate::sys::epoll::wait_fd(epfd, &mut events, timeout)
            }
        } else {
            match self.wait_or_poll(py, epfd, &mut events, timeout) {
                Ok(result) => result,
                Err(err) => {
                    self.polling.store(false, Ordering::SeqCst);
                    self.state.borrow_mut(py).events = events;
                    return Err(err);
                }
            }
        };
        self.polling.store(false, Ordering::SeqCst);
        let n = match result {
            Ok(n) => n,
            Err(Errno(libc::EINTR)) => {
                self.state.borrow_mut(py).events = events;
                // A signal arrived: run Python-level handlers now, so SIGINT's
                // KeyboardInterrupt leaves run_forever as it does on asyncio.
                return py.check_signals();
            }
            Err(err) => {
                self.state.borrow_mut(py).events = events;
                return Err(os_error(err));
            }
        };
        let mut stale: Vec<(i32, readers::Side)> = Vec::new();
        let mut parked: Vec<(u64, readers::Side)> = Vec::new();
        // Transport reader events with no recycled handle: (where in the
        // ready queue, reader, context).
        let mut unpooled: Vec<(usize, Py<PyAny>, Py<PyAny>)> = Vec::new();
        let mut queued = false;
        // epoll reports an fd at most once per wait, so this is 0 or 1.
        let mut waker_events = 0;
        {
            let mut guard = self.state.borrow_mut(py);
            let st = &mut *guard;
            for ev in &events[..n] {
                if ev.u64 == WAKER_TOKEN {
                    if let Some(sys) = self.sys.borrow(py).as_ref() {
                        sys.waker.drain();
                    }
                    self.woken.store(false, Ordering::SeqCst);
                    waker_events += 1;
                    continue;
                }
                let hit = st.io.lookup(ev.u64, ev.events);
                if hit.parked_reader {
                    parked.push((ev.u64, readers::Side::Read));
                }
                if hit.parked_writer {
                    parked.push((ev.u64, readers::Side::Write));
                }
                let (fd, _) = readers::untoken(ev.u64);
                for (callback, side) in [(hit.reader, readers::Side::Read), (hit.writer, readers::Side::Write)] {
                    let Some(callback) = callback else { continue };
                    let reader = match callback.get(py) {
                        Ok(handle) => {
                            if handle.get().is_cancelled() {
                                stale.push((fd, side));
                            } else {
                                self.sample_enqueue(handle.get());
                                st.ready.push_back(handle.clone().unbind());
                                queued = true;
                            }
                            continue;
                        }
                        Err(reader) => reader,
                    };
                    // A transport's read side: a handle for this event, a
                    // recycled one if there is one (allocating here could run
                    // the garbage collector under this borrow).
                    let Some(context) = io_callback::queue_reader(reader) else {
                        continue;
                    };
                    queued = true;
                    match st.pool.pop() {
                        Some(handle) => {
                            let args = PyTuple::empty(py).unbind();
                            handle.get().refill(py, reader.clone().unbind(), args, context);
                            self.sample_enqueue(handle.get());
                            st.ready.push_back(handle);
                        }
                        None => unpooled.push((st.ready.len(), reader.clone().unbind(), context)),
                    }
                }
            }
            st.events = events;
        }
        if !unpooled.is_empty() {
            self.queue_unpooled(py, unpooled);
        }
        self.spinner.borrow_mut(py).saw(n - waker_events);
        self.io_just_polled.store(queued, Ordering::Relaxed);
        if !stale.is_empty() || !parked.is_empty() {
            let sys = self.sys.borrow(py);
            let mut gone = Vec::new();
            if let Some(sys) = sys.as_ref() {
                let mut st = self.state.borrow_mut(py);
                for (data, side) in parked {
                    st.io.unpark(&sys.epoll, data, side);
                }
                for (fd, side) in stale {
                    gone.extend(st.io.remove(&sys.epoll, fd, side, |r| r.handle.is_cancelled(py)));
                }
            }
            drop(sys);
            reader_api::release_regs(py, gone, false);
        }
        Ok(())
    }

    /// Makes handles for transport reader events that found no recycled
    /// one, and puts them in the ready queue where their events were.
    fn queue_unpooled(&self, py: Python<'_>, unpooled: Vec<(usize, Py<PyAny>, Py<PyAny>)>) {
        let mut made = Vec::with_capacity(unpooled.len());
        for (at, reader, context) in unpooled {
            let args = PyTuple::empty(py).unbind();
            let handle = Handle::new(reader.clone_ref(py), args, context, None, self.shared.clone());
            match Py::new(py, handle) {
                Ok(handle) => made.push((at, handle)),
                Err(err) => {
                    io_callback::dequeue_reader(reader.bind(py));
                    err.write_unraisable(py, None);
                }
            }
        }
        let mut st = self.state.borrow_mut(py);
        // Positions were taken before any of these were inserted: each one
        // inserted before shifts the next.
        for (inserted, (at, handle)) in made.into_iter().enumerate() {
            self.sample_enqueue(handle.get());
            let at = at.saturating_add(inserted).min(st.ready.len());
            st.ready.insert(at, handle);
        }
    }

    /// Moves due timers to the ready queue.
    fn queue_due_timers(&self, py: Python<'_>) -> Vec<Py<TimerHandle>> {
        let mut gone = Vec::new();
        let mut guard = self.state.borrow_mut(py);
        if guard.timers.len() == 0 {
            return gone;
        }
        let now = self.clock.now();
        let end = now + CLOCK_RESOLUTION;
        let st = &mut *guard;
        // The first timer queued is the one due earliest, so the latest: its
        // lateness is the batch's (see `LoopStats::timers_fired`).
        let mut fired = 0;
        while let Some((when, _)) = st.timers.peek() {
            // `when > now` too: where loop time is so large that adding the
            // resolution rounds to the same float (a virtual clock that
            // jumped far), a deadline that has been reached is still due.
            if when >= end && when > now {
                break;
            }
            // Before the pop: a panic here leaves the timer in the heap.
            panic_guard::fault(panic_guard::Site::Timer);
            let Some(timer) = st.timers.pop() else { break };
            timer.get().unschedule();
            if timer.bind(py).as_super().get().is_cancelled() {
                let _ = self
                    .shared
                    .cancelled_timers
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                self.stats.timers_dropped(1);
                shelter::release(timer.bind(py).as_super());
                gone.push(timer);
            } else {
                if fired == 0 {
                    self.stats.timer_lag(when, now);
                }
                fired += 1;
                let handle = timer.into_bound(py).into_super().unbind();
                self.sample_enqueue(handle.get());
                st.ready.push_back(handle);
            }
        }
        self.stats.timers_fired(fired);
        gone
    }

    /// One iteration of the loop.
    ///
    /// A panic in the I/O phase or in a handle's step is caught and reported
    /// to the exception handler as a `RuntimeError` (see `panic_guard`); the
    /// loop goes on. What such a panic can lose: the I/O phase may drop the
    /// events of one wait (epoll is level-triggered: they are reported again)
    /// and its event buffer (rebuilt on the next wait); a handle that
    /// panicked is not recycled. Every `GilCell` borrow is released as the
    /// panic unwinds.
    fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match panic_guard::catch(|| this.io_phase(py)) {
            Ok(result) => {
                this.io_panicked.store(false, Ordering::Relaxed);
                result?
            }
            Err(payload) => {
                this.polling.store(false, Ordering::SeqCst);
                // Twice in a row is no passing fault: rather than spin
                // reporting it, leave run_forever with it (an Exception).
                if this.io_panicked.swap(true, Ordering::Relaxed) {
                    this.io_panicked.store(false, Ordering::Relaxed);
                    return Err(panic_guard::to_error(payload.as_ref()));
                }
                report_panic(slf, None, payload.as_ref())?;
            }
        }

        // Only the callbacks ready now run in this iteration; anything they
        // schedule runs in the next one, after another poll for I/O.
        let ntodo = this.state.borrow(py).ready.len();
        if ntodo == 0 {
            return Ok(());
        }
        let debug = this.debug();
        let stats = &this.stats;
        stats.run_phase(ntodo);
        let slow_ns = stats.slow_ns();
        LoopCore::run_ready(slf, ntodo, debug, slow_ns)
    }

    /// The run phase: runs the first `ntodo` handles of the ready queue,
    /// counting them. With `slow_ns` set (a slow-callback handler), times
    /// each one against it.
    fn run_ready(slf: &Bound<'_, Self>, ntodo: usize, debug: bool, slow_ns: u64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let stats = &this.stats;
        let mut ran = stats.ran();
        for _ in 0..ntodo {
            let Some(handle) = this.state.borrow_mut(py).ready.pop_front() else {
                break;
            };
            shelter::release(handle.bind(py));
            let runs = !handle.get().is_cancelled();
            stats.dequeued(stats::address(handle.get()), runs);
            if !runs {
                continue;
            }
            ran.one();
            let started = if slow_ns != 0 { stats.step_started() } else { 0 };
            let step = panic_guard::catch(|| {
                panic_guard::fault(panic_guard::Site::Handle);
                if debug {
                    run_handle_debug(slf, handle.bind(py))
                } else {
                    run_handle(slf, handle.bind(py))
                }
            });
            if started != 0 {
                stats::report_if_slow(slf, handle.bind(py), started, slow_ns)?;
            }
            match step {
                Ok(result) => {
                    result?;
                    if !debug {
                        this.recycle(py, handle);
                    }
                }
                Err(payload) => report_panic(slf, Some(handle.bind(py)), payload.as_ref())?,
            }
        }
        Ok(())
    }

    /// The first half of an iteration: purge timers, wait for I/O, queue the
    /// handles of ready fds and due timers.
    fn io_phase(&self, py: Python<'_>) -> PyResult<()> {
        let (timeout, gone) = {
            let mut st = self.state.borrow_mut(py);
            let gone = self.purge_timers(py, &mut st);
            self.polling.store(true, Ordering::SeqCst);
            (self.wait_timeout(&st), gone)
        };
        drop(gone);
        panic_guard::fault(panic_guard::Site::Poll);
        // A virtual clock (tests) turns a wait for a timer into a jump.
        let (timeout, after) = match self.clock.virtual_clock() {
            None => (timeout, None),
            Some(vc) => {
                let (timeout, after) = self.virtual_wait(py, vc, timeout);
                (timeout, Some((vc, after)))
            }
        };
        self.poll(py, timeout)?;
        if let Some((vc, after)) = after {
            self.after_virtual_wait(py, vc, after);
        }
        drop(self.queue_due_timers(py));
        Ok(())
    }
}

/// Whether the events include one from an fd, not only the cross-thread
/// waker.
fn from_peers(events: &[libc::epoll_event]) -> bool {
    events.iter().any(|ev| ev.u64 != WAKER_TOKEN)
}

/// The `context=` a caller passed, or (for `None`) a copy of the current
/// context, as asyncio's `Handle` does.
fn context_or_copy(py: Python<'_>, context: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    match context {
        Some(ctx) if !ctx.is_none() => Ok(ctx.clone().unbind()),
        _ => crate::py::copy_context(py),
    }
}

/// Whether `handle` is exactly a `Handle` that only the caller references,
/// strongly or weakly.
fn is_unshared_plain_handle(py: Python<'_>, handle: &Py<Handle>) -> bool {
    let ptr = handle.as_ptr();
    // SAFETY: `ptr` is a live object we hold a reference to.
    if unsafe { pyo3::ffi::Py_REFCNT(ptr) } != 1 {
        return false;
    }
    let ty = handle.bind(py).get_type();
    if !ty.is(py.get_type::<Handle>()) {
        return false;
    }
    // SAFETY: `ty` is the object's live type object.
    let offset = unsafe { (*ty.as_type_ptr()).tp_weaklistoffset };
    if offset <= 0 {
        return false;
    }
    // SAFETY: a positive tp_weaklistoffset is the offset, inside every
    // instance of the type, of its weak-reference list pointer.
    let weaklist = unsafe { *(ptr.cast::<u8>().offset(offset).cast::<*mut pyo3::ffi::PyObject>()) };
    weaklist.is_null()
}

/// Runs one handle; its exception goes to `call_exception_handler` unless it
/// is `KeyboardInterrupt` or `SystemExit`, which propagate out of the loop.
fn run_handle(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let Some(err) = handle.get().run(py) else { return Ok(()) };
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let context = helpers::callback_error_context(py)?.call1((handle, err.into_value(py), slf.get().debug()))?;
    slf.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// [`run_handle`] plus debug mode's bookkeeping: `_current_handle` for the
/// exception handler, and a warning for callbacks slower than
/// `slow_callback_duration`.
fn run_handle_debug(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let current = pyo3::intern!(py, "_current_handle");
    slf.setattr(current, handle)?;
    let start = monotonic();
    let result = run_handle(slf, handle);
    let took = monotonic() - start;
    slf.setattr(current, py.None())?;
    result?;
    let limit: f64 = slf.getattr(pyo3::intern!(py, "slow_callback_duration"))?.extract()?;
    if took >= limit {
        helpers::warn_slow_callback(py)?.call1((handle, took))?;
    }
    Ok(())
}

/// Reports a panic caught in an iteration to the exception handler, as
/// asyncio reports a callback's exception: with the handle when it happened
/// in one, else as an error of the loop itself. A handler that fails (or
/// panics) ends `run_forever` with its exception, as on asyncio.
fn report_panic(
    slf: &Bound<'_, LoopCore>,
    handle: Option<&Bound<'_, Handle>>,
    payload: &(dyn std::any::Any + Send),
) -> PyResult<()> {
    let py = slf.py();
    let exc = panic_guard::to_error(payload).into_value(py);
    let reported = panic_guard::catch(|| -> PyResult<()> {
        let context = match handle {
            Some(handle) => {
                if slf.get().debug() {
                    slf.setattr(pyo3::intern!(py, "_current_handle"), py.None())?;
                }
                helpers::callback_error_context(py)?.call1((handle, &exc, slf.get().debug()))?
            }
            None => {
                let context = pyo3::types::PyDict::new(py);
                context.set_item("message", "Unexpected error in the event loop")?;
                context.set_item("exception", &exc)?;
                context.into_any()
            }
        };
        slf.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    });
    reported.unwrap_or_else(|payload| Err(panic_guard::to_error(payload.as_ref())))
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<Self> {
        let epoll = Epoll::new()?;
        let waker = EventFd::new()?;
        epoll.add(waker.as_raw_fd(), READABLE, WAKER_TOKEN)?;
        Ok(LoopCore {
            shared: Arc::new(LoopShared::default()),
            state: GilCell::new(State::default()),
            sys: GilCell::new(Some(Sys {
                epoll,
                waker: Arc::new(waker),
            })),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            iterations: AtomicU64::new(0),
            io_just_polled: AtomicBool::new(false),
            spinner: GilCell::new(spin::Spinner::from_window(
                poll_window::choose().map_err(pyo3::exceptions::PyValueError::new_err)?,
            )),
            io_panicked: AtomicBool::new(false),
            clock: clock::Clock::default(),
            stats: stats::LoopStats::default(),
        })
    }

    /// The loop's clock: `time.monotonic()`, or a virtual clock's time.
    fn time(&self) -> f64 {
        self.clock.now()
    }

    /// Whether the loop is running (`run_forever` is active on some thread).
    fn is_running(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).thread_id.is_some()
    }

    /// Whether `close()` was called.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops the loop after the current iteration.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    #[setter(_closed)]
    fn set_closed_attr(&self, value: bool) {
        self.closed.store(value, Ordering::Relaxed);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping_attr(&self, value: bool) {
        self.stopping.store(value, Ordering::Relaxed);
    }

    #[getter]
    fn _debug(&self) -> bool {
        self.debug()
    }

    /// `BaseEventLoop.get_debug()`, natively: every `Future` and `Task`
    /// calls it when created, and the Python method cost a frame each time.
    fn get_debug(&self) -> bool {
        self.debug()
    }

    #[setter(_debug)]
    fn set_debug_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.shared.debug.store(value.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    #[getter]
    fn _thread_id(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).thread_id.as_ref().map(|t| t.clone_ref(py))
    }

    #[setter(_thread_id)]
    fn set_thread_id_attr(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.state.borrow_mut(py).thread_id, value);
        drop(old);
    }

    /// Runs iterations until `stop()`. The Python `run_forever` sets up the
    /// running-loop state around this call.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.stats.run_started();
        let result = loop {
            if let Err(err) = LoopCore::run_once(slf) {
                break Err(err);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stats.run_ended();
        this.stopping.store(false, Ordering::Relaxed);
        this.polling.store(false, Ordering::SeqCst);
        result
    }

    /// Releases what the loop owns: queued callbacks, timers, registrations,
    /// and the epoll and eventfd descriptors.
    fn _close_core(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Relaxed);
        let sys = self.sys.borrow_mut(py).take();
        let mut st = self.state.borrow_mut(py);
        let ready = std::mem::take(&mut st.ready);
        let pool = std::mem::take(&mut st.pool);
        let timers: Vec<_> = st.timers.drain().collect();
        let io = match sys.as_ref() {
            Some(sys) => st.io.drain(&sys.epoll),
            None => (Vec::new(), Vec::new()),
        };
        // Released only after the borrow ends: a decref can run any code.
        drop(st);
        for t in &timers {
            t.get().unschedule();
        }
        shelter::release_all(py, &ready);
        shelter::release_all(py, &timers);
        let (regs, owners) = io;
        drop((ready, pool, timers, owners, sys));
        // Gives back the io references registrations held: a socket the
        // program closed meanwhile is closed now.
        reader_api::release_regs(py, regs, false);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_borrow_unguarded() else {
            return Ok(());
        };
        for h in &st.ready {
            shelter::visit(h, &visit)?;
        }
        for t in st.timers.iter() {
            shelter::visit(t, &visit)?;
        }
        for h in st.io.handles() {
            visit.call(h.as_any())?;
        }
        for h in &st.pool {
            visit.call(h)?;
        }
        for file in st.io.regs().filter_map(|r| r.file.as_ref()) {
            visit.call(file)?;
        }
        visit.call(&st.thread_id)?;
        Ok(())
    }

    fn __clear__(&self) {
        let state = self.state.take_unguarded();
        drop(state);
    }
}
