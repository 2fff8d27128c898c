//! `sock_recv`, `sock_recv_into` and `sock_sendall` on the caller's
//! non-blocking sockets.
//!
//! Each first tries the system call at once; only when the socket is not
//! ready does it create a future and wait for readiness with a [`SockOp`]
//! registered on the fd. The op never touches the socket once its future is
//! done, so cancelling a pending call loses no data and leaves the socket
//! usable. The Python `Loop` wraps these in coroutines (asyncio's methods are
//! coroutines: `create_task(loop.sock_recv(...))` must work).

use std::os::fd::RawFd;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::handles::Handle;
use crate::loop_core::readers::Side;
use crate::loop_core::LoopCore;
use crate::py::buffer::RawBuffer;
use crate::sys::socket::{self, would_block};
use crate::sys::Errno;
use crate::transport::read_buffer::recv_new_bytes;

/// What a pending operation does when its fd is ready.
enum Kind {
    /// `recv(n)` into a new `bytes`.
    Recv(usize),
    /// `recv_into(buffer)`.
    RecvInto(Py<PyAny>),
    /// `sendall(data)`, `sent` bytes of it done.
    SendAll { data: Py<PyAny>, sent: usize },
}

/// Outcome of one attempt.
enum Step {
    Wait,
    Done(Py<PyAny>),
}

fn attempt(py: Python<'_>, fd: RawFd, kind: &mut Kind) -> PyResult<Step> {
    let wait_or_raise = |e: Errno| {
        if would_block(e) {
            Ok(Step::Wait)
        } else {
            Err(os_error(e))
        }
    };
    match kind {
        Kind::Recv(n) => match recv_new_bytes(py, fd, *n)? {
            Ok(data) => Ok(Step::Done(data.into_any().unbind())),
            Err(e) => wait_or_raise(e),
        },
        Kind::RecvInto(target) => {
            let view = RawBuffer::get(target.bind(py), true)?;
            match socket::recv_raw(fd, view.as_mut_ptr(), view.len()) {
                Ok(k) => Ok(Step::Done(k.into_pyobject(py)?.into_any().unbind())),
                Err(e) => wait_or_raise(e),
            }
        }
        Kind::SendAll { data, sent } => {
            let view = RawBuffer::get(data.bind(py), false)?;
            let rest = &view.as_slice()[*sent..];
            match socket::send(fd, rest) {
                Ok(k) if k == rest.len() => Ok(Step::Done(py.None())),
                Ok(k) => {
                    *sent += k;
                    Ok(Step::Wait)
                }
                Err(e) => wait_or_raise(e),
            }
        }
    }
}

/// A socket operation waiting for its fd; called by the loop when ready.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct SockOp {
    event_loop: Py<LoopCore>,
    fd: RawFd,
    side: Side,
    future: Py<PyAny>,
    kind: GilCell<Option<Kind>>,
    /// The reader/writer handle, to tell "replaced by another registration"
    /// (cancelled) from "still ours" when the future completes.
    handle: GilCell<Option<Py<Handle>>>,
}

impl SockOp {
    /// Runs `kind` now; if the socket is not ready, returns a future and
    /// waits for readiness.
    fn start(slf: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>, side: Side, mut kind: Kind) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if let Step::Done(value) = attempt(py, fd, &mut kind)? {
            return Ok(value);
        }
        slf.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        let future = slf.call_method0(intern!(py, "create_future"))?;
        let op = Bound::new(
            py,
            SockOp {
                event_loop: slf.clone().unbind(),
                fd,
                side,
                future: future.clone().unbind(),
                kind: GilCell::new(Some(kind)),
                handle: GilCell::new(None),
            },
        )?;
        let handle = slf.get().add_io_fd(py, fd, side, op.as_any(), &PyTuple::empty(py))?;
        *op.get().handle.borrow_mut(py) = Some(handle);
        future.call_method1(intern!(py, "add_done_callback"), (op.getattr(intern!(py, "_done"))?,))?;
        Ok(future.unbind())
    }
}

#[pymethods]
impl SockOp {
    /// The fd is ready: try again, completing the future unless it would block.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let step = {
            let mut kind = self.kind.borrow_mut(py);
            let Some(kind) = kind.as_mut() else { return Ok(()) };
            attempt(py, self.fd, kind)
        };
        match step {
            Ok(Step::Wait) => Ok(()),
            Ok(Step::Done(value)) => {
                future.call_method1(intern!(py, "set_result"), (value,))?;
                Ok(())
            }
            Err(err) => {
                if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
                    return Err(err);
                }
                future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
                Ok(())
            }
        }
    }

    /// The future is done (result, error or cancelled): stop watching the fd,
    /// unless another registration already replaced this one.
    fn _done(&self, py: Python<'_>, _future: &Bound<'_, PyAny>) -> PyResult<()> {
        let kind = self.kind.borrow_mut(py).take();
        drop(kind);
        let handle = self.handle.borrow_mut(py).take();
        if handle.is_some_and(|h| !h.get().is_cancelled()) {
            self.event_loop.get().remove_io_fd(py, self.fd, self.side)?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.future)?;
        if let Some(handle) = self.handle.try_borrow_unguarded() {
            visit.call(&*handle)?;
        }
        if let Some(kind) = self.kind.try_borrow_unguarded() {
            match kind.as_ref() {
                Some(Kind::RecvInto(obj)) | Some(Kind::SendAll { data: obj, .. }) => visit.call(obj)?,
                _ => {}
            }
        }
        Ok(())
    }
}

#[pymethods]
impl LoopCore {
    /// `sock.recv(n)` now, or a future for it.
    fn _sock_recv(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, n: usize) -> PyResult<Py<PyAny>> {
        SockOp::start(slf, sock, Side::Read, Kind::Recv(n))
    }

    /// `sock.recv_into(buf)` now, or a future for it.
    fn _sock_recv_into(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, buf: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        SockOp::start(slf, sock, Side::Read, Kind::RecvInto(buf.clone().unbind()))
    }

    /// `sock.sendall(data)`: `None` if sent at once, else a future.
    fn _sock_sendall(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        SockOp::start(
            slf,
            sock,
            Side::Write,
            Kind::SendAll {
                data: data.clone().unbind(),
                sent: 0,
            },
        )
    }
}
