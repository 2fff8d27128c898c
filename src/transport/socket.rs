//! The stream transport for connected TCP and Unix sockets.
//!
//! Behaviour follows asyncio's selector transport point by point (the same
//! error messages, the same order of protocol calls, `connection_lost` once);
//! the difference is that the per-event work runs here:
//! - a readable event reads once (up to 256 KiB, see `read_buffer`) and hands the bytes to
//!   `data_received`, or reads straight into a `BufferedProtocol`'s buffer;
//! - `write()` sends at once and buffers only what the kernel did not take;
//!   write interest is registered only while the buffer is non-empty;
//! - flow control calls `pause_writing`/`resume_writing` at the water marks.
//!
//! The socket object belongs to the transport until `connection_lost` runs,
//! which closes it; after that the fd number is never used again, so a number
//! the kernel hands to a new socket cannot reach this transport.

use std::os::fd::RawFd;

use pyo3::exceptions::{
    PyBufferError, PyConnectionError, PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::datagram::DatagramQueue;
use super::extra_info::ExtraInfo;
use super::rare::Rare;
use super::read_buffer::recv_bytes_expecting;
use super::table::{Listing, TransportTable};
use super::tls::TlsPump;
use super::water_marks;
use super::write_buffer::{WriteBuffer, Written};
use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::loop_core::io_callback::ReaderHooks;
use crate::loop_core::io_refs::{holds_io_refs, release_io_ref, take_io_ref};
use crate::loop_core::readers::Side;
use crate::loop_core::LoopCore;
use crate::panic_guard::{self, Site};
use crate::py::buffer::RawBuffer;
use crate::py::{call_method, helpers};
use crate::sys::socket::{self, would_block};

/// Writes to a lost connection are counted, and logged from this many on
/// (asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOG_LOST_WRITES_FROM: u32 = 5;

pub(super) struct Inner {
    /// The Python transport object this is the core of: what protocols,
    /// servers and error reports see as "the transport".
    pub(super) owner: Option<Py<PyAny>>,
    pub(super) event_loop: Option<Py<LoopCore>>,
    /// The socket object; `None` once `connection_lost` has closed it.
    pub(super) sock: Option<Py<PyAny>>,
    /// The transport holds one of `sock`'s io references (a `socket.socket`).
    pub(super) sock_io_ref: bool,
    pub(super) fd: RawFd,
    pub(super) protocol: Option<Py<PyAny>>,
    /// The protocol is a `BufferedProtocol`.
    pub(super) buffered: bool,
    pub(super) protocol_connected: bool,
    pub(super) server: Option<Py<PyAny>>,
    /// `get_extra_info()`'s entries (asyncio's `_extra`).
    pub(super) extra: ExtraInfo,
    pub(super) buffer: WriteBuffer,
    /// Non-zero once `connection_lost` is scheduled; counts later writes.
    pub(super) conn_lost: u32,
    /// `connection_lost` ran.
    pub(super) lost: bool,
    /// `close()` or a fatal error: no more reading, close after flushing.
    pub(super) closing: bool,
    /// `pause_reading()` is in effect.
    pub(super) paused: bool,
    /// `write_eof()` was called.
    pub(super) eof: bool,
    /// The protocol was told to pause writing.
    pub(super) protocol_paused: bool,
    /// The TLS pump, the `sendfile` waiter, the datagram queue and the
    /// water marks, which most connections never set (see `rare.rs`).
    pub(super) rare: Option<Box<Rare>>,
    /// How much the next read is expected to bring: the largest recent read,
    /// decaying (see `recv_bytes_expecting`).
    pub(super) read_hint: u32,
    /// Readiness events queued for the read registration and not run yet,
    /// and how many of those to skip because the registration they were
    /// for was removed meanwhile (see `loop_core::io_callback`).
    pub(super) reads_queued: u8,
    pub(super) reads_to_skip: u8,
    /// The transport's entry in `loop._transports`, removed when this is
    /// dropped (`connection_lost`, or the core's own end).
    pub(super) listed: Option<Listing>,
    /// A copy of the context the transport was made in. The protocol's
    /// callbacks run in it, as on uvloop: the read and write events (also
    /// after a `resume_reading()` made in another context), `connection_lost`
    /// after anyone's `close()`, and `pause_writing`/`resume_writing` set off
    /// by anyone's `write()`. asyncio runs those in the caller's context.
    pub(super) context: Option<Py<PyAny>>,
}

impl Inner {
    /// Bytes accepted but not sent yet, as `get_write_buffer_size` counts them.
    pub(super) fn pending_len(&self) -> usize {
        match self.datagrams() {
            Some(queue) => queue.size(),
            None => self.buffer.len(),
        }
    }

    pub(super) fn pending_is_empty(&self) -> bool {
        match self.datagrams() {
            Some(queue) => queue.is_empty(),
            None => self.buffer.is_empty(),
        }
    }

    /// Drops everything unsent; the caller releases the objects once no
    /// borrow is held.
    pub(super) fn clear_pending(&mut self) -> Vec<Py<PyAny>> {
        let mut out: Vec<Py<PyAny>> = self.buffer.clear().into_iter().map(|b| b.into_any()).collect();
        if let Some(queue) = self.datagrams_mut() {
            out.extend(queue.clear());
        }
        out
    }
}

impl Default for Inner {
    /// A transport with no connection: what `__clear__` leaves behind.
    fn default() -> Self {
        Inner {
            owner: None,
            event_loop: None,
            sock: None,
            sock_io_ref: false,
            fd: -1,
            protocol: None,
            buffered: false,
            protocol_connected: false,
            server: None,
            extra: ExtraInfo::default(),
            buffer: WriteBuffer::default(),
            conn_lost: 0,
            lost: true,
            closing: true,
            paused: false,
            eof: false,
            protocol_paused: false,
            rare: None,
            read_hint: 0,
            reads_queued: 0,
            reads_to_skip: 0,
            listed: None,
            context: None,
        }
    }
}

/// The native part of `ferroloop`'s socket transport. The Python transport
/// (`ferroloop._transports.SocketTransport`, an `asyncio.Transport`) owns one
/// and forwards its methods here; it adds the construction-time wiring,
/// `__repr__` and the unclosed-transport warning.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct SocketTransportCore {
    pub(super) inner: GilCell<Inner>,
}

