//! The event loop of a run: N connections on one epoll, a warm-up, then the measurement.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn::{Conn, Link, Target};
use crate::exchange::Mode;
use crate::stats::Histogram;
use crate::sys::{self, Epoll};
use crate::tls::{TlsClient, TlsOptions};

/// Error messages kept for the report; the count covers all of them.
const MAX_MESSAGES: usize = 5;
/// Scratch read buffer: a 100 KiB reply usually arrives in one read.
const READ_BUF: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub mode: Mode,
    pub connections: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Run exactly this many exchanges in all (no warm-up) instead of for `duration`.
    pub requests: Option<u64>,
    /// Connecting, and waiting for any progress, fails after this long.
    pub timeout: Duration,
    /// Measure this process's CPU time over the measured window (the server's).
    pub server_pid: Option<u32>,
    /// Time between a reply and the connection's next request (zero: back to back).
    pub pause: Duration,
    /// Speak TLS, verifying the server against these.
    pub tls: Option<TlsOptions>,
    /// A new connection (and TLS handshake) for every exchange, closed after its reply.
    pub reconnect: bool,
}

#[derive(Default)]
pub struct Outcome {
    /// Exchanges completed in the measured window.
    pub requests: u64,
    pub elapsed: Duration,
    pub latency: Histogram,
    pub errors: u64,
    pub messages: Vec<String>,
    pub server_cpu: Option<Duration>,
    /// This process's CPU time over the measured window: near the window's length, the
    /// client would be the bottleneck.
    pub client_cpu: Option<Duration>,
    /// TLS version and cipher suite, from the first finished handshake.
    pub tls: Option<String>,
}

impl Outcome {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }
}

/// Runs the load. Errors (refused connection, short or wrong reply, a server that stops
/// answering) end the run early and are counted in the outcome; `Err` is for a client
/// that cannot run at all.
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let link = Rc::new(Link {
        target: cfg.target.clone(),
        timeout: cfg.timeout,
        tls: cfg.tls.as_ref().map(TlsClient::new).transpose()?,
        reconnect: cfg.reconnect,
    });
    let mut out = Outcome::default();
    let mut conns: Vec<Conn> = (0..cfg.connections)
        .map(|i| Conn::new(link.clone(), cfg.mode.exchange(cfg.size, i)))
        .collect();
    // Long-lived connections are all made before the clock starts; with `reconnect`,
    // connecting is part of every exchange.
    if !cfg.reconnect {
        for (i, c) in conns.iter_mut().enumerate() {
            if let Err(e) = c.connect() {
                out.error(format!(
                    "connect to {} (connection {} of {}): {e}",
                    cfg.target,
                    i + 1,
                    cfg.connections
                ));
                return Ok(out);
            }
            watch(&epoll, c, i)?;
        }
        if link.tls.is_some() && !handshake(&epoll, &mut conns, cfg.timeout, &mut out)? {
            return Ok(out);
        }
    }

    let counting = cfg.requests.is_some();
    let limit = cfg.requests.unwrap_or(u64::MAX);
    let start = Instant::now();
    // Exchanges completed during the warm-up are not counted.
    let mut measuring = counting || cfg.warmup.is_zero();
    let mut until = start + if measuring { cfg.duration } else { cfg.warmup };
    let mut measure_start = start;
    let mut cpu_start = server_cpu(cfg, &mut out);
    let mut own_start = own_cpu();
    let (mut issued, mut completed) = (0u64, 0u64);
    let mut next_check = start + cfg.timeout;
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; cfg.connections.clamp(1, 1024)];

    // Every connection starts its first exchange (fewer if the count is smaller).
    for (i, c) in conns.iter_mut().enumerate() {
        if issued < limit {
            issued += 1;
            if let Err(e) = c.begin(start) {
                out.error(format!("connection {}: {e}", i + 1));
                return Ok(out);
            }
            watch(&epoll, c, i)?;
        }
    }
    let mut pending: Vec<usize> = (0..conns.len()).collect(); // to drive without an event
                                                              // Connections pausing before their next request, in order of when it is due (the
                                                              // pause is the same for all, so appending keeps the order).
    let mut paused: VecDeque<(Instant, usize)> = VecDeque::new();

    loop {
        for &i in &pending {
            let mut done = |latency: Duration| {
                completed += 1;
                out.latency.record(latency);
                let more = issued < limit;
                issued += more as u64;
                if more && !cfg.pause.is_zero() {
                    paused.push_back((Instant::now() + cfg.pause, i));
                    return false;
                }
                more
            };
            if let Err(e) = conns[i].drive(&mut buf, &mut done) {
                out.error(format!("connection {}: {e}", i + 1));
            }
            watch(&epoll, &mut conns[i], i)?;
        }
        let now = Instant::now();
        let finished = if counting {
            completed >= limit
        } else {
            measuring && now >= until
        };
        if out.errors > 0 || finished {
            break;
        }
        if !counting && now >= until {
            // Warm-up over: measure from here; exchanges in flight count when they end.
            measuring = true;
            until = now + cfg.duration;
            measure_start = now;
            completed = 0;
            out.latency = Histogram::default();
            cpu_start = server_cpu(cfg, &mut out);
            own_start = own_cpu();
        }
        if now >= next_check {
            if stalled(&conns, now, cfg.timeout, &mut out) {
                break;
            }
            // A stuck exchange is found within 1.25 timeouts; scanning is rare and cheap.
            next_check = now + (cfg.timeout / 4).max(Duration::from_millis(1));
        }
        let mut wake = if counting { next_check } else { until.min(next_check) };
        if let Some(&(due, _)) = paused.front() {
            wake = wake.min(due);
        }
        let wait = wake.saturating_duration_since(now);
        let n = epoll.wait(&mut events, wait).map_err(|e| format!("epoll_wait: {e}"))?;
        pending.clear();
        for ev in &events[..n] {
            let (flags, token) = (ev.events, ev.u64 as usize);
            conns[token].ready(flags & sys::READ_EVENTS != 0, flags & sys::WRITE_EVENTS != 0);
            pending.push(token);
        }
        let now = Instant::now();
        while let Some(&(_, i)) = paused.front().filter(|(due, _)| *due <= now) {
            paused.pop_front();
            if let Err(e) = conns[i].begin(now) {
                out.error(format!("connection {}: {e}", i + 1));
            }
            watch(&epoll, &mut conns[i], i)?;
            pending.push(i);
        }
    }

    let end = Instant::now();
    if out.errors == 0 && !stalled(&conns, end, cfg.timeout, &mut out) && completed == 0 {
        out.error("no exchange completed in the measured window".into());
    }
    out.requests = completed;
    out.elapsed = end - measure_start;
    if let (Some(a), Some(b)) = (cpu_start, server_cpu(cfg, &mut out)) {
        out.server_cpu = Some(b.saturating_sub(a));
    }
    if let (Some(a), Some(b)) = (own_start, own_cpu()) {
        out.client_cpu = Some(b.saturating_sub(a));
    }
    out.tls = conns.iter().find_map(|c| c.negotiated().map(String::from));
    Ok(out)
}

