//! The server: a listener, a stop signal and the connections, all in one epoll.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use crate::args::Address;
use crate::sys::{self, Epoll, READABLE, TROUBLE, WRITABLE};

/// Most bytes one readable event takes from a connection (what asyncio's transports ask for).
pub const READ_SIZE: usize = 256 * 1024;
/// Above this many bytes waiting to be written, a connection is not read from...
pub const HIGH_WATER: usize = 1024 * 1024;
/// ...until the client has taken all but this many.
pub const LOW_WATER: usize = HIGH_WATER / 4;
/// Accept queue length, as the Python servers ask for.
pub const BACKLOG: i32 = 1024;
/// Events taken from epoll at a time.
const EVENTS: usize = 256;

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
/// Connection `i` has the token `FIRST_CONN + i`.
const FIRST_CONN: u64 = 2;

/// A listening socket; a Unix one removes its file when dropped.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds and listens at `address`, non-blocking. A stale Unix socket file is removed.
    pub fn bind(address: &Address) -> io::Result<Self> {
        let listener = match address {
            Address::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr)?),
            Address::Unix(path) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                Listener::Unix(UnixListener::bind(path)?, path.clone())
            }
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
        }
        sys::set_backlog(listener.fd(), BACKLOG)?;
        Ok(listener)
    }

    /// The address in the load generator's form: `tcp:127.0.0.1:PORT`, `tcp:[::1]:PORT`,
    /// `unix:PATH`.
    pub fn address(&self) -> io::Result<String> {
        Ok(match self {
            Listener::Tcp(l) => format!("tcp:{}", l.local_addr()?),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        })
    }

    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// The next waiting connection, non-blocking (TCP: with Nagle off, as asyncio's
    /// transports set it); None once the queue is empty.
    fn accept(&self) -> io::Result<Option<Stream>> {
        let accepted = match self {
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(s))
            }),
            Listener::Unix(l, _) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(s))
            }),
        };
        match accepted {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// What became of a connection after an event.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Open,
    Closed,
}

/// A connection and the bytes it still owes its client.
struct Conn {
    stream: Stream,
    /// Bytes to write back; those before `sent` have gone.
    pending: Vec<u8>,
    sent: usize,
    /// Not reading: too much pending (until below LOW_WATER), or the client has shut down.
    paused: bool,
    eof: bool,
    /// What epoll watches the connection for now.
    interest: u32,
}

impl Conn {
    fn pending_len(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// One read (up to the buffer's size), echoed at once; what the kernel does not take
    /// is kept. An empty read is the client's shutdown: the connection closes once its
    /// bytes have gone.
    fn read_and_echo(&mut self, buf: &mut [u8]) -> State {
        let n = match self.stream.read(buf) {
            Ok(0) => {
                self.eof = true;
                return self.flush();
            }
            Ok(n) => n,
            Err(e) if retry_later(&e) => return State::Open,
            Err(_) => return State::Closed, // reset: the client is gone, and so are its bytes
        };
        if self.pending_len() > 0 {
            // Older bytes go first.
            if self.sent > 0 && self.sent >= self.pending.len() / 2 {
                self.pending.drain(..self.sent);
                self.sent = 0;
            }
            self.pending.extend_from_slice(&buf[..n]);
            return self.flush();
        }
        let mut done = 0;
        while done < n {
            match self.stream.write(&buf[done..n]) {
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return State::Closed,
            }
        }
        self.pending.clear();
        self.sent = 0;
        self.pending.extend_from_slice(&buf[done..n]);
        State::Open
    }

    /// Writes pending bytes until they are gone or the kernel takes no more.
    fn flush(&mut self) -> State {
        while self.sent < self.pending.len() {
            match self.stream.write(&self.pending[self.sent..]) {
                Ok(w) => self.sent += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return State::Open,
                Err(_) => return State::Closed,
            }
        }
        self.pending.clear();
        self.sent = 0;
        if self.eof {
            State::Closed
        } else {
            State::Open
        }
    }

    /// What to watch for now: writability only while bytes wait, readability unless paused.
    fn wanted(&mut self) -> u32 {
        let pending = self.pending_len();
        if pending > HIGH_WATER {
            self.paused = true;
        } else if pending <= LOW_WATER {
            self.paused = false;
        }
        let read = if self.paused || self.eof { 0 } else { READABLE };
        read | if pending > 0 { WRITABLE } else { 0 }
    }
}

fn retry_later(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// The whole server. `run` serves until SIGTERM or SIGINT.
pub struct Server {
    epoll: Epoll,
    listener: Listener,
    /// Kept open while epoll watches it.
    _signals: OwnedFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
}

impl Server {
    /// `signals`: a descriptor that becomes readable when the server is to stop (see
    /// [`sys::stop_signals`]).
    pub fn new(listener: Listener, signals: OwnedFd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(listener.fd(), LISTENER, READABLE)?;
        epoll.add(signals.as_raw_fd(), SIGNALS, READABLE)?;
        Ok(Server {
            epoll,
            listener,
            _signals: signals,
            conns: Vec::new(),
            free: Vec::new(),
            buf: vec![0; READ_SIZE],
        })
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Serves until the stop signal; then every connection is closed (dropped).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            let n = self.epoll.wait(&mut events, None)?;
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                match token {
                    LISTENER => self.accept_all()?,
                    SIGNALS => return Ok(()), // a stop signal is pending: done
                    t => self.serve((t - FIRST_CONN) as usize, flags)?,
                }
            }
        }
    }

    /// Accepts every waiting connection. A failed accept (the client gave up, or no
    /// descriptors are left) is reported and the others are served on.
    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let stream = match self.listener.accept() {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    eprintln!("echo-limit: accept: {e}");
                    return Ok(());
                }
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.epoll.add(stream.fd(), FIRST_CONN + slot as u64, READABLE)?;
            self.conns[slot] = Some(Conn {
                stream,
                pending: Vec::new(),
                sent: 0,
                paused: false,
                eof: false,
                interest: READABLE,
            });
        }
    }

    /// Handles an event of connection `slot`: bytes waiting go out first, then one read.
    fn serve(&mut self, slot: usize, flags: u32) -> io::Result<()> {
        // A connection closed earlier in this batch may have left events behind; its slot
        // may even hold a new connection, for which the event is then spurious: a write
        // with nothing pending does nothing, and a read finds nothing and waits.
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let mut state = State::Open;
        if flags & (WRITABLE | TROUBLE) != 0 && conn.pending_len() > 0 {
            state = conn.flush();
        }
        if state == State::Open && flags & (READABLE | TROUBLE) != 0 && !conn.paused && !conn.eof {
            state = conn.read_and_echo(&mut self.buf);
        }
        let wanted = conn.wanted();
        if state == State::Closed || wanted == 0 {
            self.conns[slot] = None; // closing the socket also takes it out of the epoll
            self.free.push(slot);
        } else if wanted != conn.interest {
            self.epoll.modify(conn.stream.fd(), FIRST_CONN + slot as u64, wanted)?;
            conn.interest = wanted;
        }
        Ok(())
    }
}