/// Where a protocol callback's exception goes: `KeyboardInterrupt` and
/// `SystemExit` propagate out of the loop, anything else is a fatal error of
/// this transport.
pub(super) fn protocol_failed(slf: &Bound<'_, SocketTransportCore>, err: PyErr, message: &str) -> PyResult<()> {
    let py = slf.py();
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    SocketTransportCore::fatal_error(slf, err.into_value(py).into_bound(py).into_any(), message)
}

/// The exception handler's report for a failing `pause_writing`/`resume_writing`.
fn flow_control_failed(slf: &Bound<'_, SocketTransportCore>, err: PyErr, message: &str) -> PyResult<()> {
    let py = slf.py();
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let (event_loop, protocol) = {
        let st = slf.get().inner.borrow(py);
        (
            st.event_loop.as_ref().map(|l| l.clone_ref(py)),
            st.protocol.as_ref().map(|p| p.clone_ref(py)),
        )
    };
    let Some(event_loop) = event_loop else { return Ok(()) };
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", err.into_value(py))?;
    context.set_item("transport", slf.get().owner(py, slf))?;
    context.set_item("protocol", protocol)?;
    event_loop
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

impl SocketTransportCore {
    /// Lists this transport in `table` (`loop._transports`) under `fd`,
    /// moving it from where it was listed before.
    pub(super) fn list_in(slf: &Bound<'_, Self>, table: &Bound<'_, TransportTable>, fd: RawFd) {
        let py = slf.py();
        let old = slf.get().inner.borrow_mut(py).listed.take();
        drop(old);
        let listing = TransportTable::list(table, fd, slf);
        let old = std::mem::replace(&mut slf.get().inner.borrow_mut(py).listed, listing);
        drop(old);
    }

    /// The Python transport, while the connection lasts.
    pub(super) fn owner_object<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.inner.borrow(py).owner.as_ref().map(|o| o.bind(py).clone())
    }

    /// The extra info's entry `name`, looked up as asyncio's dict lookup
    /// would (an unhashable name raises); no borrow is held while a dict
    /// lookup or `__hash__` can run code.
    pub(super) fn extra_item(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let dict = self.inner.borrow(py).extra.dict(py);
        if let Some(dict) = dict {
            return Ok(dict.bind(py).get_item(name)?.map(Bound::unbind));
        }
        name.hash()?;
        if ExtraInfo::is_key(name, "socket") {
            self.make_socket_info(py)?;
        }
        if ExtraInfo::is_key(name, "peername") {
            self.make_peer_tuple(py)?;
        }
        Ok(self.inner.borrow(py).extra.field(py, name))
    }

    /// Makes the peer address's tuple if it is kept as parts (see
    /// `extra_info`), with no borrow held while it is allocated.
    fn make_peer_tuple(&self, py: Python<'_>) -> PyResult<()> {
        let parts = self.inner.borrow(py).extra.peer_parts(py);
        if let Some(parts) = parts {
            let tuple = super::extra_info::peer_tuple(py, parts)?;
            let unused = self.inner.borrow_mut(py).extra.keep_peer(tuple);
            drop(unused);
        }
        Ok(())
    }

    /// Makes the extra info's `socket` entry if it lacks it and the socket
    /// is still held (see `ExtraInfo::lacks_socket`).
    fn make_socket_info(&self, py: Python<'_>) -> PyResult<()> {
        let sock = {
            let st = self.inner.borrow(py);
            match st.sock.as_ref() {
                Some(sock) if st.extra.lacks_socket() => sock.clone_ref(py),
                _ => return Ok(()),
            }
        };
        self.record_socket_info(sock.bind(py))
    }

    /// Sets the extra info's `socket` entry for `sock` if it lacks it.
    fn record_socket_info(&self, sock: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = sock.py();
        let wrapper = transport_socket(sock)?;
        let unused = self.inner.borrow_mut(py).extra.set_socket(wrapper.unbind());
        drop(unused);
        Ok(())
    }

    /// The Python transport (or this core, before one is attached).
    pub(super) fn owner<'py>(&self, py: Python<'py>, slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        match self.inner.borrow(py).owner.as_ref() {
            Some(owner) => owner.bind(py).clone(),
            None => slf.clone().into_any(),
        }
    }

    pub(super) fn event_loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.inner.borrow(py).event_loop.as_ref().map(|l| l.clone_ref(py))
    }

    pub(super) fn debug(&self, py: Python<'_>) -> bool {
        self.inner
            .borrow(py)
            .event_loop
            .as_ref()
            .is_some_and(|l| l.get().debug())
    }

    pub(super) fn remove_side(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        let (event_loop, fd, sock) = {
            let st = self.inner.borrow(py);
            (
                st.event_loop.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        if let Some(event_loop) = event_loop {
            remove_mine(event_loop.get(), py, fd, side, sock.as_ref())?;
        }
        Ok(())
    }

    pub(super) fn add_side(
        slf: &Bound<'_, Self>,
        side: Side,
        method: &Bound<'_, pyo3::types::PyString>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (event_loop, fd, sock) = {
            let st = slf.get().inner.borrow(py);
            (
                st.event_loop.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        if let (Some(event_loop), Some(sock)) = (event_loop, sock) {
            // The transport's own context, whoever resumes reading: the
            // protocol's data_received/eof_received run in it.
            let context = slf.get().context(py);
            if side == Side::Read {
                // The read registration lasts the connection: it names the
                // core itself (`__call__` is `_read_ready`), with no handle
                // or bound method kept per connection.
                return event_loop.get().add_transport_reader(
                    py,
                    fd,
                    sock.bind(py),
                    slf.as_any(),
                    context.as_ref().map(|c| c.bind(py)),
                    &READER_HOOKS,
                );
            }
            let callback = slf.getattr(method)?;
            // No io reference per registration: the transport holds one for
            // its whole life.
            event_loop.get().add_io_file(
                py,
                fd,
                side,
                Some(sock.bind(py)),
                false,
                &callback,
                &PyTuple::empty(py),
                context.as_ref().map(|c| c.bind(py)),
            )?;
        }
        Ok(())
    }

    fn is_reading_now(&self, py: Python<'_>) -> bool {
        let st = self.inner.borrow(py);
        !st.closing && !st.paused
    }

    /// Reports `exc` (see `_format.report_transport_error`) and closes the
    /// transport at once.
    pub(super) fn fatal_error(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let (event_loop, protocol) = {
            let st = slf.get().inner.borrow(py);
            (
                st.event_loop.as_ref().map(|l| l.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        if let Some(event_loop) = event_loop {
            let owner = slf.get().owner(py, slf);
            helpers::report_transport_error(py)?.call1((event_loop, owner, protocol, &exc, message))?;
        }
        SocketTransportCore::force_close(slf, Some(exc))
    }

    /// Drops unsent data and schedules `connection_lost(exc)` (once).
    pub(super) fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (dropped, remove_writer, remove_reader, event_loop, fd, sock) = {
            let mut st = this.inner.borrow_mut(py);
            if st.conn_lost > 0 || st.lost {
                return Ok(());
            }
            let remove_writer = !st.pending_is_empty();
            let dropped = st.clear_pending();
            let remove_reader = !st.closing;
            st.closing = true;
            st.conn_lost = st.conn_lost.saturating_add(1);
            (
                dropped,
                remove_writer,
                remove_reader,
                st.event_loop.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        drop(dropped);
        let Some(event_loop) = event_loop else { return Ok(()) };
        let core = event_loop.get();
        if remove_writer {
            remove_mine(core, py, fd, Side::Write, sock.as_ref())?;
        }
        if remove_reader {
            remove_mine(core, py, fd, Side::Read, sock.as_ref())?;
        }
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let exc = exc.map_or_else(|| py.None(), |e| e.unbind());
        let context = slf.get().context(py);
        core.soon_in(
            py,
            &callback,
            &PyTuple::new(py, [exc])?,
            context.as_ref().map(|c| c.bind(py)),
        )
    }

    /// Calls `protocol.pause_writing()` when the buffer went above the high
    /// water mark.
    pub(super) fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let mut st = slf.get().inner.borrow_mut(py);
            if st.pending_len() <= st.high_water() || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else { return Ok(()) };
        match slf
            .get()
            .call_in_context(protocol.bind(py), intern!(py, "pause_writing"))
        {
            Ok(_) => Ok(()),
            Err(err) => flow_control_failed(slf, err, "protocol.pause_writing() failed"),
        }
    }

    /// Calls `protocol.resume_writing()` when a paused protocol's buffer went
    /// down to the low water mark.
    pub(super) fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let mut st = slf.get().inner.borrow_mut(py);
            if !st.protocol_paused || st.pending_len() > st.low_water() {
                return Ok(());
            }
            st.protocol_paused = false;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else { return Ok(()) };
        match slf
            .get()
            .call_in_context(protocol.bind(py), intern!(py, "resume_writing"))
        {
            Ok(_) => Ok(()),
            Err(err) => flow_control_failed(slf, err, "protocol.resume_writing() failed"),
        }
    }

    /// The peer closed its side: `eof_received()` decides whether to close.
    pub(super) fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            helpers::log_debug(py)?.call1(("%r received EOF", slf.get().owner(py, slf)))?;
        }
        let keep_open = match call_method(protocol, intern!(py, "eof_received"), &[]) {
            Ok(v) => v,
            Err(err) => return protocol_failed(slf, err, "Fatal error: protocol.eof_received() call failed."),
        };
        if keep_open.is_truthy()? {
            // The protocol may still write, but there is nothing more to read.
            slf.get().remove_side(py, Side::Read)
        } else {
            SocketTransportCore::close(slf)
        }
    }

    fn read_into_protocol_buffer(slf: &Bound<'_, Self>, fd: RawFd, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        const GET_BUFFER_FAILED: &str = "Fatal error: protocol.get_buffer() call failed.";
        let buf = match call_method(
            protocol,
            intern!(py, "get_buffer"),
            &[&(-1i32).into_pyobject(py)?.into_any()],
        ) {
            Ok(buf) => buf,
            Err(err) => return protocol_failed(slf, err, GET_BUFFER_FAILED),
        };
        match buf.len() {
            Ok(0) => {
                let err = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
                return protocol_failed(slf, err, GET_BUFFER_FAILED);
            }
            Ok(_) => {}
            Err(err) => return protocol_failed(slf, err, GET_BUFFER_FAILED),
        }
        let result = match RawBuffer::get(&buf, true) {
            Ok(view) => socket::recv_raw(fd, view.as_mut_ptr(), view.len()),
            Err(err) => return protocol_failed(slf, err, "Fatal read error on socket transport"),
        };
        match result {
            Err(e) if would_block(e) => Ok(()),
            Err(e) => {
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                SocketTransportCore::fatal_error(slf, exc, "Fatal read error on socket transport")
            }
            Ok(0) => SocketTransportCore::on_eof(slf, protocol),
            Ok(n) => {
                if let Some(event_loop) = &slf.get().inner.borrow(py).event_loop {
                    event_loop.get().stats.read(n);
                }
                match call_method(
                    protocol,
                    intern!(py, "buffer_updated"),
                    &[&n.into_pyobject(py)?.into_any()],
                ) {
                    Ok(_) => Ok(()),
                    Err(err) => protocol_failed(slf, err, "Fatal error: protocol.buffer_updated() call failed."),
                }
            }
        }
    }

    fn read_into_bytes(slf: &Bound<'_, Self>, fd: RawFd, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let hint = slf.get().inner.borrow(py).read_hint as usize;
        let received = recv_bytes_expecting(py, fd, hint)?;
        if let Ok(data) = &received {
            let n = data.as_bytes().len();
            let mut st = slf.get().inner.borrow_mut(py);
            st.read_hint = u32::try_from(n.max(hint - hint / 4)).unwrap_or(u32::MAX);
            if let (Some(event_loop), true) = (&st.event_loop, n > 0) {
                event_loop.get().stats.read(n);
            }
        }
        match received {
            Err(e) if would_block(e) => Ok(()),
            Err(e) => {
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                SocketTransportCore::fatal_error(slf, exc, "Fatal read error on socket transport")
            }
            Ok(data) if data.as_bytes().is_empty() => SocketTransportCore::on_eof(slf, protocol),
            Ok(data) => match call_method(protocol, intern!(py, "data_received"), &[data.as_any()]) {
                Ok(_) => Ok(()),
                Err(err) => protocol_failed(slf, err, "Fatal error: protocol.data_received() call failed."),
            },
        }
    }

    /// Sends `data` (queuing what the kernel does not take) — `write()` once
    /// its checks passed. `shared` is `data` itself when it is a `bytes`.
    fn send_or_buffer(slf: &Bound<'_, Self>, data: &[u8], shared: Option<&Bound<'_, PyBytes>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut warn_lost = false;
        let mut register_writer = false;
        let mut failed = None;
        {
            let mut st = this.inner.borrow_mut(py);
            if st.conn_lost > 0 || st.lost {
                warn_lost = st.conn_lost >= LOG_LOST_WRITES_FROM;
                st.conn_lost = st.conn_lost.saturating_add(1);
            } else {
                if let Some(event_loop) = &st.event_loop {
                    event_loop.get().stats.wrote(data.len());
                }
                let fd = st.fd;
                match st.buffer.write_or_queue(data, shared, |d| socket::send(fd, d)) {
                    Written::All => return Ok(()),
                    Written::Queued { first } => register_writer = first,
                    Written::Failed(e) => failed = Some(e),
                }
            }
        }
        if warn_lost {
            helpers::log_warning(py)?.call1(("socket.send() raised exception.",))?;
            return Ok(());
        }
        if let Some(e) = failed {
            let exc = os_error(e).into_value(py).into_bound(py).into_any();
            return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on socket transport");
        }
        if register_writer {
            SocketTransportCore::add_side(slf, Side::Write, intern!(py, "_write_ready"))?;
        }
        SocketTransportCore::maybe_pause_protocol(slf)
    }

    /// `write()`'s and `writelines()`' checks on the transport's state.
    fn check_writable(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        let st = self.inner.borrow(py);
        if st.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        if st.empty_waiter().is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {what}; sendfile is in progress"
            )));
        }
        Ok(())
    }
}

