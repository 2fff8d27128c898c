//! The `sock_*` operations on the caller's non-blocking sockets:
//! `sock_recv`, `sock_recv_into` and `sock_sendall` natively, and any
//! Python callable that raises `BlockingIOError` until the socket is ready
//! (`sock_accept`, `sock_connect`, `sock_recvfrom`, `sock_sendto`, the
//! sendfile loop in `ferroloop._sockets`).
//!
//! Each first tries the system call at once; only when the socket is not
//! ready does it create a future and wait for readiness with a [`SockOp`]
//! registered on the fd. The op never touches the socket once its future is
//! done, so cancelling a pending call loses no data and leaves the socket
//! usable. The Python `Loop` wraps these in coroutines (asyncio's methods are
//! coroutines: `create_task(loop.sock_recv(...))` must work).
//!
//! While an op waits it holds the socket's file open (an io reference, see
//! `loop_core::reader_api`) and keeps the buffer it reads into or sends from
//! exported, and before every attempt it checks that its socket still names
//! its fd: no op ever acts on a file that took the number after its own.
//!
//! When an op ends (done, failed or cancelled) its side of the fd stays in
//! the epoll set, edge-triggered, for the next op on the same socket: a
//! request/response exchange then costs no `epoll_ctl` at all, where adding
//! and removing the fd per wait cost two (see `loop_core::readers`).

use std::os::fd::RawFd;

use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyKeyboardInterrupt, PySystemExit, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::handles::Handle;
use crate::loop_core::io_refs::{holds_io_refs, is_open};
use crate::loop_core::readers::Side;
use crate::loop_core::stats::LoopStats;
use crate::loop_core::LoopCore;
use crate::panic_guard;
use crate::py::buffer::RawBuffer;
use crate::sys::socket::{self, would_block};
use crate::sys::Errno;
use crate::transport::read_buffer::recv_new_bytes;
use crate::transport::table::TransportTable;

/// A buffer export held for a pending operation's life, so that the object
/// cannot be resized under it (a `bytearray` raises `BufferError`, as with
/// asyncio's memoryview).
struct Held(RawBuffer);

// SAFETY: the export is only taken, used and released with the GIL held: it
// lives in a `GilCell` of a GIL-using module's object, and is dropped either
// there or when that object is deallocated, which also happens under the GIL.
unsafe impl Send for Held {}

/// What a pending operation does when its fd is ready.
enum Kind {
    /// `recv(n)` into a new `bytes`.
    Recv(usize),
    /// `recv_into(buffer)`.
    RecvInto(Held),
    /// `sendall(data)`, `sent` bytes of it done.
    SendAll { data: Held, sent: usize },
    /// `func(*args)`: its result completes the operation; `BlockingIOError`
    /// or `InterruptedError` mean wait again (`accept`, `recvfrom`, ...).
    Call { func: Py<PyAny>, args: Py<PyTuple> },
}

/// Outcome of one attempt.
enum Step {
    Wait,
    Done(Py<PyAny>),
}

/// One try of `kind`; what it moved is counted in `stats`.
fn attempt(py: Python<'_>, fd: RawFd, kind: &mut Kind, stats: &LoopStats) -> PyResult<Step> {
    let wait_or_raise = |e: Errno| {
        if would_block(e) {
            Ok(Step::Wait)
        } else {
            Err(os_error(e))
        }
    };
    match kind {
        Kind::Recv(n) => match recv_new_bytes(py, fd, *n)? {
            Ok(data) => {
                let got = data.as_bytes().len();
                if got > 0 {
                    stats.read(got);
                }
                Ok(Step::Done(data.into_any().unbind()))
            }
            Err(e) => wait_or_raise(e),
        },
        Kind::RecvInto(Held(view)) => match socket::recv_raw(fd, view.as_mut_ptr(), view.len()) {
            Ok(k) => {
                if k > 0 {
                    stats.read(k);
                }
                Ok(Step::Done(k.into_pyobject(py)?.into_any().unbind()))
            }
            Err(e) => wait_or_raise(e),
        },
        Kind::SendAll { data: Held(view), sent } => {
            // Sends until done or EAGAIN: an edge-triggered wait is only
            // certain to be woken after the kernel said it is full.
            loop {
                let rest = view.as_slice().get(*sent..).unwrap_or_default();
                match socket::send(fd, rest) {
                    Ok(k) if k == rest.len() => {
                        stats.wrote(view.len());
                        return Ok(Step::Done(py.None()));
                    }
                    Ok(k) => *sent += k,
                    Err(e) => return wait_or_raise(e),
                }
            }
        }
        Kind::Call { func, args } => match func.bind(py).call1(args.bind(py)) {
            Ok(value) => Ok(Step::Done(value.unbind())),
            Err(err) if err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py) => {
                Ok(Step::Wait)
            }
            Err(err) => Err(err),
        },
    }
}

