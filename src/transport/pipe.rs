//! Pipe transports: the read end and the write end of pipes, FIFOs,
//! character devices and sockets (`connect_read_pipe`/`connect_write_pipe`,
//! and a subprocess's stdin, stdout and stderr).
//!
//! Behaviour follows asyncio's `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport`: the same order of protocol calls, the same
//! messages. The per-event work runs here: a readable event reads once and
//! hands the bytes to `data_received`; `write()` writes at once and buffers
//! only what the kernel did not take, with write interest registered only
//! while the buffer is non-empty; flow control calls `pause_writing` and
//! `resume_writing` at the water marks.
//!
//! The Python transports (`ferroloop._pipes`) own the pipe object and do the
//! once-per-transport work: set-up, reprs, fatal-error reports and
//! `_call_connection_lost`, which closes the pipe. A core schedules that call
//! once at most, and never touches its fd after it is scheduled.
//!
//! A core works on a descriptor of its own, a duplicate of the pipe's made
//! when the transport is created, and closes it with the pipe. A program
//! that closes its pipe object (or its fd) while the transport is open thus
//! frees only its own number: whatever file gets that number next is never
//! read, written or unregistered by this transport. The file stays open
//! until the transport is done (so a write end's reader sees end of file
//! only then). Registrations are made for, and removed only by, the
//! Python transport that owns the core.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyo3::exceptions::{PyAssertionError, PyBrokenPipeError, PyBufferError, PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::read_buffer::read_bytes;
use super::water_marks::{self, DEFAULT_HIGH_WATER};
use super::write_buffer::{WriteBuffer, Written};
use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::loop_core::readers::Side;
use crate::loop_core::LoopCore;
use crate::panic_guard::{self, Site};
use crate::py::buffer::RawBuffer;
use crate::py::{call_method, helpers};
use crate::sys::pipe;
use crate::sys::socket::would_block;

/// Writes after the pipe was lost are counted, and logged from this many on
/// (asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOG_LOST_WRITES_FROM: u32 = 5;

/// References a core lets go of once the connection is lost, for the caller
/// to drop after its borrow ends.
type Released = (Option<Py<PyAny>>, Option<Py<LoopCore>>, Option<Py<PyAny>>);

/// What both ends share: who they report to and where they are registered.
struct Common {
    /// The Python transport this is the core of.
    owner: Option<Py<PyAny>>,
    event_loop: Option<Py<LoopCore>>,
    /// `file`'s number, -1 once it is closed.
    fd: RawFd,
    /// The transport's own descriptor for the pipe (see the module's doc).
    file: Option<OwnedFd>,
    protocol: Option<Py<PyAny>>,
    /// `close()`, end of file, `write_eof()` or a fatal error happened.
    closing: bool,
    /// `_call_connection_lost` is scheduled (or ran).
    lost: bool,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            owner: None,
            event_loop: None,
            fd: -1,
            file: None,
            protocol: None,
            closing: true,
            lost: true,
        }
    }
}

impl Common {
    fn new(
        owner: &Bound<'_, PyAny>,
        event_loop: &Bound<'_, PyAny>,
        fd: RawFd,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let event_loop = event_loop.cast::<LoopCore>()?.clone().unbind();
        let file = pipe::duplicate(fd).map_err(os_error)?;
        Ok(Common {
            owner: Some(owner.clone().unbind()),
            event_loop: Some(event_loop),
            fd: file.as_raw_fd(),
            file: Some(file),
            protocol: Some(protocol.clone().unbind()),
            closing: false,
            lost: false,
        })
    }

    /// Where this end is registered, for [`Watch::add`] and [`Watch::remove`].
    fn watch(&self, py: Python<'_>) -> Watch {
        Watch {
            event_loop: self.event_loop(py),
            fd: self.fd,
            owner: self.owner(py),
        }
    }

