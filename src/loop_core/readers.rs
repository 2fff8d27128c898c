//! The `add_reader` / `add_writer` registry: fd → (reader handle, writer handle).
//!
//! The fds here belong to the caller, not the loop. Each registration carries a
//! generation number in the epoll event data, so an event that was already
//! queued for an fd the caller removed (and the kernel may have reused) is
//! recognised as stale and dropped instead of reaching the new owner.

use std::collections::HashMap;
use std::os::fd::RawFd;

use crate::sys::epoll::{Epoll, READABLE, WRITABLE};
use crate::sys::Errno;

/// Which side of an fd a handle waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `add_reader`.
    Read,
    /// `add_writer`.
    Write,
}

struct Entry<H> {
    reader: Option<H>,
    writer: Option<H>,
    /// Matches the high half of the epoll data this fd was registered with.
    generation: u32,
}

/// Registered readers and writers, kept in step with the epoll interest set.
pub struct Registry<H> {
    fds: HashMap<RawFd, Entry<H>>,
    next_generation: u32,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            fds: HashMap::new(),
            next_generation: 1,
        }
    }
}

/// Packs an fd and its generation into epoll's 64-bit user data.
pub fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

/// Splits epoll user data back into the fd and its generation.
pub fn untoken(data: u64) -> (RawFd, u32) {
    ((data & 0xffff_ffff) as u32 as RawFd, (data >> 32) as u32)
}

impl<H> Registry<H> {
    /// Installs `handle` on one side of `fd`, replacing (and returning) any
    /// previous one. On error nothing changes.
    pub fn add(&mut self, epoll: &Epoll, fd: RawFd, side: Side, handle: H) -> Result<Option<H>, Errno> {
        match self.fds.get_mut(&fd) {
            Some(entry) => {
                let (reader, writer) = match side {
                    Side::Read => (true, entry.writer.is_some()),
                    Side::Write => (entry.reader.is_some(), true),
                };
                let data = token(fd, entry.generation);
                let mask = interest(reader, writer);
                // The caller may have closed and reopened the fd behind our back,
                // which silently drops it from epoll: re-add it in that case.
                match epoll.modify(fd, mask, data) {
                    Err(Errno(libc::ENOENT)) => epoll.add(fd, mask, data)?,
                    other => other?,
                }
                let slot = match side {
                    Side::Read => &mut entry.reader,
                    Side::Write => &mut entry.writer,
                };
                Ok(slot.replace(handle))
            }
            None => {
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1).max(1);
                let mask = interest(side == Side::Read, side == Side::Write);
                epoll.add(fd, mask, token(fd, generation))?;
                let (reader, writer) = match side {
                    Side::Read => (Some(handle), None),
                    Side::Write => (None, Some(handle)),
                };
                self.fds.insert(
                    fd,
                    Entry {
                        reader,
                        writer,
                        generation,
                    },
                );
                Ok(None)
            }
        }
    }

    /// Removes one side of `fd` and returns its handle, if there was one.
    pub fn remove(&mut self, epoll: &Epoll, fd: RawFd, side: Side) -> Option<H> {
        let entry = self.fds.get_mut(&fd)?;
        let removed = match side {
            Side::Read => entry.reader.take(),
            Side::Write => entry.writer.take(),
        };
        removed.as_ref()?;
        if entry.reader.is_none() && entry.writer.is_none() {
            // ENOENT/EBADF: the caller already closed the fd; nothing to undo.
            let _ = epoll.delete(fd);
            self.fds.remove(&fd);
        } else {
            let mask = interest(entry.reader.is_some(), entry.writer.is_some());
            let _ = epoll.modify(fd, mask, token(fd, entry.generation));
        }
        removed
    }

    /// The handles an epoll event is for: (reader, writer), each present only
    /// when the event reports that side ready. Stale events give nothing.
    pub fn lookup(&self, data: u64, events: u32) -> (Option<&H>, Option<&H>) {
        let (fd, generation) = untoken(data);
        let Some(entry) = self.fds.get(&fd) else {
            return (None, None);
        };
        if entry.generation != generation {
            return (None, None);
        }
        // As selectors does: anything besides EPOLLOUT (hang-up, error) wakes
        // the reader, anything besides EPOLLIN wakes the writer.
        let reader = if events & !WRITABLE != 0 {
            entry.reader.as_ref()
        } else {
            None
        };
        let writer = if events & !READABLE != 0 {
            entry.writer.as_ref()
        } else {
            None
        };
        (reader, writer)
    }

    /// Unregisters everything, returning the handles (on loop close).
    pub fn drain(&mut self, epoll: &Epoll) -> Vec<H> {
        let mut out = Vec::new();
        for (fd, entry) in self.fds.drain() {
            let _ = epoll.delete(fd);
            out.extend(entry.reader);
            out.extend(entry.writer);
        }
        out
    }

    /// Whether `fd` has a (reader, writer).
    pub fn sides(&self, fd: RawFd) -> (bool, bool) {
        self.fds
            .get(&fd)
            .map_or((false, false), |e| (e.reader.is_some(), e.writer.is_some()))
    }

    /// Whether no fd is registered.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Visits every handle (for the garbage collector).
    pub fn handles(&self) -> impl Iterator<Item = &H> {
        self.fds.values().flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }
}

