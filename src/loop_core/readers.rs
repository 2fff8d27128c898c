//! The `add_reader` / `add_writer` registry: fd → (reader, writer), each a
//! handle or a transport's read side (see `io_callback`).
//!
//! The fds here belong to the caller, not the loop. Each registration carries a
//! generation number in the epoll event data, so an event that was already
//! queued for an fd the caller removed (and the kernel may have reused) is
//! recognised as stale and dropped instead of reaching the new owner.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;

use crate::sys::epoll::{Epoll, EDGE, READABLE, WRITABLE};
use crate::sys::Errno;

/// Which side of an fd a handle waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `add_reader`.
    Read,
    /// `add_writer`.
    Write,
}

/// One registration: the handle to run, and the object it was made for.
pub struct Reg<H, F> {
    pub handle: H,
    /// The file object (socket) the caller registered, if any: lets
    /// `remove_reader(obj)` find its registration once `obj.fileno()` fails,
    /// and lets a transport or operation remove only what it registered.
    pub file: Option<F>,
    /// Whether this registration holds one of `file`'s io references (a
    /// `socket.socket`'s `_io_refs`), to be released when it leaves.
    pub io_ref: bool,
    /// Installed by [`Registry::add_op`] (a `sock_*` operation), not
    /// [`Registry::add`]. Kept here, in what would be padding, rather than
    /// as the slot's own tag: that keeps a slot, and the entry for every
    /// registered fd, one word smaller.
    op: bool,
}

impl<H, F> Reg<H, F> {
    pub fn new(handle: H, file: Option<F>, io_ref: bool) -> Self {
        Reg {
            handle,
            file,
            io_ref,
            op: false,
        }
    }
}

#[cfg(test)]
impl<H> Reg<H, ()> {
    /// A registration made with a bare fd.
    pub fn bare(handle: H) -> Self {
        Reg::new(handle, None, false)
    }
}

/// What one side of a registered fd holds.
enum Slot<H, F> {
    Empty,
    /// A registration: `add_reader`/`add_writer` or a transport
    /// (level-triggered, as asyncio), or, with `op` set, a `sock_*`
    /// operation waiting for readiness.
    Waiting(Reg<H, F>),
    /// A `sock_*` operation finished here and the next one will likely wait
    /// on the same side: the kernel registration is kept (see [`Registry::park`]).
    Parked,
}

impl<H, F> Slot<H, F> {
    fn kind(&self) -> Kind {
        match self {
            Slot::Empty => Kind::Empty,
            Slot::Waiting(r) if r.op => Kind::Op,
            Slot::Waiting(_) => Kind::Callback,
            Slot::Parked => Kind::Parked,
        }
    }

    fn reg(&self) -> Option<&Reg<H, F>> {
        match self {
            Slot::Waiting(r) => Some(r),
            Slot::Empty | Slot::Parked => None,
        }
    }

    fn handle(&self) -> Option<&H> {
        self.reg().map(|r| &r.handle)
    }

