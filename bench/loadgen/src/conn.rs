//! One client connection: a non-blocking socket driving request/response exchanges.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::exchange::Exchange;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    /// `unix:PATH`, or `[tcp:]HOST:PORT` (IPv6 in brackets: `[::1]:8000`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Target::Unix(path.into()));
        }
        let hostport = s.strip_prefix("tcp:").unwrap_or(s);
        let mut addrs = hostport
            .to_socket_addrs()
            .map_err(|e| format!("bad target {s:?}: {e}"))?;
        addrs
            .next()
            .map(Target::Tcp)
            .ok_or_else(|| format!("{s:?} resolves to no address"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp:{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects (blocking), then switches to non-blocking. A TCP connect gives up after
    /// `timeout`; a Unix one waits only while the listen backlog is full (std offers no
    /// timeout there), and the benchmark driver bounds the whole process anyway.
    fn connect(target: &Target, timeout: Duration) -> io::Result<Self> {
        let stream = match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)?;
                s.set_nodelay(true)?; // small requests go out at once, as a real client's
                Stream::Tcp(s)
            }
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        match &stream {
            Stream::Tcp(s) => s.set_nonblocking(true)?,
            Stream::Unix(s) => s.set_nonblocking(true)?,
        }
        Ok(stream)
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

/// A connection and its exchange in progress.
///
/// Readiness is edge-triggered: `readable`/`writable` say the socket may have data or
/// room, and are cleared when a call would block (or a read comes back short, which on
/// Linux means the receive queue was emptied). Writing and reading are interleaved, so
/// a large request never deadlocks against a server that echoes while it reads.
pub struct Conn {
    stream: Stream,
    exchange: Box<dyn Exchange>,
    in_flight: bool,
    sent: usize,
    started: Instant,
    readable: bool,
    writable: bool,
}

impl Conn {
    pub fn connect(target: &Target, timeout: Duration, exchange: Box<dyn Exchange>) -> io::Result<Self> {
        let stream = Stream::connect(target, timeout)?;
        let now = Instant::now();
        Ok(Conn {
            stream,
            exchange,
            in_flight: false,
            sent: 0,
            started: now,
            readable: false,
            writable: true,
        })
    }

    pub fn fd(&self) -> RawFd {
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// How long the exchange in flight has been waiting, if there is one.
    pub fn waiting_for(&self, now: Instant) -> Option<Duration> {
        self.in_flight.then(|| now - self.started)
    }

    /// Starts the next exchange; the next [`Conn::drive`] sends it.
    pub fn begin(&mut self, now: Instant) {
        self.exchange.start();
        self.in_flight = true;
        self.sent = 0;
        self.started = now;
    }

    /// Records readiness from an epoll event.
    pub fn ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// Does all the I/O the socket allows now. `done(latency)` is called for each
    /// completed exchange and says whether to start another. `buf` is scratch space for
    /// reads, shared by all connections.
    pub fn drive(&mut self, buf: &mut [u8], done: &mut impl FnMut(Duration) -> bool) -> Result<(), String> {
        loop {
            let size = self.exchange.request().len();
            if self.in_flight && self.writable && self.sent < size {
                match self.stream.write(&self.exchange.request()[self.sent..]) {
                    Ok(n) => {
                        self.sent += n;
                        self.writable = self.sent == size;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("send: {e}")),
                }
            } else if self.in_flight && self.readable && self.sent > 0 {
                match self.stream.read(buf) {
                    Ok(0) => return Err("server closed the connection during an exchange".into()),
                    Ok(n) => {
                        self.readable = n == buf.len();
                        if self.exchange.on_reply(&buf[..n])? {
                            let now = Instant::now();
                            self.in_flight = false;
                            if done(now - self.started) {
                                self.begin(now);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("receive: {e}")),
                }
            } else {
                return Ok(());
            }
        }
    }
}