/// A socket operation waiting for its fd. Called with no argument when the
/// fd is ready, and with the future as its done callback.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct SockOp {
    event_loop: Py<LoopCore>,
    /// The socket object the operation is for; its `fileno()` must still be
    /// `fd` before every attempt.
    sock: Py<PyAny>,
    /// `sock` is a `socket.socket` (see `loop_core::io_refs`).
    io_ref: bool,
    fd: RawFd,
    side: Side,
    future: Py<PyAny>,
    kind: GilCell<Option<Kind>>,
    /// The reader/writer handle, to tell "replaced by another registration"
    /// from "still ours" when the op ends.
    handle: GilCell<Option<Py<Handle>>>,
}

impl SockOp {
    /// Runs `kind` now (unless `wait_first`: the caller just tried); if the
    /// socket is not ready, returns a future and waits for readiness.
    fn start(
        slf: &Bound<'_, LoopCore>,
        sock: &Bound<'_, PyAny>,
        side: Side,
        mut kind: Kind,
        wait_first: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        check_socket(slf, sock)?;
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if !wait_first {
            if let Step::Done(value) = attempt(py, fd, &mut kind, &slf.get().stats)? {
                return Ok(value);
            }
        }
        ensure_fd_no_transport(slf, fd)?;
        let future = slf.call_method0(intern!(py, "create_future"))?;
        let op = Bound::new(
            py,
            SockOp {
                event_loop: slf.clone().unbind(),
                sock: sock.clone().unbind(),
                io_ref: holds_io_refs(sock),
                fd,
                side,
                future: future.clone().unbind(),
                kind: GilCell::new(Some(kind)),
                handle: GilCell::new(None),
            },
        )?;
        // Waiting first (after the caller's own attempt) checks the kernel's
        // registration, which also reports readiness that is already there.
        let io_ref = op.get().io_ref;
        let handle = slf
            .get()
            .add_sock_op(py, sock, fd, side, op.as_any(), wait_first, io_ref)?;
        *op.get().handle.borrow_mut(py) = Some(handle);
        if let Err(err) = future.call_method1(intern!(py, "add_done_callback"), (&op,)) {
            // Nothing will end the op: give its registration and io
            // reference back now.
            op.get().finish(py, false);
            return Err(err);
        }
        Ok(future.unbind())
    }

    /// Ends the op once: forgets its state (releasing a held buffer) and
    /// parks its side of the fd, or removes it unless `keep`.
    fn finish(&self, py: Python<'_>, keep: bool) {
        let kind = self.kind.borrow_mut(py).take();
        drop(kind);
        let handle = self.handle.borrow_mut(py).take();
        if let Some(handle) = handle {
            self.event_loop
                .get()
                .park_sock_op(py, self.fd, self.side, &handle, keep);
        }
    }

    /// Whether the socket object still names the fd the op started on. A
    /// program's `close()` keeps it (the op holds an io reference); a
    /// `detach()` does not, and then the number is no longer the op's.
    fn still_owns_fd(&self, py: Python<'_>) -> bool {
        let sock = self.sock.bind(py);
        // `socket.socket` sets `_closed` before it closes or detaches: while
        // it is false the fd is the same, and one attribute is cheaper than
        // a method call.
        if self.io_ref && is_open(sock) {
            return true;
        }
        sock.call_method0(intern!(py, "fileno"))
            .and_then(|n| n.extract::<RawFd>())
            .is_ok_and(|n| n == self.fd)
    }
}

/// The registration whose handle is `handle` was made for a file its number
/// no longer names: if it belongs to a pending `sock_*` operation, the op
/// ends with `OSError(EBADF)` and never touches the number again.
pub(crate) fn abandon(handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = handle.py();
    let Ok(callback) = handle.getattr(intern!(py, "_callback")) else {
        return Ok(());
    };
    let Ok(op) = callback.cast_into::<SockOp>() else {
        return Ok(());
    };
    let this = op.get();
    // The registry already dropped the registration: nothing to park.
    this.handle.borrow_mut(py).take();
    this.kind.borrow_mut(py).take();
    let future = this.future.bind(py);
    future.call_method1(intern!(py, "remove_done_callback"), (&op,))?;
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(
            intern!(py, "set_exception"),
            (os_error(Errno(libc::EBADF)).into_value(py),),
        )?;
    }
    Ok(())
}

