//! OS errors and loop errors as Python exceptions.
//!
//! PyO3's `From<io::Error>` builds `OSError("... (os error N)")`, whose `errno` is
//! `None`; asyncio branches on `errno`, so we never use it on a user-visible path.
//! [`os_error`] calls `OSError(errno, strerror)` and lets CPython pick the
//! subclass (`ConnectionResetError`, `PermissionError`, ...) as PEP 3151 says.

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

use crate::sys::Errno;

/// `OSError(errno, strerror(errno))`, which CPython turns into the right subclass.
pub fn os_error(errno: Errno) -> PyErr {
    let msg = std::io::Error::from_raw_os_error(errno.0).to_string();
    // Rust appends " (os error N)"; asyncio's messages are plain strerror.
    let msg = match msg.rfind(" (os error ") {
        Some(cut) => msg[..cut].to_owned(),
        None => msg,
    };
    PyOSError::new_err((errno.0, msg))
}

impl From<Errno> for PyErr {
    fn from(errno: Errno) -> PyErr {
        os_error(errno)
    }
}

/// asyncio's `RuntimeError('Event loop is closed')`.
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}
