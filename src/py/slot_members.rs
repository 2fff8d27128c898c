//! [`SlotMembers`]: `getattr`/`setattr` of a few `__slots__` attributes
//! without `getattr`'s search of the type on every access.
//!
//! A `__slots__` entry is a member descriptor on the class that declared it,
//! a data descriptor: for a type with the generic attribute lookup,
//! `getattr(obj, name)` and `setattr(obj, name, value)` call it, and it reads
//! or writes the object pointer at a fixed offset in the instance (after
//! checking that the instance is one of its class). The offsets are found
//! once per exact type and kept under the type's version tag, which CPython
//! clears whenever the type or one of its bases changes (a new
//! `__getattr__`, a name shadowed or deleted, new bases) and never gives out
//! twice; the type itself is held, so its address is not reused.

use std::ffi::c_void;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use crate::gil_cell::GilCell;

/// `N` attributes, each an object member of `__slots__`, for the last exact
/// type asked about; any other type is served by `getattr`/`setattr`.
pub struct SlotMembers<const N: usize> {
    names: [&'static str; N],
    found: GilCell<Option<Found<N>>>,
}

struct Found<const N: usize> {
    ty: Py<PyType>,
    tag: u32,
    offsets: [isize; N],
}

impl<const N: usize> SlotMembers<N> {
    pub const fn new(names: [&'static str; N]) -> Self {
        SlotMembers {
            names,
            found: GilCell::new(None),
        }
    }

    /// `getattr(obj, names[i])`.
    #[inline]
    pub fn get<'py>(&self, obj: &Bound<'py, PyAny>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        if let Some(slot) = self.slot(obj, i) {
            // SAFETY: see `slot`. A non-NULL pointer there is a reference
            // the instance holds.
            let value = unsafe { *slot };
            if !value.is_null() {
                // SAFETY: `value` is live (see above).
                return Ok(unsafe { Bound::from_borrowed_ptr(obj.py(), value) });
            }
        }
        // An unset slot, too: `getattr` raises its `AttributeError`.
        obj.getattr(PyString::intern(obj.py(), self.names[i]))
    }

    /// `setattr(obj, names[i], value)`.
    #[inline]
    pub fn set(&self, obj: &Bound<'_, PyAny>, i: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(slot) = self.slot(obj, i) else {
            return obj.setattr(PyString::intern(obj.py(), self.names[i]), value);
        };
        // SAFETY: see `slot`. The instance takes a new reference to `value`
        // and gives up the old one after the store, as the member
        // descriptor does (the decref can run code; the store is done).
        unsafe {
            let old = std::mem::replace(&mut *slot, value.clone().into_ptr());
            ffi::Py_XDECREF(old);
        }
        Ok(())
    }

    /// Where `obj` holds the object of `names[i]`, if `getattr`/`setattr`
    /// of it is exactly a read/write there: `obj`'s exact type is the one
    /// [`SlotMembers::find`] checked, under the same version tag, so the
    /// member descriptor `getattr` would find and call is the one found
    /// then, and `obj` is an instance of the class that declared it, whose
    /// instances keep the member's object pointer at its offset.
    #[inline]
    fn slot(&self, obj: &Bound<'_, PyAny>, i: usize) -> Option<*mut *mut ffi::PyObject> {
        let py = obj.py();
        // SAFETY: `obj` is live, so is its type.
        let (ty, tag) = unsafe {
            let ty = ffi::Py_TYPE(obj.as_ptr());
            (ty, (*ty).tp_version_tag)
        };
        let cached = self
            .found
            .borrow(py)
            .as_ref()
            .filter(|f| f.ty.as_ptr().cast() == ty && tag != 0 && f.tag == tag)
            .map(|f| f.offsets[i]);
        let offset = match cached {
            Some(offset) => offset,
            None => self.refresh(obj)?[i],
        };
        // SAFETY: the offset lies within the instance (checked by `find`
        // against the declaring class's size, which `obj`'s type extends).
        Some(unsafe { obj.as_ptr().cast::<u8>().offset(offset).cast() })
    }

    /// Finds and keeps the offsets for `obj`'s type (see [`SlotMembers::find`]).
    #[cold]
    fn refresh(&self, obj: &Bound<'_, PyAny>) -> Option<[isize; N]> {
        let found = self.find(&obj.get_type())?;
        let offsets = found.offsets;
        // Dropped with no borrow held: a decref can run code.
        let old = self.found.borrow_mut(obj.py()).replace(found);
        drop(old);
        Some(offsets)
    }

    /// The offsets of the names on `ty`, when each is what `getattr` and
    /// `setattr` reach through a plain object member: the type's attribute
    /// lookup is the generic one, the name a member descriptor of an object
    /// member (`__slots__`'s kind, neither read-only nor audited) of a class
    /// `ty` derives from (the descriptor's own instance check), within that
    /// class's instance size.
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
        let mut offsets = [0; N];
        for (offset, name) in offsets.iter_mut().zip(self.names) {
            let name = PyString::intern(py, name);
            // SAFETY: `raw` and `name` are live; the lookup runs no Python
            // code and returns a borrowed reference or NULL, no exception.
            // A member descriptor's `d_member` points to its class's member
            // definition, which lives as long as the class (the descriptor
            // holds it); the declared type of `d_member` differs between
            // Python versions, the definition's layout does not.
            *offset = unsafe {
                let descr = _PyType_Lookup(raw, name.as_ptr());
                if descr.is_null() || ffi::Py_TYPE(descr) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                    return None;
                }
                let descr = descr.cast::<ffi::PyMemberDescrObject>();
                let owner = (*descr).d_common.d_type;
                let def = &*(*descr).d_member.cast::<ffi::PyMemberDef>();
                let fits = def.offset >= std::mem::size_of::<ffi::PyObject>() as isize
                    && def.offset + std::mem::size_of::<*mut ffi::PyObject>() as isize <= (*owner).tp_basicsize;
                if def.type_code != ffi::Py_T_OBJECT_EX
                    || def.flags != 0
                    || !fits
                    || ffi::PyType_IsSubtype(raw, owner) == 0
                {
                    return None;
                }
                def.offset
            };
        }
        // Read after the lookups (which may assign a tag), with no code run
        // in between: the offsets are the ones of this tag.
        // SAFETY: `raw` is a live type object.
        let tag = unsafe { (*raw).tp_version_tag };
        (tag != 0).then(|| Found {
            ty: ty.clone().unbind(),
            tag,
            offsets,
        })
    }
}

extern "C" {
    // The search of a type's MRO that `getattr` makes, exported by CPython:
    // a borrowed reference or NULL, no exception.
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}
