//! `write` and `is_closing` of the Python socket transport class, as raw
//! method descriptors that reach the native core directly.
//!
//! Those two are called once per message (`StreamWriter.drain` asks
//! `is_closing` each time), so a Python forwarding method, a frame per
//! call, is too slow for them. Binding the core's methods to each transport
//! as instance attributes avoided the frame but kept two bound-method objects
//! per connection. A method descriptor on the class costs neither: CPython
//! calls it without binding, and it finds the core in the transport's
//! `_core` attribute.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};
use pyo3::{intern, IntoPyObjectExt};

use super::socket::SocketTransportCore;
use crate::py::fastcall;
use crate::py::slot_members::SlotMembers;

/// The transport's `_core` slot, read where its member descriptor reads it
/// (see [`SlotMembers`]): the attribute lookup by name was most of what
/// these two methods cost besides their own work.
static CORE: SlotMembers<1> = SlotMembers::new(["_core"]);

/// The core of the transport `slf` (its `_core` attribute).
fn core_of<'py>(slf: &Bound<'py, PyAny>) -> PyResult<Bound<'py, SocketTransportCore>> {
    Ok(CORE.get(slf, 0)?.cast_into::<SocketTransportCore>()?)
}

/// `write(self, data)`'s one argument, positional or by keyword.
///
/// # Safety
/// As for any `METH_FASTCALL | METH_KEYWORDS` function: `args` holds `nargs`
/// positional values followed by one value per entry of `kwnames` (a tuple
/// of str, or null), all alive for the call.
unsafe fn data_argument<'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let nargs = nargs as usize;
    // SAFETY: the caller guarantees `args[..nargs + len(kwnames)]` are live.
    let at = |i: usize| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) };
    let names = if kwnames.is_null() {
        None
    } else {
        // SAFETY: CPython passes a tuple of str.
        Some(unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() })
    };
    if nargs > 1 {
        return Err(PyTypeError::new_err(format!(
            "SocketTransport.write() takes 2 positional arguments but {} were given",
            nargs + 1
        )));
    }
    let mut data = (nargs == 1).then(|| at(0));
    if let Some(names) = names {
        for (i, name) in names.iter().enumerate() {
            let is_data = name.is(intern!(py, "data")) || name.cast::<PyString>()?.to_str()? == "data";
            if !is_data {
                return Err(PyTypeError::new_err(format!(
                    "SocketTransport.write() got an unexpected keyword argument '{name}'"
                )));
            }
            if data.is_some() {
                return Err(PyTypeError::new_err(
                    "SocketTransport.write() got multiple values for argument 'data'",
                ));
            }
            data = Some(at(nargs + i));
        }
    }
    data.ok_or_else(|| PyTypeError::new_err("SocketTransport.write() missing 1 required positional argument: 'data'"))
}

unsafe extern "C" fn write(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let body = |py: Python<'_>| {
        // SAFETY: `slf` is the live `self` CPython passes.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method.
        let data = unsafe { data_argument(py, args, nargs, kwnames) }?;
        SocketTransportCore::write(&core_of(&slf)?, &data)?;
        Ok(py.None().into_ptr())
    };
    // SAFETY: CPython is calling this raw method, from an attached thread,
    // for the whole call.
    unsafe { fastcall::entry(body) }
}

unsafe extern "C" fn is_closing(
    slf: *mut ffi::PyObject,
    _args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let body = |py: Python<'_>| {
        if nargs != 0 || !kwnames.is_null() {
            return Err(PyTypeError::new_err("SocketTransport.is_closing() takes no arguments"));
        }
        // SAFETY: `slf` is the live `self` CPython passes.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let closing = core_of(&slf)?.get().is_closing(py)?;
        Ok(closing.into_py_any(py)?.into_ptr())
    };
    // SAFETY: CPython is calling this raw method, from an attached thread,
    // for the whole call.
    unsafe { fastcall::entry(body) }
}

/// Puts `write` and `is_closing` on `class` (the Python socket transport).
pub(super) fn install(class: &Bound<'_, PyType>) -> PyResult<()> {
    fastcall::install(
        class,
        c"write",
        c"write($self, data)\n--\n\nSends `data` now, buffering what the kernel does not take.",
        write,
    )?;
    fastcall::install(
        class,
        c"is_closing",
        c"is_closing($self, /)\n--\n\nWhether the transport is closing or closed.",
        is_closing,
    )
}
