//! Poll-before-block: when the loop runs out of work and the last events came
//! back quickly, it polls for a few microseconds before it blocks in epoll.
//!
//! Why: a request/response peer usually answers within microseconds of our
//! reply, and going to sleep for that moment costs more than the wait itself.
//! On a virtual machine a blocked thread's wake-up (scheduler, idle exit,
//! context switch) takes ~20 µs, so a one-connection echo server that blocks
//! after every reply runs at about half the rate of one that is still awake
//! when the next request lands. Measured on 2 vCPUs, 1 KiB echo over one
//! Unix connection: 14-19k req/s blocking, 33-43k polling, at no more CPU per
//! request, because the sleep and wake-up cost the CPU about as much as a
//! 20 µs poll. A 50 µs window also catches TCP peers, which answer later, but
//! then costs more CPU per request than it saves on streaming rows (100 KiB
//! messages arriving in pieces), so the default is 20 µs.
//!
//! The cost is bounded in both directions:
//! - System calls: the first check is timed to when events have been
//!   arriving (learned from the previous waits), so a hit replaces the
//!   blocking `epoll_wait` with a zero-timeout one, one system call either
//!   way. Only checks after a late first one add calls.
//! - Idle CPU: polling is on only while waits are short. A poll that finds
//!   nothing switches it off, and misses in a row keep it off for
//!   exponentially more waits, so a quiet loop blocks at once, as asyncio's
//!   does, and never spends more than one window per quiet spell. Events
//!   that come within 5 µs, several fds ready at once and wake-ups from the
//!   loop's own threads (the loop core passes those as no event) keep it off
//!   too: polling for them only burns CPU.
//!
//! Nothing observable changes: the same events are reported in the same
//! order, timers are never run early (the window is capped at the timeout),
//! and the GIL is released while polling, as while blocking.
//! `FERROLOOP_POLL_US` sets the longest window (0 turns polling off), for
//! hosts where idle CPU matters more than latency; under a cgroup quota
//! below two CPUs polling is off unless it says otherwise (see `poll_window`).
//!
//! With one CPU in the affinity mask the peer may be waiting for this very
//! CPU, so the poll yields it between checks ([`Pace::Yield`]) instead of
//! spinning: a peer on the same CPU runs at once, one elsewhere is caught as
//! by a spinning poll. A poll that lost the CPU for longer than the window
//! turns polling off for thousands of waits, at either pace: something else
//! wants the CPU, and a loop that blocks is woken for its event sooner than
//! one queued behind that thread's time slice.

use std::time::{Duration, Instant};

/// Longest poll before blocking unless `FERROLOOP_POLL_US` says otherwise
/// (or the process has under two CPUs, see `poll_window`).
pub(crate) const DEFAULT_MAX_NS: u64 = 20_000;
/// Between two checks after the first.
const CHECK_EVERY_NS: u64 = 4_000;
/// The earliest first check. A peer that answers sooner is answering
/// faster than this loop goes to sleep and wakes (the blocking wait for it
/// barely sleeps), and several peers in flight (a 64-connection echo) keep
/// events that close: polling for them only burns CPU, so it stops.
const MIN_FIRST_NS: u64 = 5_000;
/// After n misses in a row, 2^n waits pass before polling may resume.
const MAX_BACKOFF: u32 = 6;
/// A check this long past the end of the window means the poll lost the CPU.
const LOST_CPU_NS: u64 = 50_000;
/// A poll that lost the CPU keeps polling off for 2^this waits: each such
/// poll costs a whole time slice of the thread it yielded to, so it may
/// happen only rarely while that thread keeps the CPU busy.
const LOST_BACKOFF: u32 = 12;

/// What a poll does between two checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Spins: the peer runs on another CPU.
    Spin,
    /// Yields the CPU (`sched_yield`), for a peer that may share it.
    Yield,
}

/// The window in force, learned from the recent waits.
#[derive(Debug, Clone)]
pub(crate) struct Spinner {
    /// Longest poll before blocking; 0: never poll.
    max_ns: u64,
    /// When to check first, from the start of the wait; 0: polling is off.
    first_ns: u64,
    /// Polls in a row that found nothing (capped); each doubles the number
    /// of waits that must pass before polling may come back on.
    misses: u32,
    /// Blocking waits left before polling may come back on.
    cooldown: u32,
    /// fds the last poll reported ready.
    last_batch: usize,
    /// What a poll does between checks.
    pace: Pace,
    /// Why `max_ns` and `pace` are what they are.
    reason: String,
}

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Events were there at the first check.
    First,
    /// Events were there at a later check, this long after the start.
    Later(u64),
    /// Nothing within the window; the loop blocks next.
    Missed,
    /// The poll lost the CPU for longer than its window: another thread
    /// wants this CPU (events found meanwhile are still reported).
    Lost,
    /// The timeout ended the poll before the window did; says nothing about
    /// when events arrive.
    TimedOut,
}

