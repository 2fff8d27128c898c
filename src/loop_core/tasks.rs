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

#[pymethods]
impl LoopCore {
    /// A new `asyncio.Future` attached to this loop.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        call_with_loop_kw(asyncio::future_type(slf.py())?, None, slf.as_any())
    }

    /// Wraps coroutine `coro` in a task scheduled on this loop.
    #[pyo3(signature = (coro, *, name = None, context = None))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        let factory = slf.getattr(pyo3::intern!(py, "_task_factory"))?;
        if this.debug() || !factory.is_none() || (context.is_some() && py.version_info() < (3, 11)) {
            let kwargs = optional_kwargs(py, name, context)?;
            let method = asyncio::base_event_loop(py)?.getattr(pyo3::intern!(py, "create_task"))?;
            return method.call((slf, coro), Some(&kwargs));
        }
        this.check_open()?;
        let task_type = asyncio::task_type(py)?;
        if name.is_none() && context.is_none() {
            return call_with_loop_kw(task_type, Some(coro), slf.as_any());
        }
        let kwargs = optional_kwargs(py, name, context)?;
        kwargs.set_item("loop", slf)?;
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
