//! Whether a dict may have changed since a value was read from it, in one
//! integer comparison: how the TLS pump keeps the attributes of an
//! `SSLProtocol` it reads per message without looking each one up again.
//!
//! - 3.11: the dict's version tag (PEP 509), which CPython replaces with a
//!   new, never reused value on every change of that dict.
//! - 3.12 and later: that tag is deprecated and no longer follows every
//!   change, so the dict is watched (`PyDict_Watch`) and every event of every
//!   watched dict advances one counter. A change to any of them invalidates
//!   all readers, which is correct and, with none changing per message, rare.
//! - Where neither is available (3.10, or all of 3.12's eight watcher slots
//!   taken) there is no stamp and readers look values up every time.

// Only the 3.11+ stamps reach into the dict object.
#[cfg(Py_3_11)]
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A dict and the means to tell whether it changed.
pub struct DictStamp {
    dict: Py<PyDict>,
    /// The watcher `dict` is registered with (3.12+).
    #[allow(dead_code)]
    watcher: Option<i32>,
}

impl DictStamp {
    pub fn new(dict: Bound<'_, PyDict>) -> Self {
        let watcher = watch::start(&dict);
        DictStamp {
            dict: dict.unbind(),
            watcher,
        }
    }

    pub fn dict(&self) -> &Py<PyDict> {
        &self.dict
    }

    /// A value that differs from every earlier one once the dict changed;
    /// `None` when that cannot be told.
    pub fn stamp(&self, py: Python<'_>) -> Option<u64> {
        watch::stamp(py, self)
    }

    /// Stops watching; the readers' values are then never reused.
    pub fn release(&self, py: Python<'_>) {
        watch::stop(py, self)
    }
}

#[cfg(all(Py_3_11, not(Py_3_12)))]
mod watch {
    use super::*;

    pub fn start(_dict: &Bound<'_, PyDict>) -> Option<i32> {
        None
    }

    pub fn stamp(_py: Python<'_>, d: &DictStamp) -> Option<u64> {
        // SAFETY: `d.dict` is a live dict; 3.11 keeps `ma_version_tag` in its
        // object and assigns it a new global version on every change.
        Some(unsafe { (*d.dict.as_ptr().cast::<ffi::PyDictObject>()).ma_version_tag })
    }

    pub fn stop(_py: Python<'_>, _d: &DictStamp) {}
}

#[cfg(Py_3_12)]
mod watch {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicU64, Ordering};

    use pyo3::sync::PyOnceLock;

    use super::*;

    /// Advanced by every event of every watched dict.
    static EVENTS: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" {
        fn PyDict_AddWatcher(
            callback: unsafe extern "C" fn(c_int, *mut ffi::PyObject, *mut ffi::PyObject, *mut ffi::PyObject) -> c_int,
        ) -> c_int;
    }

    unsafe extern "C" fn changed(
        _event: c_int,
        _dict: *mut ffi::PyObject,
        _key: *mut ffi::PyObject,
        _value: *mut ffi::PyObject,
    ) -> c_int {
        EVENTS.fetch_add(1, Ordering::Relaxed);
        0
    }

    /// The watcher, added once; `None` if CPython had no slot left.
    fn watcher(py: Python<'_>) -> Option<i32> {
        static ID: PyOnceLock<Option<i32>> = PyOnceLock::new();
        *ID.get_or_init(py, || {
            // SAFETY: attached; `changed` never fails and stays valid forever.
            let id = unsafe { PyDict_AddWatcher(changed) };
            if id < 0 {
                drop(PyErr::take(py));
                return None;
            }
            Some(id)
        })
    }

    pub fn start(dict: &Bound<'_, PyDict>) -> Option<i32> {
        let py = dict.py();
        let id = watcher(py)?;
        // SAFETY: `dict` is a live dict and `id` a registered watcher.
        if unsafe { ffi::PyDict_Watch(id, dict.as_ptr()) } < 0 {
            drop(PyErr::take(py));
            return None;
        }
        Some(id)
    }

    pub fn stamp(_py: Python<'_>, d: &DictStamp) -> Option<u64> {
        d.watcher.map(|_| EVENTS.load(Ordering::Relaxed))
    }

    pub fn stop(py: Python<'_>, d: &DictStamp) {
        if let Some(id) = d.watcher {
            // SAFETY: `d.dict` is a live dict watched by `id`.
            if unsafe { ffi::PyDict_Unwatch(id, d.dict.as_ptr()) } < 0 {
                drop(PyErr::take(py));
            }
        }
    }
}

#[cfg(not(Py_3_11))]
mod watch {
    use super::*;

    pub fn start(_dict: &Bound<'_, PyDict>) -> Option<i32> {
        None
    }

    pub fn stamp(_py: Python<'_>, _d: &DictStamp) -> Option<u64> {
        None
    }

    pub fn stop(_py: Python<'_>, _d: &DictStamp) {}
}