fn interest(reader: bool, writer: bool) -> u32 {
    (if reader { READABLE } else { 0 }) | (if writer { WRITABLE } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn wait(ep: &Epoll) -> Vec<(u64, u32)> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let n = ep.wait(&mut evs, Some(0)).unwrap();
        evs[..n].iter().map(|e| (e.u64, e.events)).collect()
    }

    #[test]
    fn reader_and_writer_share_one_registration() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg = Registry::default();
        let fd = a.as_raw_fd();
        assert_eq!(reg.add(&ep, fd, Side::Write, "w").unwrap(), None);
        assert_eq!(reg.add(&ep, fd, Side::Read, "r").unwrap(), None);
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let evs = wait(&ep);
        assert_eq!(evs.len(), 1);
        assert_eq!(reg.lookup(evs[0].0, evs[0].1), (Some(&"r"), Some(&"w")));
        assert_eq!(reg.remove(&ep, fd, Side::Write), Some("w"));
        let evs = wait(&ep);
        assert_eq!(reg.lookup(evs[0].0, evs[0].1), (Some(&"r"), None));
        assert_eq!(reg.remove(&ep, fd, Side::Write), None);
        assert_eq!(reg.remove(&ep, fd, Side::Read), Some("r"));
        assert!(wait(&ep).is_empty());
    }

    #[test]
    fn replacing_returns_the_old_handle() {
        let ep = Epoll::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let mut reg = Registry::default();
        reg.add(&ep, a.as_raw_fd(), Side::Read, 1).unwrap();
        assert_eq!(reg.add(&ep, a.as_raw_fd(), Side::Read, 2).unwrap(), Some(1));
    }

    #[test]
    fn stale_generation_is_ignored() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg = Registry::default();
        let fd = a.as_raw_fd();
        reg.add(&ep, fd, Side::Read, "old").unwrap();
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let stale = wait(&ep)[0];
        reg.remove(&ep, fd, Side::Read);
        reg.add(&ep, fd, Side::Read, "new").unwrap();
        assert_eq!(reg.lookup(stale.0, stale.1), (None, None));
        let fresh = wait(&ep)[0];
        assert_eq!(reg.lookup(fresh.0, fresh.1), (Some(&"new"), None));
    }

    #[test]
    fn bad_fd_leaves_registry_unchanged() {
        let ep = Epoll::new().unwrap();
        let mut reg: Registry<u8> = Registry::default();
        assert_eq!(reg.add(&ep, 100_000, Side::Read, 1), Err(Errno(libc::EBADF)));
        assert_eq!(reg.handles().count(), 0);
    }
}
