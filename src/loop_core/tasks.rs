//! `create_future` and `create_task` without a Python frame.
//!
//! The common case — no task factory, not in debug mode — instantiates the
//! stdlib's C `Future`/`Task` directly. Every other case (a factory, debug
//! mode's traceback trimming, arguments an older Python rejects) goes to
//! `asyncio.BaseEventLoop`'s own method, so behaviour stays the interpreter's.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::LoopCore;
use crate::py::{asyncio, call_with_loop_kw};

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// A new `asyncio.Future` attached to this loop: `Future(loop=self)`.
    ///
    /// Not `Future()`, even on the running loop: the future would look the
    /// running loop up, and on 3.11 every lookup is a `getpid` system call.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        call_with_loop_kw(asyncio::future_type(slf.py())?, None, slf.as_any())
    }

    /// Wraps coroutine `coro` in a task scheduled on this loop.
    ///
    /// `eager_start` is 3.14's keyword, accepted on every version: `asyncio.Task`
    /// takes it from 3.12 and `BaseEventLoop.create_task` passes it on to a task
    /// factory from 3.14. Where neither can (3.10 and 3.11, or a task factory
    /// before 3.14) it is dropped, as uvloop drops it: the task starts on the
    /// next iteration, or as the factory decides.
    #[pyo3(signature = (coro, *, name = None, context = None, eager_start = None))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        eager_start: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        let version = crate::py::version(py);
        let eager = eager_start.filter(|e| !e.is_none() && version >= (3, 12));
        let factory = slf.getattr(pyo3::intern!(py, "_task_factory"))?;
        // Debug mode goes through asyncio's method for its traceback trimming,
        // unless `eager_start` must reach the Task (which needs no trimming:
        // this method has no Python frame to trim).
        if (this.debug() && eager.is_none()) || !factory.is_none() || (context.is_some() && version < (3, 11)) {
            let kwargs = optional_kwargs(py, name, context)?;
            if let Some(eager) = eager.filter(|_| version >= (3, 14)) {
                kwargs.set_item("eager_start", eager)?;
            }
            let method = asyncio::base_event_loop(py)?.getattr(pyo3::intern!(py, "create_task"))?;
            return method.call((slf, coro), Some(&kwargs));
        }
        this.check_open()?;
        let task_type = asyncio::task_type(py)?;
        if name.is_none() && context.is_none() && eager.is_none() {
            return call_with_loop_kw(task_type, Some(coro), slf.as_any());
        }
        let kwargs = optional_kwargs(py, name, context)?;
        kwargs.set_item("loop", slf)?;
        if let Some(eager) = eager {
            kwargs.set_item("eager_start", eager)?;
        }
        task_type.call((coro,), Some(&kwargs))
    }
}

/// `name=` and `context=` as keyword arguments, each only when given: older
/// Pythons reject a `context` keyword even when it is `None`.
fn optional_kwargs<'py>(
    py: Python<'py>,
    name: Option<&Bound<'py, PyAny>>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let kwargs = PyDict::new(py);
    if let Some(name) = name {
        kwargs.set_item("name", name)?;
    }
    if let Some(context) = context {
        kwargs.set_item("context", context)?;
    }
    Ok(kwargs)
}
