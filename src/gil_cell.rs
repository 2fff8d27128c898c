//! [`GilCell`]: interior mutability for state that is only touched while
//! attached to the interpreter.
//!
//! The extension module declares that it uses the GIL (`gil_used = true` in
//! `lib.rs`), so CPython holds it (and a free-threaded build re-enables it on
//! import) for every call into the module. A `RefCell` whose every access
//! needs a `Python<'_>` token is therefore only ever used by one thread at a
//! time. (Forcing the GIL off anyway, `PYTHON_GIL=0` or `-X gil=0`, is what
//! CPython documents as unsafe for such modules.) Re-entrancy (a Python callback that
//! calls back into the loop while a borrow is live) is caught by `RefCell` as a
//! panic, which PyO3 turns into an exception: never undefined behaviour. Code
//! must not hold a borrow across a call into Python.
//!
//! A panic while a borrow is live (caught by the loop, see `panic_guard`)
//! leaves the cell usable: the borrow is a guard value that is dropped, and
//! so released, as the panic unwinds, and `RefCell` has no poisoning.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

/// A `RefCell` that can only be borrowed with proof of holding the GIL.
#[derive(Debug, Default)]
pub struct GilCell<T>(RefCell<T>);

// SAFETY: every borrow takes a `Python<'_>` token and the module declares
// `gil_used = true`, so no two threads access the RefCell at the same time;
// the GIL hand-off orders their memory accesses. `T: Send` because the value may
// be dropped or used on whichever thread holds the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Borrows shared; panics (as a Python exception) on re-entrant mutation.
    pub fn borrow<'a>(&'a self, _py: Python<'a>) -> Ref<'a, T> {
        self.0.borrow()
    }

    /// Borrows exclusively; panics (as a Python exception) on re-entrancy.
    pub fn borrow_mut<'a>(&'a self, _py: Python<'a>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Borrows exclusively, or `None` if the cell is borrowed right now.
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'a>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// Takes the value out for `__clear__`, which runs with the GIL held but
    /// without a token; gives `None` if the cell is borrowed right now.
    pub fn take_unguarded(&self) -> Option<T>
    where
        T: Default,
    {
        self.0.try_borrow_mut().ok().map(|mut v| std::mem::take(&mut *v))
    }

    /// Non-panicking shared borrow for the garbage collector's traversal.
    pub fn try_borrow_unguarded(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_borrowed_releases_the_borrow() {
        let cell = GilCell::new(vec![1]);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut guard = cell.0.borrow_mut();
            guard.push(2);
            panic!("while borrowed");
        }));
        assert!(caught.is_err());
        assert_eq!(cell.try_borrow_unguarded().as_deref(), Some(&vec![1, 2]));
        assert_eq!(cell.take_unguarded(), Some(vec![1, 2]));
    }
}
