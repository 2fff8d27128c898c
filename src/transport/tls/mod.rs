//! A native pump for the interpreter's own TLS protocol, 3.11+'s
//! `asyncio.sslproto.SSLProtocol` (the stdlib `ssl` module's `SSLObject` over
//! two memory BIOs).
//!
//! That class is pure Python: one encrypted message in and one out cost about
//! fifteen Python frames (`get_buffer`, `buffer_updated`, `_do_read`,
//! `_do_read__copied`, `SSLObject.read`, `_process_outgoing`, the flow-control
//! checks, and the app transport's `write`, `_write_appdata`, `_do_write`...),
//! most of the time a TLS round trip spends outside OpenSSL. When a socket
//! transport's protocol is exactly that class, the steps of the state in which
//! application data flows (`WRAPPED`) run here instead: the same calls on the
//! same `SSLObject` and BIOs, the same attribute updates on the protocol, in
//! the same order, with the same exceptions caught. Everything else — the
//! handshake, flushing, shutdown, a non-empty write backlog, a flow-control
//! change, a `BufferedProtocol` application — calls the protocol's own Python
//! method at the point where asyncio's code would, so the state machine, its
//! timeouts and its errors remain the interpreter's. All state stays in the
//! protocol's attributes; the pump only holds references.
//!
//! Mirrors `sslproto.py` of 3.11–3.13, whose methods used here are identical;
//! other versions are not attached.

use std::sync::Arc;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple, PyWeakrefReference};
use pyo3::{intern, PyTraverseError, PyVisit};

mod attrs;
mod method;

use attrs::{Attr, Seen};
use method::{Getter, Method};

use super::read_buffer::recv_then;
use super::socket::{protocol_failed, SocketTransportCore};
use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::py::buffer::{lend_view, CMethod};
use crate::py::dict_stamp::DictStamp;
use crate::py::filling_bytes::FillingBytes;
use crate::sys::socket::would_block;

/// Classes the pump compares against, imported once.
mod stdlib {
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;

    macro_rules! attr {
        ($name:ident, $module:literal, $attr:literal) => {
            pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
                static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                CELL.import(py, $module, $attr)
            }
        };
    }
    attr!(ssl_protocol, "asyncio.sslproto", "SSLProtocol");
    attr!(protocol_state, "asyncio.sslproto", "SSLProtocolState");
    attr!(ssl_object, "ssl", "SSLObject");
    attr!(memory_bio, "ssl", "MemoryBIO");
    attr!(ssl_socket, "_ssl", "_SSLSocket");
    attr!(want_read, "ssl", "SSLWantReadError");
    attr!(syscall_error, "ssl", "SSLSyscallError");
}

/// The objects of one `SSLProtocol` the pump works on. None of them is
/// reassigned by `sslproto.py` during a connection.
struct Parts {
    protocol: Py<PyAny>,
    /// `SSLProtocol`, the protocol's class when attached.
    class: Py<pyo3::types::PyType>,
    /// `protocol.__dict__`, where every attribute the pump reads per message
    /// lives (see [`Parts::get`]).
    dict: DictStamp,
    /// Values read from `dict` since its stamp last changed.
    seen: GilCell<Seen>,
    /// `sslobj` is the `_ssl._SSLObject`, whose `read(n, buffer)` and
    /// `pending()` are known to be OpenSSL's: reads may then decrypt straight
    /// into the `bytes` handed to the application.
    native: bool,
    /// The `pending` of the incoming and outgoing BIOs.
    incoming_pending: Getter,
    outgoing_pending: Getter,
    /// The outgoing BIO is an `ssl.MemoryBIO`, whose `read()` empties it.
    outgoing_native: bool,
    /// `SSLProtocolState.WRAPPED`, compared by identity as enum members are.
    wrapped: Py<PyAny>,
    /// The methods called per message. `sslobj` is the `_ssl._SSLObject`
    /// behind `protocol._sslobj` when that is a plain `ssl.SSLObject` (whose
    /// `read`/`write` only forward to it), otherwise `protocol._sslobj`
    /// itself (a context's own `sslobject_class`).
    sslobj_read: Method,
    sslobj_write: Method,
    sslobj_pending: Method,
    incoming_write: Method,
    outgoing_read: Method,
}

