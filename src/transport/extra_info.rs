//! A socket transport's extra info: what `get_extra_info()` answers and
//! asyncio's `_extra` dict holds.
//!
//! asyncio keeps a dict per transport holding `socket`, `sockname` and
//! `peername` (and whatever its creator passed). Every connection of a
//! server has one, and a dict with its keys table is one of the larger
//! objects a connection keeps. Here those three entries live in fields, and
//! the dict is built only when someone reads `_extra` (asyncio's private
//! attribute); from then on the dict is the only record, as on asyncio. A
//! creator's dict with anything besides the accept loop's `peername` is kept
//! as it is, as asyncio keeps it.
//!
//! An IPv4 peer address is kept as its parts (the host string, shared
//! between connections from one host, and the port) and made into asyncio's
//! `(host, port)` tuple when first asked for, then kept: the tuple and its
//! port object are most of what an idle connection's address costs.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyMapping, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

/// The `peername` entry.
#[derive(Default)]
enum Peer {
    #[default]
    Unset,
    /// The object to answer with.
    Object(Py<PyAny>),
    /// An IPv4 address's parts: `(host, port)` is made when asked for.
    Inet(Py<PyString>, u16),
}

impl Peer {
    /// `address` as the parts of an exact `(str, int)` tuple whose int is a
    /// port, else as it is.
    fn new(address: Py<PyAny>, py: Python<'_>) -> Peer {
        let parts = {
            let bound = address.bind(py);
            match bound.cast_exact::<PyTuple>() {
                Ok(t) if t.len() == 2 => {
                    let host = t.get_item(0).ok().and_then(|h| h.cast_into_exact::<PyString>().ok());
                    let port = t
                        .get_item(1)
                        .ok()
                        .filter(|p| p.is_exact_instance_of::<PyInt>())
                        .and_then(|p| p.extract::<u16>().ok());
                    host.zip(port)
                }
                _ => None,
            }
        };
        match parts {
            Some((host, port)) => Peer::Inet(host.unbind(), port),
            None => Peer::Object(address),
        }
    }

    /// The entry as asyncio holds it, unless it is an `Inet` one, which
    /// [`Peer::parts`] gives for the caller to make the tuple from.
    fn object(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match self {
            Peer::Object(obj) => Some(obj.clone_ref(py)),
            Peer::Inet(..) | Peer::Unset => None,
        }
    }

    /// An `Inet` entry's host and port.
    fn parts(&self, py: Python<'_>) -> Option<(Py<PyString>, u16)> {
        match self {
            Peer::Inet(host, port) => Some((host.clone_ref(py), *port)),
            Peer::Object(_) | Peer::Unset => None,
        }
    }
}

/// `(host, port)`, made with no borrow of the transport held (allocating can
/// run the collector, and so finalizers).
pub(super) fn peer_tuple(py: Python<'_>, (host, port): (Py<PyString>, u16)) -> PyResult<Py<PyAny>> {
    let port = port.into_pyobject(py)?.into_any().unbind();
    Ok(PyTuple::new(py, [host.into_any(), port])?.into_any().unbind())
}

#[derive(Default)]
pub(super) struct ExtraInfo {
    /// The dict, once there is one; the fields below are then unused.
    dict: Option<Py<PyDict>>,
    socket: Option<Py<PyAny>>,
    sockname: Option<Py<PyAny>>,
    peername: Peer,
    /// `peername` came first (from the accept loop's dict): the order the
    /// dict's keys would have had on asyncio.
    peer_first: bool,
    /// `set_fields` ran: the three entries exist (`socket` maybe not made yet).
    addresses_set: bool,
}

impl ExtraInfo {
    /// From the `extra` a transport is created with: `None` (nothing yet),
    /// the accept loop's `{'peername': addr}` (taken into the field), any
    /// other dict (kept, and added to, as asyncio does), or another mapping
    /// (copied).
    pub(super) fn new(extra: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(extra) = extra.filter(|e| !e.is_none()) else {
            return Ok(ExtraInfo::default());
        };
        let py = extra.py();
        let dict = match extra.cast_exact::<PyDict>() {
            Ok(dict) => {
                if dict.len() == 1 {
                    if let Some(peer) = dict.get_item(intern!(py, "peername"))? {
                        return Ok(ExtraInfo {
                            peername: Peer::new(peer.unbind(), py),
                            peer_first: true,
                            ..ExtraInfo::default()
                        });
                    }
                }
                dict.clone()
            }
            Err(_) => match extra.cast::<PyDict>() {
                Ok(dict) => dict.clone(),
                Err(_) => {
                    let dict = PyDict::new(py);
                    dict.update(extra.cast::<PyMapping>()?)?;
                    dict
                }
            },
        };
        Ok(ExtraInfo {
            dict: Some(dict.unbind()),
            ..ExtraInfo::default()
        })
    }

