//! epoll, with nanosecond wait timeouts.
//!
//! asyncio's selector rounds timeouts up to whole milliseconds, so
//! `sleep(0.0005)` takes about 1.1 ms there. `epoll_pwait2` (Linux 5.11+) takes a
//! `timespec`; where the kernel lacks it (ENOSYS, or seccomp filters) we fall
//! back to `epoll_wait` with the timeout rounded *up* to the next millisecond,
//! so a timer can be late by under a millisecond but never early.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{syscall, Errno};

/// Readiness for reading (`EPOLLIN`, plus hang-up and error, as selectors does).
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Readiness for writing.
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Edge-triggered: report a change of readiness once, not every wait.
pub const EDGE: u32 = libc::EPOLLET as u32;

/// Set once `epoll_pwait2` fails with ENOSYS, so we stop trying it.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    /// The process that created it. A forked child shares the instance
    /// itself, so its changes would be the parent's too: it may only close
    /// its copy of the descriptor.
    pid: u32,
}

impl Epoll {
    /// Creates a close-on-exec epoll instance.
    pub fn new() -> Result<Self, Errno> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            pid: super::process::current(),
        })
    }

    /// Whether this process is a fork of the one that created the instance.
    pub fn inherited(&self) -> bool {
        self.pid != super::process::current()
    }

    /// Refused (`EBADF`: not this process's instance) in a forked child, so
    /// nothing the child does reaches the parent's interest set.
    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> Result<(), Errno> {
        if self.inherited() {
            return Err(Errno(libc::EBADF));
        }
        let mut ev = libc::epoll_event { events, u64: data };
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev))?;
        Ok(())
    }

    /// Starts watching `fd` for `events`; `data` comes back with each event.
    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events. `timeout_ns` of `None` waits forever, `Some(0)` polls.
    /// Returns the number of events written to the front of `events`.
    #[cfg(test)]
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ns: Option<u64>) -> Result<usize, Errno> {
        wait_fd(self.fd.as_raw_fd(), events, timeout_ns)
    }
}

/// [`Epoll::wait`] on a raw epoll fd, for callers that wait without holding
/// the GIL and so cannot hold a borrow of the [`Epoll`]. The caller keeps the
/// epoll instance open for the duration of the call.
pub fn wait_fd(epfd: RawFd, events: &mut [libc::epoll_event], timeout_ns: Option<u64>) -> Result<usize, Errno> {
    {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // Only a finite, non-zero timeout needs nanoseconds; epoll_wait skips
        // the timespec copy and signal-mask handling of epoll_pwait2.
        let precise = matches!(timeout_ns, Some(ns) if ns > 0);
        if precise && !NO_PWAIT2.load(Ordering::Relaxed) {
            let ts = timeout_ns.map(|ns| libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: the events buffer is valid for `max` entries, ts_ptr is null or
            // points to a live timespec, and a null sigmask leaves the mask unchanged.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    epfd,
                    events.as_mut_ptr(),
                    max,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = Errno::last();
            if err.0 != libc::ENOSYS && err.0 != libc::EPERM {
                return Err(err);
            }
            NO_PWAIT2.store(true, Ordering::Relaxed);
        }
        let ms = match timeout_ns {
            None => -1,
            Some(ns) => i32::try_from(ns.div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
        let n = syscall!(epoll_wait(epfd, events.as_mut_ptr(), max, ms))?;
        Ok(n as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_cannot_change_the_interest_set() {
        let mut ep = Epoll::new().unwrap();
        let waker = crate::sys::eventfd::EventFd::new().unwrap();
        ep.add(waker.as_raw_fd(), READABLE, 7).unwrap();
        assert!(!ep.inherited());
        // As a forked child sees it: created by another pid.
        ep.pid = ep.pid.wrapping_add(1);
        assert!(ep.inherited());
        assert_eq!(ep.delete(waker.as_raw_fd()), Err(Errno(libc::EBADF)));
        assert_eq!(ep.modify(waker.as_raw_fd(), WRITABLE, 7), Err(Errno(libc::EBADF)));
        assert_eq!(ep.add(0, READABLE, 8), Err(Errno(libc::EBADF)));
        ep.pid = ep.pid.wrapping_sub(1);
        // The registration is untouched.
        waker.notify();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(ep.wait(&mut evs, Some(0)), Ok(1));
        assert_eq!({ evs[0].u64 }, 7);
    }

    #[test]
    fn timeout_never_returns_early() {
        let ep = Epoll::new().unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        for _ in 0..200 {
            let start = crate::sys::monotonic();
            let n = ep.wait(&mut evs, Some(200_000)).unwrap();
            let took = crate::sys::monotonic() - start;
            assert_eq!(n, 0);
            assert!(took >= 200e-6, "woke after {took} s");
        }
    }

    #[test]
    fn eventfd_wakes_and_drains() {
        let ep = Epoll::new().unwrap();
        let efd = crate::sys::eventfd::EventFd::new().unwrap();
        ep.add(efd.as_raw_fd(), READABLE, 7).unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(ep.wait(&mut evs, Some(0)).unwrap(), 0);
        efd.notify();
        efd.notify();
        assert_eq!(ep.wait(&mut evs, Some(1_000_000_000)).unwrap(), 1);
        let data = evs[0].u64;
        assert_eq!(data, 7);
        efd.drain();
        assert_eq!(ep.wait(&mut evs, Some(0)).unwrap(), 0);
    }

    #[test]
    fn bad_fd_is_ebadf() {
        let ep = Epoll::new().unwrap();
        assert_eq!(ep.add(-1, READABLE, 0), Err(Errno(libc::EBADF)));
    }
}
