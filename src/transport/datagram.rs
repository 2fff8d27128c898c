//! The datagram side of [`SocketTransportCore`]: UDP and Unix datagram
//! sockets (`create_datagram_endpoint`).
//!
//! As asyncio's selector transport: each readable event receives one
//! datagram and calls `datagram_received(data, addr)`; `sendto` sends at once
//! and queues only when the socket would block; OS errors go to
//! `error_received`, never closing the transport. Receiving is native for
//! IPv4, IPv6 and Unix sockets (the address comes out as the socket module
//! would build it); other families go through `socket.recvfrom`. Sends on an
//! unconnected socket go through `socket.sendto`, which resolves and checks
//! addresses exactly as asyncio's do.

use std::cell::RefCell;
use std::collections::VecDeque;

use pyo3::exceptions::{
    PyBlockingIOError, PyBufferError, PyInterruptedError, PyKeyboardInterrupt, PyOSError, PySystemExit, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::socket::{check_bytes_like, SocketTransportCore};
use crate::errors::os_error;
use crate::loop_core::readers::Side;
use crate::py::buffer::RawBuffer;
use crate::py::{call_method, helpers, sockaddr};
use crate::sys::socket::{self, would_block, SockAddr};

/// asyncio's `max_size`: a datagram is read whole (a Unix datagram may be
/// larger than a UDP one). Only the bytes received are touched.
const DATAGRAM_MAX: usize = 256 * 1024;
/// From 3.13 asyncio counts each queued datagram's 8 header bytes in
/// `get_write_buffer_size()`, and sends empty datagrams.
const HEADER_SINCE_313: usize = 8;
/// At most this many datagrams are received per readable event, so one busy
/// socket cannot starve the loop's other callbacks.
const DATAGRAMS_PER_EVENT: usize = 32;

thread_local! {
    static DGRAM_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; DATAGRAM_MAX]);
}

/// Datagrams waiting for the socket to become writable.
pub struct DatagramQueue {
    items: VecDeque<(Py<PyBytes>, Py<PyAny>)>,
    size: usize,
    /// The `remote_addr` of a connected endpoint.
    address: Option<Py<PyAny>>,
    /// The family is one `sockaddr::to_python` knows.
    native_recv: bool,
    /// The last sender, as given to `datagram_received` and as the kernel
    /// reported it: a reply to that very object is sent natively, without
    /// parsing the address again (what an echo or request/reply server does).
    last_peer: Option<(Py<PyAny>, SockAddr)>,
}

impl DatagramQueue {
    pub fn new(sock: &Bound<'_, PyAny>, address: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let family: i32 = sock.getattr(intern!(sock.py(), "family"))?.extract()?;
        Ok(DatagramQueue {
            items: VecDeque::new(),
            size: 0,
            address: address.filter(|a| !a.is_none()).map(|a| a.clone().unbind()),
            native_recv: matches!(family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX),
            last_peer: None,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) -> Vec<Py<PyAny>> {
        self.size = 0;
        self.items
            .drain(..)
            .flat_map(|(data, addr)| [data.into_any(), addr])
            .collect()
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.address)?;
        if let Some((addr, _)) = &self.last_peer {
            visit.call(addr)?;
        }
        for (_, addr) in &self.items {
            visit.call(addr)?;
        }
        Ok(())
    }
}

fn accounted(py: Python<'_>, len: usize) -> usize {
    if crate::py::version(py) >= (3, 13) {
        len + HEADER_SINCE_313
    } else {
        len
    }
}

/// How one send attempt ended.
enum Sent {
    Done,
    WouldBlock,
    /// An `OSError`: for `error_received`.
    Failed(PyErr),
    /// Anything else: fatal to the transport.
    Fatal(PyErr),
}

fn classify(py: Python<'_>, err: PyErr) -> PyResult<Sent> {
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    if err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py) {
        return Ok(Sent::WouldBlock);
    }
    if err.is_instance_of::<PyOSError>(py) {
        return Ok(Sent::Failed(err));
    }
    Ok(Sent::Fatal(err))
}

impl SocketTransportCore {
    /// Whether the socket has a peer (asyncio checks `extra['peername']`).
    fn datagram_connected(&self, py: Python<'_>) -> PyResult<bool> {
        match self.extra_item(py, intern!(py, "peername"))? {
            Some(peer) => peer.bind(py).is_truthy(),
            None => Ok(false),
        }
    }

