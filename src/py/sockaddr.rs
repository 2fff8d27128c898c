//! Socket addresses as Python sees them: the same objects `socket.recvfrom`
//! returns, so a protocol cannot tell a native read from the stdlib's.

use std::ffi::CStr;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::sys::socket::SockAddr;

extern "C" {
    // POSIX; the libc crate does not bind it.
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// Text form of an IPv4/IPv6 address, via `inet_ntop` as CPython does (Rust's
/// own formatting differs for IPv4-compatible IPv6 addresses).
fn ntop(family: libc::c_int, addr: *const libc::c_void) -> String {
    let mut text = [0 as libc::c_char; 64];
    // SAFETY: `addr` points to an in_addr/in6_addr matching `family`; `text`
    // is larger than INET6_ADDRSTRLEN.
    let out = unsafe { inet_ntop(family, addr, text.as_mut_ptr(), text.len() as libc::socklen_t) };
    if out.is_null() {
        return String::new();
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `text`.
    unsafe { CStr::from_ptr(text.as_ptr()) }.to_string_lossy().into_owned()
}

/// The Python form of `addr`: `(host, port)` for IPv4, `(host, port,
/// flowinfo, scope_id)` for IPv6, a path `str` (or `bytes` in the abstract
/// namespace) for Unix sockets, `None` when the kernel gave no address.
/// Other families give `Ok(None)`: callers read those through the socket
/// module instead.
pub fn to_python<'py>(py: Python<'py>, addr: &SockAddr) -> PyResult<Option<Bound<'py, PyAny>>> {
    if addr.len == 0 {
        return Ok(Some(py.None().into_bound(py)));
    }
    let family = libc::c_int::from(addr.storage.ss_family);
    let raw = (&addr.storage as *const libc::sockaddr_storage).cast::<u8>();
    match family {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in for AF_INET.
            let sin = unsafe { &*raw.cast::<libc::sockaddr_in>() };
            let host = ntop(family, (&sin.sin_addr as *const libc::in_addr).cast());
            Ok(Some(
                PyTuple::new(
                    py,
                    [
                        PyString::new(py, &host).into_any(),
                        u16::from_be(sin.sin_port).into_pyobject(py)?.into_any(),
                    ],
                )?
                .into_any(),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*raw.cast::<libc::sockaddr_in6>() };
            let host = ntop(family, (&sin6.sin6_addr as *const libc::in6_addr).cast());
            let items = [
                PyString::new(py, &host).into_any(),
                u16::from_be(sin6.sin6_port).into_pyobject(py)?.into_any(),
                u32::from_be(sin6.sin6_flowinfo).into_pyobject(py)?.into_any(),
                sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
            ];
            Ok(Some(PyTuple::new(py, items)?.into_any()))
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel filled a sockaddr_un for AF_UNIX.
            let sun = unsafe { &*raw.cast::<libc::sockaddr_un>() };
            let offset = std::mem::size_of::<libc::sa_family_t>();
            let path_len = (addr.len as usize).saturating_sub(offset).min(sun.sun_path.len());
            // SAFETY: sun_path is `path_len` initialised bytes (c_char as u8).
            let path = unsafe { std::slice::from_raw_parts(sun.sun_path.as_ptr().cast::<u8>(), path_len) };
            if path_len > 0 && path[0] == 0 {
                // Linux's abstract namespace: the bytes, leading NUL included.
                return Ok(Some(PyBytes::new(py, path).into_any()));
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            // SAFETY: `path[..end]` is valid for reads; the call copies it
            // and returns a new reference or NULL with an exception set.
            let text = unsafe {
                pyo3::ffi::PyUnicode_DecodeFSDefaultAndSize(path.as_ptr().cast(), end as pyo3::ffi::Py_ssize_t)
            };
            // SAFETY: see above.
            Ok(Some(unsafe { Bound::from_owned_ptr_or_err(py, text) }?))
        }
        _ => Ok(None),
    }
}