/// Registers the connection's socket with epoll if it has a new one (token: its index).
fn watch(epoll: &Epoll, conn: &mut Conn, i: usize) -> Result<(), String> {
    match conn.take_opened() {
        Some(fd) => epoll.add(fd, i as u64).map_err(|e| format!("epoll_ctl: {e}")),
        None => Ok(()),
    }
}

/// Runs the TLS handshakes of long-lived connections, before any exchange; false (and
/// an error counted) if one fails or they take longer than `timeout`.
fn handshake(epoll: &Epoll, conns: &mut [Conn], timeout: Duration, out: &mut Outcome) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().clamp(1, 1024)];
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    loop {
        for &i in &pending {
            // No exchange is in flight, so none can complete.
            if let Err(e) = conns[i].drive(&mut buf, &mut |_| false) {
                out.error(format!("connection {}: {e}", i + 1));
                return Ok(false);
            }
        }
        let left = conns.iter().filter(|c| c.handshaking()).count();
        if left == 0 {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            out.error(format!(
                "TLS handshake not finished within {:.1} s on {left} connection(s)",
                timeout.as_secs_f64()
            ));
            return Ok(false);
        }
        let n = epoll
            .wait(&mut events, deadline - now)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        pending.clear();
        for ev in &events[..n] {
            let (flags, token) = (ev.events, ev.u64 as usize);
            conns[token].ready(flags & sys::READ_EVENTS != 0, flags & sys::WRITE_EVENTS != 0);
            pending.push(token);
        }
    }
}

/// Counts an error if some exchange has waited longer than `timeout`.
fn stalled(conns: &[Conn], now: Instant, timeout: Duration, out: &mut Outcome) -> bool {
    let stuck = conns.iter().filter(|c| c.waiting_for(now) > Some(timeout)).count();
    if stuck > 0 {
        out.error(format!(
            "no complete reply within {:.1} s on {stuck} connection(s)",
            timeout.as_secs_f64()
        ));
    }
    stuck > 0
}

fn own_cpu() -> Option<Duration> {
    sys::process_cpu_time(std::process::id()).ok()
}

fn server_cpu(cfg: &Config, out: &mut Outcome) -> Option<Duration> {
    let pid = cfg.server_pid?;
    sys::process_cpu_time(pid)
        .map_err(|e| out.error(format!("server CPU time of pid {pid}: {e}")))
        .ok()
}
