//! What a reader or writer registration runs: a [`Handle`], or a
//! transport's read side.
//!
//! A socket transport reads for as long as its connection lasts, so a
//! `Handle` kept per registration is one more object per idle connection.
//! Its read registration instead names the transport's core, and each
//! readiness event queues a handle made then (usually a recycled one) that
//! calls the core in the transport's context. What a `Handle` gives by
//! being cancelled (a queued event that must not run once the registration
//! is gone) the transport keeps itself: it counts the events queued for it
//! and how many of them were cancelled (see [`ReaderHooks`]).
//!
//! Both are one object pointer, told apart by type, so a registration is as
//! small as with handles alone.

use std::sync::OnceLock;

use pyo3::prelude::*;

use crate::handles::Handle;

/// How the loop reaches a transport's read side. The transport module
/// gives them (it depends on the loop, not the loop on it); there is one
/// kind of transport reader.
pub(crate) struct ReaderHooks {
    /// An event for `reader` is being queued: it counts it and returns the
    /// context its handle runs in (`None`: the transport is gone, nothing to
    /// run). Called with the loop's state borrowed: it must not run Python
    /// code or allocate Python objects.
    pub queue: fn(&Bound<'_, PyAny>) -> Option<Py<PyAny>>,
    /// Undoes `queue` for an event whose handle could not be made.
    pub dequeue: fn(&Bound<'_, PyAny>),
    /// The registration left: events queued for it and not run yet are
    /// skipped when their turn comes.
    pub cancel: fn(&Bound<'_, PyAny>),
}

static HOOKS: OnceLock<&'static ReaderHooks> = OnceLock::new();

/// One registration's callback.
pub(crate) struct IoCallback(Py<PyAny>);

impl IoCallback {
    pub(crate) fn handle(handle: Py<Handle>) -> Self {
        IoCallback(handle.into_any())
    }

    /// A transport's read side; `hooks` say how to run it.
    pub(crate) fn reader(reader: Py<PyAny>, hooks: &'static ReaderHooks) -> Self {
        let _ = HOOKS.set(hooks);
        IoCallback(reader)
    }

    /// The handle, unless this is a transport's read side. Registrations
    /// only ever hold plain `Handle`s (never a subclass), so the exact type
    /// is checked: one comparison, where a subtype check of a transport
    /// walks its type's bases on every event.
    pub(crate) fn as_handle<'a, 'py>(&'a self, py: Python<'py>) -> Option<&'a Bound<'py, Handle>> {
        self.0.bind(py).cast_exact::<Handle>().ok()
    }

    /// What this runs: a handle, or the transport whose read side this is.
    pub(crate) fn get<'a, 'py>(&'a self, py: Python<'py>) -> Result<&'a Bound<'py, Handle>, &'a Bound<'py, PyAny>> {
        self.as_handle(py).ok_or_else(|| self.0.bind(py))
    }

    pub(crate) fn is_cancelled(&self, py: Python<'_>) -> bool {
        self.as_handle(py).is_some_and(|h| h.get().is_cancelled())
    }

    /// Whether this is `handle`.
    pub(crate) fn is(&self, handle: &Py<Handle>) -> bool {
        self.0.as_ptr() == handle.as_ptr()
    }

    pub(crate) fn as_any(&self) -> &Py<PyAny> {
        &self.0
    }

    /// The registration left: a handle is cancelled (as asyncio does), a
    /// transport's queued events are skipped.
    pub(crate) fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        match self.as_handle(py) {
            Some(handle) => Handle::cancel_inner(handle),
            None => {
                if let Some(hooks) = HOOKS.get() {
                    (hooks.cancel)(self.0.bind(py));
                }
                Ok(())
            }
        }
    }
}

/// An event for a transport's read side: counts it and returns the context
/// its handle runs in. See [`ReaderHooks::queue`].
pub(crate) fn queue_reader(reader: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    HOOKS.get().and_then(|hooks| (hooks.queue)(reader))
}

/// Undoes [`queue_reader`] (see [`ReaderHooks::dequeue`]).
pub(crate) fn dequeue_reader(reader: &Bound<'_, PyAny>) {
    if let Some(hooks) = HOOKS.get() {
        (hooks.dequeue)(reader);
    }
}
