//! `add_reader`, `remove_reader`, `add_writer`, `remove_writer`.
//!
//! Level-triggered, as asyncio's selector loop: a reader whose fd stays
//! readable is called again every iteration until it reads or is removed.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple, PyWeakrefReference};

use super::io_callback::{IoCallback, ReaderHooks};
use super::io_refs::{holds_io_refs, release_io_ref, take_io_ref};
use super::readers::{Reg, Registry, Replaced, Side};
use super::LoopCore;
use crate::handles::Handle;
use crate::sys::epoll::Epoll;
use crate::sys::Errno;

type Io = Registry<IoCallback, Py<PyAny>, Py<PyAny>>;

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

/// One registration in the loop's registry.
pub(crate) type IoReg = Reg<IoCallback, Py<PyAny>>;

/// Releases registrations that left the registry: their io references,
/// and, for `stale` ones (made for a file the number no longer names), the
/// handle is cancelled and a waiting `sock_*` operation fails.
pub(crate) fn release_regs(py: Python<'_>, regs: impl IntoIterator<Item = IoReg>, stale: bool) {
    for reg in regs {
        if stale {
            if let Some(handle) = reg.handle.as_handle(py) {
                if let Err(err) = crate::sock_ops::abandon(handle) {
                    err.write_unraisable(py, None);
                }
            }
            if let Err(err) = reg.handle.cancel(py) {
                err.write_unraisable(py, None);
            }
        }
        if reg.io_ref {
            if let Some(file) = &reg.file {
                release_io_ref(file.bind(py));
            }
        }
    }
}

impl LoopCore {
    /// Installs `callback(*args)` on one side of `fd`, cancelling the handle
    /// it replaces, as asyncio does.
    pub(crate) fn add_io_fd(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        self.add_io_file(py, fd, side, None, false, callback, args, None)
    }

