//! Non-blocking socket calls on descriptors owned by Python socket objects.
//!
//! Sends use `MSG_NOSIGNAL` so a peer that went away gives `EPIPE` even when
//! the embedding program did not ignore `SIGPIPE` (CPython does by default).

use std::os::fd::RawFd;

use super::{syscall, Errno};

/// Most buffers one `sendmsg` takes (Linux's `IOV_MAX`).
pub const IOV_MAX: usize = 1024;

/// Whether an errno means "try again when the fd is ready".
pub fn would_block(err: Errno) -> bool {
    matches!(err.0, libc::EAGAIN | libc::EINTR)
}

/// `recv(fd, buf, len, 0)`: bytes read, 0 at end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
    recv_raw(fd, buf.as_mut_ptr(), buf.len())
}

/// `recv` into memory the caller vouches for (a Python buffer).
pub fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> Result<usize, Errno> {
    // SAFETY: the caller passes a writable region of `len` bytes that stays
    // alive for the call.
    let n = syscall!(recv(fd, ptr.cast(), len, 0))?;
    Ok(n as usize)
}

/// One `recvmsg` into two regions, the first filled first: bytes read, 0 at
/// end of stream.
pub fn recv_two(fd: RawFd, first: (*mut u8, usize), second: &mut [u8]) -> Result<usize, Errno> {
    let mut bufs = [
        libc::iovec {
            iov_base: first.0.cast(),
            iov_len: first.1,
        },
        libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_mut_ptr();
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: the caller vouches that `first` is writable for its length for
    // the call, and `second` is a live mutable slice.
    let n = syscall!(recvmsg(fd, &mut msg, 0))?;
    Ok(n as usize)
}

/// `send(fd, data, MSG_NOSIGNAL)`: bytes accepted by the kernel.
pub fn send(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `data` is a valid readable region of `data.len()` bytes.
    let n = syscall!(send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

/// Gathers `bufs` into one `sendmsg`; bytes accepted by the kernel.
pub fn send_vectored(fd: RawFd, bufs: &[libc::iovec]) -> Result<usize, Errno> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // SAFETY: each iovec points to a live readable buffer owned by the caller
    // for the duration of the call; sendmsg only reads them.
    let n = syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

/// Half-closes the sending side (`shutdown(fd, SHUT_WR)`).
pub fn shutdown_write(fd: RawFd) -> Result<(), Errno> {
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// A peer address as the kernel reports it.
pub struct SockAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl SockAddr {
    /// The same address, byte for byte.
    pub fn same(&self, other: &SockAddr) -> bool {
        let len = self.len as usize;
        if len != other.len as usize || len > std::mem::size_of::<libc::sockaddr_storage>() {
            return false;
        }
        // SAFETY: both storages are plain bytes of at least `len` bytes.
        let bytes = |a: &SockAddr| unsafe {
            std::slice::from_raw_parts((&a.storage as *const libc::sockaddr_storage).cast::<u8>(), len)
        };
        bytes(self) == bytes(other)
    }
}

/// `recvfrom(fd, buf, len, 0)`: bytes read and who sent them.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> Result<(usize, SockAddr), Errno> {
    // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length; `storage`/`len` describe a
    // writable buffer big enough for any address.
    let n = syscall!(recvfrom(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        0,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    Ok((n as usize, SockAddr { storage, len }))
}

/// `sendto(fd, data, 0, addr)`: bytes accepted by the kernel.
pub fn send_to(fd: RawFd, data: &[u8], addr: &SockAddr) -> Result<usize, Errno> {
    // SAFETY: `data` is readable for its length; `addr` holds a valid
    // address of `addr.len` bytes, as recvfrom filled it.
    let n = syscall!(sendto(
        fd,
        data.as_ptr().cast(),
        data.len(),
        libc::MSG_NOSIGNAL,
        (&addr.storage as *const libc::sockaddr_storage).cast(),
        addr.len
    ))?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn vectored_send_and_half_close() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let parts: [&[u8]; 2] = [b"hello ", b"world"];
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        assert_eq!(send_vectored(a.as_raw_fd(), &iov).unwrap(), 11);
        let mut buf = [0u8; 32];
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello world");
        assert!(would_block(recv(b.as_raw_fd(), &mut buf).unwrap_err()));
        shutdown_write(a.as_raw_fd()).unwrap();
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), 0);
        assert_eq!(send(a.as_raw_fd(), b"x").unwrap_err(), Errno(libc::EPIPE));
    }
}