#[ferroloop_macros::contained]
#[pymethods]
impl SockOp {
    /// `op()`: the fd is ready; try again, completing the future unless it
    /// would block. `op(future)`: the future is done (cancelled, normally).
    #[pyo3(signature = (future = None))]
    fn __call__(slf: &Bound<'_, Self>, future: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if future.is_some() {
            this.finish(py, true);
            return Ok(());
        }
        let future = this.future.bind(py);
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let (step, keep) = if this.still_owns_fd(py) {
            // A panic (or a PanicException from a `Call` kind's function)
            // fails this op's future with a RuntimeError; the op's state is
            // not trusted again, so its registration is removed, not parked.
            let tried = panic_guard::catch(|| {
                panic_guard::fault(panic_guard::Site::SockOp);
                let mut kind = this.kind.borrow_mut(py);
                kind.as_mut()
                    .map(|kind| attempt(py, this.fd, kind, &this.event_loop.get().stats))
            });
            match tried {
                Ok(None) => return Ok(()),
                Ok(Some(step)) => (step, true),
                Err(payload) => (Err(panic_guard::to_error(payload.as_ref())), false),
            }
        } else {
            (Err(os_error(Errno(libc::EBADF))), false)
        };
        let outcome = match step {
            Ok(Step::Wait) => return Ok(()),
            Ok(Step::Done(value)) => Ok(value),
            // Propagates out of the loop, as in asyncio; the op stays.
            Err(err) if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) => {
                return Err(err)
            }
            Err(err) => Err(err),
        };
        // Ended here, so the done callback has nothing left to do: removing it
        // saves scheduling it.
        this.finish(py, keep);
        future.call_method1(intern!(py, "remove_done_callback"), (slf,))?;
        match outcome {
            Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
            Err(err) => future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?,
        };
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.sock)?;
        visit.call(&self.future)?;
        if let Some(handle) = self.handle.try_borrow_unguarded() {
            visit.call(&*handle)?;
        }
        if let Some(kind) = self.kind.try_borrow_unguarded() {
            if let Some(Kind::Call { func, args }) = kind.as_ref() {
                visit.call(func)?;
                visit.call(args)?;
            }
        }
        Ok(())
    }
}

/// The checks asyncio makes before any `sock_*` call: an `ssl.SSLSocket` is
/// refused, and in debug mode so is a blocking socket. Only the common
/// outcome (a plain socket, no debug mode) is decided here; everything else is
/// `ferroloop._sockets._check_nonblocking`, which raises the interpreter's own
/// errors. Native because a Python call per operation was a tenth of a
/// request's instructions.
fn check_socket(slf: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    static SSL_SOCKET: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    let ssl_socket = SSL_SOCKET.get_or_try_init(py, || -> PyResult<_> {
        // asyncio's own reference: None where the ssl module is missing.
        let ssl = py.import("asyncio.base_events")?.getattr("ssl")?;
        Ok(if ssl.is_none() {
            None
        } else {
            Some(ssl.getattr("SSLSocket")?.unbind())
        })
    })?;
    let is_ssl = match ssl_socket {
        Some(ty) => sock.is_instance(ty.bind(py))?,
        None => false,
    };
    if is_ssl || slf.get().debug() {
        static CHECK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        CHECK
            .import(py, "ferroloop._sockets", "_check_nonblocking")?
            .call1((slf, sock))?;
    }
    Ok(())
}

/// asyncio's `_ensure_fd_no_transport(fd)`: `RuntimeError` if a transport
/// that is not closing uses `fd`. Its common outcome (no transport at all) is
/// one dict lookup here; anything else is asyncio's own method.
fn ensure_fd_no_transport(slf: &Bound<'_, LoopCore>, fd: RawFd) -> PyResult<()> {
    let py = slf.py();
    let free = slf
        .getattr(intern!(py, "_transports"))
        .ok()
        .and_then(|t| t.cast_into::<TransportTable>().ok())
        .is_some_and(|t| !t.get().contains_fd(py, fd));
    if free {
        return Ok(());
    }
    slf.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
    Ok(())
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// `sock.recv(n)` now, or a future for it.
    fn _sock_recv(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, n: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        SockOp::start(slf, sock, Side::Read, Kind::Recv(recv_size(n)?), false)
    }

    /// `sock.recv_into(buf)` now, or a future for it.
    fn _sock_recv_into(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, buf: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let view = RawBuffer::get(buf, true)?;
        SockOp::start(slf, sock, Side::Read, Kind::RecvInto(Held(view)), false)
    }

    /// `sock.sendall(data)`: `None` if sent at once, else a future.
    fn _sock_sendall(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let view = RawBuffer::get(data, false)?;
        let kind = Kind::SendAll {
            data: Held(view),
            sent: 0,
        };
        SockOp::start(slf, sock, Side::Write, kind, false)
    }

    /// `func(*args)` now (unless `wait_first`), or a future for its result
    /// once it no longer raises `BlockingIOError` when `sock` is readable
    /// (or writable, with `write`).
    #[pyo3(signature = (sock, write, func, args, wait_first = false))]
    fn _sock_call(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        write: bool,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        wait_first: bool,
    ) -> PyResult<Py<PyAny>> {
        let side = if write { Side::Write } else { Side::Read };
        let kind = Kind::Call {
            func: func.clone().unbind(),
            args: args.clone().unbind(),
        };
        SockOp::start(slf, sock, side, kind, wait_first)
    }
}

/// `recv`'s size argument, with the socket module's errors: `TypeError` for
/// a non-integer, `OverflowError` beyond `Py_ssize_t`, `ValueError` if
/// negative.
fn recv_size(n: &Bound<'_, PyAny>) -> PyResult<usize> {
    let value: isize = n.extract()?;
    usize::try_from(value).map_err(|_| PyValueError::new_err("negative buffersize in recv"))
}
