//! Taking an object off the cyclic collector's lists and putting it back.
//!
//! Used for objects whose references someone else reports to the collector
//! meanwhile (see `loop_core::shelter`). Every function needs the thread
//! attached, which the `Python` token proves.

use pyo3::ffi;
use pyo3::Python;

/// Whether the collector tracks `obj`.
pub fn is_tracked(_py: Python<'_>, obj: *mut ffi::PyObject) -> bool {
    // SAFETY: attached (the token); the caller passes a live object.
    unsafe { ffi::PyObject_GC_IsTracked(obj) == 1 }
}

/// Untracks `obj` if it is tracked; returns whether it was.
pub fn untrack(py: Python<'_>, obj: *mut ffi::PyObject) -> bool {
    if cfg!(Py_GIL_DISABLED) || !is_tracked(py, obj) {
        return false;
    }
    // SAFETY: attached; `obj` is a live, tracked GC object.
    unsafe { ffi::PyObject_GC_UnTrack(obj.cast()) };
    true
}

/// Tracks `obj` again if it is not tracked (tracking twice is a fatal error,
/// and a CPython type's deallocator may unlink it from the collector's lists
/// without checking that it is on one).
pub fn track(py: Python<'_>, obj: *mut ffi::PyObject) {
    if !is_tracked(py, obj) {
        // SAFETY: attached; `obj` is a live GC object that is not tracked.
        unsafe { ffi::PyObject_GC_Track(obj.cast()) };
    }
}
