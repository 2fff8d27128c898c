//! Which process we are, kept current across `fork` without a system call.
//!
//! A forked child inherits the loop's epoll instance: the same kernel object
//! as the parent's, not a copy, so an `epoll_ctl` from the child changes what
//! the parent's loop watches. Kernel objects created here record the pid that
//! made them and compare it with [`current`] before any call that would act
//! on the parent's share; the comparison is an atomic load, cheap enough for
//! every registration.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The pid of this process; 0 until first asked.
static PID: AtomicU32 = AtomicU32::new(0);
static HOOK: Once = Once::new();

/// Runs in the child inside `fork`: only async-signal-safe work (`getpid`
/// and an atomic store).
extern "C" fn after_fork_in_child() {
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

/// The calling process's pid, correct in a forked child from the moment
/// `fork` returns (for forks that run `pthread_atfork` handlers: `os.fork`,
/// `multiprocessing`'s fork start method, C `fork`).
pub fn current() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    HOOK.call_once(|| {
        // SAFETY: registers a handler that only calls getpid and stores an
        // atomic, which is all a child may do before `fork` returns. Failure
        // (ENOMEM) leaves the cache unset and every call asking the kernel.
        if unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) } == 0 {
            after_fork_in_child();
        }
    });
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        pid
    } else {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() as u32 }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn current_is_getpid() {
        // SAFETY: getpid has no preconditions.
        assert_eq!(super::current(), unsafe { libc::getpid() } as u32);
        assert_eq!(super::current(), super::current());
    }
}
