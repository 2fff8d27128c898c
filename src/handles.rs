//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `add_reader`
//! return, mirroring `asyncio.Handle` / `asyncio.TimerHandle`.
//!
//! A handle owns its callback, its arguments and the `contextvars.Context` it
//! runs in. Cancelling drops the callback and arguments at once (as asyncio
//! does) so a cancelled long timer does not keep them alive until it is purged.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::gil_cell::GilCell;
use crate::py::gc_track;
use crate::py::{call_in_context, helpers};

/// State a loop shares with its handles. It holds no Python objects, so a
/// handle does not keep its loop alive and there is no reference cycle.
#[derive(Debug, Default)]
pub struct LoopShared {
    /// Mirrors `loop.get_debug()`; a cancelled handle keeps its repr in debug mode.
    pub debug: AtomicBool,
    /// Cancelled timers still in the heap (asyncio's `_timer_cancelled_count`).
    pub cancelled_timers: AtomicUsize,
}

/// `Handle::sheltered`: the handle itself is untracked.
const SHELTERED: u8 = 1;
/// `Handle::sheltered`: so is the context copy only the handle references.
const CONTEXT_SHELTERED: u8 = 2;

/// What a handle calls; `None` once cancelled.
pub type Call = Option<(Py<PyAny>, Py<PyTuple>)>;

/// What a handle holds; one cell for both, so a handle is a few words smaller
/// (a burst of callbacks is a burst of handles, all walked by the collector).
#[derive(Default)]
struct Slots {
    /// The callback and its positional arguments, dropped on cancel.
    call: Call,
    /// The `contextvars.Context` the callback runs in; `None` only while the
    /// handle waits in its loop's recycling pool.
    context: Option<Py<PyAny>>,
}

/// A scheduled callback.
#[pyclass(module = "ferroloop._ferroloop", subclass, frozen, weakref)]
pub struct Handle {
    /// The callback, its arguments and its context.
    slots: GilCell<Slots>,
    /// Set by `cancel()`; a cancelled handle is skipped when its turn comes.
    cancelled: AtomicBool,
    /// What is untracked by the collector while the handle waits in its
    /// loop's queue (`loop_core::shelter`): `SHELTERED` bits.
    sheltered: AtomicU8,
    /// In debug mode, the repr taken at cancel time (asyncio's `_repr`); a
    /// `str` object, one word where a `String` takes three.
    repr: GilCell<Option<Py<PyString>>>,
    /// In debug mode, where the handle was created.
    source_traceback: Option<Py<PyAny>>,
    /// Debug flag and timer bookkeeping of the owning loop.
    shared: Arc<LoopShared>,
}

impl Handle {
    /// Calls `f` on each Python object the handle holds, for the garbage
    /// collector; stops at the first error.
    fn each_ref<E>(&self, mut f: impl FnMut(&Py<PyAny>) -> Result<(), E>) -> Result<(), E> {
        if let Some(traceback) = &self.source_traceback {
            f(traceback)?;
        }
        if let Some(slots) = self.slots.try_borrow_unguarded() {
            if let Some(context) = slots.context.as_ref() {
                f(context)?;
            }
            if let Some((callback, args)) = slots.call.as_ref() {
                f(callback)?;
                f(args.as_any())?;
            }
        }
        Ok(())
    }

    /// Builds a handle. `source_traceback` is only given in debug mode.
    pub fn new(
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
        shared: Arc<LoopShared>,
    ) -> Self {
        Handle {
            slots: GilCell::new(Slots {
                call: Some((callback, args)),
                context: Some(context),
            }),
            cancelled: AtomicBool::new(false),
            sheltered: AtomicU8::new(0),
            repr: GilCell::new(None),
            source_traceback,
            shared,
        }
    }

    /// Gives a recycled handle a new callback (see [`Handle::empty`]).
    pub fn refill(&self, py: Python<'_>, callback: Py<PyAny>, args: Py<PyTuple>, context: Py<PyAny>) {
        let old = std::mem::replace(
            &mut *self.slots.borrow_mut(py),
            Slots {
                call: Some((callback, args)),
                context: Some(context),
            },
        );
        // An emptied handle holds nothing, so this drops nothing; were it
        // otherwise, dropped here after the borrow ends (a decref runs code).
        drop(old);
        self.cancelled.store(false, Ordering::Relaxed);
    }

