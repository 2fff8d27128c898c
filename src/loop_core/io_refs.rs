//! The io references the loop holds on `socket.socket` objects it waits on.
//!
//! `socket.close()` only closes the file once the socket's `_io_refs`
//! counter is 0: the loop holds one such reference while it waits on a
//! socket's behalf, so the fd number cannot be closed and handed to another
//! file under a pending wait. `_io_refs` and `_closed` are `__slots__` of
//! `socket.socket`, read and written where their member descriptors would
//! (see [`SlotMembers`]): a waiting operation touches them several times.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyType};

use crate::py::slot_members::SlotMembers;

/// Whether `obj` is a `socket.socket` (see the module's comment).
pub(crate) fn holds_io_refs(obj: &Bound<'_, PyAny>) -> bool {
    static SOCKET: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let py = obj.py();
    // The object's real type, not its `__class__`: a mock made with a
    // socket as its spec claims the class but has no counter.
    SOCKET.import(py, "socket", "socket").is_ok_and(|socket| {
        let ty = obj.get_type();
        ty.is(socket) || ty.is_subclass(socket).unwrap_or(false)
    })
}

/// `_io_refs` and `_closed`, read and written as `getattr`/`setattr` would.
static FIELDS: SlotMembers<2> = SlotMembers::new(["_io_refs", "_closed"]);
const IO_REFS: usize = 0;
const CLOSED: usize = 1;

fn io_refs(sock: &Bound<'_, PyAny>) -> PyResult<isize> {
    FIELDS.get(sock, IO_REFS)?.extract()
}

fn set_io_refs(sock: &Bound<'_, PyAny>, refs: isize) -> PyResult<()> {
    FIELDS.set(sock, IO_REFS, &PyInt::new(sock.py(), refs))
}

/// `sock._io_refs += 1` (see [`holds_io_refs`]).
pub(crate) fn take_io_ref(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    set_io_refs(sock, io_refs(sock)?.saturating_add(1))
}

/// Gives back a reference taken by [`take_io_ref`], as
/// `socket._decref_socketios()` does: the socket is really closed now if
/// the program closed it meanwhile. Errors are reported as unraisable: this
/// runs where nothing could handle them.
pub(crate) fn release_io_ref(sock: &Bound<'_, PyAny>) {
    let py = sock.py();
    let result = (|| -> PyResult<()> {
        let refs = io_refs(sock)?;
        if refs > 0 {
            set_io_refs(sock, refs - 1)?;
        }
        if FIELDS.get(sock, CLOSED)?.is_truthy()? {
            sock.call_method0(intern!(py, "close"))?;
        }
        Ok(())
    })();
    if let Err(err) = result {
        err.write_unraisable(py, Some(sock));
    }
}

/// Whether `sock._closed` is false: `socket.socket` sets it before it closes
/// or detaches, so while it is false the socket still names its fd.
pub(crate) fn is_open(sock: &Bound<'_, PyAny>) -> bool {
    FIELDS
        .get(sock, CLOSED)
        .is_ok_and(|c| c.is(PyBool::new(sock.py(), false)))
}
