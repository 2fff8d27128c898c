//! The attributes of `SSLProtocol` the pump reads per message, and how it
//! keeps them while the protocol's `__dict__` does not change.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

use super::Parts;

/// The attributes of `SSLProtocol` the pump reads per message.
#[derive(Clone, Copy)]
pub(super) enum Attr {
    State,
    AppReadingPaused,
    AppProtocolIsBuffer,
    AppProtocol,
    WriteBacklog,
    SslWritingPaused,
    Transport,
    WriteBufferSize,
    AppWritingPaused,
    OutgoingHighWater,
    OutgoingLowWater,
    SslReadingPaused,
    IncomingHighWater,
    IncomingLowWater,
}

impl Attr {
    const COUNT: usize = 14;

    /// The attribute's name, interned once.
    fn name(self, py: Python<'_>) -> &Bound<'_, PyString> {
        static NAMES: PyOnceLock<[Py<PyString>; Attr::COUNT]> = PyOnceLock::new();
        NAMES.get_or_init(py, || {
            [
                "_state",
                "_app_reading_paused",
                "_app_protocol_is_buffer",
                "_app_protocol",
                "_write_backlog",
                "_ssl_writing_paused",
                "_transport",
                "_write_buffer_size",
                "_app_writing_paused",
                "_outgoing_high_water",
                "_outgoing_low_water",
                "_ssl_reading_paused",
                "_incoming_high_water",
                "_incoming_low_water",
            ]
            .map(|name| PyString::intern(py, name).unbind())
        })[self as usize]
            .bind(py)
    }
}

/// Attribute values of the protocol, valid while `stamp` is the dict's.
#[derive(Default)]
pub(super) struct Seen {
    stamp: u64,
    values: [Option<Py<PyAny>>; Attr::COUNT],
}

impl Seen {
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for value in self.values.iter().flatten() {
            visit.call(value)?;
        }
        Ok(())
    }
}

impl Parts {
    /// `getattr(protocol, name)` for the instance attributes of sslproto's
    /// own classes, which define none of the names read here as descriptors.
    /// They are looked up in the instance `__dict__` kept since attaching
    /// (sslproto never replaces it), skipping `getattr`'s search of the class
    /// and its bases, and remembered until the dict changes: the pump reads
    /// some twenty per message, and in a steady stream none of them changes.
    /// A name not in the dict goes through `getattr` every time.
    pub(super) fn get<'py>(&self, py: Python<'py>, attr: Attr) -> PyResult<Bound<'py, PyAny>> {
        let stamp = self.dict.stamp(py);
        let mut stale = None;
        if let Some(stamp) = stamp {
            let mut seen = self.seen.borrow_mut(py);
            if seen.stamp != stamp {
                seen.stamp = stamp;
                stale = Some(std::mem::take(&mut seen.values));
            } else if let Some(value) = &seen.values[attr as usize] {
                return Ok(value.bind(py).clone());
            }
        }
        // Released with no borrow held: a decref can run any code.
        drop(stale);
        let name = attr.name(py);
        // SAFETY: the dict is a live dict and `name` a live str; the call
        // returns a borrowed reference, or NULL (with an exception set on
        // error). A str key's lookup runs no Python code.
        let found = unsafe { ffi::PyDict_GetItemWithError(self.dict.dict().as_ptr(), name.as_ptr()) };
        if found.is_null() {
            if let Some(err) = PyErr::take(py) {
                return Err(err);
            }
            return self.protocol.bind(py).getattr(name);
        }
        // SAFETY: `found` is a live object the dict holds a reference to.
        let value = unsafe { Bound::from_borrowed_ptr(py, found) };
        if stamp.is_some() {
            self.seen.borrow_mut(py).values[attr as usize] = Some(value.clone().unbind());
        }
        Ok(value)
    }
}