    fn take_reg(&mut self, replacement: Slot<H, F>) -> Option<Reg<H, F>> {
        match std::mem::replace(self, replacement) {
            Slot::Waiting(r) => Some(r),
            Slot::Empty | Slot::Parked => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Empty,
    Callback,
    Op,
    Parked,
}

/// The epoll mask for a pair of slots. With no callback on the fd the
/// registration is edge-triggered and includes parked sides: a `sock_*`
/// operation only waits after its system call said EAGAIN, so an edge always
/// follows, and a parked side that nobody waits on cannot make the loop spin.
/// Callbacks keep asyncio's level-triggered semantics, so parked sides are left
/// out of their mask.
fn mask_for(reader: Kind, writer: Kind) -> u32 {
    let level = reader == Kind::Callback || writer == Kind::Callback;
    let wanted = |k: Kind| matches!(k, Kind::Callback | Kind::Op) || (k == Kind::Parked && !level);
    let mask = interest(wanted(reader), wanted(writer));
    if mask != 0 && !level {
        mask | EDGE
    } else {
        mask
    }
}

struct Entry<H, O, F> {
    reader: Slot<H, F>,
    writer: Slot<H, F>,
    /// Matches the high half of the epoll data this fd was registered with.
    generation: u32,
    /// The mask the kernel holds for this fd; 0 while not registered.
    registered: u32,
    /// The object whose `sock_*` operations parked here, to recognise the same
    /// open socket later (the fd number alone may have been closed and reused).
    owner: Option<O>,
}

impl<H, O, F> Entry<H, O, F> {
    fn slot(&mut self, side: Side) -> &mut Slot<H, F> {
        match side {
            Side::Read => &mut self.reader,
            Side::Write => &mut self.writer,
        }
    }

    fn kinds_with(&self, side: Side, kind: Kind) -> (Kind, Kind) {
        match side {
            Side::Read => (kind, self.writer.kind()),
            Side::Write => (self.reader.kind(), kind),
        }
    }
}

/// What [`Registry::add`] and [`Registry::add_op`] took out; released by the
/// caller once it no longer borrows the registry.
pub struct Replaced<H, O, F> {
    /// The registration this one replaced on the same side, of the same file.
    pub handle: Option<Reg<H, F>>,
    /// Registrations made for a file that was closed since (the number now
    /// names another file): they must never see the new file's events.
    pub stale: Vec<Reg<H, F>>,
    pub owner: Option<O>,
}

/// Hashes an fd with one multiplication. The default SipHash guards against
/// keys chosen by an attacker, which fd numbers are not; with it the lookups
/// of one echo request (an event, a `sock_*` call and its end) cost about
/// 1,000 instructions more.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, n: i32) {
        // Fibonacci hashing: spreads consecutive fds over the high bits,
        // which the table also uses.
        self.0 = u64::from(n as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Registered readers and writers, kept in step with the epoll interest set.
pub struct Registry<H, O = (), F = ()> {
    fds: HashMap<RawFd, Entry<H, O, F>, BuildHasherDefault<FdHasher>>,
    next_generation: u32,
}

impl<H, O, F> Default for Registry<H, O, F> {
    fn default() -> Self {
        Registry {
            fds: HashMap::default(),
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

fn new_generation(next: &mut u32) -> u32 {
    let generation = *next;
    *next = next.wrapping_add(1).max(1);
    generation
}

impl<H, O, F> Entry<H, O, F> {
    fn unregistered_new() -> Self {
        Entry {
            reader: Slot::Empty,
            writer: Slot::Empty,
            generation: 0,
            registered: 0,
            owner: None,
        }
    }

    /// Tells the kernel the mask for `kinds` if it differs from what it has
    /// (always when `verify`); on error nothing changes. `Ok(false)`: the fd
    /// has nothing left to watch and was unregistered. `ENOENT`: the number
    /// no longer names the registered file (closed, maybe reused), which
    /// silently dropped it from epoll.
    fn sync(
        &mut self,
        epoll: &Epoll,
        fd: RawFd,
        next_generation: &mut u32,
        kinds: (Kind, Kind),
        verify: bool,
    ) -> Result<bool, Errno> {
        let want = mask_for(kinds.0, kinds.1);
        if want == 0 {
            if self.registered != 0 {
                // ENOENT/EBADF: the caller already closed the fd; nothing to undo.
                let _ = epoll.delete(fd);
            }
            return Ok(false);
        }
        if self.registered == want && !verify {
            return Ok(true);
        }
        if self.registered == 0 {
            // A new generation, so that events still queued for an earlier
            // registration of the number (or of the old file, still open
            // elsewhere, say in a forked child) cannot reach this one.
            let generation = new_generation(next_generation);
            epoll.add(fd, want, token(fd, generation))?;
            self.generation = generation;
        } else {
            epoll.modify(fd, want, token(fd, self.generation))?;
        }
        self.registered = want;
        Ok(true)
    }

    /// After a failed or emptying [`Entry::sync`]: the kernel watches
    /// nothing, so parked sides are gone. Whether the entry can be dropped.
    fn unregistered(&mut self) -> bool {
        self.registered = 0;
        for side in [Side::Read, Side::Write] {
            if matches!(self.slot(side), Slot::Parked) {
                *self.slot(side) = Slot::Empty;
            }
        }
        matches!(self.reader, Slot::Empty) && matches!(self.writer, Slot::Empty)
    }

    /// Installs `new` on `side` after checking the kernel's registration
    /// (always when `verify`). Slots left from a file the number no longer
    /// names (the kernel lost the registration, or it is found gone now) are
    /// evicted into `stale`: they never see the new file's events.
    fn install(
        &mut self,
        epoll: &Epoll,
        fd: RawFd,
        next_generation: &mut u32,
        side: Side,
        new: Slot<H, F>,
        verify: bool,
    ) -> Result<Replaced<H, O, F>, Errno> {
        let new_kind = new.kind();
        // A slot that waits while the kernel holds nothing for the fd belongs
        // to a file that was closed (a failed system call unregistered it).
        let mut lost = self.registered == 0 && (self.reader.reg().is_some() || self.writer.reg().is_some());
        let kinds_for = |entry: &Self, lost: bool| {
            let mut kinds = entry.kinds_with(side, new_kind);
            let other = match side {
                Side::Read => &mut kinds.1,
                Side::Write => &mut kinds.0,
            };
            // Parked sides do not survive a callback; lost ones are stale.
            if lost || (new_kind == Kind::Callback && *other == Kind::Parked) {
                *other = Kind::Empty;
            }
            kinds
        };
        let kinds = kinds_for(self, lost);
        match self.sync(epoll, fd, next_generation, kinds, verify) {
            Ok(_) => {}
            Err(Errno(libc::ENOENT)) if self.registered != 0 => {
                self.registered = 0;
                lost = true;
                let kinds = kinds_for(self, true);
                self.sync(epoll, fd, next_generation, kinds, true)?;
            }
            Err(e) => return Err(e),
        }
        let mut stale = Vec::new();
        let mut owner = None;
        if lost {
            for s in [Side::Read, Side::Write] {
                stale.extend(self.slot(s).take_reg(Slot::Empty));
            }
            // Returned, not dropped: the caller releases it outside the borrow.
            owner = self.owner.take();
        } else if new_kind == Kind::Callback {
            for s in [Side::Read, Side::Write] {
                if matches!(self.slot(s), Slot::Parked) {
                    *self.slot(s) = Slot::Empty;
                }
            }
        }
        let handle = self.slot(side).take_reg(new);
        Ok(Replaced { handle, stale, owner })
    }
}

impl<H, O, F> Registry<H, O, F> {
    /// Installs a level-triggered callback on one side of `fd`, replacing
    /// (and returning) any previous registration. Parked sides are discarded.
    /// On error nothing changes.
    pub fn add(&mut self, epoll: &Epoll, fd: RawFd, side: Side, reg: Reg<H, F>) -> Result<Replaced<H, O, F>, Errno> {
        let Registry { fds, next_generation } = self;
        let entry = fds.entry(fd).or_insert_with(Entry::unregistered_new);
        // The caller may have closed and reopened the fd: always check.
        let reg = Reg { op: false, ..reg };
        match entry.install(epoll, fd, next_generation, side, Slot::Waiting(reg), true) {
            Ok(mut replaced) => {
                if replaced.owner.is_none() {
                    replaced.owner = entry.owner.take();
                }
                Ok(replaced)
            }
            Err(e) => {
                if entry.registered == 0 && entry.reader.reg().is_none() && entry.writer.reg().is_none() {
                    fds.remove(&fd);
                }
                Err(e)
            }
        }
    }

    /// Whether `fd` is registered on behalf of an owner that `is_owner`
    /// recognises (see [`Registry::add_op`]).
    pub fn owned_by(&self, fd: RawFd, is_owner: impl FnOnce(&O) -> bool) -> bool {
        self.fds.get(&fd).and_then(|e| e.owner.as_ref()).is_some_and(is_owner)
    }

    /// Installs a `sock_*` operation on one side of `fd`. `owner` `None`
    /// means the caller checked with [`Registry::owned_by`] that the fd still
    /// refers to the socket it was registered for, so a kept registration is
    /// reused without a system call; otherwise the kernel's registration is
    /// verified and `owner` recorded. On error nothing changes.
    pub fn add_op(
        &mut self,
        epoll: &Epoll,
        fd: RawFd,
        side: Side,
        reg: Reg<H, F>,
        owner: Option<O>,
    ) -> Result<Replaced<H, O, F>, Errno> {
        let Registry { fds, next_generation } = self;
        let entry = fds.entry(fd).or_insert_with(Entry::unregistered_new);
        let verify = owner.is_some();
        let reg = Reg { op: true, ..reg };
        match entry.install(epoll, fd, next_generation, side, Slot::Waiting(reg), verify) {
            Ok(mut replaced) => {
                if let Some(new) = owner {
                    // `None` when `install` already returned the old owner.
                    if let Some(old) = entry.owner.replace(new) {
                        replaced.owner = Some(old);
                    }
                }
                Ok(replaced)
            }
            Err(e) => {
                if entry.registered == 0 && entry.reader.reg().is_none() && entry.writer.reg().is_none() {
                    fds.remove(&fd);
                }
                Err(e)
            }
        }
    }

    /// A `sock_*` operation is over: if `is_mine` recognises the registration
    /// on that side, it is taken out and returned, and the side stays in the
    /// interest set (edge-triggered, no system call) for the next operation.
    pub fn park(
        &mut self,
        epoll: &Epoll,
        fd: RawFd,
        side: Side,
        is_mine: impl FnOnce(&Reg<H, F>) -> bool,
    ) -> Option<Reg<H, F>> {
        let Registry { fds, next_generation } = self;
        let entry = fds.get_mut(&fd)?;
        match entry.slot(side) {
            Slot::Waiting(r) if r.op && is_mine(r) => {}
            _ => return None,
        }
        let kinds = entry.kinds_with(side, Kind::Parked);
        // An error: the fd is gone (closed), and the registration with it.
        let keep = entry.sync(epoll, fd, next_generation, kinds, false).unwrap_or(false);
        let reg = entry.slot(side).take_reg(Slot::Parked);
        if !keep && entry.unregistered() {
            fds.remove(&fd);
        }
        reg
    }

    /// A parked side of the registration `data` reported an event nobody
    /// waits for: stop watching it, so it cannot wake the loop again.
    pub fn unpark(&mut self, epoll: &Epoll, data: u64, side: Side) {
        let (fd, generation) = untoken(data);
        let Registry { fds, next_generation } = self;
        let Some(entry) = fds.get_mut(&fd) else { return };
        if entry.generation != generation || !matches!(entry.slot(side), Slot::Parked) {
            return;
        }
        let kinds = entry.kinds_with(side, Kind::Empty);
        let keep = entry.sync(epoll, fd, next_generation, kinds, false).unwrap_or(false);
        *entry.slot(side) = Slot::Empty;
        if !keep && entry.unregistered() {
            fds.remove(&fd);
        }
    }

    /// Removes one side of `fd` and returns its registration, if there was
    /// one and `is_mine` recognises it (a registration somebody else made on
    /// the same number stays). A parked side is dropped too, but reported as
    /// nothing (no reader).
    pub fn remove(
        &mut self,
        epoll: &Epoll,
        fd: RawFd,
        side: Side,
        is_mine: impl FnOnce(&Reg<H, F>) -> bool,
    ) -> Option<Reg<H, F>> {
        let Registry { fds, next_generation } = self;
        let entry = fds.get_mut(&fd)?;
        let mine = match entry.slot(side) {
            Slot::Empty => false,
            Slot::Waiting(r) => is_mine(r),
            Slot::Parked => true,
        };
        if !mine {
            return None;
        }
        let kinds = entry.kinds_with(side, Kind::Empty);
        // A failed MOD means the fd is gone; the registration with it.
        let keep = entry.sync(epoll, fd, next_generation, kinds, false).unwrap_or(false);
        let removed = entry.slot(side).take_reg(Slot::Empty);
        if !keep && entry.unregistered() {
            fds.remove(&fd);
        }
        removed
    }

    /// The fd whose `side` registration `is_mine` recognises (by the object
    /// it was made for, once that object no longer tells its fd).
    pub fn find(&self, side: Side, mut is_mine: impl FnMut(&Reg<H, F>) -> bool) -> Option<RawFd> {
        self.fds.iter().find_map(|(&fd, e)| {
            let slot = match side {
                Side::Read => &e.reader,
                Side::Write => &e.writer,
            };
            slot.reg().filter(|r| is_mine(r)).map(|_| fd)
        })
    }

    /// The handles an epoll event is for: (reader, writer), each present only
    /// when the event reports that side ready, and which parked sides it hit.
    /// Stale events give nothing.
    pub fn lookup(&self, data: u64, events: u32) -> Lookup<'_, H> {
        let (fd, generation) = untoken(data);
        let Some(entry) = self.fds.get(&fd) else {
            return Lookup::default();
        };
        if entry.generation != generation {
            return Lookup::default();
        }
        // As selectors does: anything besides EPOLLOUT (hang-up, error) wakes
        // the reader, anything besides EPOLLIN wakes the writer.
        let read = events & !WRITABLE != 0;
        let write = events & !READABLE != 0;
        Lookup {
            reader: if read { entry.reader.handle() } else { None },
            writer: if write { entry.writer.handle() } else { None },
            parked_reader: read && matches!(entry.reader, Slot::Parked),
            parked_writer: write && matches!(entry.writer, Slot::Parked),
        }
    }

    /// Unregisters everything, returning the registrations and owners (on
    /// loop close).
    pub fn drain(&mut self, epoll: &Epoll) -> (Vec<Reg<H, F>>, Vec<O>) {
        let mut regs = Vec::new();
        let mut owners = Vec::new();
        for (fd, mut entry) in self.fds.drain() {
            if entry.registered != 0 {
                let _ = epoll.delete(fd);
            }
            regs.extend(entry.reader.take_reg(Slot::Empty));
            regs.extend(entry.writer.take_reg(Slot::Empty));
            owners.extend(entry.owner);
        }
        (regs, owners)
    }

    /// Whether `fd` has a (reader, writer). Parked sides wait for nothing.
    pub fn sides(&self, fd: RawFd) -> (bool, bool) {
        self.fds.get(&fd).map_or((false, false), |e| {
            (e.reader.handle().is_some(), e.writer.handle().is_some())
        })
    }

    /// Whether no fd is registered.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// How many fds have a reader and a writer waiting (parked sides excluded).
    pub fn counts(&self) -> (usize, usize) {
        self.fds.values().fold((0, 0), |(r, w), e| {
            (
                r + usize::from(e.reader.handle().is_some()),
                w + usize::from(e.writer.handle().is_some()),
            )
        })
    }

    /// Visits every registration (for the garbage collector).
    pub fn regs(&self) -> impl Iterator<Item = &Reg<H, F>> {
        self.fds
            .values()
            .flat_map(|e| e.reader.reg().into_iter().chain(e.writer.reg()))
    }

    /// Visits every handle (for the garbage collector).
    pub fn handles(&self) -> impl Iterator<Item = &H> {
        self.regs().map(|r| &r.handle)
    }
}

/// See [`Registry::lookup`].
pub struct Lookup<'a, H> {
    pub reader: Option<&'a H>,
    pub writer: Option<&'a H>,
    pub parked_reader: bool,
    pub parked_writer: bool,
}

impl<H> Default for Lookup<'_, H> {
    fn default() -> Self {
        Lookup {
            reader: None,
            writer: None,
            parked_reader: false,
            parked_writer: false,
        }
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

    fn handles<H: Copy, O>(reg: &Registry<H, O>, ev: (u64, u32)) -> (Option<H>, Option<H>) {
        let hit = reg.lookup(ev.0, ev.1);
        (hit.reader.copied(), hit.writer.copied())
    }

    /// Puts a new socket's file at `fd` and returns that socket's peer. The
    /// old file's close removes it from epoll behind the registry's back;
    /// `dup2` does both in one step: tests run in parallel, so a plain close
    /// could hand the number to another.
    fn replace_file(fd: RawFd) -> UnixStream {
        let (c, d) = UnixStream::pair().unwrap();
        // SAFETY: `c` is open and owned here; `fd` is open and owned by the
        // caller's socket, which owns the new file from now on.
        assert_eq!(unsafe { libc::dup2(c.as_raw_fd(), fd) }, fd);
        d
    }

    #[test]
    fn parked_op_keeps_its_registration() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg: Registry<&str, u8> = Registry::default();
        let fd = a.as_raw_fd();
        reg.add_op(&ep, fd, Side::Read, Reg::bare("op1"), Some(7)).unwrap();
        assert!(wait(&ep).is_empty());
        assert!(reg.park(&ep, fd, Side::Read, |r| r.handle == "other").is_none());
        assert_eq!(
            reg.park(&ep, fd, Side::Read, |r| r.handle == "op1").map(|r| r.handle),
            Some("op1")
        );
        assert_eq!(reg.sides(fd), (false, false));
        assert!(reg.owned_by(fd, |o| *o == 7));
        // Trusted: no system call, the kernel still has the edge-triggered fd.
        reg.add_op(&ep, fd, Side::Read, Reg::bare("op2"), None).unwrap();
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let evs = wait(&ep);
        assert_eq!(handles(&reg, evs[0]), (Some("op2"), None));
        // Edge-triggered: unread data is not reported again.
        assert!(wait(&ep).is_empty());
        reg.park(&ep, fd, Side::Read, |r| r.handle == "op2");
        std::io::Write::write_all(&mut b, b"y").unwrap();
        let evs = wait(&ep);
        let hit = reg.lookup(evs[0].0, evs[0].1);
        assert!(hit.parked_reader && hit.reader.is_none());
        // A parked side that fires is dropped, and with it the fd.
        reg.unpark(&ep, evs[0].0, Side::Read);
        assert!(reg.is_empty());
        std::io::Write::write_all(&mut b, b"z").unwrap();
        assert!(wait(&ep).is_empty());
    }

    #[test]
    fn callback_discards_parked_sides_and_is_level_triggered() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg: Registry<&str, u8> = Registry::default();
        let fd = a.as_raw_fd();
        reg.add_op(&ep, fd, Side::Write, Reg::bare("op"), Some(1)).unwrap();
        reg.park(&ep, fd, Side::Write, |_| true);
        let replaced = reg.add(&ep, fd, Side::Read, Reg::bare("cb")).unwrap();
        assert_eq!((replaced.handle.map(|r| r.handle), replaced.owner), (None, Some(1)));
        std::io::Write::write_all(&mut b, b"x").unwrap();
        for _ in 0..2 {
            let evs = wait(&ep);
            assert_eq!(evs.len(), 1);
            assert_eq!(evs[0].1 & WRITABLE, 0, "the parked writer was dropped");
            assert_eq!(handles(&reg, evs[0]), (Some("cb"), None));
        }
        assert_eq!(reg.remove(&ep, fd, Side::Read, |_| true).map(|r| r.handle), Some("cb"));
        assert!(reg.is_empty());
    }

    #[test]
    fn untrusted_op_on_a_reused_fd_registers_again() {
        let ep = Epoll::new().unwrap();
        let mut reg: Registry<&str, u8> = Registry::default();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        reg.add_op(&ep, fd, Side::Read, Reg::bare("old"), Some(1)).unwrap();
        reg.park(&ep, fd, Side::Read, |_| true);
        let mut d = replace_file(fd);
        reg.add_op(&ep, fd, Side::Read, Reg::bare("new"), Some(2)).unwrap();
        std::io::Write::write_all(&mut d, b"x").unwrap();
        let evs = wait(&ep);
        assert_eq!(handles(&reg, evs[0]), (Some("new"), None));
    }

    #[test]
    fn renewing_a_reused_fd_evicts_the_old_files_slots() {
        let ep = Epoll::new().unwrap();
        let mut reg: Registry<&str, u8> = Registry::default();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        reg.add_op(&ep, fd, Side::Read, Reg::bare("old op"), Some(1)).unwrap();
        let mut d = replace_file(fd);
        let replaced = reg.add(&ep, fd, Side::Write, Reg::bare("new cb")).unwrap();
        let stale: Vec<_> = replaced.stale.into_iter().map(|r| r.handle).collect();
        assert_eq!(stale, ["old op"]);
        assert_eq!(replaced.owner, Some(1), "the old file's owner is given back");
        std::io::Write::write_all(&mut d, b"x").unwrap();
        let evs = wait(&ep);
        assert_eq!(handles(&reg, evs[0]), (None, Some("new cb")));
        assert_eq!(reg.sides(fd), (false, true));
    }

    #[test]
    fn a_slot_the_kernel_lost_is_evicted_on_the_next_add() {
        let ep = Epoll::new().unwrap();
        let mut reg: Registry<&str, u8> = Registry::default();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        reg.add(&ep, fd, Side::Read, Reg::bare("old reader")).unwrap();
        reg.add(&ep, fd, Side::Write, Reg::bare("old writer")).unwrap();
        let mut d = replace_file(fd);
        // Removing one side fails in the kernel: the other is left over.
        let gone = reg.remove(&ep, fd, Side::Write, |_| true).map(|r| r.handle);
        assert_eq!(gone, Some("old writer"));
        let replaced = reg.add_op(&ep, fd, Side::Write, Reg::bare("new op"), Some(2)).unwrap();
        let stale: Vec<_> = replaced.stale.into_iter().map(|r| r.handle).collect();
        assert_eq!(stale, ["old reader"]);
        std::io::Write::write_all(&mut d, b"x").unwrap();
        for ev in wait(&ep) {
            assert_eq!(handles(&reg, ev).0, None);
        }
    }

    #[test]
    fn remove_spares_a_registration_that_is_not_mine() {
        let ep = Epoll::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let mut reg: Registry<&str, (), u8> = Registry::default();
        let fd = a.as_raw_fd();
        let mine = |file| Reg::new("h", Some(file), false);
        reg.add(&ep, fd, Side::Read, mine(2)).unwrap();
        assert!(reg.remove(&ep, fd, Side::Read, |r| r.file == Some(1)).is_none());
        assert_eq!(reg.sides(fd), (true, false));
        assert_eq!(reg.find(Side::Read, |r| r.file == Some(2)), Some(fd));
        assert_eq!(reg.find(Side::Write, |r| r.file == Some(2)), None);
        assert!(reg.remove(&ep, fd, Side::Read, |r| r.file == Some(2)).is_some());
        assert!(reg.is_empty());
    }

    #[test]
    fn reader_and_writer_share_one_registration() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg: Registry<&str> = Registry::default();
        let fd = a.as_raw_fd();
        assert_eq!(
            reg.add(&ep, fd, Side::Write, Reg::bare("w"))
                .unwrap()
                .handle
                .map(|r| r.handle),
            None
        );
        assert_eq!(
            reg.add(&ep, fd, Side::Read, Reg::bare("r"))
                .unwrap()
                .handle
                .map(|r| r.handle),
            None
        );
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let evs = wait(&ep);
        assert_eq!(evs.len(), 1);
        assert_eq!(handles(&reg, evs[0]), (Some("r"), Some("w")));
        assert_eq!(reg.remove(&ep, fd, Side::Write, |_| true).map(|r| r.handle), Some("w"));
        let evs = wait(&ep);
        assert_eq!(handles(&reg, evs[0]), (Some("r"), None));
        assert_eq!(reg.remove(&ep, fd, Side::Write, |_| true).map(|r| r.handle), None);
        assert_eq!(reg.remove(&ep, fd, Side::Read, |_| true).map(|r| r.handle), Some("r"));
        assert!(wait(&ep).is_empty());
    }

    #[test]
    fn replacing_returns_the_old_handle() {
        let ep = Epoll::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let mut reg: Registry<i32> = Registry::default();
        reg.add(&ep, a.as_raw_fd(), Side::Read, Reg::bare(1)).unwrap();
        assert_eq!(
            reg.add(&ep, a.as_raw_fd(), Side::Read, Reg::bare(2))
                .unwrap()
                .handle
                .map(|r| r.handle),
            Some(1)
        );
    }

    #[test]
    fn stale_generation_is_ignored() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut reg: Registry<&str> = Registry::default();
        let fd = a.as_raw_fd();
        reg.add(&ep, fd, Side::Read, Reg::bare("old")).unwrap();
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let stale = wait(&ep)[0];
        reg.remove(&ep, fd, Side::Read, |_| true);
        reg.add(&ep, fd, Side::Read, Reg::bare("new")).unwrap();
        assert_eq!(handles(&reg, stale), (None, None));
        let fresh = wait(&ep)[0];
        assert_eq!(handles(&reg, fresh), (Some("new"), None));
    }

    #[test]
    fn a_slot_is_no_larger_than_its_registration() {
        assert_eq!(
            std::mem::size_of::<Slot<&str, Box<u8>>>(),
            std::mem::size_of::<Reg<&str, Box<u8>>>()
        );
    }

    #[test]
    fn bad_fd_leaves_registry_unchanged() {
        let ep = Epoll::new().unwrap();
        let mut reg: Registry<u8> = Registry::default();
        assert_eq!(
            reg.add(&ep, 100_000, Side::Read, Reg::bare(1)).err(),
            Some(Errno(libc::EBADF))
        );
        assert_eq!(
            reg.add_op(&ep, 100_000, Side::Read, Reg::bare(1), Some(())).err(),
            Some(Errno(libc::EBADF))
        );
        assert!(reg.is_empty());
        assert_eq!(reg.handles().count(), 0);
    }
}