    /// One send attempt of a whole datagram.
    fn send_datagram(&self, py: Python<'_>, data: &Bound<'_, PyAny>, addr: &Bound<'_, PyAny>) -> PyResult<Sent> {
        let (fd, sock) = {
            let st = self.inner.borrow(py);
            (st.fd, st.sock.as_ref().map(|s| s.clone_ref(py)))
        };
        let Some(sock) = sock else { return Ok(Sent::Done) };
        if self.datagram_connected(py)? {
            let view = RawBuffer::get(data, false)?;
            return match socket::send(fd, view.as_slice()) {
                Ok(_) => Ok(Sent::Done),
                Err(e) if would_block(e) => Ok(Sent::WouldBlock),
                Err(e) => Ok(Sent::Failed(os_error(e))),
            };
        }
        let native = {
            let st = self.inner.borrow(py);
            st.datagrams()
                .and_then(|q| q.last_peer.as_ref())
                .filter(|(last, _)| last.is(addr))
                .map(|(_, raw)| SockAddr {
                    storage: raw.storage,
                    len: raw.len,
                })
        };
        if let Some(raw) = native {
            let view = RawBuffer::get(data, false)?;
            return match socket::send_to(fd, view.as_slice(), &raw) {
                Ok(_) => Ok(Sent::Done),
                Err(e) if would_block(e) => Ok(Sent::WouldBlock),
                Err(e) => Ok(Sent::Failed(os_error(e))),
            };
        }
        match sock.bind(py).call_method1(intern!(py, "sendto"), (data, addr)) {
            Ok(_) => Ok(Sent::Done),
            Err(err) => classify(py, err),
        }
    }

    fn error_received(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        let protocol = self.inner.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py));
        if let Some(protocol) = protocol {
            let exc = err.into_value(py).into_bound(py).into_any();
            call_method(protocol.bind(py), intern!(py, "error_received"), &[&exc])?;
        }
        Ok(())
    }

    /// The socket is readable: receive datagrams, one `datagram_received`
    /// each. Natively received ones are taken up to [`DATAGRAMS_PER_EVENT`]
    /// per event while the transport keeps reading (each is received only
    /// once the previous one was handed over, so a pause, a close or an
    /// exception leaves the rest in the kernel); this saves a poll per
    /// datagram under load. Other families: one per event, as asyncio.
    pub(super) fn read_datagram(slf: &Bound<'_, Self>) -> PyResult<()> {
        for _ in 0..DATAGRAMS_PER_EVENT {
            if !SocketTransportCore::receive_datagram(slf)? {
                break;
            }
        }
        Ok(())
    }

    /// Counts a datagram received, for `loop.stats()`.
    fn count_read(&self, py: Python<'_>, n: usize) {
        if let Some(event_loop) = &self.inner.borrow(py).event_loop {
            event_loop.get().stats.read(n);
        }
    }

    /// Receives and delivers one datagram; `true` if another may follow.
    fn receive_datagram(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let (fd, protocol, native, sock) = {
            let st = this.inner.borrow(py);
            let (Some(protocol), Some(queue), Some(sock)) = (st.protocol.as_ref(), st.datagrams(), st.sock.as_ref())
            else {
                return Ok(false);
            };
            if st.conn_lost > 0 || st.lost || st.closing || st.paused {
                return Ok(false);
            }
            (st.fd, protocol.clone_ref(py), queue.native_recv, sock.clone_ref(py))
        };
        if !native {
            let (data, addr) = match sock.bind(py).call_method1(intern!(py, "recvfrom"), (DATAGRAM_MAX,)) {
                Ok(pair) => (pair.get_item(0)?, pair.get_item(1)?),
                Err(err) => {
                    match classify(py, err)? {
                        Sent::Done | Sent::WouldBlock => {}
                        Sent::Failed(err) => this.error_received(py, err)?,
                        Sent::Fatal(err) => SocketTransportCore::fatal_error(
                            slf,
                            err.into_value(py).into_bound(py).into_any(),
                            "Fatal read error on datagram transport",
                        )?,
                    }
                    return Ok(false);
                }
            };
            this.count_read(py, data.len().unwrap_or(0));
            call_method(
                protocol.bind(py),
                intern!(py, "datagram_received"),
                &[data.as_any(), &addr],
            )?;
            return Ok(false);
        }
        let received = DGRAM_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            socket::recv_from(fd, &mut buf).map(|(n, addr)| (PyBytes::new(py, &buf[..n]), addr))
        });
        let (data, raw) = match received {
            Ok(pair) => pair,
            Err(e) if would_block(e) => return Ok(false),
            Err(e) => {
                this.error_received(py, os_error(e))?;
                return Ok(false);
            }
        };
        let Some(addr) = this.peer_object(py, raw)? else {
            return Ok(true);
        };
        this.count_read(py, data.as_bytes().len());
        call_method(
            protocol.bind(py),
            intern!(py, "datagram_received"),
            &[data.as_any(), &addr],
        )?;
        Ok(true)
    }

    /// The Python address of a sender: the last sender's object again when
    /// it is the same address (tuples are immutable, so sharing one is
    /// invisible), else a new one, remembered as the last sender.
    fn peer_object<'py>(&self, py: Python<'py>, raw: SockAddr) -> PyResult<Option<Bound<'py, PyAny>>> {
        {
            let st = self.inner.borrow(py);
            if let Some((addr, last)) = st.datagrams().and_then(|q| q.last_peer.as_ref()) {
                if last.same(&raw) {
                    return Ok(Some(addr.bind(py).clone()));
                }
            }
        }
        let Some(addr) = sockaddr::to_python(py, &raw)? else {
            return Ok(None);
        };
        let old = {
            let mut st = self.inner.borrow_mut(py);
            st.datagrams_mut()
                .and_then(|q| q.last_peer.replace((addr.clone().unbind(), raw)))
        };
        drop(old);
        Ok(Some(addr))
    }

    /// The socket is writable: send queued datagrams until it would block.
    pub(super) fn flush_datagrams(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let next = {
                let mut st = this.inner.borrow_mut(py);
                let Some(queue) = st.datagrams_mut() else {
                    return Ok(());
                };
                let next = queue.items.pop_front();
                if let Some((data, _)) = &next {
                    queue.size -= accounted(py, data.bind(py).as_bytes().len());
                }
                next
            };
            let Some((data, addr)) = next else { break };
            match this.send_datagram(py, data.bind(py).as_any(), addr.bind(py))? {
                Sent::Done => {}
                Sent::WouldBlock => {
                    let mut st = this.inner.borrow_mut(py);
                    if let Some(queue) = st.datagrams_mut() {
                        queue.size += accounted(py, data.bind(py).as_bytes().len());
                        queue.items.push_front((data, addr));
                    }
                    break;
                }
                Sent::Failed(err) => return this.error_received(py, err),
                Sent::Fatal(err) => {
                    let exc = err.into_value(py).into_bound(py).into_any();
                    return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on datagram transport");
                }
            }
        }
        SocketTransportCore::maybe_resume_protocol(slf)?;
        let (empty, closing) = {
            let st = this.inner.borrow(py);
            (st.pending_is_empty(), st.closing)
        };
        if empty {
            this.remove_side(py, Side::Write)?;
            if closing {
                SocketTransportCore::_call_connection_lost(slf, None)?;
            }
        }
        Ok(())
    }
}