/// `data` must be `bytes`, `bytearray` or `memoryview`, as asyncio requires.
pub(super) fn check_bytes_like(data: &Bound<'_, PyAny>) -> PyResult<()> {
    if data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
    {
        return Ok(());
    }
    let name = data.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {}",
        name.repr()?
    )))
}

#[ferroloop_macros::contained]
#[pymethods]
impl SocketTransportCore {
    #[new]
    #[pyo3(signature = (owner, event_loop, sock, protocol, extra = None, server = None, *, datagram_address = None, datagram = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        owner: &Bound<'_, PyAny>,
        event_loop: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        extra: Option<&Bound<'_, PyAny>>,
        server: Option<&Bound<'_, PyAny>>,
        datagram_address: Option<&Bound<'_, PyAny>>,
        datagram: bool,
    ) -> PyResult<Self> {
        let py = sock.py();
        let event_loop = event_loop.cast::<LoopCore>()?.clone().unbind();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let extra = ExtraInfo::new(extra)?;
        let buffered = super::protocol_kind::reads_into_buffer(protocol)?;
        let tls = if buffered && !datagram {
            TlsPump::attach(protocol)?
        } else {
            None
        };
        // Held until the transport closes the socket: a program that closes
        // it meanwhile leaves the file open, so its number cannot pass to
        // another file that this transport would then read and write.
        let datagrams = if datagram {
            Some(DatagramQueue::new(sock, datagram_address)?)
        } else {
            None
        };
        // Taken last: nothing after it can fail, so it is never left behind.
        let sock_io_ref = holds_io_refs(sock);
        if sock_io_ref {
            take_io_ref(sock)?;
        }
        let mut inner = Inner {
            owner: Some(owner.clone().unbind()),
            event_loop: Some(event_loop),
            sock: Some(sock.clone().unbind()),
            sock_io_ref,
            fd,
            protocol: Some(protocol.clone().unbind()),
            buffered,
            protocol_connected: true,
            server: server.filter(|s| !s.is_none()).map(|s| s.clone().unbind()),
            extra,
            lost: false,
            closing: false,
            context: Some(crate::py::copy_context(py)?),
            ..Inner::default()
        };
        inner.replace_tls(tls);
        if let Some(queue) = datagrams {
            inner.set_datagrams(queue);
        }
        Ok(SocketTransportCore {
            inner: GilCell::new(inner),
        })
    }

    /// Puts `write` and `is_closing` on the Python transport class `cls` as
    /// methods that call this core directly (see `owner_methods`).
    #[staticmethod]
    fn _install_owner_methods(cls: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
        super::owner_methods::install(cls)
    }

    /// Starts watching the socket for reading, unless paused or closing.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading_now(slf.py()) {
            SocketTransportCore::add_side(slf, Side::Read, intern!(slf.py(), "_read_ready"))?;
        }
        Ok(())
    }
}

