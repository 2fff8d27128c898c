//! `call_soon`, `call_soon_threadsafe`, `call_later`, `call_at`.
//!
//! Same-thread `call_soon` only appends to the ready queue: it never touches
//! the waker, because the loop is running this very code and will see the
//! queue before it next waits.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::{PyAssertionError, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pyclass_init::PyClassInitializer;
use pyo3::types::{PyFloat, PyInt, PyTuple};

use super::{shelter, LoopCore};
use crate::handles::{Handle, TimerHandle};
use crate::panic_guard;
use crate::py::fastcall::{self, CallbackArgs};

impl LoopCore {
    /// Queues `callback(*args)` for the next iteration, as `call_soon` without
    /// debug mode's caller checks: for the loop's own transports.
    pub(crate) fn soon(&self, py: Python<'_>, callback: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.soon_in(py, callback, args, None)
    }

    /// `soon` in a given context (`None`: a copy of the current one).
    pub(crate) fn soon_in(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_open()?;
        let handle = self.new_handle(py, callback, args, context)?;
        self.sample_enqueue(handle.get());
        shelter::shelter(handle.bind(py));
        self.state.borrow_mut(py).ready.push_back(handle);
        Ok(())
    }

    /// Debug mode's checks, done by the stdlib's own helpers for identical
    /// messages: `_check_thread` (when `thread_check`) and `_check_callback`.
    fn debug_checks(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        thread_check: bool,
    ) -> PyResult<()> {
        if thread_check {
            slf.call_method0(pyo3::intern!(slf.py(), "_check_thread"))?;
        }
        slf.call_method1(pyo3::intern!(slf.py(), "_check_callback"), (callback, method))?;
        Ok(())
    }

    /// `call_soon` and `call_soon_threadsafe`: queues `callback(*args)` for
    /// the next iteration; `threadsafe` also wakes the loop if it sleeps.
    fn queue_soon(slf: &Bound<'_, Self>, call: &CallbackArgs<'_>, threadsafe: bool) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        if this.debug() {
            let method = if threadsafe {
                "call_soon_threadsafe"
            } else {
                "call_soon"
            };
            LoopCore::debug_checks(slf, &call.callback, method, !threadsafe)?;
        }
        let handle = this.new_handle(py, &call.callback, &call.args, call.context.as_ref())?;
        this.sample_enqueue(handle.get());
        shelter::shelter(handle.bind(py));
        this.state.borrow_mut(py).ready.push_back(handle.clone_ref(py));
        if threadsafe {
            this.wake_from_thread(py);
        }
        Ok(handle)
    }

    /// [`LoopCore::wake`] for `call_soon_threadsafe`, whose caller, when the
    /// loop needs a wake-up at all, is another thread (the loop's own is in
    /// or about to enter its wait). The eventfd is written with the GIL
    /// released: the woken loop thread then finds the GIL free instead of
    /// waking only to wait for this thread to release it, which costs two
    /// more context switches when both threads share a CPU.
    fn wake_from_thread(&self, py: Python<'_>) {
        if self.polling.load(Ordering::SeqCst) && !self.woken.swap(true, Ordering::SeqCst) {
            // A clone, so a `close()` while the GIL is released cannot close
            // the fd (and let its number be reused) under the write.
            let waker = self.sys.borrow(py).as_ref().map(|sys| Arc::clone(&sys.waker));
            if let Some(waker) = waker {
                py.detach(|| waker.notify());
            }
        }
    }

    fn schedule_at(
        slf: &Bound<'_, Self>,
        when_obj: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        let when = deadline(when_obj)?;
        if this.debug() {
            LoopCore::debug_checks(slf, callback, "call_at", true)?;
        }
        let handle = this.make_handle(py, callback, args, context)?;
        let init = PyClassInitializer::from(handle).add_subclass(TimerHandle::new(when, when_obj.clone().unbind()));
        let timer = Py::new(py, init)?;
        shelter::shelter(timer.bind(py).as_super());
        this.state.borrow_mut(py).timers.push(when, timer.clone_ref(py));
        this.stats.timer_scheduled();
        Ok(timer)
    }
}

