//! A new `bytes` object written in place before anyone else sees it, the way
//! CPython's own `recv` and `SSLObject.read` fill theirs: allocated at an
//! upper bound, filled by the kernel or OpenSSL, then shrunk to what arrived.
//! It saves the copy out of a scratch buffer into an exact-size object.

use std::os::raw::c_int;

use pyo3::exceptions::{PyOverflowError, PySystemError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffer::{lend_view, CMethod};

extern "C" {
    // CPython's resize of a `bytes` object nobody else references yet, as
    // the socket and ssl modules use it after a read.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// An unshared `bytes` object of `capacity` bytes, of which the first
/// `filled` hold data. Freed on drop unless [`FillingBytes::finish`] hands it
/// out.
pub struct FillingBytes<'py> {
    py: Python<'py>,
    /// The only reference to the object, so it may still be written and resized.
    obj: *mut ffi::PyObject,
    capacity: usize,
    filled: usize,
}

impl<'py> FillingBytes<'py> {
    /// An uninitialised `bytes` of `capacity` bytes. With no capacity it is
    /// the shared empty `bytes`, which then has no room to be written.
    pub fn new(py: Python<'py>, capacity: usize) -> PyResult<Self> {
        let len = ffi::Py_ssize_t::try_from(capacity).map_err(|_| PyOverflowError::new_err("read size too large"))?;
        // SAFETY: a NULL source asks for an uninitialised `bytes` of `len`
        // bytes; the new reference is ours.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(FillingBytes {
            py,
            obj,
            capacity,
            filled: 0,
        })
    }

    pub fn filled(&self) -> usize {
        self.filled
    }

    pub fn remaining(&self) -> usize {
        self.capacity - self.filled
    }

    /// The unfilled tail as a raw pointer and length, for `fill` to write into.
    fn tail(&self) -> (*mut u8, usize) {
        // SAFETY: `obj` is a live `bytes` of `capacity` bytes and `filled <=
        // capacity`, so the offset stays inside it.
        let start = unsafe { ffi::PyBytes_AsString(self.obj).cast::<u8>().add(self.filled) };
        (start, self.remaining())
    }

    /// Lets `write` put bytes at the end of what is filled, given where and
    /// how much room there is; it returns how many it wrote (never more than
    /// the room, which is checked).
    pub fn fill(&mut self, write: impl FnOnce(*mut u8, usize) -> PyResult<usize>) -> PyResult<usize> {
        let (start, room) = self.tail();
        let n = write(start, room)?;
        if n > room {
            return Err(PySystemError::new_err(format!("a read reported {n} bytes into {room}")));
        }
        self.filled += n;
        Ok(n)
    }

    /// Like [`FillingBytes::fill`], for a C method that writes through the
    /// buffer protocol (`_SSLSocket.read(n, buffer)`): `read(want, view)`
    /// gets a writable memoryview of the unfilled tail, released as soon as
    /// it returns, and returns how many bytes it wrote.
    pub fn fill_through_view(&mut self, read: &CMethod, want: usize) -> PyResult<usize> {
        let py = self.py;
        // SAFETY: `room` bytes at `start` are the unfilled tail of an object
        // that is ours alone, neither freed nor resized before this returns.
        self.fill(|start, room| unsafe { lend_view(py, start, room, true, read, Some(want.min(room))) }?.extract())
    }

    /// Grows the object to hold `data` after what is filled, and copies it
    /// there (a resize in place when the allocator can).
    pub fn append(&mut self, data: &[u8]) -> PyResult<()> {
        if data.len() > self.remaining() {
            let want = self.filled + data.len();
            let len = ffi::Py_ssize_t::try_from(want).map_err(|_| PyOverflowError::new_err("read size too large"))?;
            // SAFETY: `obj` has no other reference, as the resize requires; on
            // failure it frees the object and sets `obj` to NULL (dropped as
            // such).
            if unsafe { _PyBytes_Resize(&mut self.obj, len) } != 0 {
                return Err(PyErr::fetch(self.py));
            }
            self.capacity = want;
        }
        self.fill(|start, room| {
            let n = data.len().min(room);
            // SAFETY: `start` has `room >= n` writable bytes of our own object,
            // which cannot overlap `data` (a live borrow of other memory).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), start, n) };
            Ok(n)
        })
        .map(drop)
    }

    /// The filled bytes as a `bytes` object, shrunk to size; an empty result
    /// is the shared `b""`.
    pub fn finish(mut self) -> PyResult<Bound<'py, PyBytes>> {
        let py = self.py;
        if self.filled == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let mut obj = std::mem::replace(&mut self.obj, std::ptr::null_mut());
        // SAFETY: `obj` has no other reference, as the resize requires; on
        // failure it frees the object and sets `obj` to NULL.
        if self.filled != self.capacity && unsafe { _PyBytes_Resize(&mut obj, self.filled as ffi::Py_ssize_t) } != 0 {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `obj` is an owned reference to a `bytes` object.
        Ok(unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked() })
    }
}

impl Drop for FillingBytes<'_> {
    fn drop(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: releases the reference made in `new`, held with the GIL
            // (`py` proves it).
            unsafe { ffi::Py_DECREF(self.obj) };
        }
    }
}
