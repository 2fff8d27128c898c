//! PyO3 glue: cached Python helpers and the raw calls that must be fast.

pub mod buffer;
pub mod dict_stamp;
pub mod fastcall;
pub mod filling_bytes;
pub mod gc_track;
pub mod slot_members;
pub mod sockaddr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

/// Calls `callback(*args)` with `context` (a `contextvars.Context`) entered, as
/// `Context.run` does, and exits the context whether or not the call raised.
pub fn call_in_context<'py>(
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<()> {
    // SAFETY: `context` is a live object; PyContext_Enter type-checks it and sets
    // an exception (returning -1) for anything that is not a Context.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `callback` and `args` are live; `args` is a tuple; kwargs may be null.
    let raw = unsafe { ffi::PyObject_Call(callback.as_ptr(), args.as_ptr(), std::ptr::null_mut()) };
    // A `PanicException` the callback raised is taken as an ordinary error
    // (see `panic_guard`), never resumed as a panic in the loop.
    let result = if raw.is_null() {
        Err(crate::panic_guard::take_raised(py))
    } else {
        // SAFETY: `raw` is a new reference.
        Ok(unsafe { Bound::from_owned_ptr(py, raw) })
    };
    // SAFETY: the context was entered above on this thread.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result.map(drop)
}

/// `obj.name(*args)` (at most three arguments) for a protocol's callbacks:
/// a `PanicException` it raises comes back as an error like any other, as
/// asyncio treats it, instead of being resumed as a panic (see
/// `panic_guard::take_raised`).
pub fn call_method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, pyo3::types::PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let mut vector = [obj.as_ptr(); 4];
    if args.len() >= vector.len() {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "call_method: too many arguments",
        ));
    }
    for (slot, arg) in vector[1..].iter_mut().zip(args) {
        *slot = arg.as_ptr();
    }
    // SAFETY: `vector[..1 + args.len()]` holds `obj` then the arguments, all
    // borrowed and alive for the call; `name` is a str; no keywords.
    let raw =
        unsafe { ffi::PyObject_VectorcallMethod(name.as_ptr(), vector.as_ptr(), 1 + args.len(), std::ptr::null_mut()) };
    if raw.is_null() {
        Err(crate::panic_guard::take_raised(py))
    } else {
        // SAFETY: `raw` is a new reference.
        Ok(unsafe { Bound::from_owned_ptr(py, raw) })
    }
}

/// The running interpreter's `(major, minor)`, read once: PyO3's
/// `version_info()` formats and parses `Py_GetVersion()` on every call, a
/// cost `create_task` paid per task.
pub fn version(py: Python<'_>) -> (u8, u8) {
    static VERSION: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let known = VERSION.load(std::sync::atomic::Ordering::Relaxed);
    if known != 0 {
        return ((known >> 8) as u8, known as u8);
    }
    let info = py.version_info();
    VERSION.store(
        u16::from(info.major) << 8 | u16::from(info.minor),
        std::sync::atomic::Ordering::Relaxed,
    );
    (info.major, info.minor)
}

/// A copy of the calling thread's current context (`contextvars.copy_context()`).
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: always safe to call while attached; returns a new reference or null.
    let raw = unsafe { ffi::PyContext_CopyCurrent() };
    // SAFETY: `raw` is a new reference or null with an exception set.
    Ok(unsafe { Bound::from_owned_ptr_or_err(py, raw) }?.unbind())
}

/// Calls `callable(*positional, loop=loop)` with vectorcall: the stdlib's
/// `Future(loop=...)` and `Task(coro, loop=...)` without building a dict.
pub fn call_with_loop_kw<'py>(
    callable: &Bound<'py, PyAny>,
    positional: Option<&Bound<'py, PyAny>>,
    event_loop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    static KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    let kwnames = KWNAMES.get_or_init(py, || PyTuple::new(py, ["loop"]).expect("a 1-tuple of str").unbind());
    let mut args = [std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()];
    let mut n = 0;
    if let Some(first) = positional {
        args[1] = first.as_ptr();
        n = 1;
    }
    args[1 + n] = event_loop.as_ptr();
    // SAFETY: `args[1..]` holds `n` positional objects followed by one keyword
    // value, all borrowed and alive for the call; slot 0 is scratch space the
    // callee may use (PY_VECTORCALL_ARGUMENTS_OFFSET); kwnames names the keyword.
    let raw = unsafe {
        ffi::PyObject_Vectorcall(
            callable.as_ptr(),
            args.as_mut_ptr().add(1),
            n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            kwnames.as_ptr(),
        )
    };
    // SAFETY: `raw` is a new reference or null with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, raw) }
}

/// An attribute of a stdlib module, imported once.
macro_rules! stdlib {
    ($name:ident, $module:literal, $attr:literal) => {
        pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            CELL.import(py, $module, $attr)
        }
    };
}

/// Classes from asyncio the core instantiates or defers to.
pub mod asyncio {
    use super::*;
    stdlib!(future_type, "asyncio.futures", "Future");
    stdlib!(task_type, "asyncio.tasks", "Task");
    stdlib!(base_event_loop, "asyncio.base_events", "BaseEventLoop");
    stdlib!(buffered_protocol, "asyncio.protocols", "BufferedProtocol");
    stdlib!(protocol_type, "asyncio.protocols", "Protocol");
}

/// A function from `ferroloop._format`, imported once.
macro_rules! helper {
    ($name:ident) => {
        pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            CELL.import(py, "ferroloop._format", stringify!($name))
        }
    };
}

/// Cold-path helpers written in Python (formatting, logging), imported lazily.
pub mod helpers {
    use super::*;
    helper!(callback_error_context);
    helper!(handle_repr);
    helper!(source_traceback);
    helper!(warn_slow_callback);
    helper!(report_transport_error);
    helper!(log_debug);
    helper!(log_warning);
}
