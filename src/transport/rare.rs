//! The parts of a socket transport's state that most connections never use,
//! kept together behind one pointer.
//!
//! A server holds one transport core per connection, and the core's size
//! is most of what an idle connection costs. A TLS pump, a `sendfile`
//! waiter, a datagram queue and water marks other than the defaults are
//! each rare; inline they would take five words in every core, boxed they
//! take one, allocated the first time any of them is set.

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::datagram::DatagramQueue;
use super::socket::Inner;
use super::tls::TlsPump;
use super::water_marks::DEFAULT_HIGH_WATER;

pub(super) struct Rare {
    /// Runs the protocol's data-flow steps when it is asyncio's own
    /// `SSLProtocol` (see `tls.rs`).
    tls: Option<Py<TlsPump>>,
    /// The future `loop.sendfile` waits on until the buffer is empty.
    empty_waiter: Option<Py<PyAny>>,
    /// Unsent datagrams; `Some` exactly for datagram transports. Boxed on
    /// its own: the queue and its last peer's address are large, and a TLS
    /// stream never has one.
    datagrams: Option<Box<DatagramQueue>>,
    high_water: usize,
    low_water: usize,
}

impl Default for Rare {
    fn default() -> Self {
        Rare {
            tls: None,
            empty_waiter: None,
            datagrams: None,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_HIGH_WATER / 4,
        }
    }
}

impl Inner {
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    pub(super) fn tls(&self) -> Option<&Py<TlsPump>> {
        self.rare.as_ref().and_then(|r| r.tls.as_ref())
    }

    /// Installs (or with `None` removes) the TLS pump; the old one, if any.
    pub(super) fn replace_tls(&mut self, tls: Option<Py<TlsPump>>) -> Option<Py<TlsPump>> {
        match (tls, self.rare.as_mut()) {
            (None, None) => None,
            (None, Some(rare)) => rare.tls.take(),
            (Some(tls), _) => self.rare_mut().tls.replace(tls),
        }
    }

    pub(super) fn empty_waiter(&self) -> Option<&Py<PyAny>> {
        self.rare.as_ref().and_then(|r| r.empty_waiter.as_ref())
    }

    pub(super) fn set_empty_waiter(&mut self, waiter: Py<PyAny>) {
        self.rare_mut().empty_waiter = Some(waiter);
    }

    pub(super) fn take_empty_waiter(&mut self) -> Option<Py<PyAny>> {
        self.rare.as_mut().and_then(|r| r.empty_waiter.take())
    }

    pub(super) fn datagrams(&self) -> Option<&DatagramQueue> {
        self.rare.as_ref().and_then(|r| r.datagrams.as_deref())
    }

    pub(super) fn datagrams_mut(&mut self) -> Option<&mut DatagramQueue> {
        self.rare.as_mut().and_then(|r| r.datagrams.as_deref_mut())
    }

    /// Makes this a datagram transport's state.
    pub(super) fn set_datagrams(&mut self, queue: DatagramQueue) {
        self.rare_mut().datagrams = Some(Box::new(queue));
    }

    pub(super) fn is_datagram(&self) -> bool {
        self.datagrams().is_some()
    }

    pub(super) fn high_water(&self) -> usize {
        self.rare.as_ref().map_or(DEFAULT_HIGH_WATER, |r| r.high_water)
    }

    pub(super) fn low_water(&self) -> usize {
        self.rare.as_ref().map_or(DEFAULT_HIGH_WATER / 4, |r| r.low_water)
    }

    /// Sets the water marks; the defaults need no allocation.
    pub(super) fn set_water_marks(&mut self, high: usize, low: usize) {
        if self.rare.is_none() && high == DEFAULT_HIGH_WATER && low == DEFAULT_HIGH_WATER / 4 {
            return;
        }
        let rare = self.rare_mut();
        rare.high_water = high;
        rare.low_water = low;
    }
}

impl Rare {
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.tls)?;
        visit.call(&self.empty_waiter)?;
        if let Some(queue) = self.datagrams.as_ref() {
            queue.traverse(visit)?;
        }
        Ok(())
    }
}
