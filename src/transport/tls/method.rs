//! [`Method`]: how the pump calls the methods of the ssl objects.

use pyo3::call::PyCallArgs;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

use crate::py::buffer::CMethod;

/// A method of one of the pump's ssl objects: bound once when the object's
/// type is one of the `_ssl` module's C types (`c_types`), whose methods
/// cannot be replaced, which saves the lookup per call; otherwise looked up
/// by name on every call, as asyncio's code does.
pub(super) enum Method {
    Bound(CMethod),
    Named(Py<PyAny>, Py<PyString>),
}

impl Method {
    pub(super) fn new(
        obj: &Bound<'_, PyAny>,
        name: &Bound<'_, PyString>,
        fixed: bool,
        c_types: &[&Bound<'_, PyAny>],
    ) -> PyResult<Self> {
        if fixed {
            if let Some(method) = CMethod::of(&obj.getattr(name)?, c_types)? {
                return Ok(Method::Bound(method));
            }
        }
        Ok(Method::Named(obj.clone().unbind(), name.clone().unbind()))
    }

    /// The method, if memory may be lent to it (see [`CMethod`]).
    pub(super) fn lendable(&self) -> Option<&CMethod> {
        match self {
            Method::Bound(method) => Some(method),
            Method::Named(..) => None,
        }
    }

    pub(super) fn call<'py, A: PyCallArgs<'py>>(&self, py: Python<'py>, args: A) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Method::Bound(method) => method.get().bind(py).call1(args),
            Method::Named(obj, name) => obj.bind(py).call_method1(name.bind(py), args),
        }
    }

    pub(super) fn call0<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Method::Bound(method) => method.get().bind(py).call0(),
            Method::Named(obj, name) => obj.bind(py).call_method0(name.bind(py)),
        }
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Method::Bound(method) => visit.call(method.get()),
            Method::Named(obj, _) => visit.call(obj),
        }
    }
}

/// A property of one of the pump's ssl objects. For the `_ssl` module's C
/// types (immutable, so the descriptor found once stays theirs) the
/// descriptor's C getter is called directly, which skips `getattr`'s search
/// of the type; otherwise `getattr` by name.
pub(super) enum Getter {
    Native {
        obj: Py<PyAny>,
        get: ffi::getter,
        closure: *mut std::ffi::c_void,
        /// The descriptor, kept alive for its `PyGetSetDef`.
        _descr: Py<PyAny>,
    },
    Named(Py<PyAny>, Py<PyString>),
}

// SAFETY: `closure` is the static `PyGetSetDef`'s pointer, only used with the
// GIL held, like every other field.
unsafe impl Send for Getter {}
// SAFETY: as for `Send`: nothing is reached without the GIL.
unsafe impl Sync for Getter {}

impl Getter {
    pub(super) fn new(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, fixed: bool) -> PyResult<Self> {
        if fixed {
            let descr = obj.get_type().getattr(name)?;
            // SAFETY: the type check makes `descr` a `PyGetSetDescrObject`.
            let getset = unsafe {
                (ffi::Py_TYPE(descr.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyGetSetDescr_Type))
                    .then(|| (*descr.as_ptr().cast::<ffi::PyGetSetDescrObject>()).d_getset)
            };
            // SAFETY: a getset descriptor's `d_getset` points to its type's
            // static definition.
            if let Some(def) = getset.filter(|def| !def.is_null()).map(|def| unsafe { &*def }) {
                if let Some(get) = def.get {
                    return Ok(Getter::Native {
                        obj: obj.clone().unbind(),
                        get,
                        closure: def.closure,
                        _descr: descr.unbind(),
                    });
                }
            }
        }
        Ok(Getter::Named(obj.clone().unbind(), name.clone().unbind()))
    }

    pub(super) fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            // SAFETY: `obj` is an instance of the type that defined `get`;
            // the getter returns a new reference or NULL with an exception set.
            Getter::Native { obj, get, closure, .. } => unsafe {
                Bound::from_owned_ptr_or_err(py, get(obj.as_ptr(), *closure))
            },
            Getter::Named(obj, name) => obj.bind(py).getattr(name.bind(py)),
        }
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Getter::Native { obj, _descr, .. } => {
                visit.call(obj)?;
                visit.call(_descr)
            }
            Getter::Named(obj, _) => visit.call(obj),
        }
    }
}
