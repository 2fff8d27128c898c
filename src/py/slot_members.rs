//! [`SlotMembers`]: `getattr`/`setattr` of a few `__slots__` attributes
//! without `getattr`'s search of the type on every access.
//!
//! A `__slots__` entry is a member descriptor on the class, a data
//! descriptor: for a type with the generic attribute lookup, `getattr(obj,
//! name)` is the descriptor's `tp_descr_get(descr, obj, type)` and
//! `setattr(obj, name, value)` its `tp_descr_set(descr, obj, value)`. The
//! descriptors are found once per exact type and kept under the type's
//! version tag, which CPython clears whenever the type or one of its bases
//! changes (a new `__getattr__`, a name shadowed or deleted) and never gives
//! out twice; the type itself is held, so its address is not reused.

use std::ffi::c_void;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use crate::gil_cell::GilCell;

/// The member descriptors of `N` names, for the last exact type asked about.
pub struct SlotMembers<const N: usize> {
    names: [&'static str; N],
    found: GilCell<Option<Found<N>>>,
}

struct Found<const N: usize> {
    ty: Py<PyType>,
    tag: u32,
    members: [Py<PyAny>; N],
}

impl<const N: usize> SlotMembers<N> {
    pub const fn new(names: [&'static str; N]) -> Self {
        SlotMembers {
            names,
            found: GilCell::new(None),
        }
    }

    /// The member descriptors of the names for `obj`'s type, when reading
    /// and writing through them is exactly what `getattr`/`setattr` do;
    /// `None` for any other type (one whose attribute lookup is not the
    /// generic one, or where a name is not a member descriptor).
    pub fn of<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<[Bound<'py, PyAny>; N]> {
        let py = obj.py();
        // SAFETY: `obj` is live, so is its type.
        let ty = unsafe { ffi::Py_TYPE(obj.as_ptr()) };
        {
            let found = self.found.borrow(py);
            if let Some(found) = found.as_ref() {
                // SAFETY: `ty` is a live type object.
                let tag = unsafe { (*ty).tp_version_tag };
                if found.ty.as_ptr().cast() == ty && tag != 0 && tag == found.tag {
                    return Some(found.members.each_ref().map(|m| m.bind(py).clone()));
                }
            }
        }
        let found = self.find(&obj.get_type())?;
        let members = found.members.each_ref().map(|m| m.bind(py).clone());
        // Dropped with no borrow held: a decref can run code.
        let old = self.found.borrow_mut(py).replace(found);
        drop(old);
        Some(members)
    }

    fn find(&self, ty: &Bound<'_, PyType>) -> Option<Found<N>> {
        let py = ty.py();
        let raw = ty.as_type_ptr();
        // SAFETY: `raw` is a live type object; reading its slots runs no code.
        let generic = unsafe {
            (*raw)
                .tp_getattro
                .is_some_and(|f| f as *const c_void == ffi::PyObject_GenericGetAttr as *const c_void)
                && (*raw)
                    .tp_setattro
                    .is_some_and(|f| f as *const c_void == ffi::PyObject_GenericSetAttr as *const c_void)
        };
        if !generic {
            return None;
        }
        let mut members = Vec::with_capacity(N);
        for name in self.names {
            let name = PyString::intern(py, name);
            // SAFETY: `raw` and `name` are live; the lookup runs no Python
            // code and returns a borrowed reference or NULL, no exception.
            let descr = unsafe { _PyType_Lookup(raw, name.as_ptr()) };
            // SAFETY: `descr` is checked for NULL first, then is live.
            let member =
                !descr.is_null() && unsafe { ffi::Py_TYPE(descr) == std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) };
            if !member {
                return None;
            }
            // SAFETY: `descr` is a live object (the type's dict holds it).
            members.push(unsafe { Bound::from_borrowed_ptr(py, descr) }.unbind());
        }
        // Read after the lookups (which may assign a tag), with no code run
        // in between: the descriptors are the ones of this tag.
        // SAFETY: `raw` is a live type object.
        let tag = unsafe { (*raw).tp_version_tag };
        Some(Found {
            ty: ty.clone().unbind(),
            tag,
            members: members.try_into().ok()?,
        })
        .filter(|f| f.tag != 0)
    }
}

/// `getattr(obj, name)` through `member`, one of [`SlotMembers::of`]'s.
pub fn get<'py>(member: &Bound<'py, PyAny>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    // SAFETY: `member` is a live member descriptor, whose type's
    // `tp_descr_get` checks that `obj` is an instance of the descriptor's
    // class and returns a new reference, or NULL with an exception set.
    unsafe {
        let Some(get) = (*ffi::Py_TYPE(member.as_ptr())).tp_descr_get else {
            return Err(PyErr::fetch(py));
        };
        let ty = ffi::Py_TYPE(obj.as_ptr()).cast::<ffi::PyObject>();
        Bound::from_owned_ptr_or_err(py, get(member.as_ptr(), obj.as_ptr(), ty))
    }
}

/// `setattr(obj, name, value)` through `member`, one of [`SlotMembers::of`]'s.
pub fn set(member: &Bound<'_, PyAny>, obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = obj.py();
    // SAFETY: as for `get`: `tp_descr_set` checks `obj`'s type and returns
    // 0, or -1 with an exception set. `member`, `obj` and `value` are held
    // by the caller for the call.
    unsafe {
        let Some(set) = (*ffi::Py_TYPE(member.as_ptr())).tp_descr_set else {
            return Err(PyErr::fetch(py));
        };
        if set(member.as_ptr(), obj.as_ptr(), value.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(())
}

extern "C" {
    // The search of a type's MRO that `getattr` makes, exported by CPython:
    // a borrowed reference or NULL, no exception.
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}