    /// Takes out what a run handle holds so it can be recycled; the caller
    /// drops the result once no borrow is held (a decref may run any code).
    pub fn empty(&self, py: Python<'_>) -> (Call, Option<Py<PyAny>>) {
        if self.sheltered.swap(0, Ordering::Relaxed) & CONTEXT_SHELTERED != 0 {
            self.track_context(py);
        }
        let mut slots = self.slots.borrow_mut(py);
        (slots.call.take(), slots.context.take())
    }

    /// Whether the handle recorded where it was created (debug mode).
    pub fn has_origin(&self) -> bool {
        self.source_traceback.is_some()
    }

    /// Untracks the handle, and the context copy only it references, as it
    /// joins its loop's ready queue or timer heap (see `loop_core::shelter`).
    pub(crate) fn shelter(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let this = slf.get();
        if !gc_track::untrack(py, slf.as_ptr()) {
            return;
        }
        let mut flags = SHELTERED;
        if let Some(context) = this.slots.borrow(py).context.as_ref() {
            // SAFETY: `context` is a live object the handle holds.
            let unshared = unsafe { pyo3::ffi::Py_REFCNT(context.as_ptr()) } == 1;
            if unshared && gc_track::untrack(py, context.as_ptr()) {
                flags |= CONTEXT_SHELTERED;
            }
        }
        this.sheltered.store(flags, Ordering::Relaxed);
    }

    /// Tracks again what [`Handle::shelter`] untracked.
    pub(crate) fn release(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let flags = slf.get().sheltered.swap(0, Ordering::Relaxed);
        if flags & CONTEXT_SHELTERED != 0 {
            slf.get().track_context(py);
        }
        if flags & SHELTERED != 0 {
            gc_track::track(py, slf.as_ptr());
        }
    }

    /// Tracks the context again, before anything can drop it: CPython's
    /// context deallocator unlinks it from the collector's lists unchecked.
    fn track_context(&self, py: Python<'_>) {
        if let Some(slots) = self.slots.try_borrow_unguarded() {
            if let Some(context) = slots.context.as_ref() {
                gc_track::track(py, context.as_ptr());
            }
        }
    }