impl Outcome {
    /// The outcome to learn from when the events a poll found all came from
    /// the loop's own threads, which are never polled for: a miss, unless
    /// the poll lost the CPU, which still keeps polling off for long.
    pub(crate) fn for_own_threads(self) -> Outcome {
        match self {
            Outcome::Lost => Outcome::Lost,
            _ => Outcome::Missed,
        }
    }
}

/// What [`Spinner::plan`] asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub first_ns: u64,
    pub until_ns: u64,
    /// The timeout cut the window short.
    pub capped: bool,
    pub pace: Pace,
}

impl Spinner {
    pub(crate) fn new(max_ns: u64) -> Self {
        Spinner {
            max_ns,
            first_ns: 0,
            misses: 0,
            cooldown: 0,
            last_batch: 0,
            pace: Pace::Spin,
            reason: String::new(),
        }
    }

    /// A spinner for the window `poll_window` chose.
    pub(crate) fn from_window(w: super::poll_window::Window) -> Self {
        Spinner {
            reason: w.reason,
            pace: w.pace,
            ..Spinner::new(w.max_ns)
        }
    }

    pub(crate) fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// The poll to make before a wait that may block for `timeout_ns`
    /// (`None`: indefinitely), or `None` to block at once.
    pub(crate) fn plan(&self, timeout_ns: Option<u64>) -> Option<Plan> {
        if self.first_ns == 0 || timeout_ns == Some(0) || self.last_batch > 1 {
            return None;
        }
        let limit = timeout_ns.unwrap_or(u64::MAX);
        Some(Plan {
            first_ns: self.first_ns.min(limit),
            until_ns: self.max_ns.min(limit),
            capped: limit < self.max_ns,
            pace: self.pace,
        })
    }

    /// Records how many fds a poll (blocking or not) reported ready. Several
    /// at once mean many peers in flight: the loop's own work then sets the
    /// pace, not one peer's answer, and the next event is likely there before
    /// any poll could look, so the next wait blocks (returning at once if so)
    /// without polling first.
    pub(crate) fn saw(&mut self, ready: usize) {
        self.last_batch = ready;
    }

    /// Learns from a poll's outcome.
    pub(crate) fn after_poll(&mut self, outcome: Outcome) {
        match outcome {
            // Probe a little earlier each time, so the first check follows
            // the peer when it speeds up.
            Outcome::First => {
                let earlier = self.first_ns - self.first_ns / 32;
                self.first_ns = if earlier < MIN_FIRST_NS { 0 } else { earlier };
                self.misses = 0;
            }
            Outcome::Later(at) => {
                // Not `clamp`: a window set below the floor must not panic.
                self.first_ns = at.max(MIN_FIRST_NS).min(self.max_ns);
                self.misses = 0;
            }
            Outcome::Missed => {
                self.first_ns = 0;
                self.misses = (self.misses + 1).min(MAX_BACKOFF);
                self.cooldown = 1 << self.misses;
            }
            Outcome::Lost => {
                self.first_ns = 0;
                self.misses = MAX_BACKOFF;
                self.cooldown = 1 << LOST_BACKOFF;
            }
            Outcome::TimedOut => {}
        }
    }

    /// Learns from a blocking wait that lasted `blocked_ns` and returned
    /// events (`woke`) or timed out. A wait ended by an event within two
    /// windows turns polling on, first checking halfway (the rest was the
    /// wake-up, which costs about as much as a window), unless recent polls
    /// missed or the wait was so short that it never slept.
    pub(crate) fn after_block(&mut self, blocked_ns: u64, woke: bool) {
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return;
        }
        if !woke {
            return;
        }
        let half = blocked_ns / 2;
        if self.first_ns == 0 {
            if blocked_ns < 2 * self.max_ns && half >= MIN_FIRST_NS {
                self.first_ns = half;
            }
        } else if blocked_ns < self.first_ns {
            // Sooner than the first check would have looked: look sooner,
            // or not at all if the wait was too short to have slept.
            self.first_ns = if half >= MIN_FIRST_NS { half } else { 0 };
        }
    }
}