    fn event_loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.event_loop.as_ref().map(|l| l.clone_ref(py))
    }

    fn owner(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.owner.as_ref().map(|o| o.clone_ref(py))
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn debug(&self) -> bool {
        self.event_loop.as_ref().is_some_and(|l| l.get().debug())
    }

    /// Marks the connection lost; the loop and owner to schedule
    /// `_call_connection_lost` with, unless it already was.
    fn take_lost(&mut self, py: Python<'_>) -> Option<(Py<LoopCore>, Py<PyAny>)> {
        self.closing = true;
        if self.lost {
            return None;
        }
        self.lost = true;
        Some((self.event_loop(py)?, self.owner(py)?))
    }

    /// Lets go of everything once the Python transport ran `connection_lost`.
    fn detach(&mut self, py: Python<'_>) -> Detached {
        let watch = self.watch(py);
        self.closing = true;
        self.lost = true;
        self.fd = -1;
        Detached {
            watch,
            file: self.file.take(),
            released: (self.owner.take(), self.event_loop.take(), self.protocol.take()),
        }
    }

    /// Closes the descriptor alone (an unclosed transport being collected:
    /// nothing is registered, the registrations would keep it alive).
    fn close_file(&mut self) -> Option<OwnedFd> {
        self.fd = -1;
        self.file.take()
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.event_loop)?;
        visit.call(&self.protocol)
    }
}

/// A core's registrations: on its own fd, made for its Python transport.
struct Watch {
    event_loop: Option<Py<LoopCore>>,
    fd: RawFd,
    owner: Option<Py<PyAny>>,
}

impl Watch {
    fn add(&self, py: Python<'_>, side: Side, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        if let (Some(event_loop), Some(owner)) = (&self.event_loop, &self.owner) {
            let owner = owner.bind(py);
            event_loop.get().add_io_file(
                py,
                self.fd,
                side,
                Some(owner),
                false,
                callback,
                &PyTuple::empty(py),
                None,
            )?;
        }
        Ok(())
    }

    /// Removes this transport's registration on `side`, never one somebody
    /// else made on the number.
    fn remove(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        if let (Some(event_loop), Some(owner)) = (&self.event_loop, &self.owner) {
            event_loop
                .get()
                .remove_io_file(py, self.fd, side, Some(owner.bind(py)))?;
        }
        Ok(())
    }
}

/// What a core lets go of once `connection_lost` ran, for the caller to
/// release after its borrow ends.
struct Detached {
    watch: Watch,
    file: Option<OwnedFd>,
    released: Released,
}

impl Detached {
    /// Removes any registration left on the core's descriptor, then closes
    /// it and drops the references.
    fn finish(self, py: Python<'_>) -> PyResult<()> {
        let removed = self
            .watch
            .remove(py, Side::Read)
            .and_then(|()| self.watch.remove(py, Side::Write));
        drop(self.file);
        drop(self.watch);
        drop(self.released);
        removed
    }
}

/// Schedules `owner._call_connection_lost(exc)`.
fn schedule_lost(py: Python<'_>, scheduled: Option<(Py<LoopCore>, Py<PyAny>)>, exc: Py<PyAny>) -> PyResult<()> {
    let Some((event_loop, owner)) = scheduled else {
        return Ok(());
    };
    let callback = owner.bind(py).getattr(intern!(py, "_call_connection_lost"))?;
    event_loop.get().soon(py, &callback, &PyTuple::new(py, [exc])?)
}

/// Hands an OS error to the Python transport's `_fatal_error(exc, message)`.
fn report_fatal(py: Python<'_>, owner: Option<Py<PyAny>>, exc: Bound<'_, PyAny>, message: &str) -> PyResult<()> {
    if let Some(owner) = owner {
        owner
            .bind(py)
            .call_method1(intern!(py, "_fatal_error"), (exc, message))?;
    }
    Ok(())
}

fn log_debug(py: Python<'_>, message: &str, owner: Option<Py<PyAny>>) -> PyResult<()> {
    helpers::log_debug(py)?.call1((message, owner))?;
    Ok(())
}

