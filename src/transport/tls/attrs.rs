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
    /// A class attribute (`SSLProtocol.max_size`) unless set on the instance.
    MaxSize,
}

impl Attr {
    const COUNT: usize = 15;

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
                "max_size",
            ]
            .map(|name| PyString::intern(py, name).unbind())
        })[self as usize]
            .bind(py)
    }
}

/// Attribute values of the protocol, valid while `stamp` is the dict's.
/// Each value comes with the class's version tag when it was found on the
/// class (not in the dict), and 0 when it was found in the dict.
#[derive(Default)]
pub(super) struct Seen {
    stamp: u64,
    values: [Option<(Py<PyAny>, u32)>; Attr::COUNT],
}

impl Seen {
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for (value, _) in self.values.iter().flatten() {
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
    ///
    /// A name not in the dict is found by `getattr`, and remembered with the
    /// version tag of the protocol's class, which CPython clears whenever
    /// that class or one of its bases changes and never gives out twice
    /// (0 is none): the value stays while the tag and the dict are unchanged.
    pub(super) fn get<'py>(&self, py: Python<'py>, attr: Attr) -> PyResult<Bound<'py, PyAny>> {
        let stamp = self.dict.stamp(py);
        let mut stale = None;
        if let Some(stamp) = stamp {
            let mut seen = self.seen.borrow_mut(py);
            if seen.stamp != stamp {
                seen.stamp = stamp;
                stale = Some(std::mem::take(&mut seen.values));
            } else if let Some((value, tag)) = &seen.values[attr as usize] {
                if *tag == 0 || *tag == self.class_tag(py) {
                    return Ok(value.bind(py).clone());
                }
            }
        }
        // Released with no borrow held: a decref can run any code.
        drop(stale);
        let name = attr.name(py);
        // SAFETY: the dict is a live dict and `name` a live str; the call
        // returns a borrowed reference, or NULL (with an exception set on
        // error). A str key's lookup runs no Python code.
        let found = unsafe { ffi::PyDict_GetItemWithError(self.dict.dict().as_ptr(), name.as_ptr()) };
        let (value, tag) = if found.is_null() {
            if let Some(err) = PyErr::take(py) {
                return Err(err);
            }
            match self.class_value(py, name) {
                Some(found) => found,
                None => return self.protocol.bind(py).getattr(name),
            }
        } else {
            // SAFETY: `found` is a live object the dict holds a reference to.
            (unsafe { Bound::from_borrowed_ptr(py, found) }, 0)
        };
        if stamp.is_some() {
            let old = self.seen.borrow_mut(py).values[attr as usize].replace((value.clone().unbind(), tag));
            drop(old);
        }
        Ok(value)
    }

    /// What `getattr` finds on the class for a name missing from the dict,
    /// with the class's version tag, when that is certain to be all it does:
    /// the class is still the one attached to, with a tag, the generic
    /// attribute lookup, and a plain value (not a descriptor) under `name`.
    fn class_value<'py>(&self, py: Python<'py>, name: &Bound<'py, PyString>) -> Option<(Bound<'py, PyAny>, u32)> {
        // The tag is read first, so a value found after a change of the
        // class is not kept under an older tag.
        let tag = self.class_tag(py);
        if tag == 0 {
            return None;
        }
        let ty = self.class.bind(py).as_type_ptr();
        // SAFETY: `ty` is a live type object, `name` a live str; the lookup
        // runs no Python code and returns a borrowed reference or NULL
        // without an exception.
        unsafe {
            // Comparing a function pointer can only fail to recognise the
            // generic lookup, which merely skips keeping the value.
            let generic = (*ty)
                .tp_getattro
                .is_some_and(|f| f as *const () == ffi::PyObject_GenericGetAttr as *const ());
            if !generic {
                return None;
            }
            let found = _PyType_Lookup(ty, name.as_ptr());
            if found.is_null() {
                return None;
            }
            let kind = ffi::Py_TYPE(found);
            if (*kind).tp_descr_get.is_some() || (*kind).tp_descr_set.is_some() {
                return None;
            }
            Some((Bound::from_borrowed_ptr(py, found), tag))
        }
    }

    /// The version tag of the protocol's class while that is still the class
    /// the pump attached to, else 0.
    fn class_tag(&self, py: Python<'_>) -> u32 {
        let class = self.protocol.bind(py).get_type();
        if !class.is(self.class.bind(py)) {
            return 0;
        }
        // SAFETY: `class` is a live type object.
        unsafe { (*class.as_type_ptr()).tp_version_tag }
    }
}

extern "C" {
    // The search of a type's MRO that `getattr` makes, exported by CPython
    // (and used by Cython): a borrowed reference or NULL, no exception.
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}