    /// [`LoopCore::add_io_fd`] on behalf of `file` (the object a program
    /// passed to `add_reader`, a transport's socket), remembered so that only
    /// it removes the registration. With `io_ref`, the registration holds one
    /// of the socket's io references while it lasts. `context`: the one the
    /// callback runs in (`None`: a copy of the current one, as asyncio).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_io_file(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        file: Option<&Bound<'_, PyAny>>,
        io_ref: bool,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_open()?;
        let handle = self.new_handle(py, callback, args, context)?;
        let reg = Reg::new(
            IoCallback::handle(handle.clone_ref(py)),
            file.map(|f| f.clone().unbind()),
            io_ref,
        );
        if io_ref {
            if let Some(file) = file {
                take_io_ref(file)?;
            }
        }
        let installed = self.install(py, |io, epoll| io.add(epoll, fd, side, reg));
        if installed.is_err() && io_ref {
            if let Some(file) = file {
                release_io_ref(file);
            }
        }
        installed?;
        Ok(handle)
    }

    /// Watches `fd` for reading on behalf of a transport: `reader` (its
    /// core, registered for `file`, its socket) is called in its own
    /// context on every readiness event, through a handle made for the
    /// event (see `io_callback`), not one kept for the registration. In debug
    /// mode a handle is kept as for `add_reader`, so that it records where
    /// the registration was made for slow-callback reports.
    pub(crate) fn add_transport_reader(
        &self,
        py: Python<'_>,
        fd: RawFd,
        file: &Bound<'_, PyAny>,
        reader: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        hooks: &'static ReaderHooks,
    ) -> PyResult<()> {
        if self.debug() {
            let args = PyTuple::empty(py);
            return self
                .add_io_file(py, fd, Side::Read, Some(file), false, reader, &args, context)
                .map(drop);
        }
        self.check_open()?;
        let reg = Reg::new(
            IoCallback::reader(reader.clone().unbind(), hooks),
            Some(file.clone().unbind()),
            false,
        );
        self.install(py, |io, epoll| io.add(epoll, fd, Side::Read, reg))
    }

    /// Runs `add` on the registry with the loop's epoll, then cancels the
    /// handle it replaced, as asyncio does, and releases what it returned
    /// only once the registry is no longer borrowed (a decref can run code).
    fn install(
        &self,
        py: Python<'_>,
        add: impl FnOnce(&mut Io, &Epoll) -> Result<Replaced<IoCallback, Py<PyAny>, Py<PyAny>>, Errno>,
    ) -> PyResult<()> {
        let old = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else {
                return Err(crate::errors::loop_closed());
            };
            add(&mut self.state.borrow_mut(py).io, &sys.epoll)?
        };
        // Nearly always empty: the test is cheaper than walking nothing.
        if !old.stale.is_empty() {
            release_regs(py, old.stale, true);
        }
        if let Some(old) = old.handle {
            let cancelled = old.handle.cancel(py);
            release_regs(py, [old], false);
            cancelled?;
        }
        drop(old.owner);
        Ok(())
    }

    /// Installs a `sock_*` operation's `callback` on one side of `sock`'s
    /// `fd`. The registration outlives the operation (see `park_sock_op`), so
    /// consecutive operations on one socket cost no `epoll_ctl`. `sock` is
    /// remembered through a weak reference: a live, identical socket object
    /// still owns the same open file, while an fd number alone may have been
    /// closed and reused. While the operation waits it holds one of `sock`'s
    /// io references (a `socket.socket`), so the file stays open even if the
    /// program closes the socket meanwhile (`io_ref`: `sock` is a
    /// `socket.socket`, see [`holds_io_refs`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_sock_op(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        side: Side,
        callback: &Bound<'_, PyAny>,
        verify: bool,
        io_ref: bool,
    ) -> PyResult<Py<Handle>> {
        self.check_open()?;
        // The temporary strong reference `upgrade` takes is to an object that
        // is alive anyway, so releasing it under the borrow runs no code.
        let same = !verify
            && self.state.borrow(py).io.owned_by(fd, |owner| {
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
        let reg = Reg::new(
            IoCallback::handle(handle.clone_ref(py)),
            Some(sock.clone().unbind()),
            io_ref,
        );
        if io_ref {
            take_io_ref(sock)?;
        }
        let installed = self.install(py, |io, epoll| io.add_op(epoll, fd, side, reg, owner));
        if installed.is_err() && io_ref {
            release_io_ref(sock);
        }
        installed?;
        Ok(handle)
    }

    /// The `sock_*` operation whose handle is `handle` is over: its side of
    /// `fd` stays registered for the next one (removed instead unless
    /// `keep`). Nothing if the handle was replaced meanwhile (by
    /// `add_reader`, say).
    pub(crate) fn park_sock_op(&self, py: Python<'_>, fd: RawFd, side: Side, handle: &Py<Handle>, keep: bool) {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let taken = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else { return };
            let io = &mut self.state.borrow_mut(py).io;
            if keep {
                io.park(&sys.epoll, fd, side, |r| r.handle.is(handle))
            } else {
                io.remove(&sys.epoll, fd, side, |r| r.handle.is(handle))
            }
        };
        release_regs(py, taken, false);
    }

    /// Stops watching one side of `fd`; whether it was watched. With `file`,
    /// only a registration made for that object is removed.
    pub(crate) fn remove_io_file(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        file: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let removed = {
            let sys = self.sys.borrow(py);
            let Some(sys) = sys.as_ref() else { return Ok(false) };
            self.state
                .borrow_mut(py)
                .io
                .remove(&sys.epoll, fd, side, |r| match file {
                    Some(file) => r.file.as_ref().is_some_and(|f| f.is(file)),
                    None => true,
                })
        };
        match removed {
            Some(reg) => {
                let cancelled = reg.handle.cancel(py);
                release_regs(py, [reg], false);
                cancelled?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stops watching one side of `fd`, whoever registered it.
    pub(crate) fn remove_io_fd(&self, py: Python<'_>, fd: RawFd, side: Side) -> PyResult<bool> {
        self.remove_io_file(py, fd, side, None)
    }

    /// `remove_reader(obj)`/`remove_writer(obj)`: by `obj`'s fd, or, once
    /// `obj.fileno()` fails (a closed socket says -1), by the registration
    /// made for `obj` itself, as selectors finds it.
    fn remove_fileobj(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, side: Side) -> PyResult<bool> {
        match fileobj_to_fd(obj) {
            Ok(fd) => self.remove_io_fd(py, fd, side),
            // Past C int's range: never registered, as asyncio reports it.
            Err(err) if err.is_instance_of::<PyOverflowError>(py) => Ok(false),
            Err(err) if !obj.is_instance_of::<PyInt>() => {
                let found = self
                    .state
                    .borrow(py)
                    .io
                    .find(side, |r| r.file.as_ref().is_some_and(|f| f.is(obj)));
                match found {
                    Some(fd) => self.remove_io_file(py, fd, side, Some(obj)),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Whether `fd` has a live (reader, writer) registered.
    pub(crate) fn io_state(&self, py: Python<'_>, fd: RawFd) -> (bool, bool) {
        self.state.borrow(py).io.sides(fd)
    }

    /// `add_reader`/`add_writer` with an fd or a file object.
    fn add_fileobj(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        side: Side,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let fd = fileobj_to_fd(obj)?;
        if obj.is_instance_of::<PyInt>() {
            return self.add_io_fd(py, fd, side, callback, args);
        }
        self.add_io_file(py, fd, side, Some(obj), holds_io_refs(obj), callback, args, None)
    }
}

#[ferroloop_macros::contained]
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
        slf.get().add_fileobj(slf.py(), fd, Side::Read, callback, args)
    }

    /// Calls `callback(*args)` whenever `fd` is writable.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        slf.get().add_fileobj(slf.py(), fd, Side::Write, callback, args)
    }

    /// Stops watching `fd` for reading; `True` if a reader was registered.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().remove_fileobj(slf.py(), fd, Side::Read)
    }

    /// (reader registered, writer registered) for `fd`, for transport reprs.
    fn _io_state(slf: &Bound<'_, Self>, fd: RawFd) -> (bool, bool) {
        slf.get().io_state(slf.py(), fd)
    }

    /// Stops watching `fd` for writing; `True` if a writer was registered.
    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().remove_fileobj(slf.py(), fd, Side::Write)
    }
}