/// The Python methods both cores share: they only touch `inner.common`.
/// (A second `#[pymethods]` block per class, which `multiple-pymethods`
/// allows.)
macro_rules! common_pymethods {
    ($core:ident) => {
        #[ferroloop_macros::contained]
        #[pymethods]
        impl $core {
            fn is_closing(&self, py: Python<'_>) -> bool {
                self.inner.borrow(py).common.closing
            }

            /// Forgets the loop, protocol and Python transport and closes the
            /// core's descriptor (after `connection_lost`).
            fn _detach(&self, py: Python<'_>) -> PyResult<()> {
                let detached = self.inner.borrow_mut(py).common.detach(py);
                detached.finish(py)
            }

            /// Closes the core's descriptor (an unclosed transport's `__del__`).
            fn _close_file(&self, py: Python<'_>) {
                let file = self.inner.borrow_mut(py).common.close_file();
                drop(file);
            }

            /// The core's own descriptor, -1 once closed.
            #[getter]
            fn _fd(&self, py: Python<'_>) -> RawFd {
                self.inner.borrow(py).common.fd
            }

            fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.inner.borrow(py).common.protocol(py)
            }

            fn set_protocol(&self, protocol: &Bound<'_, PyAny>) {
                let old = self
                    .inner
                    .borrow_mut(protocol.py())
                    .common
                    .protocol
                    .replace(protocol.clone().unbind());
                drop(old);
            }

            #[getter]
            fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
                self.inner.borrow(py).common.event_loop(py)
            }

            #[getter]
            fn _closing(&self, py: Python<'_>) -> bool {
                self.inner.borrow(py).common.closing
            }

            fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
                match self.inner.try_borrow_unguarded() {
                    Some(st) => st.common.traverse(&visit),
                    None => Ok(()),
                }
            }

            fn __clear__(&self) {
                let state = self.inner.take_unguarded();
                drop(state);
            }
        }
    };
}

// ---------------------------------------------------------------------------
// The read end.

#[derive(Default)]
struct ReadInner {
    common: Common,
    /// `pause_reading()` is in effect.
    paused: bool,
}

/// The native part of `ferroloop._pipes.ReadPipeTransport`.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct ReadPipeTransportCore {
    inner: GilCell<ReadInner>,
}

impl ReadPipeTransportCore {
    fn is_reading_now(&self, py: Python<'_>) -> bool {
        let st = self.inner.borrow(py);
        !st.paused && !st.common.closing
    }

    fn watch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let watch = slf.get().inner.borrow(py).common.watch(py);
        let callback = slf.getattr(intern!(py, "_read_ready"))?;
        watch.add(py, Side::Read, &callback)
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl ReadPipeTransportCore {
    #[new]
    fn new(
        owner: &Bound<'_, PyAny>,
        event_loop: &Bound<'_, PyAny>,
        fd: RawFd,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(ReadPipeTransportCore {
            inner: GilCell::new(ReadInner {
                common: Common::new(owner, event_loop, fd, protocol)?,
                paused: false,
            }),
        })
    }

    /// Starts watching the pipe, unless paused or closing by now.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading_now(slf.py()) {
            ReadPipeTransportCore::watch(slf)?;
        }
        Ok(())
    }
}

/// The event handler's body; the method the loop calls wraps it (see
/// `panic_guard::event`).
impl ReadPipeTransportCore {
    /// The pipe is readable: read once and hand the data to the protocol.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (fd, protocol) = {
            let st = this.inner.borrow(py);
            if st.common.lost {
                return Ok(());
            }
            let Some(protocol) = st.common.protocol(py) else {
                return Ok(());
            };
            (st.common.fd, protocol)
        };
        match read_bytes(py, fd) {
            Err(e) if would_block(e) => Ok(()),
            Err(e) => {
                let owner = this.inner.borrow(py).common.owner(py);
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                report_fatal(py, owner, exc, "Fatal read error on pipe transport")
            }
            Ok(data) if data.as_bytes().is_empty() => {
                let (debug, owner) = {
                    let st = this.inner.borrow(py);
                    (st.common.debug(), st.common.owner(py))
                };
                if debug {
                    if let Some(owner) = owner.as_ref() {
                        owner.bind(py).call_method0(intern!(py, "_log_closed_by_peer"))?;
                    }
                }
                let (watch, scheduled) = {
                    let mut st = this.inner.borrow_mut(py);
                    (st.common.watch(py), st.common.take_lost(py))
                };
                watch.remove(py, Side::Read)?;
                if let Some(event_loop) = watch.event_loop.as_ref() {
                    let eof = protocol.bind(py).getattr(intern!(py, "eof_received"))?;
                    event_loop.get().soon(py, &eof, &PyTuple::empty(py))?;
                }
                schedule_lost(py, scheduled, py.None())
            }
            Ok(data) => {
                call_method(protocol.bind(py), intern!(py, "data_received"), &[data.as_any()])?;
                Ok(())
            }
        }
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl ReadPipeTransportCore {
    /// `read_ready`, a panic in it being the transport's fatal error.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let fatal = |exc| {
            let owner = slf.get().inner.borrow(py).common.owner(py);
            report_fatal(py, owner, exc, "Fatal read error on pipe transport")
        };
        let read = || ReadPipeTransportCore::read_ready(slf);
        panic_guard::event(py, Some(Site::PipeRead), read, fatal)
    }

    /// Whether the transport is receiving (not paused, not closing).
    fn is_reading(&self, py: Python<'_>) -> bool {
        self.is_reading_now(py)
    }

    /// Stops calling the protocol with data until `resume_reading()`.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !this.is_reading_now(py) {
            return Ok(());
        }
        let (watch, debug) = {
            let mut st = this.inner.borrow_mut(py);
            st.paused = true;
            (st.common.watch(py), st.common.debug())
        };
        watch.remove(py, Side::Read)?;
        if debug {
            log_debug(py, "%r pauses reading", watch.owner)?;
        }
        Ok(())
    }

    /// Resumes delivering data after `pause_reading()`.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (debug, owner) = {
            let mut st = this.inner.borrow_mut(py);
            if st.common.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
            (st.common.debug(), st.common.owner(py))
        };
        ReadPipeTransportCore::watch(slf)?;
        if debug {
            log_debug(py, "%r resumes reading", owner)?;
        }
        Ok(())
    }

    /// Stops reading and schedules `connection_lost(exc)` (once).
    #[pyo3(signature = (exc = None))]
    fn _close(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let (watch, scheduled) = {
            let mut st = self.inner.borrow_mut(py);
            (st.common.watch(py), st.common.take_lost(py))
        };
        watch.remove(py, Side::Read)?;
        schedule_lost(py, scheduled, exc.unwrap_or_else(|| py.None()))
    }

    #[getter]
    fn _paused(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).paused
    }
}

