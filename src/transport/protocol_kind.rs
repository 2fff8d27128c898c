//! Which way a stream transport hands received bytes to its protocol:
//! `data_received(bytes)`, or `get_buffer()` then `buffer_updated(n)`.
//!
//! asyncio reads into a buffer only for `asyncio.BufferedProtocol` instances.
//! uvloop also does it for any protocol that is not an `asyncio.Protocol` and
//! has `get_buffer`, so an `asyncio.BaseProtocol` subclass written for
//! buffered reads works there. ferroloop takes that case only when the
//! protocol has no `data_received`: a protocol that works on asyncio gets
//! exactly asyncio's calls, and one that would fail there on the missing
//! `data_received` gets its buffer instead.

use pyo3::intern;
use pyo3::prelude::*;

use crate::py::asyncio;

/// True when received bytes go through `get_buffer`/`buffer_updated`.
pub fn reads_into_buffer(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = protocol.py();
    if protocol.is_instance(asyncio::buffered_protocol(py)?)? {
        return Ok(true);
    }
    if protocol.is_instance(asyncio::protocol_type(py)?)? {
        return Ok(false);
    }
    Ok(protocol.hasattr(intern!(py, "get_buffer"))?
        && protocol.hasattr(intern!(py, "buffer_updated"))?
        && !protocol.hasattr(intern!(py, "data_received"))?)
}
