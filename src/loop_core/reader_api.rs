//! `add_reader`, `remove_reader`, `add_writer`, `remove_writer`.
//!
//! Level-triggered, as asyncio's selector loop: a reader whose fd stays
//! readable is called again every iteration until it reads or is removed.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use super::readers::Side;
use super::LoopCore;
use crate::handles::Handle;

/// An int fd, or the result of `fileobj.fileno()`, with selectors' errors.
pub fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let fd: i64 = if obj.is_instance_of::<PyInt>() {
        obj.extract()?
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
        let as_int = obj.py().get_type::<PyInt>().call1((fileno,)).map_err(|_| invalid())?;
        as_int.extract()?
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {fd}")));
    }
    i32::try_from(fd).map_err(|_| PyValueError::new_err(format!("Invalid file descriptor: {fd}")))
}

impl LoopCore {
    fn add_io(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        side: Side,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        let fd = fileobj_to_fd(fd)?;
        this.check_open()?;
        let handle = this.new_handle(py, callback, args, None)?;
        let old = {
            let sys = this.sys.borrow(py);
            let Some(sys) = sys.as_ref() else {
                return Err(crate::errors::loop_closed());
            };
            this.state
                .borrow_mut(py)
                .io
                .add(&sys.epoll, fd, side, handle.clone_ref(py))?
        };
        if let Some(old) = old {
            // asyncio cancels the handle it replaces.
            old.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
        }
        Ok(handle)
    }

    fn remove_io(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, side: Side) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let fd = fileobj_to_fd(fd)?;
        if this.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let removed = {
            let sys = this.sys.borrow(py);
            let Some(sys) = sys.as_ref() else { return Ok(false) };
            this.state.borrow_mut(py).io.remove(&sys.epoll, fd, side)
        };
        match removed {
            Some(handle) => {
                handle.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
                Ok(true)
            }
            None => Ok(false),
        }
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
        LoopCore::add_io(slf, fd, Side::Read, callback, args)
    }

    /// Calls `callback(*args)` whenever `fd` is writable.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        LoopCore::add_io(slf, fd, Side::Write, callback, args)
    }

    /// Stops watching `fd` for reading; `True` if a reader was registered.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        LoopCore::remove_io(slf, fd, Side::Read)
    }

    /// Stops watching `fd` for writing; `True` if a writer was registered.
    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        LoopCore::remove_io(slf, fd, Side::Write)
    }
}