/// A deadline as a float for ordering. An int too large for a float is
/// still a deadline to asyncio (ints compare exactly with floats): it is
/// never (or, negative, at once) due.
fn deadline(when: &Bound<'_, PyAny>) -> PyResult<f64> {
    match when.extract::<f64>() {
        Ok(when) => Ok(when),
        Err(err) if err.is_instance_of::<PyOverflowError>(when.py()) && when.is_instance_of::<PyInt>() => {
            Ok(if when.lt(0)? { f64::NEG_INFINITY } else { f64::INFINITY })
        }
        Err(err) => Err(err),
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {}

impl LoopCore {
    /// `call_later`: schedules `callback(*args)` `delay` seconds from now.
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        panic_guard::fault(panic_guard::Site::Call);
        let py = slf.py();
        if delay.is_none() && crate::py::version(py) >= (3, 11) {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        // `loop.time() + delay` with Python's own addition, so odd numeric
        // types behave (and fail) as they do on asyncio.
        let now = slf.get().clock.now();
        let when = match delay.cast::<PyFloat>() {
            Ok(d) => PyFloat::new(py, now + d.value()).into_any(),
            Err(_) => PyFloat::new(py, now).add(delay)?,
        };
        LoopCore::schedule_at(slf, &when, callback, args, context)
    }

    /// `call_at`: schedules `callback(*args)` at loop time `when`.
    fn call_at(
        slf: &Bound<'_, Self>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            // 3.10's TimerHandle only asserts it.
            return Err(if crate::py::version(slf.py()) >= (3, 11) {
                PyTypeError::new_err("when cannot be None")
            } else {
                PyAssertionError::new_err(())
            });
        }
        LoopCore::schedule_at(slf, when, callback, args, context)
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// A handle for `callback(*args)` that is not queued yet (signal handlers).
    #[pyo3(signature = (callback, *args))]
    fn _make_handle(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        slf.get().new_handle(py, callback, args, None)
    }

    /// Queues an existing handle, waking the loop if needed. Safe from a
    /// signal-handling context, as asyncio's `_add_callback_signalsafe`.
    fn _add_handle(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        this.sample_enqueue(handle.get());
        this.state.borrow_mut(py).ready.push_back(handle);
        this.wake(py);
        Ok(())
    }
}

/// The body of the raw `call_soon` and `call_soon_threadsafe`.
///
/// # Safety
/// As for any `METH_FASTCALL | METH_KEYWORDS` function (see
/// [`CallbackArgs::parse`]); `slf` is a live object.
unsafe fn soon_entry(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
    threadsafe: bool,
) -> *mut pyo3::ffi::PyObject {
    let body = |py: Python<'_>| {
        // SAFETY: `slf` is the live `self` CPython passes.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let slf = slf.cast::<LoopCore>()?;
        let qualname = if threadsafe {
            "LoopCore.call_soon_threadsafe"
        } else {
            "LoopCore.call_soon"
        };
        // SAFETY: forwarded from our caller.
        let call = unsafe { CallbackArgs::parse(py, qualname, None, args, nargs, kwnames) }?;
        Ok(LoopCore::queue_soon(slf, &call, threadsafe)?.into_ptr())
    };
    // SAFETY: CPython is calling this raw method (our caller), from an
    // attached thread, for the whole call.
    unsafe { fastcall::entry(body) }
}

unsafe extern "C" fn call_soon(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method.
    unsafe { soon_entry(slf, args, nargs, kwnames, false) }
}

unsafe extern "C" fn call_soon_threadsafe(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method.
    unsafe { soon_entry(slf, args, nargs, kwnames, true) }
}

/// The body of the raw `call_later` (`at` false) and `call_at`.
///
/// # Safety
/// As for [`soon_entry`].
unsafe fn timer_entry(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
    at: bool,
) -> *mut pyo3::ffi::PyObject {
    let body = |py: Python<'_>| {
        // SAFETY: `slf` is the live `self` CPython passes.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let slf = slf.cast::<LoopCore>()?;
        let (qualname, lead) = if at {
            ("LoopCore.call_at", pyo3::intern!(py, "when"))
        } else {
            ("LoopCore.call_later", pyo3::intern!(py, "delay"))
        };
        // SAFETY: forwarded from our caller.
        let call = unsafe { CallbackArgs::parse(py, qualname, Some(lead), args, nargs, kwnames) }?;
        let Some(lead) = call.lead.as_ref() else {
            return Err(PyTypeError::new_err(format!("{qualname}() missing its first argument")));
        };
        let context = call.context.as_ref();
        let timer = if at {
            LoopCore::call_at(slf, lead, &call.callback, &call.args, context)
        } else {
            LoopCore::call_later(slf, lead, &call.callback, &call.args, context)
        };
        Ok(timer?.into_ptr())
    };
    // SAFETY: CPython is calling this raw method (our caller), from an
    // attached thread, for the whole call.
    unsafe { fastcall::entry(body) }
}

unsafe extern "C" fn call_later(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method.
    unsafe { timer_entry(slf, args, nargs, kwnames, false) }
}

unsafe extern "C" fn call_at(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls this as a METH_FASTCALL | METH_KEYWORDS method.
    unsafe { timer_entry(slf, args, nargs, kwnames, true) }
}

/// Adds `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at` to
/// `LoopCore` as raw methods (see [`fastcall`]): they are called once per
/// callback.
pub(crate) fn install_raw_methods(py: Python<'_>) -> PyResult<()> {
    let class = py.get_type::<LoopCore>();
    fastcall::install(
        &class,
        c"call_later",
        c"call_later($self, delay, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` `delay` seconds from now.",
        call_later,
    )?;
    fastcall::install(
        &class,
        c"call_at",
        c"call_at($self, when, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` at loop time `when`.",
        call_at,
    )?;
    fastcall::install(
        &class,
        c"call_soon",
        c"call_soon($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` for the next iteration.",
        call_soon,
    )?;
    fastcall::install(
        &class,
        c"call_soon_threadsafe",
        c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike `call_soon`, callable from any thread; wakes the loop if it sleeps.",
        call_soon_threadsafe,
    )
}
