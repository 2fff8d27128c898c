//! Raw `METH_FASTCALL | METH_KEYWORDS` entry points for the calls made once
//! per callback: `call_soon(callback, *args, context=None)`, and `call_later`
//! and `call_at`, the same with a leading `delay`/`when`.
//!
//! PyO3's generic argument parser spends ~1,000 instructions on that
//! signature (it collects `*args` and matches keyword names as UTF-8). Every
//! C `Future` makes this call on completion, so it is parsed here instead:
//! the `("context",)` kwnames tuple of C futures is recognised by identity,
//! other keywords are compared with the interned names (by identity first),
//! and `*args` is copied straight from the vector. [`install`] puts such a
//! function on a class as an ordinary method descriptor, so lookups,
//! binding, `self` type checks and `inspect.signature` behave as for any
//! built-in method.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::PyTypeError as TypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// The signature every raw method has.
pub type RawMethod = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// Runs `body` as the body of a raw method, as PyO3's own method trampolines
/// do: on the caller's thread state, a Rust panic turned into a
/// `RuntimeError` (see `panic_guard`), an error restored as the raised
/// exception. Not `Python::attach`: that panics (an abort, in an `extern "C"`
/// function) when the interpreter is finalizing, and a finalizer may still
/// call `call_soon` or a transport's `write` then.
///
/// # Safety
/// Called only from a raw method that CPython is calling, so the thread is
/// attached to the interpreter (holds the GIL) for the whole call.
pub unsafe fn entry(body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: the caller's contract: CPython is calling a raw method, from a
    // thread attached to the interpreter, for the whole call.
    let py = unsafe { Python::assume_attached() };
    let result = catch_unwind(AssertUnwindSafe(|| body(py)))
        .unwrap_or_else(|payload| Err(crate::panic_guard::to_error(payload.as_ref())));
    match result {
        Ok(ptr) => ptr,
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The arguments of `name(callback, *args, context=None)`, or with a leading
/// parameter `name(lead, callback, *args, context=None)` (`call_later`'s
/// `delay`, `call_at`'s `when`), taken from a vectorcall: positional values,
/// then one value per name in `kwnames`.
pub struct CallbackArgs<'py> {
    /// The leading parameter's value, when the signature has one.
    pub lead: Option<Bound<'py, PyAny>>,
    pub callback: Bound<'py, PyAny>,
    pub args: Bound<'py, PyTuple>,
    pub context: Option<Bound<'py, PyAny>>,
}

impl<'py> CallbackArgs<'py> {
    /// # Safety
    /// `args` holds `nargs` positional values followed by one value per entry
    /// of `kwnames` (a tuple of str, or null), all alive for the call, as
    /// CPython passes them to a `METH_FASTCALL | METH_KEYWORDS` function.
    /// `lead` names the leading parameter, if the signature has one.
    pub unsafe fn parse(
        py: Python<'py>,
        qualname: &str,
        lead: Option<&Bound<'py, PyString>>,
        args: *const *mut ffi::PyObject,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> PyResult<Self> {
        let nargs = nargs as usize;
        // SAFETY: the caller guarantees `args[..nargs + len(kwnames)]` are live.
        let at = |i: usize| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) };
        // Positions of the callback and of the first of `*args`.
        let (at_callback, fixed) = if lead.is_some() { (1, 2) } else { (0, 1) };
        let mut lead_value = lead.filter(|_| nargs > 0).map(|_| at(0));
        let mut callback = (nargs > at_callback).then(|| at(at_callback));
        let mut context = None;
        if kwnames.is_null() {
            // positional arguments only
        } else if kwnames == CONTEXT_ONLY.load(Ordering::Relaxed) {
            context = Some(at(nargs));
        } else {
            // SAFETY: CPython passes a tuple of str.
            let names = unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
            for (i, name) in names.iter().enumerate() {
                let value = at(nargs + i);
                if is_name(&name, pyo3::intern!(py, "context"))? {
                    context = Some(value);
                } else if is_name(&name, pyo3::intern!(py, "callback"))? {
                    if callback.is_some() {
                        return Err(TypeError::new_err(format!(
                            "{qualname}() got multiple values for argument 'callback'"
                        )));
                    }
                    callback = Some(value);
                } else if let Some(lead) = lead.filter(|lead| is_name(&name, lead).unwrap_or(false)) {
                    if lead_value.is_some() {
                        return Err(TypeError::new_err(format!(
                            "{qualname}() got multiple values for argument '{lead}'"
                        )));
                    }
                    lead_value = Some(value);
                } else {
                    return Err(TypeError::new_err(format!(
                        "{qualname}() got an unexpected keyword argument '{name}'"
                    )));
                }
            }
            if names.len() == 1 && context.is_some() {
                remember_context_only(names);
            }
        }
        let missing = |what: String| TypeError::new_err(format!("{qualname}() missing {what}"));
        let callback = match (lead, lead_value.is_some(), callback) {
            (Some(lead), false, None) => {
                return Err(missing(format!(
                    "2 required positional arguments: '{lead}' and 'callback'"
                )))
            }
            (Some(lead), false, Some(_)) => return Err(missing(format!("1 required positional argument: '{lead}'"))),
            (_, _, None) => return Err(missing("1 required positional argument: 'callback'".to_owned())),
            (_, _, Some(callback)) => callback,
        };
        let args = if nargs <= fixed {
            PyTuple::empty(py)
        } else {
            PyTuple::new(py, (fixed..nargs).map(at))?
        };
        // `context=None` is the same as leaving it out.
        let context = context.filter(|c| !c.is_none());
        Ok(CallbackArgs {
            lead: lead_value,
            callback,
            args,
            context,
        })
    }
}

/// The kwnames tuple `("context",)` callers pass again and again: C futures
/// keep one for the life of the process, made with `Py_BuildValue`, so its
/// string is not the interned one and would be compared by value on every
/// call. The first such tuple seen is kept (one reference, never released)
/// and recognised by identity.
static CONTEXT_ONLY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

fn remember_context_only(names: Bound<'_, PyTuple>) {
    let ptr = names.as_ptr();
    if CONTEXT_ONLY
        .compare_exchange(std::ptr::null_mut(), ptr, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        // The stored pointer owns this reference, so it can never dangle.
        std::mem::forget(names);
    }
}

/// Whether keyword `name` is `expected`: by identity, as both are normally
/// interned, else by value.
fn is_name(name: &Bound<'_, PyAny>, expected: &Bound<'_, PyString>) -> PyResult<bool> {
    if name.is(expected) {
        return Ok(true);
    }
    name.eq(expected)
}

/// Puts `func` on `class` as the method `name`, replacing what is there. Its
/// `PyMethodDef` is leaked: the descriptor keeps a pointer to it.
pub fn install(
    class: &Bound<'_, pyo3::types::PyType>,
    name: &'static std::ffi::CStr,
    doc: &'static std::ffi::CStr,
    func: RawMethod,
) -> PyResult<()> {
    let py = class.py();
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: func,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: `class` is a live type object and `def` lives for the rest of
    // the process, as a method descriptor requires.
    let descr = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(class.as_ptr().cast(), def)) }?;
    class.setattr(name.to_str().expect("an ASCII method name"), descr)
}
