//! Keeping a Rust panic from killing the loop.
//!
//! PyO3 turns a panic inside a Python-callable method into
//! `pyo3_runtime.PanicException`, a `BaseException`, and resumes it as a
//! panic whenever Rust later fetches that exception from the interpreter.
//! Left alone, one panic anywhere in per-event code would unwind out of
//! `run_forever`. So:
//! - the loop's per-event steps run under [`catch`] (the iteration) or
//!   [`event`] (a transport's event handler), and a caught panic is reported
//!   as an ordinary `RuntimeError` ([`to_error`]) where asyncio reports an
//!   unexpected exception of that step: the exception handler, or the
//!   transport's fatal-error path; [`contain`] does the same for a method
//!   the program calls, whose caller gets the `RuntimeError` (every
//!   `#[pymethods]` block is under `#[ferroloop_macros::contained]`, which
//!   wraps each method's body in it);
//! - a callback's exception is fetched with [`take_raised`] (`call_in_context`,
//!   `py::call_method` for protocol callbacks), which hands back a
//!   `PanicException` like any other exception instead of resuming it;
//! - [`fault`] is a test-only hook that makes a named site panic once, armed
//!   from Python with `_ferroloop._inject_panic(site)`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

/// The text of a panic payload (`panic!` gives `&str` or `String`).
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic in native code".to_owned()
    }
}

/// The exception a caught panic becomes: an `Exception`, so `except
/// Exception` and the exception handler treat it as any other error.
pub fn to_error(payload: &(dyn Any + Send)) -> PyErr {
    PyRuntimeError::new_err(format!("internal error in ferroloop: {}", message(payload)))
}

/// Runs `f`, catching a panic as its payload.
///
/// `AssertUnwindSafe` is sound for the loop's state because every `GilCell`
/// borrow is a `RefCell` guard that is released while unwinding (`RefCell`
/// has no poisoning), and no step leaves an invariant half-updated across a
/// point that can panic: see the callers for what each one may lose.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

/// Runs `f`; a panic becomes [`to_error`]'s `RuntimeError`. For native
/// methods the program calls directly, so the caller (a task, say) gets an
/// `Exception` rather than PyO3's `PanicException`.
pub fn contain<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch(f).unwrap_or_else(|payload| Err(to_error(payload.as_ref())))
}

/// Runs a transport's event handler `body`. A panic in it goes, as a
/// `RuntimeError`, to `fatal` (the transport's fatal-error path, which
/// reports it and closes the transport, as asyncio does with an unexpected
/// exception there); should `fatal` panic too, the error is returned, and
/// the handle reports it to the exception handler. Whatever the panic left
/// half-done in the transport is not used for I/O again: the fatal error
/// drops its buffer, unregisters it and schedules `connection_lost`.
pub fn event<'py>(
    py: Python<'py>,
    site: Option<Site>,
    body: impl FnOnce() -> PyResult<()>,
    fatal: impl FnOnce(Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    let payload = match catch(|| {
        if let Some(site) = site {
            fault(site);
        }
        body()
    }) {
        Ok(result) => return result,
        Err(payload) => payload,
    };
    let exc = to_error(payload.as_ref()).into_value(py).into_bound(py).into_any();
    match catch(|| fatal(exc.clone())) {
        Ok(result) => result,
        Err(_) => Err(PyErr::from_value(exc)),
    }
}

/// The exception the interpreter has set, taken as a `PyErr` without PyO3's
/// check that resumes a `PanicException` as a panic: a callback that raised
/// one (a panic from any PyO3 extension, ours included) is an error like
/// another. The caller knows an exception is set (a C call returned an
/// error).
pub fn take_raised(py: Python<'_>) -> PyErr {
    #[cfg(Py_3_12)]
    // SAFETY: attached to the interpreter; returns a new reference or null.
    let value = unsafe { ffi::PyErr_GetRaisedException() };
    #[cfg(not(Py_3_12))]
    let value = {
        let (mut ptype, mut pvalue, mut ptb) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: attached; the three out-pointers receive new references or
        // null, normalised in place; the traceback is attached to the value,
        // whose reference we keep, and the other two are released.
        unsafe {
            ffi::PyErr_Fetch(&mut ptype, &mut pvalue, &mut ptb);
            if !ptype.is_null() {
                ffi::PyErr_NormalizeException(&mut ptype, &mut pvalue, &mut ptb);
            }
            if !pvalue.is_null() && !ptb.is_null() {
                ffi::PyException_SetTraceback(pvalue, ptb);
            }
            ffi::Py_XDECREF(ptype);
            ffi::Py_XDECREF(ptb);
        }
        pvalue
    };
    // SAFETY: `value` is a new reference (an exception instance) or null.
    match unsafe { Bound::from_owned_ptr_or_opt(py, value) } {
        Some(value) => PyErr::from_value(value),
        None => pyo3::exceptions::PySystemError::new_err("error return without exception set"),
    }
}

