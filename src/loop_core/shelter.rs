//! Queued handles kept off the cyclic collector's lists.
//!
//! A burst of `call_soon`s, or a heap of pending timers, is a crowd of
//! container objects the collector would otherwise walk on every collection
//! while they wait, and promote, and walk again in the older generations.
//! A handle the loop has just made for `call_soon`, `call_later` or `call_at`
//! is untracked ("sheltered") when it is queued, and so is the context copy
//! made for it when nothing else references it; while they wait, the loop's
//! own traverse reports what they reference, through their own
//! `tp_traverse`. Leaving the queue (about to run, purged, dropped with the
//! loop) tracks them again, so a cycle through a handle, its callback and
//! whatever holds the handle is collected as before, and one through a loop
//! that is itself garbage is collected while handles still wait in it.
//!
//! The invariant the traverse relies on: a sheltered handle is held by
//! exactly one slot of its loop's ready queue or timer heap (a timer moves
//! from the heap to the ready queue, it is never in both), so its references
//! are reported once. Only handles made for that slot are sheltered; handles
//! queued again from elsewhere (readers, recycled handles) never are.
//!
//! A handle missed by [`release`] stays untracked: its cycles would not be
//! collected, but nothing is freed early, since an untracked object's
//! references count as external to the collector. Its context is tracked
//! again before the handle can drop it, whatever the path (`Handle`'s `Drop`,
//! `empty`, `__clear__`): CPython's context deallocator assumes a tracked
//! object. Free-threaded builds, whose collector finds objects another way,
//! do not shelter.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::Handle;
use crate::py::gc_track;

/// Untracks `handle`, which the caller is about to put in its loop's ready
/// queue or timer heap and nowhere else, and the context copy made for it.
pub(crate) fn shelter(handle: &Bound<'_, Handle>) {
    Handle::shelter(handle);
}

/// Tracks a handle again as it leaves the ready queue or the timer heap.
pub(crate) fn release(handle: &Bound<'_, Handle>) {
    Handle::release(handle);
}

/// [`release`] for each handle of `handles`.
pub(crate) fn release_all<'a, T: 'a>(py: Python<'_>, handles: impl IntoIterator<Item = &'a Py<T>>) {
    for handle in handles {
        // SAFETY: the loop's queues hold only `Handle`s and `TimerHandle`s
        // (a `Handle` subclass).
        release(unsafe { handle.bind(py).as_any().cast_unchecked::<Handle>() });
    }
}

/// Reports a queued handle to the collector from the loop's traverse: the
/// handle itself if it is tracked, else (sheltered) what it references, and
/// what its sheltered context references.
pub(crate) fn visit<T>(handle: &Py<T>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // SAFETY: the collector runs with the thread attached.
    let py = unsafe { Python::assume_attached() };
    let ptr = handle.as_ptr();
    if gc_track::is_tracked(py, ptr) {
        return visit.call(handle);
    }
    traverse_for(py, ptr, visit)?;
    // SAFETY: the queues hold only `Handle`s and `TimerHandle`s, borrowed by
    // the queue for this call.
    let handle = unsafe { Borrowed::from_ptr(py, ptr).cast_unchecked::<Handle>() };
    match handle.get().sheltered_context() {
        Some(context) if !gc_track::is_tracked(py, context) => traverse_for(py, context, visit),
        _ => Ok(()),
    }
}

/// Calls `obj`'s own `tp_traverse` with the loop's visitor, as if the loop
/// held what `obj` references.
fn traverse_for(_py: Python<'_>, obj: *mut ffi::PyObject, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // SAFETY: attached (the token); `obj` is a live object whose type is
    // fully initialised.
    let Some(traverse) = (unsafe { (*ffi::Py_TYPE(obj)).tp_traverse }) else {
        return Ok(());
    };
    let mut relay = Relay { visit, error: None };
    // SAFETY: `traverse` is the slot of `obj`'s type, called on `obj` with a
    // visitproc and an argument that outlive the call (`relay` is local).
    unsafe { traverse(obj, forward, (&mut relay as *mut Relay<'_, '_>).cast()) };
    // A traverse stops early only on its visitproc's error, which `relay` kept.
    relay.error.map_or(Ok(()), Err)
}

/// The loop's visitor, passed through a raw `tp_traverse`.
struct Relay<'v, 'a> {
    visit: &'v PyVisit<'a>,
    error: Option<PyTraverseError>,
}

/// The visitproc given to a sheltered object's `tp_traverse`: hands each
/// object to the loop's visitor, and stops at its first error.
unsafe extern "C" fn forward(obj: *mut ffi::PyObject, arg: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `arg` is the `Relay` that `traverse_for` passed, alive for the call.
    let relay = unsafe { &mut *arg.cast::<Relay<'_, '_>>() };
    // SAFETY: the collector's thread is attached; `obj` is a live object,
    // borrowed for this call without touching its reference count.
    let obj = unsafe { Borrowed::from_ptr(Python::assume_attached(), obj) };
    match relay.visit.call(obj.as_unbound()) {
        Ok(()) => 0,
        Err(err) => {
            relay.error = Some(err);
            -1
        }
    }
}
