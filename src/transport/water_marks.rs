//! `set_write_buffer_limits(high, low)`'s arguments, checked as asyncio
//! checks them.
//!
//! asyncio computes the defaults and the check with Python's own operators
//! (`4 * low`, `high // 4`, `high >= low >= 0`), so any size is accepted and
//! odd types fail with Python's own errors; the same operators run here, and
//! only values that passed are turned into byte counts.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;

/// asyncio's default high-water mark; the low one is a quarter of it.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// `(high, low)` in bytes from the arguments of `set_write_buffer_limits`.
pub fn parse<'py>(
    py: Python<'py>,
    high: Option<&Bound<'py, PyAny>>,
    low: Option<&Bound<'py, PyAny>>,
) -> PyResult<(usize, usize)> {
    let (high, low) = (given(high), given(low));
    let high = match (high, &low) {
        (Some(h), _) => h,
        (None, None) => DEFAULT_HIGH_WATER.into_pyobject(py)?.into_any(),
        (None, Some(l)) => 4i32.into_pyobject(py)?.mul(l)?,
    };
    let low = match low {
        Some(l) => l,
        None => high.floor_div(4)?,
    };
    if !(high.ge(&low)? && low.ge(0)?) {
        return Err(PyValueError::new_err(format!(
            "high ({}) must be >= low ({}) must be >= 0",
            high.repr()?,
            low.repr()?
        )));
    }
    Ok((to_bytes(&high)?, to_bytes(&low)?))
}

/// An argument, `None` when left out or passed as `None`.
fn given<'py>(value: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    value.filter(|v| !v.is_none()).cloned()
}

/// A mark that compared `>= 0`, as a byte count: beyond what memory holds
/// means "never", a fraction rounds down (`size > 1.5` is `size > 1`).
fn to_bytes(mark: &Bound<'_, PyAny>) -> PyResult<usize> {
    match mark.extract::<usize>() {
        Ok(n) => Ok(n),
        Err(err) if err.is_instance_of::<PyOverflowError>(mark.py()) => Ok(usize::MAX),
        // `as` saturates: inf is usize::MAX; NaN failed the check above.
        Err(_) => Ok(mark.extract::<f64>()?.floor() as usize),
    }
}
