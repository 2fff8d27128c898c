//! The only place that makes raw system calls.
//!
//! Every call goes through [`syscall!`], which turns the C convention (`-1` and
//! `errno`) into `Result<_, Errno>`. Callers convert an [`Errno`] into a Python
//! exception with [`crate::errors::os_error`], which keeps `errno` intact.

pub mod cpus;
pub mod epoll;
pub mod eventfd;
pub mod features;
pub mod pipe;
pub mod process;
pub mod socket;

use std::fmt;

/// An `errno` value from a failed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Calls a libc function and maps a `-1` return to `Err(Errno::last())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site passes arguments that satisfy the libc
        // function's contract; see the comment at the call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err($crate::sys::Errno::last())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Reads `CLOCK_MONOTONIC` in nanoseconds: cheaper than `Instant`'s
/// arithmetic, for timestamps taken on the loop's hot paths.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Reads `CLOCK_MONOTONIC` in seconds, the clock behind `time.monotonic()`.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Same arithmetic as CPython's _PyTime_AsSecondsDouble, so that
    // loop.time() and time.monotonic() agree to the last bit.
    let ns: i64 = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_is_monotonic() {
        let mut last = super::monotonic();
        for _ in 0..10_000 {
            let now = super::monotonic();
            assert!(now >= last);
            last = now;
        }
    }
}
