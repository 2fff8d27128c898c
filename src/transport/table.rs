//! `loop._transports`: which open socket transport uses which fd.
//!
//! asyncio keeps a `WeakValueDictionary` there, so that `add_reader` and the
//! `sock_*` methods can refuse an fd a transport uses (`_ensure_fd_no_transport`)
//! without keeping transports alive. That costs every connection a weak
//! reference with a callback, an int key and a dict entry. Here an entry is an
//! fd and the address of the transport's core, and the core removes its own
//! entry: when `connection_lost` has run (the transport is closed, and
//! asyncio's check ignores closing transports anyway), and at the latest when
//! its state is dropped, before its memory is freed. So the table never holds
//! a reference and never names a freed core.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{ffi, intern};

use super::socket::SocketTransportCore;
use crate::gil_cell::GilCell;

/// The address of a live `SocketTransportCore` (see [`Listing`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct CorePtr(NonNull<ffi::PyObject>);

// SAFETY: the pointer is only stored, compared and (with the GIL held, through
// the table's GilCell) turned into a reference while the core it names is
// alive, which its `Listing` guarantees; no thread reads it without the GIL.
unsafe impl Send for CorePtr {}

#[pyclass(module = "ferroloop._ferroloop", frozen, mapping)]
pub struct TransportTable {
    /// Borrowed only for lookups and updates that run no Python code, so a
    /// `Listing` dropped by the garbage collector can always borrow it.
    entries: GilCell<HashMap<RawFd, CorePtr>>,
}

/// A core's entry in a table: removed when this is dropped, if the fd still
/// names that core. It lives in the core's own state, so it is dropped
/// before the core is freed.
pub(super) struct Listing {
    table: Py<TransportTable>,
    fd: RawFd,
    core: CorePtr,
}

impl Drop for Listing {
    fn drop(&mut self) {
        // SAFETY: a `Listing` lives in a core's state, which is dropped only
        // on a thread attached to the interpreter (a method of the core, its
        // `__clear__` or its deallocation), also while the interpreter shuts
        // down, when `Python::attach` would refuse to run.
        let py = unsafe { Python::assume_attached() };
        let mut entries = self.table.get().entries.borrow_mut(py);
        if entries.get(&self.fd) == Some(&self.core) {
            entries.remove(&self.fd);
        }
    }
}

impl TransportTable {
    /// Lists `core` under `fd`, replacing what was there; the returned
    /// `Listing` must be kept in `core`'s state.
    pub(super) fn list(
        table: &Bound<'_, TransportTable>,
        fd: RawFd,
        core: &Bound<'_, SocketTransportCore>,
    ) -> Option<Listing> {
        let py = table.py();
        let ptr = CorePtr(NonNull::new(core.as_ptr())?);
        table.get().entries.borrow_mut(py).insert(fd, ptr);
        Some(Listing {
            table: table.clone().unbind(),
            fd,
            core: ptr,
        })
    }

    /// Whether a transport is listed under `fd`.
    pub(crate) fn contains_fd(&self, py: Python<'_>, fd: RawFd) -> bool {
        self.entries.borrow(py).contains_key(&fd)
    }

    /// The Python transport listed under `key`, if any.
    fn lookup<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = key.py();
        key.hash()?;
        let Ok(fd) = key.extract::<RawFd>() else {
            return Ok(None);
        };
        let Some(ptr) = self.entries.borrow(py).get(&fd).copied() else {
            return Ok(None);
        };
        // SAFETY: a listed core is alive (see `Listing`), and nothing ran
        // between the lookup and taking this reference.
        let core = unsafe { Bound::from_borrowed_ptr(py, ptr.0.as_ptr()) };
        let core = core.cast_into::<SocketTransportCore>()?;
        Ok(core.get().owner_object(py))
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl TransportTable {
    #[new]
    fn new() -> Self {
        TransportTable {
            entries: GilCell::new(HashMap::new()),
        }
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.entries.borrow(py).len()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.lookup(key)?.is_some())
    }

    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.lookup(key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.lookup(key)?.or(default))
    }

    /// Lists `transport` (a ferroloop socket transport) under `fd`, as
    /// asyncio's `_sendfile_native` does after taking it out.
    fn __setitem__(slf: &Bound<'_, Self>, fd: RawFd, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = transport
            .getattr(intern!(py, "_core"))
            .ok()
            .and_then(|c| c.cast_into::<SocketTransportCore>().ok())
            .ok_or_else(|| PyTypeError::new_err("only a ferroloop socket transport can be listed"))?;
        SocketTransportCore::list_in(&core, slf, fd);
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        match self.entries.borrow_mut(py).remove(&fd) {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(fd)),
        }
    }

    /// The listed fds.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let fds: Vec<RawFd> = self.entries.borrow(py).keys().copied().collect();
        PyList::new(py, fds)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.keys(py)?.try_iter()?.into_any())
    }
}