    /// The context, if [`Handle::shelter`] untracked it, for the loop's
    /// traverse (which runs without a `Python` token).
    pub(crate) fn sheltered_context(&self) -> Option<*mut pyo3::ffi::PyObject> {
        if self.sheltered.load(Ordering::Relaxed) & CONTEXT_SHELTERED == 0 {
            return None;
        }
        let slots = self.slots.try_borrow_unguarded()?;
        slots.context.as_ref().map(|c| c.as_ptr())
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Runs the callback in its context. `Ok(None)` when it returned or the
    /// handle was cancelled, `Ok(Some(err))` when it raised.
    pub fn run(&self, py: Python<'_>) -> Option<PyErr> {
        let (callback, args, context) = {
            let slots = self.slots.borrow(py);
            match (slots.call.as_ref(), slots.context.as_ref()) {
                (Some((cb, args)), Some(context)) => (cb.clone_ref(py), args.clone_ref(py), context.clone_ref(py)),
                _ => return None,
            }
        };
        call_in_context(py, context.bind(py), callback.bind(py), args.bind(py)).err()
    }

    fn context_ref(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.slots.borrow(py).context.as_ref().map(|c| c.clone_ref(py))
    }

    pub(crate) fn cancel_inner(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        if this.cancelled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if this.shared.debug.load(Ordering::Relaxed) {
            // Keep what it was for "Executing <Handle...> took N seconds".
            let text = helpers::handle_repr(py)?.call1((slf,))?.cast_into::<PyString>()?;
            let old = this.repr.borrow_mut(py).replace(text.unbind());
            drop(old);
        }
        let dropped = this.slots.borrow_mut(py).call.take();
        drop(dropped);
        Ok(())
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl Handle {
    /// Cancels the callback; it will not run. Cancelling twice does nothing.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::cancel_inner(slf)
    }

    /// Whether the handle was cancelled.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context_ref(py)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context_ref(py)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.slots.borrow(py).call.as_ref().map(|(cb, _)| cb.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.slots.borrow(py).call.as_ref().map(|(_, args)| args.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|tb| tb.clone_ref(py))
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyString>> {
        let py = slf.py();
        if let Some(text) = slf.get().repr.borrow(py).as_ref() {
            return Ok(text.bind(py).clone());
        }
        Ok(helpers::handle_repr(py)?.call1((slf,))?.cast_into::<PyString>()?)
    }

    // Declares the class to the garbage collector; the slot the collector
    // calls for `Handle` is `handle_traverse`, installed over this one.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.each_ref(|obj| visit.call(obj))
    }

    fn __clear__(&self) {
        if self.sheltered.swap(0, Ordering::Relaxed) & CONTEXT_SHELTERED != 0 {
            // SAFETY: the collector clears with the thread attached.
            self.track_context(unsafe { Python::assume_attached() });
        }
        // Dropped after the borrow ends, since a decref can run arbitrary code.
        let slots = self.slots.take_unguarded();
        drop(slots);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if *self.sheltered.get_mut() & CONTEXT_SHELTERED != 0 {
            // SAFETY: only a handle that became a Python object can be
            // sheltered, and its contents are dropped by its `tp_dealloc`,
            // with the thread attached.
            self.track_context(unsafe { Python::assume_attached() });
        }
    }
}

/// A callback scheduled for a point in time (`call_later`, `call_at`).
#[pyclass(module = "ferroloop._ferroloop", extends = Handle, frozen)]
pub struct TimerHandle {
    /// The deadline in `loop.time()` seconds, as a float for ordering.
    when: f64,
    /// The deadline object the caller gave (`when()` returns it unchanged).
    when_obj: Py<PyAny>,
    /// Whether the handle is still in the loop's timer heap (asyncio's `_scheduled`).
    scheduled: AtomicBool,
}

impl TimerHandle {
    /// Builds the timer part; the loop wraps it around a [`Handle`].
    pub fn new(when: f64, when_obj: Py<PyAny>) -> Self {
        TimerHandle {
            when,
            when_obj,
            scheduled: AtomicBool::new(true),
        }
    }

    /// The deadline used for ordering.
    pub fn deadline(&self) -> f64 {
        self.when
    }

    /// Marks the handle as taken out of the heap.
    pub fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Relaxed);
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl TimerHandle {
    /// Cancels the timer (and counts it for the loop's heap purge).
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let base = slf.as_super();
        if !base.get().is_cancelled() && slf.get().scheduled.load(Ordering::Relaxed) {
            base.get().shared.cancelled_timers.fetch_add(1, Ordering::Relaxed);
        }
        Handle::cancel_inner(base)
    }

    /// The absolute time, in `loop.time()` seconds, the callback is due.
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_obj.clone_ref(py)
    }

    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_obj.clone_ref(py)
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    fn __hash__(&self) -> u64 {
        // Same hash for equal deadlines, like hash(self._when) in asyncio.
        if self.when == 0.0 {
            0
        } else {
            self.when.to_bits()
        }
    }

    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when, other.get().when);
        let result = match op {
            CompareOp::Lt => a < b,
            CompareOp::Le => a < b || slf.is(other) || a == b && handles_equal(slf, other)?,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a > b || slf.is(other) || a == b && handles_equal(slf, other)?,
            CompareOp::Eq => slf.is(other) || a == b && handles_equal(slf, other)?,
            CompareOp::Ne => !(slf.is(other) || a == b && handles_equal(slf, other)?),
        };
        Ok(pyo3::types::PyBool::new(py, result).to_owned().into_any().unbind())
    }

    // Declares the class to the garbage collector; the slot the collector
    // calls is `timer_traverse`, installed over this one.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.when_obj)
    }
}

/// asyncio compares equal-deadline timers by callback, args and cancelled state.
fn handles_equal(a: &Bound<'_, TimerHandle>, b: &Bound<'_, TimerHandle>) -> PyResult<bool> {
    let py = a.py();
    let (ha, hb) = (a.as_super().get(), b.as_super().get());
    if ha.is_cancelled() != hb.is_cancelled() {
        return Ok(false);
    }
    let (sa, sb) = (ha.slots.borrow(py), hb.slots.borrow(py));
    match (sa.call.as_ref(), sb.call.as_ref()) {
        (None, None) => Ok(true),
        (Some((fa, aa)), Some((fb, ab))) => {
            let (fa, aa, fb, ab) = (fa.clone_ref(py), aa.clone_ref(py), fb.clone_ref(py), ab.clone_ref(py));
            drop((sa, sb));
            Ok(fa.bind(py).eq(fb.bind(py))? && aa.bind(py).eq(ab.bind(py))?)
        }
        _ => Ok(false),
    }
}

