//! What the running kernel offers that ferroloop uses, probed once per call
//! for `python -m ferroloop --info`.
//!
//! - `epoll_pwait2` (Linux 5.11): waits with nanosecond timeouts; without it
//!   waits round up to whole milliseconds (see `epoll`).
//! - `pidfd_open` (Linux 5.3): a child's exit is a readable fd; without it the
//!   loop polls for the exit (see `_subprocess.py`).
//!
//! Each probe is a harmless call: a zero-timeout wait on a fresh epoll
//! instance, a pidfd for this process that is closed at once. ENOSYS (or
//! EPERM from a seccomp filter) means the call is not available.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use pyo3::prelude::*;

use super::epoll::Epoll;

fn unavailable(errno: i32) -> bool {
    errno == libc::ENOSYS || errno == libc::EPERM
}

/// Whether `epoll_pwait2` can be called.
fn epoll_pwait2() -> bool {
    let Ok(ep) = Epoll::new() else { return false };
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ep` is an open epoll fd, `events` is valid for its one entry,
    // `ts` is a live timespec (zero: return at once), and a null sigmask leaves
    // the mask unchanged.
    let n = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            ep.as_raw_fd(),
            events.as_mut_ptr(),
            1,
            &ts as *const libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    };
    n >= 0 || !unavailable(super::Errno::last().0)
}

/// Whether `pidfd_open` can be called.
fn pidfd_open() -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; the
    // pid is this process's, which exists.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd < 0 {
        return !unavailable(super::Errno::last().0);
    }
    let Ok(fd) = i32::try_from(fd) else { return true };
    // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns;
    // dropping the OwnedFd closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    true
}

fn probe() -> BTreeMap<&'static str, bool> {
    BTreeMap::from([("epoll_pwait2", epoll_pwait2()), ("pidfd_open", pidfd_open())])
}

/// `{feature: available}` for the kernel features ferroloop uses.
#[ferroloop_macros::contained]
#[pyfunction]
pub(crate) fn kernel_features() -> BTreeMap<&'static str, bool> {
    probe()
}

#[cfg(test)]
mod tests {
    #[test]
    fn probes_answer_and_leak_nothing() {
        let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let features = super::probe();
        assert_eq!(features.len(), 2);
        assert_eq!(std::fs::read_dir("/proc/self/fd").unwrap().count(), before);
    }
}