    /// Records `sockname` and `peername` in the fields, when there is no
    /// dict (the caller sets them in the dict otherwise). The `socket` entry
    /// is made when first needed (see [`ExtraInfo::lacks_socket`]). Gives
    /// back what the fields held, for the caller to drop once no borrow is held.
    pub(super) fn set_fields(
        &mut self,
        py: Python<'_>,
        sockname: Py<PyAny>,
        peername: Py<PyAny>,
    ) -> [Option<Py<PyAny>>; 2] {
        self.addresses_set = true;
        let old_peer = match std::mem::replace(&mut self.peername, Peer::new(peername, py)) {
            Peer::Object(obj) => Some(obj),
            Peer::Inet(host, _) => Some(host.into_any()),
            Peer::Unset => None,
        };
        [self.sockname.replace(sockname), old_peer]
    }

    /// The fields are in use and the `socket` entry (asyncio's
    /// `TransportSocket`, made for every transport and asked for by few) is
    /// not made yet: the transport makes it when it is looked up, when the
    /// dict is built, and when the socket is closed.
    pub(super) fn lacks_socket(&self) -> bool {
        self.dict.is_none() && self.addresses_set && self.socket.is_none()
    }

    /// Sets the `socket` entry if it still lacks it; gives `socket` back
    /// otherwise, for the caller to drop once no borrow is held.
    pub(super) fn set_socket(&mut self, socket: Py<PyAny>) -> Option<Py<PyAny>> {
        if self.lacks_socket() {
            self.socket = Some(socket);
            None
        } else {
            Some(socket)
        }
    }

    /// Whether `name` is the str `key`.
    pub(super) fn is_key(name: &Bound<'_, PyAny>, key: &str) -> bool {
        name.cast::<PyString>()
            .is_ok_and(|n| n.to_str().is_ok_and(|n| n == key))
    }

    /// The dict, if there is one yet (a caller looks it up with no borrow
    /// held: a key's `__eq__` can run code).
    pub(super) fn dict(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.dict.as_ref().map(|d| d.clone_ref(py))
    }

    /// The field entry `name` names, if it is one of the three and set (a
    /// peer address kept as parts is made first: see
    /// [`ExtraInfo::peer_parts`]). Runs no Python code: the caller hashes
    /// `name` first (an unhashable one fails there, as a dict lookup would).
    pub(super) fn field(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
        let name = name.cast::<PyString>().ok()?;
        let field = match name.to_str().ok()? {
            "socket" => &self.socket,
            "sockname" => &self.sockname,
            "peername" => return self.peername.object(py),
            _ => return None,
        };
        field.as_ref().map(|v| v.clone_ref(py))
    }

    /// The peer address's host and port while it is kept as parts, for the
    /// caller to make the tuple ([`peer_tuple`]) and give it back to
    /// [`ExtraInfo::keep_peer`].
    pub(super) fn peer_parts(&self, py: Python<'_>) -> Option<(Py<PyString>, u16)> {
        self.peername.parts(py)
    }

    /// Keeps `tuple` as the peer address if it is still kept as parts (a call
    /// made meanwhile may have kept its own), so every lookup from now on
    /// answers with one object. Gives `tuple` back when it was not kept, for
    /// the caller to drop once no borrow is held.
    pub(super) fn keep_peer(&mut self, tuple: Py<PyAny>) -> Option<Py<PyAny>> {
        if let Peer::Inet(..) = self.peername {
            self.peername = Peer::Object(tuple);
            return None;
        }
        Some(tuple)
    }

    /// The dict, built from the fields the first time it is asked for.
    pub(super) fn make_dict(&mut self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        if let Some(dict) = &self.dict {
            return Ok(dict.clone_ref(py));
        }
        let dict = PyDict::new(py);
        let peername = self.peername.object(py);
        let peer = (intern!(py, "peername"), &peername);
        let mut entries = vec![
            (intern!(py, "socket"), &self.socket),
            (intern!(py, "sockname"), &self.sockname),
        ];
        if self.peer_first {
            entries.insert(0, peer);
        } else {
            entries.push(peer);
        }
        for (key, value) in entries {
            if let Some(value) = value {
                dict.set_item(key, value)?;
            }
        }
        self.socket = None;
        self.sockname = None;
        self.peername = Peer::Unset;
        let dict = dict.unbind();
        self.dict = Some(dict.clone_ref(py));
        Ok(dict)
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.dict)?;
        visit.call(&self.socket)?;
        visit.call(&self.sockname)?;
        match &self.peername {
            Peer::Object(obj) => visit.call(obj),
            Peer::Inet(..) | Peer::Unset => Ok(()),
        }
    }
}