/// How the loop runs a transport's read registration (see
/// `loop_core::io_callback`).
static READER_HOOKS: ReaderHooks = ReaderHooks {
    queue: queue_read,
    dequeue: dequeue_read,
    cancel: cancel_reads,
};

/// A readiness event is queued: counted, and run in the transport's context.
/// Runs no Python code (the loop's state is borrowed).
fn queue_read(reader: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    let core = reader.cast::<SocketTransportCore>().ok()?;
    let mut st = core.get().inner.try_borrow_mut(reader.py())?;
    let context = st.context.as_ref()?.clone_ref(reader.py());
    st.reads_queued = st.reads_queued.saturating_add(1);
    Some(context)
}

/// A queued event could not be queued after all (no memory for its handle).
fn dequeue_read(reader: &Bound<'_, PyAny>) {
    let Ok(core) = reader.cast::<SocketTransportCore>() else {
        return;
    };
    let Some(mut st) = core.get().inner.try_borrow_mut(reader.py()) else {
        return;
    };
    st.reads_queued = st.reads_queued.saturating_sub(1);
    st.reads_to_skip = st.reads_to_skip.min(st.reads_queued);
}

/// The read registration was removed: the events queued for it do not run.
fn cancel_reads(reader: &Bound<'_, PyAny>) {
    let Ok(core) = reader.cast::<SocketTransportCore>() else {
        return;
    };
    let Some(mut st) = core.get().inner.try_borrow_mut(reader.py()) else {
        return;
    };
    st.reads_to_skip = st.reads_queued;
}

