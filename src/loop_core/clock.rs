//! The loop's clock: `CLOCK_MONOTONIC`, or a virtual clock for tests.
//!
//! A virtual clock (`ferroloop.testing`) moves only when the loop would
//! otherwise block waiting for a timer: once a zero-timeout poll (or a wait
//! of `autojump_threshold` real seconds) finds no fd ready and nothing to
//! run, loop time jumps to the earliest timer's deadline and that timer runs
//! at once. Everything that reads loop time (`time()`, `call_later`, the
//! poll timeout, due timers) asks [`Clock::now`], so the timer heap, its
//! ordering and asyncio's rules are the same code on both clocks.
//!
//! Work the loop cannot see (an executor job, a child process, a thread the
//! program started) *holds* the clock: while holds are pending, what the
//! clock does is the loop's [`HoldPolicy`]. The Python side counts the holds
//! (`ferroloop/testing/`).
//!
//! A loop built on the real clock pays one predictable branch per clock read
//! and per iteration; the virtual state lives behind a `OnceLock` set once,
//! before the loop runs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::{LoopCore, MAX_WAIT_NS};
use crate::sys::monotonic;

/// What the virtual clock does while work outside the loop holds it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum HoldPolicy {
    /// Time runs at real speed: the loop waits for the next timer in real
    /// time, and loop time advances by the time that wait took.
    Real = 0,
    /// Time stands still: the loop waits for I/O or the held work without a
    /// limit, so work in threads and children takes no loop time.
    Freeze = 1,
    /// Holds are ignored: the clock jumps as if nothing were pending.
    Ignore = 2,
}

impl HoldPolicy {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(HoldPolicy::Real),
            1 => Some(HoldPolicy::Freeze),
            2 => Some(HoldPolicy::Ignore),
            _ => None,
        }
    }
}

/// State of a virtual clock. Atomics, so reads need no GIL token and a hold
/// taken or released on another thread is seen by the loop's next check.
pub(crate) struct VirtualClock {
    /// Loop time, as `f64` bits.
    now: AtomicU64,
    /// Jump to the next timer when idle; without it only `advance` moves time.
    autojump: AtomicBool,
    /// Real nanoseconds to wait for I/O or threads before a jump.
    threshold_ns: AtomicU64,
    /// Pending holds (executor jobs, children, explicit holds).
    holds: AtomicU64,
    /// A `HoldPolicy` as `u8`.
    policy: AtomicU8,
}

impl VirtualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.now.load(Ordering::Relaxed))
    }

    fn set(&self, when: f64) {
        self.now.store(when.to_bits(), Ordering::Relaxed);
    }

    fn policy(&self) -> HoldPolicy {
        HoldPolicy::from_u8(self.policy.load(Ordering::Relaxed)).unwrap_or(HoldPolicy::Real)
    }

    /// Holds pending that the policy does not ignore.
    fn held(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0 && self.policy() != HoldPolicy::Ignore
    }
}

/// The loop's time source.
#[derive(Default)]
pub(crate) struct Clock {
    virt: OnceLock<VirtualClock>,
}

impl Clock {
    /// Loop time in seconds: `time.monotonic()`, or the virtual clock's.
    #[inline]
    pub(crate) fn now(&self) -> f64 {
        match self.virt.get() {
            None => monotonic(),
            Some(v) => v.now(),
        }
    }

    /// The virtual clock, if this loop has one.
    #[inline]
    pub(crate) fn virtual_clock(&self) -> Option<&VirtualClock> {
        self.virt.get()
    }
}

impl LoopCore {
    fn vclock(&self) -> PyResult<&VirtualClock> {
        self.clock
            .virtual_clock()
            .ok_or_else(|| PyRuntimeError::new_err("this loop runs on the real clock"))
    }

    /// The earliest timer's deadline, unless that timer is cancelled.
    fn next_deadline(&self, py: Python<'_>) -> Option<f64> {
        let st = self.state.borrow(py);
        let (when, timer) = st.timers.peek()?;
        (!timer.bind(py).as_super().get().is_cancelled()).then_some(when)
    }

