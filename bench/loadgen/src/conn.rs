//! One client connection: a non-blocking socket driving request/response exchanges, in
//! plain text or through a rustls session, on one long-lived socket or a new one for
//! every exchange (`--reconnect`).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use crate::exchange::Exchange;
use crate::sys;
use crate::tls::{self, TlsClient};

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

/// How every connection of a run reaches the server.
#[derive(Debug)]
pub struct Link {
    pub target: Target,
    /// Longest wait for a blocking TCP connect.
    pub timeout: Duration,
    /// Speak TLS with this client configuration.
    pub tls: Option<TlsClient>,
    /// A new connection for every exchange, closed once its reply is in.
    pub reconnect: bool,
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

    /// Starts a non-blocking connect; the flag says whether it has finished already.
    fn start(target: &Target) -> io::Result<(Self, bool)> {
        match target {
            Target::Tcp(addr) => {
                let (fd, done) = sys::start_connect_tcp(addr)?;
                let s = TcpStream::from(fd);
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), done))
            }
            Target::Unix(path) => {
                let (fd, done) = sys::start_connect_unix(path)?;
                Ok((Stream::Unix(UnixStream::from(fd)), done))
            }
        }
    }

    /// After a started connect made the socket writable: `Ok(true)` once connected, an
    /// error if the connect failed, `Ok(false)` if it is still under way.
    fn connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Stream::Tcp(s) => (s.take_error()?, s.peer_addr().map(drop)),
            Stream::Unix(s) => (s.take_error()?, s.peer_addr().map(drop)),
        };
        match (error, peer) {
            (Some(e), _) => Err(e),
            (None, Ok(())) => Ok(true),
            (None, Err(e)) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            (None, Err(e)) => Err(e),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket writer that notes a short write: the send buffer is then full, and the socket
/// writable again only at its next edge.
struct Noting<'a> {
    stream: &'a mut Stream,
    short: bool,
}

impl Write for Noting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.short |= n < buf.len();
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let n = self.stream.write_vectored(bufs)?;
        self.short |= n < want;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection and its exchange in progress.
///
/// Readiness is edge-triggered: `readable`/`writable` say the socket may have data or
/// room, and are cleared when a call would block (or a read or write comes back short,
/// which on Linux means the queue was emptied or filled). Writing and reading are
/// interleaved, so a large request never deadlocks against a server that echoes while it
/// reads. With TLS, records the server sends are read whenever they come (the handshake,
/// session tickets), and encrypted output waits in the session until the socket takes it.
pub struct Conn {
    link: Rc<Link>,
    /// None before the first connect, and between exchanges with `reconnect`.
    stream: Option<Stream>,
    tls: Option<ClientConnection>,
    exchange: Box<dyn Exchange>,
    in_flight: bool,
    /// Request bytes handed to the socket (or, with TLS, to the session).
    sent: usize,
    started: Instant,
    readable: bool,
    writable: bool,
    /// A started connect has not finished yet.
    connecting: bool,
    /// A socket opened since [`Conn::take_opened`] last looked.
    opened: bool,
    /// The TLS version and cipher suite of the first finished handshake.
    negotiated: Option<String>,
}

impl Conn {
    /// A connection with no socket yet: [`Conn::connect`] opens one, or, with `reconnect`,
    /// each [`Conn::begin`] does.
    pub fn new(link: Rc<Link>, exchange: Box<dyn Exchange>) -> Self {
        Conn {
            link,
            stream: None,
            tls: None,
            exchange,
            in_flight: false,
            sent: 0,
            started: Instant::now(),
            readable: false,
            writable: false,
            connecting: false,
            opened: false,
            negotiated: None,
        }
    }

    /// Connects, blocking (with TLS, the handshake is left to [`Conn::drive`]).
    pub fn connect(&mut self) -> io::Result<()> {
        let stream = Stream::connect(&self.link.target, self.link.timeout)?;
        self.attach(stream, true).map_err(io::Error::other)
    }

    /// Starts a non-blocking connect, and a TLS session on it.
    fn open(&mut self) -> Result<(), String> {
        let (stream, done) = Stream::start(&self.link.target).map_err(|e| format!("connect: {e}"))?;
        self.attach(stream, done)
    }

    fn attach(&mut self, stream: Stream, connected: bool) -> Result<(), String> {
        self.tls = self.link.tls.as_ref().map(TlsClient::session).transpose()?;
        self.stream = Some(stream);
        self.connecting = !connected;
        self.readable = false;
        self.writable = connected;
        self.opened = true;
        Ok(())
    }

    /// Closes the socket; a TLS session first says so (close_notify), if the socket takes it.
    fn close(&mut self) {
        if let (Some(tls), Some(stream)) = (self.tls.as_mut(), self.stream.as_mut()) {
            tls.send_close_notify();
            let _ = tls.write_tls(stream);
        }
        self.tls = None;
        self.stream = None;
        self.connecting = false;
        self.readable = false;
        self.writable = false;
    }

    /// The socket opened since the last call, to watch for readiness.
    pub fn take_opened(&mut self) -> Option<RawFd> {
        if !std::mem::take(&mut self.opened) {
            return None;
        }
        self.stream.as_ref().map(Stream::fd)
    }

    /// How long the exchange in flight has been waiting, if there is one.
    pub fn waiting_for(&self, now: Instant) -> Option<Duration> {
        self.in_flight.then(|| now - self.started)
    }

