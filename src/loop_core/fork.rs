//! A forked child's copy of a loop.
//!
//! `fork` copies the loop's memory but not its epoll instance: parent and
//! child hold descriptors of one kernel object, so a child that registered,
//! unregistered or closed through it would change what the parent's loop
//! watches. The child's copy therefore leaves the parent's kernel objects
//! alone: it closes only its own descriptors of them and starts over with a
//! new epoll instance and waker. Registrations made before the fork stay the
//! parent's: their callbacks never run in the child. Queued callbacks and
//! timers are plain memory and stay with the copy.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use pyo3::prelude::*;

use super::{LoopCore, Sys, WAKER_TOKEN};
use crate::errors::os_error;
use crate::sys::epoll::{Epoll, READABLE};
use crate::sys::eventfd::EventFd;

impl LoopCore {
    /// Gives a loop inherited through `fork` kernel objects of its own; a
    /// no-op in the process that created the loop, and for a closed loop.
    pub(crate) fn leave_parent(&self, py: Python<'_>) -> PyResult<()> {
        let inherited = matches!(self.sys.borrow(py).as_ref(), Some(sys) if sys.epoll.inherited());
        if !inherited {
            return Ok(());
        }
        let epoll = Epoll::new().map_err(os_error)?;
        let waker = EventFd::new().map_err(os_error)?;
        epoll.add(waker.as_raw_fd(), READABLE, WAKER_TOKEN).map_err(os_error)?;
        let parents = self.sys.borrow_mut(py).replace(Sys {
            epoll,
            waker: std::sync::Arc::new(waker),
        });
        // The inherited epoll refuses every change in this process, so this
        // only forgets the registrations; the parent keeps them.
        let io = match parents.as_ref() {
            Some(sys) => self.state.borrow_mut(py).io.drain(&sys.epoll),
            None => (Vec::new(), Vec::new()),
        };
        self.woken.store(false, Ordering::SeqCst);
        // Closes this process's descriptors only. Dropped last: a decref can
        // run any code.
        drop(parents);
        // The child's socket objects got the io references with the memory
        // copy: giving them back lets the child's own close() close its copy
        // of the descriptor (the parent's file stays open).
        let (regs, owners) = io;
        drop(owners);
        super::reader_api::release_regs(py, regs, false);
        Ok(())
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// Called in a forked child for every live loop (`os.register_at_fork`).
    fn _leave_parent(&self, py: Python<'_>) -> PyResult<()> {
        self.leave_parent(py)
    }
}
