//! [`Method`]: how the pump calls the methods of the ssl objects.

use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

/// A method of one of the pump's ssl objects: bound once when the object's
/// type is one of the `_ssl` module's C types, whose methods cannot be
/// replaced, which saves the lookup per call; otherwise looked up by name on
/// every call, as asyncio's code does.
pub(super) enum Method {
    Bound(Py<PyAny>),
    Named(Py<PyAny>, Py<PyString>),
}

impl Method {
    pub(super) fn new(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, fixed: bool) -> PyResult<Self> {
        Ok(if fixed {
            Method::Bound(obj.getattr(name)?.unbind())
        } else {
            Method::Named(obj.clone().unbind(), name.clone().unbind())
        })
    }

    pub(super) fn call<'py, A: PyCallArgs<'py>>(&self, py: Python<'py>, args: A) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Method::Bound(method) => method.bind(py).call1(args),
            Method::Named(obj, name) => obj.bind(py).call_method1(name.bind(py), args),
        }
    }

    pub(super) fn call0<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Method::Bound(method) => method.bind(py).call0(),
            Method::Named(obj, name) => obj.bind(py).call_method0(name.bind(py)),
        }
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Method::Bound(method) => visit.call(method),
            Method::Named(obj, _) => visit.call(obj),
        }
    }
}
