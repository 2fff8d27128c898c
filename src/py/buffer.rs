//! Borrowing the bytes behind any object that supports the buffer protocol
//! (`bytes`, `bytearray`, `memoryview`, `array`, numpy arrays...).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

/// A built-in (C) method bound to an object of a type known not to keep its
/// arguments: the only callee [`lend_view`] lends memory to.
///
/// Releasing a memoryview does not invalidate slices made from it, and a
/// slice keeps pointing at the lent memory. Python code (an override, a
/// replaced attribute) could keep one past the call and read or write memory
/// that is reused or freed by then, so it must get its own copy instead.
pub struct CMethod(Py<PyAny>);

impl CMethod {
    /// `method` if it is a built-in method whose `__self__` is exactly of
    /// one of `types` (not a subclass: an override would be Python code).
    /// The caller vouches that those types' methods keep no argument beyond
    /// the call and cannot be replaced (immutable types).
    pub fn of(method: &Bound<'_, PyAny>, types: &[&Bound<'_, PyAny>]) -> PyResult<Option<Self>> {
        // SAFETY: `method` is a live object; the check only reads its type.
        if unsafe { ffi::PyCFunction_Check(method.as_ptr()) } == 0 {
            return Ok(None);
        }
        let owner = method.getattr(pyo3::intern!(method.py(), "__self__"))?.get_type();
        Ok(types
            .iter()
            .any(|t| owner.is(*t))
            .then(|| CMethod(method.clone().unbind())))
    }

    pub fn get(&self) -> &Py<PyAny> {
        &self.0
    }
}

/// Calls `callee(view)`, or `callee(size, view)` when `size` is given, with
/// `view` a memoryview of the `len` bytes at `ptr` (writable if asked), and
/// ends the view when the call returns, so that nothing can read or write
/// that memory through it afterwards.
///
/// With the view's only reference here, dropping it releases it as
/// `release()` would, without looking that method up and calling it; a view
/// somebody kept is released through `release()` (which raises `BufferError`
/// while it is exported).
///
/// # Safety
/// `len` bytes at `ptr` must stay valid for the whole call (and, when
/// `writable`, be memory nothing else reads or writes meanwhile).
pub unsafe fn lend_view<'py>(
    py: Python<'py>,
    ptr: *mut u8,
    len: usize,
    writable: bool,
    callee: &CMethod,
    size: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = if writable { ffi::PyBUF_WRITE } else { ffi::PyBUF_READ };
    // SAFETY: the caller vouches for `ptr` and `len` while the view lives;
    // the view is ended below, before this function returns.
    let view = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyMemoryView_FromMemory(ptr.cast(), len as ffi::Py_ssize_t, flags),
        )?
        .cast_into_unchecked::<PyMemoryView>()
    };
    let callee = callee.get().bind(py);
    let result = match size {
        Some(n) => callee.call1((n, &view)),
        None => callee.call1((&view,)),
    };
    // SAFETY: `view` is a live object; reading its reference count is safe.
    if unsafe { ffi::Py_REFCNT(view.as_ptr()) } == 1 {
        drop(view);
    } else {
        view.call_method0(pyo3::intern!(py, "release"))?;
    }
    result
}

/// A contiguous buffer exported by a Python object, released on drop.
pub struct RawBuffer {
    view: Box<ffi::Py_buffer>,
}

impl RawBuffer {
    /// Exports `obj`'s buffer, C-contiguous, writable if asked. Raises what
    /// `memoryview(obj)` would (`TypeError`, `BufferError`).
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<RawBuffer> {
        // SAFETY: Py_buffer is plain data; all-zero is its "empty" state.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        let flags = ffi::PyBUF_C_CONTIGUOUS | if writable { ffi::PyBUF_WRITABLE } else { 0 };
        // SAFETY: `obj` is live; `view` is writable and, on success, filled in
        // by the exporter and released exactly once in `Drop`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) } != 0 {
            // `__buffer__` may be Python code (3.12+): see `take_raised`.
            return Err(crate::panic_guard::take_raised(obj.py()));
        }
        Ok(RawBuffer { view })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    /// Start of the buffer.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.view.buf.cast()
    }

    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` contiguous bytes at `buf`
        // while the view is held, which `self` does until drop.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast(), self.len()) }
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // Buffers are taken and released with the GIL held (every caller is a
        // Python method of ours).
        // SAFETY: the view was filled by a successful PyObject_GetBuffer.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}