/// The places a test can make panic, one pass each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Site {
    /// Before a ready handle runs.
    Handle = 1,
    /// While the loop moves due timers to the ready queue.
    Timer,
    /// In the I/O phase, before the wait for events.
    Poll,
    /// In a stream or datagram socket transport's readable handler.
    TransportRead,
    /// In a stream socket transport's writable handler.
    TransportWrite,
    /// In a pipe transport's readable handler.
    PipeRead,
    /// In a stream transport's `write()`, a method the program calls.
    Write,
    /// In a waiting `sock_*` operation's attempt when its fd is ready.
    SockOp,
    /// In `call_later`, standing for any native method the program calls.
    Call,
}

const SITES: [(&str, Site); 9] = [
    ("handle", Site::Handle),
    ("timer", Site::Timer),
    ("poll", Site::Poll),
    ("transport_read", Site::TransportRead),
    ("transport_write", Site::TransportWrite),
    ("pipe_read", Site::PipeRead),
    ("write", Site::Write),
    ("sock_op", Site::SockOp),
    ("call", Site::Call),
];

/// The armed site, 0 for none. Process-wide: tests arm it right before the
/// step they provoke.
static ARMED: AtomicU8 = AtomicU8::new(0);

/// Panics if `site` is armed, disarming it: the test hook's only effect.
/// Unarmed, it costs one relaxed load.
#[inline]
pub fn fault(site: Site) {
    if ARMED.load(Ordering::Relaxed) == site as u8
        && ARMED
            .compare_exchange(site as u8, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        panic!("injected panic at {site:?}");
    }
}

/// Testing only: makes the next pass through `site` panic (`None` disarms).
/// Sites: "handle", "timer", "poll", "transport_read", "transport_write",
/// "pipe_read", "write", "sock_op", "call"; "now" panics in this call (a `PanicException` for tests).
#[pyfunction]
#[pyo3(signature = (site))]
pub fn _inject_panic(site: Option<&str>) -> PyResult<()> {
    let value = match site {
        None => 0,
        // For tests that need a real `PanicException` to raise themselves.
        Some("now") => panic!("injected panic in _inject_panic"),
        Some(name) => match SITES.iter().find(|(n, _)| *n == name) {
            Some((_, site)) => *site as u8,
            None => return Err(PyValueError::new_err(format!("unknown panic site: {name:?}"))),
        },
    };
    ARMED.store(value, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_fires_once_and_only_at_its_site() {
        ARMED.store(Site::Timer as u8, Ordering::Relaxed);
        fault(Site::Handle);
        assert!(catch(|| fault(Site::Timer)).is_err());
        assert!(catch(|| fault(Site::Timer)).is_ok());
    }

    struct Probe;

    #[ferroloop_macros::contained]
    impl Probe {
        fn plain(&self, fail: bool) -> bool {
            assert!(!fail, "probe");
            true
        }

        fn fallible(&self, fail: bool) -> PyResult<u8> {
            assert!(!fail, "probe");
            Ok(1)
        }
    }

    #[test]
    fn contained_methods_return_a_panic_as_an_error() {
        assert!(Probe.plain(false).unwrap());
        assert!(Probe.plain(true).is_err());
        assert_eq!(Probe.fallible(false).unwrap(), 1);
        assert!(Probe.fallible(true).is_err());
    }

    #[test]
    fn message_reads_both_payload_kinds() {
        let payload = catch(|| panic!("static text")).unwrap_err();
        assert_eq!(message(payload.as_ref()), "static text");
        let n = 3;
        let payload = catch(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(message(payload.as_ref()), "formatted 3");
    }
}