    /// The I/O phase's wait on a virtual clock, before it: how long to
    /// wait, and what to do after. `timeout` is what the real clock's rule
    /// asks for, computed from virtual time: zero (callbacks ready) stays;
    /// a wait for a timer becomes a check for I/O and a jump when the loop
    /// is idle, a real wait while the clock is held or autojump is off.
    #[cold]
    #[inline(never)]
    pub(super) fn virtual_wait(&self, py: Python<'_>, vc: &VirtualClock, timeout: Option<u64>) -> (Option<u64>, After) {
        if timeout == Some(0) {
            return (timeout, After::Nothing);
        }
        let held = vc.held();
        if held && vc.policy() == HoldPolicy::Real {
            let plan = After::RealSpeed {
                when: self.next_deadline(py),
                from: vc.now(),
                start: monotonic(),
                timeout,
            };
            return (timeout, plan);
        }
        // A timer that never comes due is no timer: jumping to it would
        // leave loop time at infinity.
        let next = self.next_deadline(py).filter(|when| when.is_finite());
        let Some(when) = next.filter(|_| !held && vc.autojump.load(Ordering::Relaxed)) else {
            // Nothing to jump to, or no jump allowed: only I/O, a thread or
            // `advance` can move the loop on.
            return (None, After::Nothing);
        };
        // The poll must really look at the fds: the iteration after one that
        // ran I/O handles would otherwise skip it.
        self.io_just_polled.store(false, Ordering::Relaxed);
        (Some(vc.threshold_ns.load(Ordering::Relaxed)), After::Jump(when))
    }

    /// The I/O phase's wait on a virtual clock, after it: moves loop time.
    #[cold]
    #[inline(never)]
    pub(super) fn after_virtual_wait(&self, py: Python<'_>, vc: &VirtualClock, after: After) {
        match after {
            After::Nothing => {}
            After::Jump(when) => {
                // Only if the wait found nothing to run, nothing asked to
                // stop, no hold was taken meanwhile (the GIL was released if
                // it waited), and the timer is still the earliest and live.
                let idle = self.state.borrow(py).ready.is_empty() && !self.stopping.load(Ordering::Relaxed);
                if idle && !vc.held() && self.next_deadline(py) == Some(when) && when > vc.now() {
                    vc.set(when);
                }
            }
            After::RealSpeed {
                when,
                from,
                start,
                timeout,
            } => {
                // Loop time advances by the real time waited; to the timer's
                // deadline exactly when the wait timed out. Never backwards:
                // `advance` from another thread may have gone further.
                let waited = monotonic() - start;
                let timed_out = timeout.is_some_and(|t| t < MAX_WAIT_NS && waited * 1e9 >= t as f64);
                let reached = from + waited;
                let target = match when {
                    Some(when) if timed_out || reached > when => when,
                    _ => reached,
                };
                vc.set(target.max(vc.now()));
            }
        }
    }
}

/// What a virtual loop does once its wait is over.
pub(crate) enum After {
    /// Loop time stays.
    Nothing,
    /// Jump to this deadline if the loop is still idle.
    Jump(f64),
    /// A held wait under `HoldPolicy::Real`: the earliest live deadline,
    /// loop time and real time when the wait began, and its timeout.
    RealSpeed {
        when: Option<f64>,
        from: f64,
        start: f64,
        timeout: Option<u64>,
    },
}