/// Runs the data-flow steps of one `asyncio.sslproto.SSLProtocol` natively.
/// Created by the socket transport whose protocol it is; its `write` replaces
/// the app transport's.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct TlsPump {
    /// None once detached: the connection is lost.
    parts: GilCell<Option<Arc<Parts>>>,
    /// A weak reference to the protocol's `_SSLProtocolTransport`, whose
    /// `write` is `TlsPump.write`: a strong one would be a reference cycle
    /// that outlives the connection, and asyncio frees these objects without
    /// the garbage collector once the connection is lost.
    app_transport: Py<PyAny>,
}

/// `getattr(obj, name)` for an instance attribute of one of sslproto's own
/// classes, which define none of the names read here as descriptors: looked
/// up in the instance `__dict__` first, which skips the search of the class
/// and its bases that `getattr` makes first and costs about a third as much
/// (used per message for the app transport's `_ssl_protocol`). A name not
/// found there goes through `getattr`.
fn attr<'py>(obj: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    // SAFETY: `obj` is a live object; the call returns a new reference to its
    // `__dict__` (made on first use) or NULL with an exception set.
    let dict =
        unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut())) };
    match dict {
        Some(dict) => {
            if let Some(value) = dict.cast::<PyDict>()?.get_item(name)? {
                return Ok(value);
            }
        }
        None => drop(PyErr::take(py)),
    }
    obj.getattr(name)
}

/// `except SSLAgainErrors`: the `SSLObject` needs more input.
fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    Ok(err.is_instance(py, stdlib::want_read(py)?) || err.is_instance(py, stdlib::syscall_error(py)?))
}

/// `except Exception as ex: self._fatal_error(ex, 'Fatal error on SSL protocol')`
/// around `_do_read`'s and `_write_appdata`'s bodies; other exceptions
/// (`KeyboardInterrupt`, `CancelledError`...) propagate as they do there.
fn guarded(protocol: &Bound<'_, PyAny>, result: PyResult<()>) -> PyResult<()> {
    let py = protocol.py();
    match result {
        Err(err) if err.is_instance_of::<PyException>(py) => protocol
            .call_method1(
                intern!(py, "_fatal_error"),
                (err.into_value(py), "Fatal error on SSL protocol"),
            )
            .map(drop),
        other => other,
    }
}

/// What one readable event decrypted so far.
#[derive(Default)]
struct Reads<'py> {
    /// The first chunk apart, so that the usual single one needs no `Vec`.
    first: Option<Bound<'py, PyAny>>,
    more: Vec<Bound<'py, PyAny>>,
    close_notify: bool,
    /// No more reads are to be made for this event.
    done: bool,
}

impl<'py> Reads<'py> {
    fn push(&mut self, chunk: Bound<'py, PyAny>) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.more.push(chunk);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Everything read, joined into one object.
    fn data(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(first) = self.first.take() else {
            return Ok(None);
        };
        if self.more.is_empty() {
            return Ok(Some(first));
        }
        let all = PyList::new(py, std::iter::once(first).chain(self.more.drain(..)))?;
        Ok(Some(PyBytes::new(py, b"").call_method1(intern!(py, "join"), (all,))?))
    }
}

impl Parts {
    /// A flow-control check of sslproto (`_control_app_writing`,
    /// `_control_ssl_reading`), whose method is called only when it has
    /// something to do: when `size >= high and not paused`, or `size <= low
    /// and paused`, or when a value is not a machine integer (the method then
    /// decides itself).
    fn control_flow(
        &self,
        py: Python<'_>,
        size: Option<i64>,
        [paused, high, low]: [Attr; 3],
        method: &Bound<'_, PyString>,
    ) -> PyResult<()> {
        let act = match size {
            None => true,
            Some(size) => {
                let paused = self.get(py, paused)?.is_truthy()?;
                let mark = self.get(py, if paused { low } else { high })?;
                mark.extract::<i64>()
                    .map_or(true, |mark| if paused { size <= mark } else { size >= mark })
            }
        };
        if act {
            self.protocol.bind(py).call_method0(method)?;
        }
        Ok(())
    }

