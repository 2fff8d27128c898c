//! Receiving into a new `bytes` without allocating a large buffer per call.
//!
//! The kernel writes into one reusable per-thread buffer and only the bytes
//! actually received are copied into the `bytes` object: a 1 KiB message
//! costs a 1 KiB copy, not a 256 KiB allocation. Where large reads are
//! expected, the kernel writes straight into a `bytes` sized for them and the
//! per-thread buffer only takes the excess.

use std::cell::RefCell;
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::py::filling_bytes::FillingBytes;
use crate::sys::{pipe, socket, Errno};

/// Size of the reusable buffer, and most bytes a transport reads per event:
/// asyncio's `max_size` (libuv's per-read buffer in uvloop is as large).
/// A 100 KiB message that has fully arrived is read, handed over and echoed
/// in one call each; with 64 KiB reads it took two of each, and the extra
/// small sends cost the kernel more per request than the larger buffer does
/// (only the bytes received are touched, in the kernel and in the copy out).
pub const READ_SIZE: usize = 256 * 1024;

thread_local! {
    // A loop runs on one thread and copies out before calling Python, so
    // one buffer per thread is never used twice at once.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

/// `recv(fd, READ_SIZE)` as a `bytes` object (empty at end of stream).
pub fn recv_bytes(py: Python<'_>, fd: RawFd) -> Result<Bound<'_, PyBytes>, Errno> {
    read_with(py, fd, socket::recv)
}

/// Reads expected at least this large go straight into their `bytes` object
/// (see [`recv_bytes_expecting`]); below it the copy costs less than the
/// resize.
const DIRECT_FROM: usize = 16 * 1024;
/// The largest `bytes` allocated ahead of a read: with its header it stays
/// under glibc's initial 128 KiB mmap threshold, so it comes from the heap
/// rather than from a new mapping faulted in page by page.
const DIRECT_MAX: usize = 128 * 1024 - 1024;

/// `recv(fd, READ_SIZE)` as a `bytes` object for a reader that expects about
/// `expect` bytes: from [`DIRECT_FROM`] the kernel writes the first `expect`
/// (at most [`DIRECT_MAX`]) straight into a new `bytes` and only what goes
/// beyond spills into the scratch buffer, in the same `recvmsg`; the object
/// is then shrunk or grown to what arrived. Large messages are not copied
/// twice.
pub fn recv_bytes_expecting(py: Python<'_>, fd: RawFd, expect: usize) -> PyResult<Result<Bound<'_, PyBytes>, Errno>> {
    if expect < DIRECT_FROM {
        return Ok(recv_bytes(py, fd));
    }
    let direct = expect.min(DIRECT_MAX);
    let mut out = FillingBytes::new(py, direct)?;
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let spill = &mut buf[..READ_SIZE - direct];
        let mut received = Ok(0);
        out.fill(|start, room| {
            received = socket::recv_two(fd, (start, room), spill);
            Ok(received.map_or(0, |n| n.min(room)))
        })?;
        match received {
            Err(e) => Ok(Err(e)),
            Ok(n) => {
                if n > direct {
                    out.append(&spill[..n - direct])?;
                }
                out.finish().map(Ok)
            }
        }
    })
}

/// `sock.recv(max)` the way the socket module does it: the kernel writes
/// into a new `bytes` of `max` bytes, which is then shrunk to what arrived.
/// For `sock_recv`, whose caller picks `max`: the heap then sees the same
/// allocations as under asyncio, where copying out of a scratch buffer
/// into an exact-size object made glibc return and re-fault heap pages on
/// every request of an echo server holding many 64 KiB buffers.
pub fn recv_new_bytes(py: Python<'_>, fd: RawFd, max: usize) -> PyResult<Result<Bound<'_, PyBytes>, Errno>> {
    let mut out = FillingBytes::new(py, max)?;
    let mut received = Ok(0);
    out.fill(|start, room| {
        received = socket::recv_raw(fd, start, room);
        Ok(received.unwrap_or(0))
    })?;
    match received {
        Err(e) => Ok(Err(e)),
        Ok(_) => out.finish().map(Ok),
    }
}

/// `read(fd, READ_SIZE)` as a `bytes` object (empty at end of file), for
/// pipes and character devices.
pub fn read_bytes(py: Python<'_>, fd: RawFd) -> Result<Bound<'_, PyBytes>, Errno> {
    read_with(py, fd, pipe::read)
}

fn read_with(
    py: Python<'_>,
    fd: RawFd,
    call: fn(RawFd, &mut [u8]) -> Result<usize, Errno>,
) -> Result<Bound<'_, PyBytes>, Errno> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = call(fd, &mut buf)?;
        Ok(PyBytes::new(py, &buf[..n]))
    })
}

/// `recv(fd, READ_SIZE)` into the reusable buffer, then `use_bytes` on what
/// arrived (empty at end of stream), for callers that copy the bytes
/// somewhere themselves (the TLS pump's memory BIO) and need no `bytes`.
pub fn recv_then<R>(fd: RawFd, use_bytes: impl FnOnce(&[u8]) -> R) -> Result<R, Errno> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = socket::recv(fd, &mut buf)?;
        Ok(use_bytes(&buf[..n]))
    })
}