common_pymethods!(ReadPipeTransportCore);

// ---------------------------------------------------------------------------
// The write end.

struct WriteInner {
    common: Common,
    buffer: WriteBuffer,
    /// Counts writes after the pipe was lost or failed.
    conn_lost: u32,
    /// The protocol was told to pause writing.
    protocol_paused: bool,
    high_water: usize,
    low_water: usize,
}

impl Default for WriteInner {
    fn default() -> Self {
        WriteInner {
            common: Common::default(),
            buffer: WriteBuffer::default(),
            conn_lost: 0,
            protocol_paused: false,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_HIGH_WATER / 4,
        }
    }
}

/// The native part of `ferroloop._pipes.WritePipeTransport`.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct WritePipeTransportCore {
    inner: GilCell<WriteInner>,
}

/// What asyncio's `_FlowControlMixin` does when `pause_writing` or
/// `resume_writing` raises.
fn flow_control_failed(
    py: Python<'_>,
    common: (Option<Py<LoopCore>>, Option<Py<PyAny>>, Py<PyAny>),
    err: PyErr,
    message: &str,
) -> PyResult<()> {
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let (event_loop, owner, protocol) = common;
    let Some(event_loop) = event_loop else { return Ok(()) };
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", err.into_value(py))?;
    context.set_item("transport", owner)?;
    context.set_item("protocol", protocol)?;
    event_loop
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

impl WritePipeTransportCore {
    fn flow_control(&self, py: Python<'_>, pause: bool) -> PyResult<()> {
        let (event_loop, owner, protocol) = {
            let mut st = self.inner.borrow_mut(py);
            let due = if pause {
                !st.protocol_paused && st.buffer.len() > st.high_water
            } else {
                st.protocol_paused && st.buffer.len() <= st.low_water
            };
            if !due {
                return Ok(());
            }
            st.protocol_paused = pause;
            let Some(protocol) = st.common.protocol(py) else {
                return Ok(());
            };
            (st.common.event_loop(py), st.common.owner(py), protocol)
        };
        let (method, message) = if pause {
            (intern!(py, "pause_writing"), "protocol.pause_writing() failed")
        } else {
            (intern!(py, "resume_writing"), "protocol.resume_writing() failed")
        };
        match call_method(protocol.bind(py), method, &[]) {
            Ok(_) => Ok(()),
            Err(err) => flow_control_failed(py, (event_loop, owner, protocol), err, message),
        }
    }

    /// asyncio's `_close`: drop the buffer, stop watching, schedule
    /// `connection_lost(exc)` (once).
    fn close_now(&self, py: Python<'_>, exc: Py<PyAny>) -> PyResult<()> {
        let (watch, had_buffer, dropped, scheduled) = {
            let mut st = self.inner.borrow_mut(py);
            let had_buffer = !st.buffer.is_empty();
            let dropped = st.buffer.clear();
            (st.common.watch(py), had_buffer, dropped, st.common.take_lost(py))
        };
        drop(dropped);
        if had_buffer {
            watch.remove(py, Side::Write)?;
        }
        watch.remove(py, Side::Read)?;
        schedule_lost(py, scheduled, exc)
    }

    fn write_bytes(slf: &Bound<'_, Self>, data: &[u8], shared: Option<&Bound<'_, PyBytes>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut warn_lost = false;
        let mut register_writer = false;
        let mut failed = None;
        {
            let mut st = this.inner.borrow_mut(py);
            if st.conn_lost > 0 || st.common.closing {
                warn_lost = st.conn_lost >= LOG_LOST_WRITES_FROM;
                st.conn_lost = st.conn_lost.saturating_add(1);
            } else {
                let fd = st.common.fd;
                match st.buffer.write_or_queue(data, shared, |d| pipe::write(fd, d)) {
                    Written::All => return Ok(()),
                    Written::Queued { first } => register_writer = first,
                    Written::Failed(e) => {
                        st.conn_lost = st.conn_lost.saturating_add(1);
                        failed = Some(e);
                    }
                }
            }
        }
        if warn_lost {
            helpers::log_warning(py)?.call1(("pipe closed by peer or os.write(pipe, data) raised exception.",))?;
            return Ok(());
        }
        if let Some(e) = failed {
            let owner = this.inner.borrow(py).common.owner(py);
            let exc = os_error(e).into_value(py).into_bound(py).into_any();
            return report_fatal(py, owner, exc, "Fatal write error on pipe transport");
        }
        if register_writer {
            let watch = this.inner.borrow(py).common.watch(py);
            let callback = slf.getattr(intern!(py, "_write_ready"))?;
            watch.add(py, Side::Write, &callback)?;
        }
        this.flow_control(py, true)
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl WritePipeTransportCore {
    #[new]
    fn new(
        owner: &Bound<'_, PyAny>,
        event_loop: &Bound<'_, PyAny>,
        fd: RawFd,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(WritePipeTransportCore {
            inner: GilCell::new(WriteInner {
                common: Common::new(owner, event_loop, fd, protocol)?,
                ..WriteInner::default()
            }),
        })
    }

    /// Watches the pipe for readability, which for a write end means the
    /// reader went away.
    fn _watch_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let watch = {
            let st = slf.get().inner.borrow(py);
            if st.common.lost {
                return Ok(());
            }
            st.common.watch(py)
        };
        let callback = slf.getattr(intern!(py, "_read_ready"))?;
        watch.add(py, Side::Read, &callback)
    }

    /// The reading end was closed.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (debug, owner, pending) = {
            let st = this.inner.borrow(py);
            (st.common.debug(), st.common.owner(py), !st.buffer.is_empty())
        };
        if debug {
            if let Some(owner) = owner.as_ref() {
                owner.bind(py).call_method0(intern!(py, "_log_closed_by_peer"))?;
            }
        }
        let exc = if pending {
            PyBrokenPipeError::new_err(()).into_value(py).into_any()
        } else {
            py.None()
        };
        this.close_now(py, exc)
    }

    /// Writes `data` now, buffering what the kernel does not take.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            let slice = bytes.as_bytes();
            if slice.is_empty() {
                return Ok(());
            }
            return WritePipeTransportCore::write_bytes(slf, slice, Some(bytes));
        }
        if !(data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
            // asyncio asserts the type; the same exception, with its message.
            return Err(PyAssertionError::new_err(data.repr()?.unbind()));
        }
        let view = match RawBuffer::get(data, false) {
            Ok(view) => view,
            // Nothing to send in an empty one, as for asyncio.
            Err(_) if data.len().is_ok_and(|n| n == 0) => return Ok(()),
            // Not C-contiguous: asyncio's `os.write` fails on it, which is
            // the transport's fatal error (or, once lost, one more lost write).
            Err(err) if err.is_instance_of::<PyBufferError>(slf.py()) => {
                let py = slf.py();
                let owner = {
                    let mut st = slf.get().inner.borrow_mut(py);
                    let lost = st.conn_lost > 0 || st.common.closing;
                    st.conn_lost = st.conn_lost.saturating_add(1);
                    if lost {
                        return Ok(());
                    }
                    st.common.owner(py)
                };
                let exc = err.into_value(py).into_bound(py).into_any();
                return report_fatal(py, owner, exc, "Fatal write error on pipe transport");
            }
            Err(err) => return Err(err),
        };
        if view.len() == 0 {
            return Ok(());
        }
        WritePipeTransportCore::write_bytes(slf, view.as_slice(), None)
    }
}