/// `Handle`'s `tp_traverse`, installed over PyO3's generated one by
/// [`install_traverse`]. The garbage collector walks every queued handle on
/// each young-generation collection, and PyO3's wrapper (its super-type walk,
/// attach lock, panic trap and borrow guard) cost ~250 instructions per
/// handle on top of the four visits, about 6% of a `call_soon`. A handle's
/// fields need none of that: they are only read (a `GilCell` that happens to
/// be borrowed is skipped, as in `__traverse__`), and nothing below panics.
///
/// # Safety
/// Called by CPython's collector with `obj` an instance of `Handle` or of a
/// subclass; `TimerHandle`'s (PyO3) traverse and CPython's `subtype_traverse`
/// call it as the base's slot and leave the type visit to it, since `Handle`
/// is a heap type whose base (`object`) is not.
unsafe extern "C" fn handle_traverse(
    obj: *mut pyo3::ffi::PyObject,
    visit: pyo3::ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: `obj` is a live object (see above); its type is a heap type and
    // instances of heap types count as references to it.
    let ret = unsafe { visit(pyo3::ffi::Py_TYPE(obj).cast(), arg) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: the collector runs with the thread attached; `obj` is borrowed
    // for this call only and is a `Handle` (or subclass) instance, and the
    // frozen class's fields are read without a borrow.
    let handle = unsafe {
        let py = Python::assume_attached();
        Borrowed::from_ptr(py, obj).cast_unchecked::<Handle>()
    };
    // SAFETY: `visit`/`arg` are the collector's pair, called on live objects.
    match handle.get().each_ref(|o| match unsafe { visit(o.as_ptr(), arg) } {
        0 => Ok(()),
        err => Err(err),
    }) {
        Ok(()) => 0,
        Err(err) => err,
    }
}

/// `TimerHandle`'s `tp_traverse`: [`handle_traverse`] for the `Handle` part,
/// then the deadline object. PyO3's generated one finds the base's slot by
/// walking the type's bases on every call, which cost more than the visits.
///
/// # Safety
/// Called by CPython's collector with `obj` an instance of `TimerHandle`
/// (the class cannot be subclassed: it is not declared `subclass`).
unsafe extern "C" fn timer_traverse(
    obj: *mut pyo3::ffi::PyObject,
    visit: pyo3::ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: a `TimerHandle` is a `Handle` (its base), as `handle_traverse`
    // requires; the same collector call passes the same pair on.
    let ret = unsafe { handle_traverse(obj, visit, arg) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: as in `handle_traverse`: attached, `obj` borrowed for the call
    // and a `TimerHandle`, whose frozen fields are read without a borrow.
    let timer = unsafe {
        let py = Python::assume_attached();
        Borrowed::from_ptr(py, obj).cast_unchecked::<TimerHandle>()
    };
    // SAFETY: `visit`/`arg` are the collector's pair; `when_obj` is live.
    unsafe { visit(timer.get().when_obj.as_ptr(), arg) }
}

/// Replaces `Handle`'s and `TimerHandle`'s generated `tp_traverse` with
/// [`handle_traverse`] and [`timer_traverse`]; called once, when the module
/// is initialised.
pub(crate) fn install_traverse(py: Python<'_>) {
    let ty = <Handle as pyo3::PyTypeInfo>::type_object_raw(py);
    // SAFETY: `ty` is Handle's fully initialised heap type; no instance exists
    // yet, and the collector reads the slot only with the thread attached.
    unsafe { (*ty).tp_traverse = Some(handle_traverse) };
    let ty = <TimerHandle as pyo3::PyTypeInfo>::type_object_raw(py);
    // SAFETY: as above, for TimerHandle's heap type.
    unsafe { (*ty).tp_traverse = Some(timer_traverse) };
}