/// A number of seconds from Python that must be finite and not negative.
fn non_negative(name: &str, seconds: f64) -> PyResult<f64> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(seconds)
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, got {seconds}"
        )))
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// Switches a new loop to a virtual clock starting at `start`. Only
    /// before the loop has run or scheduled a timer: a deadline taken from
    /// the real clock means nothing on the virtual one.
    fn _vclock_enable(&self, py: Python<'_>, start: f64) -> PyResult<()> {
        if !start.is_finite() {
            return Err(PyValueError::new_err(format!(
                "start must be a finite time, got {start}"
            )));
        }
        if self.state.borrow(py).timers.len() > 0 || self.iterations.load(Ordering::Relaxed) > 0 {
            return Err(PyRuntimeError::new_err(
                "a virtual clock must be chosen before the loop runs or schedules a timer",
            ));
        }
        let clock = VirtualClock {
            now: AtomicU64::new(start.to_bits()),
            autojump: AtomicBool::new(true),
            threshold_ns: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            policy: AtomicU8::new(HoldPolicy::Real as u8),
        };
        self.clock
            .virt
            .set(clock)
            .map_err(|_| PyRuntimeError::new_err("this loop already has a virtual clock"))
    }

    /// Whether this loop runs on a virtual clock.
    fn _vclock_is_virtual(&self) -> bool {
        self.clock.virtual_clock().is_some()
    }

    /// `(autojump, autojump_threshold, hold_policy, holds)`.
    fn _vclock_options(&self) -> PyResult<(bool, f64, u8, u64)> {
        let vc = self.vclock()?;
        Ok((
            vc.autojump.load(Ordering::Relaxed),
            vc.threshold_ns.load(Ordering::Relaxed) as f64 / 1e9,
            vc.policy() as u8,
            vc.holds.load(Ordering::SeqCst),
        ))
    }

    /// Sets what the clock does when the loop is idle; `None` keeps a value.
    #[pyo3(signature = (autojump = None, threshold = None, policy = None))]
    fn _vclock_configure(
        &self,
        py: Python<'_>,
        autojump: Option<bool>,
        threshold: Option<f64>,
        policy: Option<u8>,
    ) -> PyResult<()> {
        let vc = self.vclock()?;
        let threshold_ns = match threshold {
            Some(t) => {
                let t = non_negative("autojump_threshold", t)?;
                if t * 1e9 >= MAX_WAIT_NS as f64 {
                    Some(MAX_WAIT_NS)
                } else {
                    Some((t * 1e9).ceil() as u64)
                }
            }
            None => None,
        };
        let policy = match policy {
            Some(p) => Some(HoldPolicy::from_u8(p).ok_or_else(|| PyValueError::new_err("unknown hold policy"))?),
            None => None,
        };
        if let Some(a) = autojump {
            vc.autojump.store(a, Ordering::Relaxed);
        }
        if let Some(t) = threshold_ns {
            vc.threshold_ns.store(t, Ordering::Relaxed);
        }
        if let Some(p) = policy {
            vc.policy.store(p as u8, Ordering::Relaxed);
        }
        // A loop blocked without a limit (autojump off, a frozen hold) must
        // look again under the new rules.
        self.wake(py);
        Ok(())
    }

    /// Moves loop time forward by `seconds`; returns the new loop time.
    /// Timers that come due run in the loop's next iteration.
    fn _vclock_advance(&self, py: Python<'_>, seconds: f64) -> PyResult<f64> {
        let vc = self.vclock()?;
        let seconds = non_negative("seconds", seconds)?;
        let now = vc.now() + seconds;
        if !now.is_finite() {
            return Err(PyValueError::new_err("loop time would overflow"));
        }
        vc.set(now);
        self.wake(py);
        Ok(now)
    }

    /// Takes a hold: no jump until it is released (see `HoldPolicy`).
    /// Callable from any thread.
    fn _vclock_hold(&self) -> PyResult<u64> {
        let vc = self.vclock()?;
        let prev = vc
            .holds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1))
            .map_err(|_| PyRuntimeError::new_err("too many clock holds"))?;
        Ok(prev + 1)
    }

    /// Releases a hold and wakes the loop so it can jump. Callable from any
    /// thread.
    fn _vclock_release(&self, py: Python<'_>) -> PyResult<u64> {
        let vc = self.vclock()?;
        let prev = vc
            .holds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_err(|_| PyRuntimeError::new_err("release of a clock hold that was not taken"))?;
        self.wake(py);
        Ok(prev - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn virtual_at(start: f64) -> Clock {
        let clock = Clock::default();
        let vc = VirtualClock {
            now: AtomicU64::new(start.to_bits()),
            autojump: AtomicBool::new(true),
            threshold_ns: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            policy: AtomicU8::new(HoldPolicy::Real as u8),
        };
        assert!(clock.virt.set(vc).is_ok());
        clock
    }

    #[test]
    fn real_clock_is_monotonic() {
        let clock = Clock::default();
        assert!(clock.virtual_clock().is_none());
        let (a, b) = (clock.now(), monotonic());
        assert!(b >= a && b - a < 1.0);
    }

    #[test]
    fn virtual_clock_moves_only_when_set() {
        let clock = virtual_at(5.0);
        assert_eq!(clock.now(), 5.0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(clock.now(), 5.0);
        clock.virtual_clock().unwrap().set(3605.0);
        assert_eq!(clock.now(), 3605.0);
    }

    #[test]
    fn holds_count_unless_ignored() {
        let clock = virtual_at(0.0);
        let vc = clock.virtual_clock().unwrap();
        assert!(!vc.held());
        vc.holds.store(1, Ordering::SeqCst);
        assert!(vc.held());
        vc.policy.store(HoldPolicy::Ignore as u8, Ordering::Relaxed);
        assert!(!vc.held());
        for p in [HoldPolicy::Real, HoldPolicy::Freeze, HoldPolicy::Ignore] {
            assert_eq!(HoldPolicy::from_u8(p as u8), Some(p));
        }
        assert_eq!(HoldPolicy::from_u8(3), None);
    }
}