/// The event handler's body; the method the loop calls wraps it (see
/// `panic_guard::event`).
impl WritePipeTransportCore {
    /// The pipe is writable: flush as much of the buffer as the kernel takes.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let st = this.inner.borrow(py);
            if st.common.lost || st.buffer.is_empty() {
                return Ok(());
            }
            let mut iov = Vec::new();
            st.buffer.iovecs(py, &mut iov);
            pipe::write_vectored(st.common.fd, &iov)
        };
        let n = match result {
            Err(e) if would_block(e) => return Ok(()),
            Err(e) => {
                let (dropped, watch) = {
                    let mut st = this.inner.borrow_mut(py);
                    st.conn_lost = st.conn_lost.saturating_add(1);
                    (st.buffer.clear(), st.common.watch(py))
                };
                drop(dropped);
                watch.remove(py, Side::Write)?;
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                return report_fatal(py, watch.owner, exc, "Fatal write error on pipe transport");
            }
            Ok(n) => n,
        };
        let (empty, sent) = {
            let mut st = this.inner.borrow_mut(py);
            let sent = st.buffer.consume(n);
            (st.buffer.is_empty(), sent)
        };
        drop(sent);
        if !empty {
            return Ok(());
        }
        let watch = this.inner.borrow(py).common.watch(py);
        watch.remove(py, Side::Write)?;
        // May write again (and so fill the buffer).
        this.flow_control(py, false)?;
        let (closing, scheduled) = {
            let mut st = this.inner.borrow_mut(py);
            if !st.common.closing {
                (false, None)
            } else {
                (true, st.common.take_lost(py))
            }
        };
        if closing {
            watch.remove(py, Side::Read)?;
            if let Some((_, owner)) = scheduled {
                owner
                    .bind(py)
                    .call_method1(intern!(py, "_call_connection_lost"), (py.None(),))?;
            }
        }
        Ok(())
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl WritePipeTransportCore {
    /// `write_ready`, a panic in it being the transport's fatal error.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let fatal = |exc| {
            let owner = slf.get().inner.borrow(py).common.owner(py);
            report_fatal(py, owner, exc, "Fatal write error on pipe transport")
        };
        let write = || WritePipeTransportCore::write_ready(slf);
        panic_guard::event(py, None, write, fatal)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the pipe once the buffer is flushed.
    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let (watch, scheduled) = {
            let mut st = self.inner.borrow_mut(py);
            if st.common.closing {
                return Ok(());
            }
            st.common.closing = true;
            if !st.buffer.is_empty() {
                return Ok(());
            }
            (st.common.watch(py), st.common.take_lost(py))
        };
        watch.remove(py, Side::Read)?;
        schedule_lost(py, scheduled, py.None())
    }

    /// Closes at once, dropping unsent data; `connection_lost(None)` follows.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.close_now(py, py.None())
    }

    #[pyo3(signature = (exc = None))]
    fn _close(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        self.close_now(py, exc.unwrap_or_else(|| py.None()))
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.inner.borrow(py).buffer.len()
    }

    /// `(low, high)` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.inner.borrow(py);
        (st.low_water, st.high_water)
    }

    /// Sets the water marks (asyncio's defaults: 64 KiB high, a quarter of
    /// it low) and pauses the protocol at once if above the new high.
    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (high, low) = water_marks::parse(py, high, low)?;
        {
            let mut st = self.inner.borrow_mut(py);
            st.high_water = high;
            st.low_water = low;
        }
        self.flow_control(py, true)
    }

    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.inner.borrow(py).conn_lost
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).protocol_paused
    }
}

common_pymethods!(WritePipeTransportCore);