#[ferroloop_macros::contained]
#[pymethods]
impl SocketTransportCore {
    /// Sends `data` to `addr` (or the connected peer): at once if the socket
    /// takes it, else queued until it is writable.
    #[pyo3(signature = (data, addr = None))]
    fn sendto(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, addr: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        check_bytes_like(data)?;
        let view = match RawBuffer::get(data, false) {
            Ok(view) => view,
            // Not C-contiguous: asyncio's `sock.sendto` fails on it, which is
            // the transport's fatal error.
            Err(err) if err.is_instance_of::<PyBufferError>(py) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on datagram transport");
            }
            Err(err) => return Err(err),
        };
        if view.len() == 0 && crate::py::version(py) < (3, 13) {
            return Ok(());
        }
        let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
        let (address, lost, empty) = {
            let st = this.inner.borrow(py);
            let Some(queue) = st.datagrams() else {
                return Err(pyo3::exceptions::PyAttributeError::new_err("sendto"));
            };
            (
                queue.address.as_ref().map(|a| a.clone_ref(py)),
                st.conn_lost > 0 || st.lost,
                queue.is_empty(),
            )
        };
        if let Some(address) = address.as_ref() {
            let address = address.bind(py);
            if !addr.is_none() && !addr.eq(address)? {
                return Err(PyValueError::new_err(format!(
                    "Invalid address: must be None or {}",
                    address.str()?
                )));
            }
            addr = address.clone();
        }
        if lost && (address.is_some() || this.inner.borrow(py).lost) {
            let warn = {
                let mut st = this.inner.borrow_mut(py);
                let warn = st.conn_lost >= 5;
                st.conn_lost = st.conn_lost.saturating_add(1);
                warn
            };
            if warn {
                helpers::log_warning(py)?.call1(("socket.send() raised exception.",))?;
            }
            return Ok(());
        }
        if let Some(event_loop) = &this.inner.borrow(py).event_loop {
            event_loop.get().stats.wrote(view.len());
        }
        if empty {
            match this.send_datagram(py, data, &addr)? {
                Sent::Done => return Ok(()),
                Sent::WouldBlock => SocketTransportCore::add_side(slf, Side::Write, intern!(py, "_write_ready"))?,
                Sent::Failed(err) => return this.error_received(py, err),
                Sent::Fatal(err) => {
                    let exc = err.into_value(py).into_bound(py).into_any();
                    return SocketTransportCore::fatal_error(slf, exc, "Fatal write error on datagram transport");
                }
            }
        }
        // What is queued is a copy: the caller may reuse its buffer.
        let copy = PyBytes::new(py, view.as_slice()).unbind();
        drop(view);
        {
            let mut st = this.inner.borrow_mut(py);
            if let Some(queue) = st.datagrams_mut() {
                queue.size += accounted(py, copy.bind(py).as_bytes().len());
                queue.items.push_back((copy, addr.unbind()));
            }
        }
        SocketTransportCore::maybe_pause_protocol(slf)
    }
}