    /// Whether the connection is still connecting or in its TLS handshake.
    pub fn handshaking(&self) -> bool {
        self.connecting || self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// The TLS version and cipher suite agreed, once a handshake has finished.
    pub fn negotiated(&self) -> Option<&str> {
        self.negotiated.as_deref()
    }

    /// Starts the next exchange (with `reconnect`, on a new connection); the next
    /// [`Conn::drive`] sends it.
    pub fn begin(&mut self, now: Instant) -> Result<(), String> {
        self.exchange.start();
        self.in_flight = true;
        self.sent = 0;
        self.started = now;
        if self.link.reconnect {
            self.open()?;
        }
        Ok(())
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
            if self.stream.is_none() {
                return Ok(());
            }
            if self.connecting {
                if !self.writable {
                    return Ok(());
                }
                let connected = self.stream.as_ref().map_or(Ok(false), Stream::connected);
                match connected {
                    Ok(true) => self.connecting = false,
                    Ok(false) => self.writable = false, // woken early: wait for the next edge
                    Err(e) => return Err(format!("connect to {}: {e}", self.link.target)),
                }
                continue;
            }
            let progress = if self.tls.is_some() {
                self.step_tls(buf, done)?
            } else {
                self.step_plain(buf, done)?
            };
            if !progress {
                return Ok(());
            }
        }
    }

    /// One send or receive on a plain socket; false if there is nothing to do.
    fn step_plain(&mut self, buf: &mut [u8], done: &mut impl FnMut(Duration) -> bool) -> Result<bool, String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        let size = self.exchange.request().len();
        if self.in_flight && self.writable && self.sent < size {
            match stream.write(&self.exchange.request()[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    self.writable = self.sent == size;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        } else if self.in_flight && self.readable && self.sent > 0 {
            match stream.read(buf) {
                Ok(0) => return Err("server closed the connection during an exchange".into()),
                Ok(n) => {
                    self.readable = n == buf.len();
                    if self.exchange.on_reply(&buf[..n])? {
                        self.complete(done)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// One step through the TLS session: hand it the request, send its records, or
    /// receive records; false if there is nothing to do.
    fn step_tls(&mut self, buf: &mut [u8], done: &mut impl FnMut(Duration) -> bool) -> Result<bool, String> {
        let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
            return Ok(false);
        };
        let request = self.exchange.request();
        if self.in_flight && self.sent < request.len() {
            // Buffered in the session (no limit: one request at a time), encrypted as soon
            // as the handshake allows.
            let n = tls
                .writer()
                .write(&request[self.sent..])
                .map_err(|e| format!("TLS: {e}"))?;
            self.sent += n;
            if n > 0 {
                return Ok(true);
            }
        }
        if self.writable && tls.wants_write() {
            let mut out = Noting { stream, short: false };
            match tls.write_tls(&mut out) {
                Ok(_) => self.writable = !out.short,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send: {e}")),
            }
            return Ok(true);
        }
        if self.readable {
            // Records are read from the socket into one half of `buf`, and decrypted into
            // the other: one large read, rather than the session's own 4 KiB ones.
            let (net, plain) = buf.split_at_mut(buf.len() / 2);
            match stream.read(net) {
                Ok(0) if self.in_flight => return Err("server closed the connection during an exchange".into()),
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => {
                    self.readable = n == net.len();
                    self.receive(&net[..n], plain, done)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Feeds received records to the session and what they decrypt to to the exchange.
    fn receive(
        &mut self,
        mut data: &[u8],
        plain: &mut [u8],
        done: &mut impl FnMut(Duration) -> bool,
    ) -> Result<(), String> {
        while !data.is_empty() {
            let Some(tls) = self.tls.as_mut() else {
                return Ok(());
            };
            if tls.read_tls(&mut data).map_err(|e| format!("TLS: {e}"))? == 0 {
                return Err("server sent data after ending the TLS session".into());
            }
            if let Err(e) = tls.process_new_packets() {
                // The session has queued an alert saying why; the server may as well hear it.
                if let Some(stream) = self.stream.as_mut() {
                    let _ = tls.write_tls(stream);
                }
                return Err(format!("TLS: {e}"));
            }
            if self.negotiated.is_none() && !tls.is_handshaking() {
                self.negotiated = tls::describe(tls);
            }
            loop {
                let Some(tls) = self.tls.as_mut() else {
                    return Ok(());
                };
                let n = match tls.reader().read(plain) {
                    Ok(0) => return Err("server ended the TLS session (close_notify)".into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                };
                if !self.in_flight {
                    return Err(format!("{n} bytes from the server with no request in flight"));
                }
                if self.exchange.on_reply(&plain[..n])? {
                    self.complete(done)?;
                    if self.link.reconnect {
                        return Ok(()); // anything left was the closed connection's
                    }
                }
            }
        }
        Ok(())
    }

    /// The reply is in: reports it, closes the connection with `reconnect`, and starts the
    /// next exchange if `done` says so.
    fn complete(&mut self, done: &mut impl FnMut(Duration) -> bool) -> Result<(), String> {
        let now = Instant::now();
        self.in_flight = false;
        if self.link.reconnect {
            self.close();
        }
        if done(now - self.started) {
            self.begin(now)?;
        }
        Ok(())
    }
}