/// Runs `plan`, calling `check` (a zero-timeout poll that returns the number
/// of events) at `plan.first_ns` and then every few microseconds until
/// `plan.until_ns`. Spins or yields in between, as `plan.pace` says: sleeping
/// is what this avoids. Returns the events found, the outcome, and how long
/// it polled (up to the start of the last check: the clock it already reads,
/// so the caller need not).
pub(crate) fn poll_for<F: FnMut() -> usize>(plan: Plan, mut check: F) -> (usize, Outcome, u64) {
    let start = Instant::now();
    let until = start + Duration::from_nanos(plan.until_ns);
    let mut next = start + Duration::from_nanos(plan.first_ns);
    let mut first = true;
    loop {
        let now = Instant::now();
        if now >= next {
            let n = check();
            let took = now.duration_since(start).as_nanos() as u64;
            let lost_cpu = took > plan.until_ns.saturating_add(LOST_CPU_NS);
            if n > 0 {
                let outcome = if lost_cpu {
                    Outcome::Lost
                } else if first {
                    Outcome::First
                } else {
                    Outcome::Later(took)
                };
                return (n, outcome, took);
            }
            if now >= until {
                let outcome = if lost_cpu {
                    Outcome::Lost
                } else if plan.capped {
                    Outcome::TimedOut
                } else {
                    Outcome::Missed
                };
                return (0, outcome, took);
            }
            first = false;
            next = (now + Duration::from_nanos(CHECK_EVERY_NS)).min(until);
        }
        match plan.pace {
            Pace::Spin => std::hint::spin_loop(),
            Pace::Yield => std::thread::yield_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_until_a_short_wait_ends_with_an_event() {
        let mut s = Spinner::new(50_000);
        assert_eq!(s.plan(None), None);
        s.after_block(2_000_000, true);
        assert_eq!(s.plan(None), None, "a long wait keeps it off");
        s.after_block(100_000, true);
        assert_eq!(s.plan(None), None, "two windows or more keep it off");
        s.after_block(30_000, false);
        assert_eq!(s.plan(None), None, "a timeout keeps it off");
        s.after_block(30_000, true);
        assert_eq!(
            s.plan(None),
            Some(Plan {
                first_ns: 15_000,
                until_ns: 50_000,
                capped: false,
                pace: Pace::Spin,
            })
        );
    }

    #[test]
    fn a_miss_turns_it_off() {
        let mut s = Spinner::new(50_000);
        s.after_block(10_000, true);
        s.after_poll(Outcome::Missed);
        assert_eq!(s.plan(None), None);
        s.after_block(10_000, true);
        assert_eq!(s.plan(None), None, "not on the wait right after a miss");
    }

    #[test]
    fn misses_in_a_row_back_off() {
        let mut s = Spinner::new(50_000);
        for misses in 1..=8u32 {
            s.after_block(10_000, true);
            assert!(s.plan(None).is_some());
            s.after_poll(Outcome::Missed);
            let waits = 1u32 << misses.min(MAX_BACKOFF);
            for _ in 0..waits {
                s.after_block(10_000, true);
                assert_eq!(s.plan(None), None);
            }
        }
        s.after_block(10_000, true);
        a_hit_resets_the_count(&mut s);
    }

    /// A hit, then a miss: the miss keeps polling off for 2 waits only.
    fn a_hit_resets_the_count(s: &mut Spinner) {
        s.after_poll(Outcome::First);
        s.after_poll(Outcome::Missed);
        s.after_block(10_000, true);
        s.after_block(10_000, true);
        assert_eq!(s.plan(None), None, "a hit resets the count, so one miss waits 2");
        s.after_block(10_000, true);
        assert!(s.plan(None).is_some());
    }

    #[test]
    fn the_first_check_follows_the_events() {
        let mut s = Spinner::new(50_000);
        s.after_block(10_000, true);
        s.after_poll(Outcome::Later(12_000));
        assert_eq!(s.plan(None).unwrap().first_ns, 12_000);
        s.after_poll(Outcome::First);
        assert_eq!(s.plan(None).unwrap().first_ns, 12_000 - 12_000 / 32);
        s.after_poll(Outcome::TimedOut);
        assert_eq!(s.plan(None).unwrap().first_ns, 12_000 - 12_000 / 32);
        for _ in 0..200 {
            s.after_poll(Outcome::First);
        }
        assert_eq!(s.plan(None), None, "events that come at once need no poll");
        s.after_block(2 * MIN_FIRST_NS - 1, true);
        assert_eq!(s.plan(None), None, "nor do waits too short to have slept");
        s.after_block(2 * MIN_FIRST_NS, true);
        assert_eq!(s.plan(None).unwrap().first_ns, MIN_FIRST_NS);
    }

    #[test]
    fn a_wait_shorter_than_the_first_check_pulls_it_in() {
        let mut s = Spinner::new(50_000);
        s.after_block(30_000, true);
        assert_eq!(s.plan(None).unwrap().first_ns, 15_000);
        s.after_block(20_000, true);
        assert_eq!(s.plan(None).unwrap().first_ns, 15_000, "a longer wait leaves it");
        s.after_block(10_000, true);
        assert_eq!(s.plan(None).unwrap().first_ns, 5_000);
        s.after_block(2_000, true);
        assert_eq!(s.plan(None), None, "a wait that never slept turns polling off");
    }

    #[test]
    fn several_ready_fds_skip_the_next_poll() {
        let mut s = Spinner::new(50_000);
        s.after_block(10_000, true);
        s.saw(3);
        assert_eq!(s.plan(None), None);
        s.saw(1);
        assert!(s.plan(None).is_some());
        s.saw(0);
        assert!(s.plan(None).is_some());
    }

    #[test]
    fn the_timeout_caps_the_window() {
        let mut s = Spinner::new(50_000);
        s.after_block(40_000, true);
        assert_eq!(s.plan(Some(0)), None);
        assert_eq!(
            s.plan(Some(5_000)),
            Some(Plan {
                first_ns: 5_000,
                until_ns: 5_000,
                capped: true,
                pace: Pace::Spin,
            })
        );
    }

    #[test]
    fn a_window_below_the_floor_never_polls_nor_panics() {
        for max in [0, 1_000, MIN_FIRST_NS, MIN_FIRST_NS + 1_000] {
            let mut s = Spinner::new(max);
            for blocked in [1_000, 9_000, 10_000, 11_000, 50_000] {
                s.after_block(blocked, true);
                s.after_poll(Outcome::Later(blocked));
                s.after_poll(Outcome::First);
            }
            if max <= MIN_FIRST_NS {
                assert_eq!(s.plan(None), None, "max {max}");
            }
        }
    }

    #[test]
    fn zero_max_never_polls() {
        let mut s = Spinner::new(0);
        s.after_block(10, true);
        assert_eq!(s.plan(None), None);
    }

    #[test]
    fn poll_for_reports_where_the_events_were() {
        for pace in [Pace::Spin, Pace::Yield] {
            let plan = Plan {
                first_ns: 0,
                until_ns: 1_000_000,
                capped: false,
                pace,
            };
            assert_eq!(poll_for(plan, || 3).0, 3);
            assert_eq!(poll_for(plan, || 3).1, Outcome::First);
            let mut calls = 0;
            let (n, outcome, took) = poll_for(plan, || {
                calls += 1;
                usize::from(calls == 3)
            });
            assert_eq!(n, 1);
            assert!(matches!(outcome, Outcome::Later(at) if at >= 2 * CHECK_EVERY_NS && at == took));
            let short = Plan {
                first_ns: 1_000,
                until_ns: 10_000,
                ..plan
            };
            let start = Instant::now();
            let (n, outcome, took) = poll_for(short, || 0);
            assert_eq!((n, outcome), (0, Outcome::Missed));
            assert!(took >= 10_000 && start.elapsed() >= Duration::from_nanos(took));
            let capped = Plan { capped: true, ..short };
            assert_eq!(poll_for(capped, || 0).1, Outcome::TimedOut);
        }
    }

    #[test]
    fn a_poll_that_lost_the_cpu_says_so() {
        for pace in [Pace::Spin, Pace::Yield] {
            for capped in [false, true] {
                let plan = Plan {
                    first_ns: 0,
                    until_ns: 10_000,
                    capped,
                    pace,
                };
                let mut calls = 0;
                // The first check stands for a thread that lost its CPU for
                // longer than the window and the allowance past it.
                let (n, outcome, took) = poll_for(plan, || {
                    calls += 1;
                    if calls == 1 {
                        std::thread::sleep(Duration::from_nanos(2 * LOST_CPU_NS));
                        0
                    } else {
                        1
                    }
                });
                assert_eq!((n, outcome), (1, Outcome::Lost), "{pace:?} capped={capped}");
                assert!(took > plan.until_ns + LOST_CPU_NS);
                calls = 0;
                let (n, outcome, _) = poll_for(plan, || {
                    calls += 1;
                    if calls == 1 {
                        std::thread::sleep(Duration::from_nanos(2 * LOST_CPU_NS));
                    }
                    0
                });
                assert_eq!((n, outcome), (0, Outcome::Lost), "{pace:?} capped={capped}");
            }
        }
    }

    #[test]
    fn losing_the_cpu_keeps_polling_off_for_long() {
        let mut s = Spinner::new(50_000);
        s.after_block(10_000, true);
        s.after_poll(Outcome::Lost);
        for _ in 0..(1u32 << LOST_BACKOFF) {
            s.after_block(10_000, true);
            assert_eq!(s.plan(None), None);
        }
        s.after_block(10_000, true);
        assert!(s.plan(None).is_some());
        a_hit_resets_the_count(&mut s);
    }

    #[test]
    fn a_wake_up_from_own_threads_is_a_miss_unless_the_cpu_was_lost() {
        for outcome in [
            Outcome::First,
            Outcome::Later(7_000),
            Outcome::Missed,
            Outcome::TimedOut,
        ] {
            assert_eq!(outcome.for_own_threads(), Outcome::Missed, "{outcome:?}");
        }
        assert_eq!(Outcome::Lost.for_own_threads(), Outcome::Lost);
    }
}