    /// A memory BIO's `pending`, where it is a machine integer.
    fn bio_pending(pending: &Getter, py: Python<'_>) -> PyResult<Option<i64>> {
        Ok(pending.get(py)?.extract::<i64>().ok())
    }

    fn is_wrapped(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py, Attr::State)?.is(self.wrapped.bind(py)))
    }

    /// The rest of `SSLProtocol.buffer_updated`, once the input is in the
    /// incoming BIO: the step of the protocol's state, `_do_read`'s natively.
    fn input_arrived(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let state = self.get(py, Attr::State)?;
        if state.is(self.wrapped.bind(py)) {
            return self.do_read(py);
        }
        let states = stdlib::protocol_state(py)?;
        for (name, step) in [
            (intern!(py, "DO_HANDSHAKE"), intern!(py, "_do_handshake")),
            (intern!(py, "FLUSHING"), intern!(py, "_do_flush")),
            (intern!(py, "SHUTDOWN"), intern!(py, "_do_shutdown")),
        ] {
            if state.is(&states.getattr(name)?) {
                protocol.call_method0(step)?;
                break;
            }
        }
        Ok(())
    }

    /// `SSLProtocol._do_read` in state `WRAPPED`.
    fn do_read(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let body = || -> PyResult<()> {
            if !self.get(py, Attr::AppReadingPaused)?.is_truthy()? {
                if self.get(py, Attr::AppProtocolIsBuffer)?.is_truthy()? {
                    protocol.call_method0(intern!(py, "_do_read__buffered"))?;
                } else {
                    self.read_copied(py)?;
                }
                if self.get(py, Attr::WriteBacklog)?.is_truthy()? {
                    protocol.call_method0(intern!(py, "_do_write"))?;
                } else {
                    self.process_outgoing(py)?;
                }
            }
            self.control_ssl_reading(py)
        };
        guarded(protocol, body())
    }

    /// `SSLProtocol._do_read__copied`: decrypt everything available and hand
    /// it to the application in one `data_received`.
    fn read_copied(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let max_size = self.get(py, Attr::MaxSize)?;
        let mut read = Reads::default();
        if let (Some(sslobj_read), Ok(max @ 1..)) = (self.sslobj_read.lendable(), max_size.extract::<usize>()) {
            self.read_in_place(py, sslobj_read, max, &mut read)?;
        }
        if !read.done {
            self.read_chunks(py, &max_size, &mut read)?;
        }
        if let Some(data) = read.data(py)? {
            // A `PanicException` from the application is an error like
            // another here, as in asyncio (see `py::call_method`).
            let app = self.get(py, Attr::AppProtocol)?;
            crate::py::call_method(&app, intern!(py, "data_received"), &[data.as_any()])?;
        }
        if read.close_notify {
            protocol.call_method0(intern!(py, "_call_eof_received"))?;
            protocol.call_method0(intern!(py, "_start_shutdown"))?;
        }
        Ok(())
    }

    /// asyncio's read loop: `read(max_size)` until the `SSLObject` has
    /// nothing more, each call a new `bytes` joined afterwards.
    fn read_chunks<'py>(&self, py: Python<'py>, max_size: &Bound<'py, PyAny>, read: &mut Reads<'py>) -> PyResult<()> {
        loop {
            // asyncio reads until the SSLObject raises SSLWantReadError: with
            // the incoming BIO empty and no decrypted bytes left in the last
            // record, that read cannot return anything (OpenSSL reads records
            // from the BIO only as it needs them, read-ahead being off in the
            // ssl module), and raising it costs more than the read of a
            // message. It is skipped then; a first read, or one with bytes
            // left, is made as asyncio makes it.
            if !read.is_empty() && self.drained(py, false)? {
                return Ok(());
            }
            match self.sslobj_read.call(py, (max_size,)) {
                Ok(chunk) if !chunk.is_truthy()? => {
                    read.close_notify = true;
                    return Ok(());
                }
                Ok(chunk) => read.push(chunk),
                Err(err) if is_again(py, &err)? => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// The same reads, decrypting every record into one `bytes` sized for
    /// the ciphertext waiting (plaintext is never longer, compression being
    /// off), so a message of many records is not copied again by a join.
    /// Sets `read.done` unless that object filled up with more to read:
    /// decrypted bytes left over from an earlier read, which the size leaves
    /// out (every read here goes on until nothing is left, so there are none
    /// in the data flow), or compression; the chunked reads go on from there.
    fn read_in_place<'py>(
        &self,
        py: Python<'py>,
        sslobj_read: &CMethod,
        max_size: usize,
        read: &mut Reads<'py>,
    ) -> PyResult<()> {
        let size = match self.waiting(py)? {
            Some(0) => self.decrypted(py)?,
            waiting => waiting,
        };
        let Some(size) = size.and_then(|n| usize::try_from(n).ok()) else {
            return Ok(());
        };
        let mut out = FillingBytes::new(py, size)?;
        read.done = true;
        let mut short = false;
        loop {
            // The first read is always made, as in `read_chunks`.
            if out.filled() > 0 && self.drained(py, short)? {
                break;
            }
            if out.remaining() == 0 {
                read.done = false;
                break;
            }
            let want = out.remaining().min(max_size);
            let result = out.fill_through_view(sslobj_read, want);
            match result {
                Ok(0) => {
                    read.close_notify = true;
                    break;
                }
                Ok(n) => short = n < want,
                Err(err) if is_again(py, &err)? => break,
                Err(err) => return Err(err),
            }
        }
        if out.filled() > 0 {
            read.push(out.finish()?.into_any());
        }
        Ok(())
    }

    /// Ciphertext waiting in the incoming BIO; None where it is not a
    /// machine integer.
    fn waiting(&self, py: Python<'_>) -> PyResult<Option<i64>> {
        Parts::bio_pending(&self.incoming_pending, py)
    }

    /// Decrypted bytes the `SSLObject` holds (`pending()`, which releases
    /// the GIL around OpenSSL's `SSL_pending`).
    fn decrypted(&self, py: Python<'_>) -> PyResult<Option<i64>> {
        Ok(self.sslobj_pending.call0(py)?.extract().ok())
    }

    /// Nothing left to decrypt: the incoming BIO is empty and the `SSLObject`
    /// has no bytes of a record it already decrypted. `short`: the last read
    /// was OpenSSL's own (`native`) and returned less than it asked for,
    /// which `SSL_read` does only once it has returned every decrypted byte
    /// it held, so there are none and `pending()` need not be asked.
    fn drained(&self, py: Python<'_>, short: bool) -> PyResult<bool> {
        if self.waiting(py)? != Some(0) {
            return Ok(false);
        }
        Ok((short && self.native) || self.decrypted(py)? == Some(0))
    }

    /// `SSLProtocol._process_outgoing` followed by `_control_app_writing`,
    /// as every caller in sslproto makes them.
    fn process_outgoing(&self, py: Python<'_>) -> PyResult<()> {
        // asyncio reads the outgoing BIO whenever writing is not paused, most
        // of the time to get `b''` after a read; its `pending` is needed
        // for the flow-control check anyway, so it is taken first and an
        // empty BIO is not read. Reading all of a memory BIO leaves it with
        // `pending - len(data)` bytes, which saves asking again.
        let mut pending = Parts::bio_pending(&self.outgoing_pending, py)?;
        if pending != Some(0) && !self.get(py, Attr::SslWritingPaused)?.is_truthy()? {
            let data = self.outgoing_read.call0(py)?;
            let len = data.len()?;
            if len > 0 {
                self.get(py, Attr::Transport)?
                    .call_method1(intern!(py, "write"), (data,))?;
            }
            pending = match (pending, self.outgoing_native) {
                (Some(before), true) => i64::try_from(len).ok().and_then(|len| before.checked_sub(len)),
                _ => None,
            };
            if pending.is_none() {
                pending = Parts::bio_pending(&self.outgoing_pending, py)?;
            }
        }
        let backlog = self.get(py, Attr::WriteBufferSize)?.extract::<i64>().ok();
        let size = pending.zip(backlog).and_then(|(a, b)| a.checked_add(b));
        let marks = [Attr::AppWritingPaused, Attr::OutgoingHighWater, Attr::OutgoingLowWater];
        self.control_flow(py, size, marks, intern!(py, "_control_app_writing"))
    }

    /// `SSLProtocol._control_ssl_reading`.
    fn control_ssl_reading(&self, py: Python<'_>) -> PyResult<()> {
        let size = Parts::bio_pending(&self.incoming_pending, py)?;
        let marks = [Attr::SslReadingPaused, Attr::IncomingHighWater, Attr::IncomingLowWater];
        self.control_flow(py, size, marks, intern!(py, "_control_ssl_reading"))
    }

    /// `SSLProtocol._write_appdata((data,))` in state `WRAPPED` with an
    /// empty backlog, for `bytes` and `bytearray` (whose `len` is their size).
    fn write_appdata(&self, py: Python<'_>, data: &Bound<'_, PyAny>, len: usize) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        // asyncio appends `data` to the backlog, counts it, then `_do_write`
        // writes it and takes it off again; only what stays is recorded here.
        let keep = |rest: Bound<'_, PyAny>, size: usize| -> PyResult<()> {
            self.get(py, Attr::WriteBacklog)?
                .call_method1(intern!(py, "append"), (rest,))?;
            let total = self.get(py, Attr::WriteBufferSize)?.add(size)?;
            protocol.setattr(intern!(py, "_write_buffer_size"), total)
        };
        let body = || -> PyResult<()> {
            match self.sslobj_write.call(py, (data,)) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count < len {
                        // A partial write: `_do_write`'s loop goes on with the rest.
                        let rest = data.get_item(pyo3::types::PySlice::new(py, count as isize, len as isize, 1))?;
                        keep(rest, len - count)?;
                        protocol.call_method0(intern!(py, "_do_write"))?;
                        return Ok(());
                    }
                }
                Err(err) if is_again(py, &err)? => keep(data.clone(), len)?,
                Err(err) => {
                    keep(data.clone(), len)?;
                    return Err(err);
                }
            }
            self.process_outgoing(py)
        };
        guarded(protocol, body())
    }
}