/// The transport's context (see `Inner::context`).
impl SocketTransportCore {
    fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.borrow(py).context.as_ref().map(|c| c.clone_ref(py))
    }

    /// `protocol.<name>()` in a copy of the transport's context: a copy, so
    /// that it can be entered while the context itself is (a `write()` from
    /// inside `data_received`).
    fn call_in_context<'py>(
        &self,
        protocol: &Bound<'py, PyAny>,
        name: &Bound<'py, pyo3::types::PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = protocol.py();
        match self.context(py) {
            Some(context) => {
                let method = protocol.getattr(name)?;
                context
                    .bind(py)
                    .call_method0(intern!(py, "copy"))?
                    .call_method1(intern!(py, "run"), (method,))
            }
            None => call_method(protocol, name, &[]),
        }
    }
}

/// The event handlers' bodies; the methods the loop calls wrap them (see
/// `panic_guard::event`).
impl SocketTransportCore {
    /// The socket is readable: read once and hand the data to the protocol.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, buffered, protocol, tls) = {
            let st = slf.get().inner.borrow(py);
            if st.conn_lost > 0 || st.lost {
                return Ok(());
            }
            if st.is_datagram() {
                drop(st);
                return SocketTransportCore::read_datagram(slf);
            }
            let Some(protocol) = st.protocol.as_ref() else {
                return Ok(());
            };
            (
                st.fd,
                st.buffered,
                protocol.clone_ref(py),
                st.tls().map(|t| t.clone_ref(py)),
            )
        };
        if let Some(tls) = tls {
            if TlsPump::read_ready(slf, tls.bind(py), fd)? {
                return Ok(());
            }
        }
        if buffered {
            SocketTransportCore::read_into_protocol_buffer(slf, fd, protocol.bind(py))
        } else {
            SocketTransportCore::read_into_bytes(slf, fd, protocol.bind(py))
        }
    }

    /// The socket is writable: flush as much of the buffer as the kernel takes.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.inner.borrow(py).is_datagram() {
            return SocketTransportCore::flush_datagrams(slf);
        }
        let result = {
            let mut guard = this.inner.borrow_mut(py);
            let st = &mut *guard;
            if st.conn_lost > 0 || st.lost || st.buffer.is_empty() {
                return Ok(());
            }
            let mut iov = Vec::new();
            st.buffer.iovecs(py, &mut iov);
            socket::send_vectored(st.fd, &iov)
        };
        let n = match result {
            Err(e) if would_block(e) => return Ok(()),
            Err(e) => {
                this.remove_side(py, Side::Write)?;
                let dropped = this.inner.borrow_mut(py).buffer.clear();
                drop(dropped);
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                SocketTransportCore::fatal_error(slf, exc.clone(), "Fatal write error on socket transport")?;
                let waiter = this.inner.borrow(py).empty_waiter().map(|w| w.clone_ref(py));
                if let Some(waiter) = waiter {
                    waiter.bind(py).call_method1(intern!(py, "set_exception"), (exc,))?;
                }
                return Ok(());
            }
            Ok(n) => n,
        };
        let sent = this.inner.borrow_mut(py).buffer.consume(n);
        drop(sent);
        SocketTransportCore::maybe_resume_protocol(slf)?;
        let (empty, closing, eof, fd, waiter) = {
            let st = this.inner.borrow(py);
            (
                st.buffer.is_empty(),
                st.closing,
                st.eof,
                st.fd,
                st.empty_waiter().map(|w| w.clone_ref(py)),
            )
        };
        if !empty {
            return Ok(());
        }
        this.remove_side(py, Side::Write)?;
        if let Some(waiter) = waiter {
            waiter.bind(py).call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            SocketTransportCore::_call_connection_lost(slf, None)?;
        } else if eof {
            socket::shutdown_write(fd)?;
        }
        Ok(())
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl SocketTransportCore {
    /// `read_ready`, a panic in it being the transport's fatal error.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let read = || SocketTransportCore::read_ready(slf);
        let fatal = |exc| SocketTransportCore::fatal_error(slf, exc, "Fatal read error on socket transport");
        panic_guard::event(slf.py(), Some(Site::TransportRead), read, fatal)
    }

    /// `_read_ready`: what the read registration runs, unless the
    /// registration this event was queued for was removed meanwhile.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut st = slf.get().inner.borrow_mut(slf.py());
            st.reads_queued = st.reads_queued.saturating_sub(1);
            if st.reads_to_skip > 0 {
                st.reads_to_skip -= 1;
                return Ok(());
            }
        }
        SocketTransportCore::_read_ready(slf)
    }

    /// What the read registration's handle shows as its callback's name
    /// (in its repr and slow-callback reports): the method the call stands for.
    #[getter]
    fn __qualname__(&self) -> &'static str {
        "SocketTransportCore._read_ready"
    }

    /// `write_ready`, a panic in it being the transport's fatal error.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let write = || SocketTransportCore::write_ready(slf);
        let fatal = |exc| SocketTransportCore::fatal_error(slf, exc, "Fatal write error on socket transport");
        panic_guard::event(slf.py(), Some(Site::TransportWrite), write, fatal)
    }

    /// Sends `data` now, buffering what the kernel does not take.
    pub(super) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        panic_guard::fault(Site::Write);
        check_bytes_like(data)?;
        slf.get().check_writable(py, "write")?;
        if let Ok(bytes) = data.cast::<PyBytes>() {
            let slice = bytes.as_bytes();
            if slice.is_empty() {
                return Ok(());
            }
            return SocketTransportCore::send_or_buffer(slf, slice, Some(bytes));
        }
        let view = match RawBuffer::get(data, false) {
            Ok(view) => view,
            // Nothing to send in an empty one, as for asyncio.
            Err(_) if data.len().is_ok_and(|n| n == 0) => return Ok(()),
            // asyncio hands such a buffer (not C-contiguous) to `send`, whose
            // failure is the transport's fatal error, not write()'s.
            Err(err) if err.is_instance_of::<PyBufferError>(py) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on socket transport");
            }
            Err(err) => return Err(err),
        };
        if view.len() == 0 {
            return Ok(());
        }
        SocketTransportCore::send_or_buffer(slf, view.as_slice(), None)
    }

    /// Writes each buffer of `list_of_data` in turn, as one write.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.get().check_writable(py, "writelines")?;
        // 3.12's asyncio returns at once for any falsy argument; before, it
        // joins it (a TypeError for what is not iterable).
        if crate::py::version(py) >= (3, 12) && !list_of_data.is_truthy()? {
            return Ok(());
        }
        let mut joined = Vec::new();
        for (i, item) in list_of_data.try_iter()?.enumerate() {
            let item = item?;
            match RawBuffer::get(&item, false) {
                Ok(view) => joined.extend_from_slice(view.as_slice()),
                // A buffer that is not C-contiguous: 3.12's asyncio queues it
                // and fails in `sendmsg` (a fatal error); before, `b"".join`
                // refused it.
                Err(err) if err.is_instance_of::<PyBufferError>(py) => {
                    if crate::py::version(py) >= (3, 12) {
                        let exc = err.into_value(py).into_bound(py).into_any();
                        return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on socket transport");
                    }
                    return Err(PyTypeError::new_err(format!(
                        "sequence item {i}: expected a bytes-like object, {} found",
                        item.get_type().name()?
                    )));
                }
                Err(err) => return Err(err),
            }
        }
        if joined.is_empty() {
            return Ok(());
        }
        SocketTransportCore::send_or_buffer(slf, &joined, None)
    }

    /// Closes the sending side once the buffer is flushed (half-close).
    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let fd = {
            let mut st = self.inner.borrow_mut(py);
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            if !st.buffer.is_empty() {
                return Ok(());
            }
            st.fd
        };
        socket::shutdown_write(fd)?;
        Ok(())
    }

    /// Stream sockets can always half-close.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Stops reading, flushes the buffer, then calls `connection_lost(None)`.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (flushed, event_loop, fd, sock) = {
            let mut st = this.inner.borrow_mut(py);
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            let flushed = st.pending_is_empty();
            if flushed {
                st.conn_lost = st.conn_lost.saturating_add(1);
            }
            (
                flushed,
                st.event_loop.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let Some(event_loop) = event_loop else { return Ok(()) };
        let core = event_loop.get();
        remove_mine(core, py, fd, Side::Read, sock.as_ref())?;
        if flushed {
            remove_mine(core, py, fd, Side::Write, sock.as_ref())?;
            let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
            let context = slf.get().context(py);
            let args = PyTuple::new(py, [py.None()])?;
            core.soon_in(py, &callback, &args, context.as_ref().map(|c| c.bind(py)))?;
        }
        Ok(())
    }

    /// Closes at once, dropping unsent data; `connection_lost(None)` follows.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        SocketTransportCore::force_close(slf, None)
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        SocketTransportCore::force_close(slf, exc.filter(|e| !e.is_none()))
    }

    #[pyo3(signature = (exc, message = "Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        SocketTransportCore::fatal_error(slf, exc, message)
    }

    /// Calls `connection_lost(exc)` (once), then closes the socket and
    /// detaches from the server.
    pub(super) fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, connected) = {
            let mut st = this.inner.borrow_mut(py);
            if st.lost {
                return Ok(());
            }
            st.lost = true;
            st.conn_lost = st.conn_lost.max(1);
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.protocol_connected)
        };
        let result = match protocol {
            Some(protocol) if connected => {
                let exc = exc.unwrap_or_else(|| py.None().into_bound(py));
                call_method(protocol.bind(py), intern!(py, "connection_lost"), &[&exc]).map(drop)
            }
            _ => Ok(()),
        };
        let (sock, server, protocol, tls, event_loop, waiter) = {
            let mut st = this.inner.borrow_mut(py);
            (
                st.sock.take(),
                st.server.take(),
                st.protocol.take(),
                st.replace_tls(None),
                st.event_loop.take(),
                st.empty_waiter().map(|w| w.clone_ref(py)),
            )
        };
        let io_ref = std::mem::take(&mut this.inner.borrow_mut(py).sock_io_ref);
        let closed = match &sock {
            Some(sock) => close_socket(sock.bind(py), io_ref),
            None => Ok(()),
        };
        if let Some(sock) = sock {
            // The extra info keeps the socket (closed, as on asyncio); only
            // a MemoryError can fail this, and then it lacks that entry.
            if this.inner.borrow(py).extra.lacks_socket() {
                if let Err(err) = this.record_socket_info(sock.bind(py)) {
                    err.write_unraisable(py, None);
                }
            }
        }
        if let Some(tls) = &tls {
            TlsPump::detach(tls.bind(py))?;
        }
        drop((protocol, tls, event_loop));
        if let Some(server) = server {
            // 3.13's Server tracks its transports; older ones only count them.
            if crate::py::version(py) >= (3, 13) {
                server
                    .bind(py)
                    .call_method1(intern!(py, "_detach"), (this.owner(py, slf),))?;
            } else {
                server.bind(py).call_method0(intern!(py, "_detach"))?;
            }
        }
        // The Python transport keeps its core; the core lets go of it, and
        // of its entry in `loop._transports`.
        let (owner, listed) = {
            let mut st = this.inner.borrow_mut(py);
            (st.owner.take(), st.listed.take())
        };
        drop((owner, listed));
        if let Some(waiter) = waiter {
            let waiter = waiter.bind(py);
            if !waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
                let err = PyConnectionError::new_err("Connection is closed by peer");
                waiter.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
            }
        }
        result.and(closed)
    }

    /// Whether the transport is closing or closed.
    pub(super) fn is_closing(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).closing
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
        this.inner.borrow_mut(py).paused = true;
        this.remove_side(py, Side::Read)?;
        if this.debug(py) {
            helpers::log_debug(py)?.call1(("%r pauses reading", this.owner(py, slf)))?;
        }
        Ok(())
    }

    /// Resumes delivering data after `pause_reading()`.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.inner.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        SocketTransportCore::_start_reading(slf)?;
        if this.debug(py) {
            helpers::log_debug(py)?.call1(("%r resumes reading", this.owner(py, slf)))?;
        }
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// Switches to another protocol (`start_tls` and `sendfile` do this).
    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let buffered = super::protocol_kind::reads_into_buffer(protocol)?;
        let tls = if buffered && !self.inner.borrow(py).is_datagram() {
            TlsPump::attach(protocol)?
        } else {
            None
        };
        let old = {
            let mut st = self.inner.borrow_mut(py);
            st.buffered = buffered;
            st.protocol_connected = true;
            (st.replace_tls(tls), st.protocol.replace(protocol.clone().unbind()))
        };
        // The old protocol's pump no longer sees this socket's data.
        if let Some(pump) = &old.0 {
            TlsPump::detach(pump.bind(py))?;
        }
        drop(old);
        Ok(())
    }

    /// Optional information: `socket`, `sockname`, `peername`, ...
    #[pyo3(signature = (name, default = None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        Ok(self.extra_item(py, name)?.or(default).unwrap_or_else(|| py.None()))
    }

    /// Records the socket's entries of the extra info: the local and the peer
    /// address, and (made now only when the creator's dict is kept, else
    /// when first needed) the `TransportSocket`.
    fn _set_addresses(&self, py: Python<'_>, sockname: Py<PyAny>, peername: Py<PyAny>) -> PyResult<()> {
        let (dict, sock) = {
            let st = self.inner.borrow(py);
            (st.extra.dict(py), st.sock.as_ref().map(|s| s.clone_ref(py)))
        };
        match dict {
            Some(dict) => {
                let dict = dict.bind(py);
                if let Some(sock) = sock {
                    dict.set_item(intern!(py, "socket"), transport_socket(sock.bind(py))?)?;
                }
                dict.set_item(intern!(py, "sockname"), sockname)?;
                dict.set_item(intern!(py, "peername"), peername)?;
            }
            None => {
                let old = self.inner.borrow_mut(py).extra.set_fields(py, sockname, peername);
                drop(old);
            }
        }
        Ok(())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.inner.borrow(py).pending_len()
    }

    /// `(low, high)` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.inner.borrow(py);
        (st.low_water(), st.high_water())
    }

    /// Sets the water marks (defaults as asyncio's: 64 KiB high, a quarter
    /// of it low) and pauses the protocol at once if above the new high.
    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (high, low) = water_marks::parse(py, high, low)?;
        {
            let mut st = slf.get().inner.borrow_mut(py);
            st.set_water_marks(high, low);
        }
        SocketTransportCore::maybe_pause_protocol(slf)
    }

    /// Closes the socket of a transport that was never closed (its
    /// `__del__`), giving back the transport's io reference.
    fn _close_socket(&self, py: Python<'_>) -> PyResult<()> {
        // The fd no longer belongs to this transport: it leaves
        // `loop._transports` too.
        let (sock, io_ref, listed) = {
            let mut st = self.inner.borrow_mut(py);
            (
                st.sock.as_ref().map(|s| s.clone_ref(py)),
                std::mem::take(&mut st.sock_io_ref),
                st.listed.take(),
            )
        };
        drop(listed);
        match sock {
            Some(sock) => close_socket(sock.bind(py), io_ref),
            None => Ok(()),
        }
    }

    /// A future done once the write buffer is empty (for `loop.sendfile`).
    fn _make_empty_waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (event_loop, empty) = {
            let st = self.inner.borrow(py);
            if st.empty_waiter().is_some() {
                return Err(PyRuntimeError::new_err("Empty waiter is already set"));
            }
            (st.event_loop.as_ref().map(|l| l.clone_ref(py)), st.pending_is_empty())
        };
        let Some(event_loop) = event_loop else {
            return Err(PyRuntimeError::new_err("Transport is closed"));
        };
        let waiter = event_loop.bind(py).call_method0(intern!(py, "create_future"))?;
        if empty {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        self.inner.borrow_mut(py).set_empty_waiter(waiter.clone().unbind());
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.inner.borrow_mut(py).take_empty_waiter();
        drop(old);
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.borrow(py).sock.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _sock_fd(&self, py: Python<'_>) -> RawFd {
        self.inner.borrow(py).fd
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.event_loop(py)
    }

    #[getter]
    fn _protocol(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.get_protocol(py)
    }

    #[getter]
    fn _server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.borrow(py).server.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _extra(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.make_socket_info(py)?;
        self.make_peer_tuple(py)?;
        self.inner.borrow_mut(py).extra.make_dict(py)
    }

    #[getter]
    fn _closing(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).closing
    }

    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.inner.borrow(py).conn_lost
    }

    #[getter]
    fn _paused(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).paused
    }

    #[getter]
    fn _eof(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).eof
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.inner.borrow(py).protocol_paused
    }

    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.borrow(py).empty_waiter().map(|w| w.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.inner.try_borrow_unguarded() else {
            return Ok(());
        };
        visit.call(&st.owner)?;
        visit.call(&st.event_loop)?;
        visit.call(&st.sock)?;
        visit.call(&st.protocol)?;
        visit.call(&st.server)?;
        st.extra.traverse(&visit)?;
        visit.call(&st.context)?;
        if let Some(rare) = st.rare.as_ref() {
            rare.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        // What is left behind is a transport without a connection.
        let state = self.inner.take_unguarded();
        drop(state);
    }
}

/// Removes the registration this transport made for `sock` on one side of
/// `fd`, never one another owner of the number made.
fn remove_mine(core: &LoopCore, py: Python<'_>, fd: RawFd, side: Side, sock: Option<&Py<PyAny>>) -> PyResult<bool> {
    match sock {
        Some(sock) => core.remove_io_file(py, fd, side, Some(sock.bind(py))),
        None => Ok(false),
    }
}

/// asyncio's `TransportSocket(sock)`, the extra info's `socket` entry.
fn transport_socket<'py>(sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    py.import(intern!(py, "asyncio.trsock"))?
        .getattr(intern!(py, "TransportSocket"))?
        .call1((sock,))
}

/// `sock.close()`, then gives back the transport's io reference (which
/// really closes it).
fn close_socket(sock: &Bound<'_, PyAny>, io_ref: bool) -> PyResult<()> {
    let closed = sock.call_method0(intern!(sock.py(), "close")).map(drop);
    if io_ref {
        release_io_ref(sock);
    }
    closed
}
