//! `read`/`write` on pipes, FIFOs and character devices (and sockets handed
//! to a pipe transport), which have no `recv`/`send`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{syscall, Errno};

/// A new descriptor for the open file `fd` names (`F_DUPFD_CLOEXEC`): it
/// stays valid, and names that file, whatever happens to `fd` later.
pub fn duplicate(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (an invalid one fails with
    // EBADF) and returns a descriptor nobody else owns.
    let new = syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?;
    // SAFETY: `new` was just created by the kernel for this call alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `read(fd, buf)`: bytes read, 0 at end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
    let n = syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// Gathers `bufs` into one `writev`; bytes the kernel took.
pub fn write_vectored(fd: RawFd, bufs: &[libc::iovec]) -> Result<usize, Errno> {
    let count = bufs.len().min(super::socket::IOV_MAX) as libc::c_int;
    // SAFETY: each iovec points to a live readable buffer owned by the caller
    // for the duration of the call; writev only reads them.
    let n = syscall!(writev(fd, bufs.as_ptr(), count))?;
    Ok(n as usize)
}

/// `write(fd, data)`: bytes the kernel took.
pub fn write(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `data` is a valid readable region of `data.len()` bytes.
    let n = syscall!(write(fd, data.as_ptr().cast(), data.len()))?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::sys::socket::would_block;

    fn nonblocking_pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        (fds[0], fds[1])
    }

    fn close(fd: RawFd) {
        // SAFETY: the test owns `fd` and closes it once.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn a_duplicate_outlives_the_original_number() {
        let (r, w) = nonblocking_pipe();
        let own = duplicate(w).unwrap();
        assert_ne!(own.as_raw_fd(), w);
        // SAFETY: F_GETFD on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(own.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        close(w);
        assert_eq!(write(own.as_raw_fd(), b"x"), Ok(1));
        let mut buf = [0u8; 4];
        assert_eq!(read(r, &mut buf), Ok(1));
        drop(own);
        // Every write end is closed now: end of file.
        assert_eq!(read(r, &mut buf), Ok(0));
        close(r);
    }

    #[test]
    fn read_write_eof_and_broken_pipe() {
        let (r, w) = nonblocking_pipe();
        let mut buf = [0u8; 16];
        assert!(would_block(read(r, &mut buf).unwrap_err()));
        assert_eq!(write(w, b"abc").unwrap(), 3);
        let parts: [&[u8]; 2] = [b"de", b"f"];
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        assert_eq!(write_vectored(w, &iov).unwrap(), 3);
        assert_eq!(read(r, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"abcdef");
        close(w);
        assert_eq!(read(r, &mut buf).unwrap(), 0);
        let (r2, w2) = nonblocking_pipe();
        close(r2);
        // The Rust test harness ignores SIGPIPE, as CPython does.
        assert_eq!(write(w2, b"x").unwrap_err(), Errno(libc::EPIPE));
        close(w2);
        close(r);
    }

    #[test]
    fn full_pipe_would_block() {
        let (r, w) = nonblocking_pipe();
        let chunk = [7u8; 65536];
        let mut total = 0;
        loop {
            match write(w, &chunk) {
                Ok(n) => total += n,
                Err(e) => {
                    assert!(would_block(e));
                    break;
                }
            }
            assert!(total < 64 << 20);
        }
        assert!(total > 0);
        close(r);
        close(w);
    }
}