impl TlsPump {
    /// A pump for `protocol` when it is exactly 3.11+'s `SSLProtocol`, with
    /// the app transport's `write` pointed at it; `None` for anything else.
    pub(super) fn attach(protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<TlsPump>>> {
        let py = protocol.py();
        // 3.10's sslproto is a different design (`_SSLPipe`, no buffered reads),
        // and a Python newer than 3.13 may change the private attributes used
        // here: both keep asyncio's own path.
        let version = crate::py::version(py);
        if !((3, 11)..(3, 14)).contains(&version) || !protocol.get_type().is(stdlib::ssl_protocol(py)?) {
            return Ok(None);
        }
        let app_transport = protocol.getattr(intern!(py, "_app_transport"))?;
        if app_transport.is_none() {
            return Ok(None);
        }
        let wrapper = protocol.getattr(intern!(py, "_sslobj"))?;
        let native = wrapper.get_type().is(stdlib::ssl_object(py)?);
        let sslobj = if native {
            wrapper.getattr(intern!(py, "_sslobj"))?
        } else {
            wrapper
        };
        // SAFETY: `protocol` is a live object; the call returns a new
        // reference to its `__dict__` (made on first use) or NULL with an
        // exception set.
        let dict = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_GenericGetDict(protocol.as_ptr(), std::ptr::null_mut()),
            )
        }?
        .cast_into::<PyDict>()?;
        let incoming = protocol.getattr(intern!(py, "_incoming"))?;
        let outgoing = protocol.getattr(intern!(py, "_outgoing"))?;
        let bio = stdlib::memory_bio(py)?;
        let (bio_in, bio_out) = (incoming.get_type().is(bio), outgoing.get_type().is(bio));
        // The C types whose methods may be lent the pump's memory.
        let c_types = [stdlib::ssl_socket(py)?, bio];
        let parts = Parts {
            sslobj_read: Method::new(&sslobj, intern!(py, "read"), native, &c_types)?,
            sslobj_write: Method::new(&sslobj, intern!(py, "write"), native, &c_types)?,
            sslobj_pending: Method::new(&sslobj, intern!(py, "pending"), native, &c_types)?,
            incoming_write: Method::new(&incoming, intern!(py, "write"), bio_in, &c_types)?,
            outgoing_read: Method::new(&outgoing, intern!(py, "read"), bio_out, &c_types)?,
            protocol: protocol.clone().unbind(),
            class: protocol.get_type().unbind(),
            dict: DictStamp::new(dict),
            seen: GilCell::new(Seen::default()),
            native,
            outgoing_native: bio_out,
            incoming_pending: Getter::new(&incoming, intern!(py, "pending"), bio_in)?,
            outgoing_pending: Getter::new(&outgoing, intern!(py, "pending"), bio_out)?,
            wrapped: stdlib::protocol_state(py)?.getattr(intern!(py, "WRAPPED"))?.unbind(),
        };
        let pump = Bound::new(
            py,
            TlsPump {
                parts: GilCell::new(Some(Arc::new(parts))),
                app_transport: PyWeakrefReference::new(&app_transport)?.into_any().unbind(),
            },
        )?;
        // An instance attribute, as the socket transport's own `write` is:
        // the app transport keeps its class (and repr), and each message
        // skips three Python frames.
        app_transport.setattr(intern!(py, "write"), pump.getattr(intern!(py, "write"))?)?;
        Ok(Some(pump.unbind()))
    }

    fn parts(&self, py: Python<'_>) -> Option<Arc<Parts>> {
        self.parts.borrow(py).clone()
    }

    /// The connection is lost (or the transport changed protocol): let go of
    /// the protocol, and give the app transport back its class's `write`.
    /// Until then the app transport, which the application may keep, holds
    /// the pump and through it the protocol, its `SSLObject` and its context;
    /// asyncio's app transport lets go of them once closed.
    pub(super) fn detach(pump: &Bound<'_, TlsPump>) -> PyResult<()> {
        let py = pump.py();
        let parts = pump.get().parts.borrow_mut(py).take();
        if let Some(parts) = &parts {
            parts.dict.release(py);
        }
        let app_transport = pump
            .get()
            .app_transport
            .bind(py)
            .cast::<PyWeakrefReference>()?
            .upgrade();
        if let Some(transport) = app_transport {
            if let Ok(dict) = transport.getattr(intern!(py, "__dict__")) {
                let ours = match dict.get_item(intern!(py, "write")) {
                    Ok(write) => write.getattr(intern!(py, "__self__")).is_ok_and(|owner| owner.is(pump)),
                    Err(_) => false,
                };
                if ours {
                    dict.del_item(intern!(py, "write"))?;
                }
            }
        }
        // Released last: a decref can run any code.
        drop(parts);
        Ok(())
    }

    /// The socket is readable and the protocol is this pump's: asyncio's
    /// `get_buffer(-1)` and `buffer_updated(n)`, without the protocol's own
    /// 256 KiB buffer. Returns `false`, having done nothing, once detached;
    /// the transport then takes that path itself.
    pub(super) fn read_ready(
        transport: &Bound<'_, SocketTransportCore>,
        pump: &Bound<'_, TlsPump>,
        fd: std::os::fd::RawFd,
    ) -> PyResult<bool> {
        let py = transport.py();
        let Some(parts) = pump.get().parts(py) else {
            return Ok(false);
        };
        // `buffer_updated(n)`: `self._incoming.write(view[:n])`, straight from
        // the read buffer through a memoryview released right after.
        let received = recv_then(fd, |bytes| -> PyResult<usize> {
            if bytes.is_empty() {
                return Ok(0);
            }
            match parts.incoming_write.lendable() {
                // SAFETY: `bytes` stays alive and unchanged for the call, and
                // the view is read-only.
                Some(write) => unsafe { lend_view(py, bytes.as_ptr().cast_mut(), bytes.len(), false, write, None) }?,
                // Python code could keep a slice of a view of the read
                // buffer, which the next read reuses: it gets a copy.
                None => parts.incoming_write.call(py, (PyBytes::new(py, bytes),))?,
            };
            Ok(bytes.len())
        });
        const FAILED: &str = "Fatal error: protocol.buffer_updated() call failed.";
        match received {
            Err(e) if would_block(e) => Ok(true),
            Err(e) => {
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                SocketTransportCore::fatal_error(transport, exc, "Fatal read error on socket transport")?;
                Ok(true)
            }
            Ok(Err(err)) => protocol_failed(transport, err, FAILED).map(|()| true),
            Ok(Ok(0)) => {
                SocketTransportCore::on_eof(transport, parts.protocol.bind(py))?;
                Ok(true)
            }
            Ok(Ok(n)) => {
                if let Some(event_loop) = &transport.get().inner.borrow(py).event_loop {
                    event_loop.get().stats.read(n);
                }
                match parts.input_arrived(py) {
                    Ok(()) => Ok(true),
                    Err(err) => protocol_failed(transport, err, FAILED).map(|()| true),
                }
            }
        }
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl TlsPump {
    /// `_SSLProtocolTransport.write`.
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let app_transport = self.app_transport.bind(py).cast::<PyWeakrefReference>()?.upgrade();
        let Some(parts) = self.parts(py) else {
            // Detached, and called through a `write` saved before: the class's
            // own, as asyncio would run it. With the app transport gone too,
            // the connection it wrote to is long lost.
            return match app_transport {
                Some(transport) => transport
                    .get_type()
                    .getattr(intern!(py, "write"))?
                    .call1((transport, data))
                    .map(drop),
                None => Ok(()),
            };
        };
        // `self._ssl_protocol`; once the transport is gone only a saved
        // `write` can still be called, and its protocol was this one.
        let protocol = match app_transport {
            Some(transport) => attr(&transport, intern!(py, "_ssl_protocol"))?,
            None => parts.protocol.bind(py).clone(),
        };
        let len = if let Ok(bytes) = data.cast_exact::<PyBytes>() {
            Some(bytes.as_bytes().len())
        } else {
            data.cast_exact::<PyByteArray>().ok().map(|b| b.len())
        };
        if let Some(len) = len {
            if protocol.is(parts.protocol.bind(py))
                && parts.is_wrapped(py)?
                && !parts.get(py, Attr::WriteBacklog)?.is_truthy()?
            {
                return parts.write_appdata(py, data, len);
            }
        }
        protocol
            .call_method1(intern!(py, "_write_appdata"), (PyTuple::new(py, [data])?,))
            .map(drop)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(parts) = self.parts.try_borrow_unguarded() else {
            return Ok(());
        };
        visit.call(&self.app_transport)?;
        if let Some(p) = parts.as_ref() {
            visit.call(&p.protocol)?;
            visit.call(&p.class)?;
            visit.call(p.dict.dict())?;
            if let Some(seen) = p.seen.try_borrow_unguarded() {
                seen.traverse(&visit)?;
            }
            p.incoming_pending.traverse(&visit)?;
            p.outgoing_pending.traverse(&visit)?;
            visit.call(&p.wrapped)?;
            for method in [
                &p.sslobj_read,
                &p.sslobj_write,
                &p.sslobj_pending,
                &p.incoming_write,
                &p.outgoing_read,
            ] {
                method.traverse(&visit)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let parts = self.parts.take_unguarded();
        drop(parts);
    }
}
