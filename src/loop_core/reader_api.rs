//! `add_reader`, `remove_reader`, `add_writer`, `remove_writer`.
//!
//! Level-triggered, as asyncio's selector loop: a reader whose fd stays
//! readable is called again every iteration until it reads or is removed.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple, PyWeakrefReference};

use super::readers::{Registry, Replaced, Side};
use super::LoopCore;
use crate::handles::Handle;
use crate::sys::epoll::Epoll;
use crate::sys::Errno;

type Io = Registry<Py<Handle>, Py<PyAny>>;

/// An int fd, or the result of `fileobj.fileno()`, with selectors' errors.
pub fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let fd = if obj.is_instance_of::<PyInt>() {
        obj.clone()
    } else {
        let invalid = || {
            PyValueError::new_err(format!(
                "Invalid file object: {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        };
        let fileno = obj.call_method0(pyo3::intern!(obj.py(), "fileno")).map_err(|e| {
            let py = obj.py();
            let known = e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                || e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)
                || e.is_instance_of::<PyValueError>(py);
            if known {
                invalid()
            } else {
                e
            }
        })?;
        obj.py().get_type::<PyInt>().call1((fileno,)).map_err(|_| invalid())?
    };
    // Any negative int is invalid, however large; an fd past C int's range
    // is never registered: `add_*` fail as selectors' `epoll.register`
    // does, `remove_*` return False.
    if fd.lt(0)? {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {fd}")));
    }
    fd.extract::<i32>()
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

/// `fileobj_to_fd` for `remove_reader`/`remove_writer`: `None` for an fd too
/// large to be registered, which asyncio reports as not registered.
fn fd_to_remove(obj: &Bound<'_, PyAny>) -> PyResult<Option<i32>> {
    match fileobj_to_fd(obj) {
        Ok(fd) => Ok(Some(fd)),
        Err(err) if err.is_instance_of::<PyOverflowError>(obj.py()) => Ok(None),
        Err(err) => Err(err),
    }
}

impl LoopCore {
    /// Installs `callback(*args)` on one side of `fd`, cancelling the handle
    /// it replaces, as asyncio does. Used by transports and socket operations.
    pub(crate) fn add_io_fd(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        self.check_open()?;
        let handle = self.new_handle(py, callback, args, None)?;
        self.install(py, |io, epoll| io.add(epoll, fd, side, handle.clone_ref(py)))?;
        Ok(handle)
    }

    /// Runs `add` on the registry with the loop's epoll, then cancels the
    /// handle it replaced, as asyncio does, and releases what it returned
    /// only once the registry is no longer borrowed (a decref can run code).
    fn install(
        &self,
        py: Python<'_>,
        add: impl FnOnce(&mut Io, &Epoll) -> Result<Replaced<Py<Handle>, Py<PyAny>>, Errno>,
    ) -> PyResult<()> {
        let old = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else {
                return Err(crate::errors::loop_closed());
            };
            add(&mut self.state.borrow_mut(py).io, &sys.epoll)?
        };
        if let Some(old) = old.handle {
            Handle::cancel_inner(old.bind(py))?;
        }
        drop(old.owner);
        Ok(())
    }

    /// Installs a `sock_*` operation's `callback` on one side of `sock`'s
    /// `fd`. The registration outlives the operation (see `park_sock_op`), so
    /// consecutive operations on one socket cost no `epoll_ctl`. `sock` is
    /// remembered through a weak reference: a live, identical socket object
    /// still owns the same open file, while an fd number alone may have been
    /// closed and reused.
    pub(crate) fn add_sock_op(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        side: Side,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Handle>> {
        self.check_open()?;
        // The temporary strong reference `upgrade` takes is to an object that
        // is alive anyway, so releasing it under the borrow runs no code.
        let same = self.state.borrow(py).io.owned_by(fd, |owner| {
            owner
                .bind(py)
                .cast::<PyWeakrefReference>()
                .is_ok_and(|w| w.upgrade().is_some_and(|o| o.is(sock)))
        });
        // Created outside any borrow: allocating can run the garbage collector.
        // An object that takes no weak references is verified every time.
        let owner = if same {
            None
        } else {
            Some(match PyWeakrefReference::new(sock) {
                Ok(weak) => weak.into_any().unbind(),
                Err(_) => py.None(),
            })
        };
        let handle = self.new_handle(py, callback, &PyTuple::empty(py), None)?;
        self.install(py, |io, epoll| io.add_op(epoll, fd, side, handle.clone_ref(py), owner))?;
        Ok(handle)
    }

    /// The `sock_*` operation whose handle is `handle` is over: its side of
    /// `fd` stays registered for the next one. Nothing if the handle was
    /// replaced meanwhile (by `add_reader`, say).
    pub(crate) fn park_sock_op(&self, py: Python<'_>, fd: RawFd, side: Side, handle: &Py<Handle>) {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let taken = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else { return };
            self.state
                .borrow_mut(py)
                .io
                .park(&sys.epoll, fd, side, |h| h.is(handle))
        };
        drop(taken);
    }

    /// Stops watching one side of `fd`; whether it was watched.
    pub(crate) fn remove_io_fd(&self, py: Python<'_>, fd: RawFd, side: Side) -> PyResult<bool> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let removed = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else { return Ok(false) };
            self.state.borrow_mut(py).io.remove(&sys.epoll, fd, side)
        };
        match removed {
            Some(handle) => {
                Handle::cancel_inner(handle.bind(py))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether `fd` has a live (reader, writer) registered.
    pub(crate) fn io_state(&self, py: Python<'_>, fd: RawFd) -> (bool, bool) {
        self.state.borrow(py).io.sides(fd)
    }
}

#[pymethods]
impl LoopCore {
    /// Calls `callback(*args)` whenever `fd` is readable.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        slf.get()
            .add_io_fd(slf.py(), fileobj_to_fd(fd)?, Side::Read, callback, args)
    }

    /// Calls `callback(*args)` whenever `fd` is writable.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        slf.get()
            .add_io_fd(slf.py(), fileobj_to_fd(fd)?, Side::Write, callback, args)
    }

    /// Stops watching `fd` for reading; `True` if a reader was registered.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        match fd_to_remove(fd)? {
            Some(fd) => slf.get().remove_io_fd(slf.py(), fd, Side::Read),
            None => Ok(false),
        }
    }

    /// (reader registered, writer registered) for `fd`, for transport reprs.
    fn _io_state(slf: &Bound<'_, Self>, fd: RawFd) -> (bool, bool) {
        slf.get().io_state(slf.py(), fd)
    }

    /// Stops watching `fd` for writing; `True` if a writer was registered.
    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        match fd_to_remove(fd)? {
            Some(fd) => slf.get().remove_io_fd(slf.py(), fd, Side::Write),
            None => Ok(false),
        }
    }
}
