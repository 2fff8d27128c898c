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

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping, PyString};
use pyo3::{intern, PyTraverseError, PyVisit};

#[derive(Default)]
pub(super) struct ExtraInfo {
    /// The dict, once there is one; the fields below are then unused.
    dict: Option<Py<PyDict>>,
    socket: Option<Py<PyAny>>,
    sockname: Option<Py<PyAny>>,
    peername: Option<Py<PyAny>>,
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
                            peername: Some(peer.unbind()),
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
    pub(super) fn set_fields(&mut self, sockname: Py<PyAny>, peername: Py<PyAny>) -> [Option<Py<PyAny>>; 2] {
        self.addresses_set = true;
        [self.sockname.replace(sockname), self.peername.replace(peername)]
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

    /// Whether `name` is the key `socket`.
    pub(super) fn is_socket_key(name: &Bound<'_, PyAny>) -> bool {
        name.cast::<PyString>()
            .is_ok_and(|n| n.to_str().is_ok_and(|n| n == "socket"))
    }

    /// The dict, if there is one yet (a caller looks it up with no borrow
    /// held: a key's `__eq__` can run code).
    pub(super) fn dict(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.dict.as_ref().map(|d| d.clone_ref(py))
    }

    /// The field entry `name` names, if it is one of the three and set.
    /// Runs no Python code: the caller hashes `name` first (an unhashable
    /// one fails there, as a dict lookup would).
    pub(super) fn field(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
        let name = name.cast::<PyString>().ok()?;
        let field = match name.to_str().ok()? {
            "socket" => &self.socket,
            "sockname" => &self.sockname,
            "peername" => &self.peername,
            _ => return None,
        };
        field.as_ref().map(|v| v.clone_ref(py))
    }

    /// The dict, built from the fields the first time it is asked for.
    pub(super) fn make_dict(&mut self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        if let Some(dict) = &self.dict {
            return Ok(dict.clone_ref(py));
        }
        let dict = PyDict::new(py);
        let peer = (intern!(py, "peername"), &self.peername);
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
        self.peername = None;
        let dict = dict.unbind();
        self.dict = Some(dict.clone_ref(py));
        Ok(dict)
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.dict)?;
        visit.call(&self.socket)?;
        visit.call(&self.sockname)?;
        visit.call(&self.peername)
    }
}
