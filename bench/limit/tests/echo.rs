//! The `echo-limit` binary as the benchmark runs it: start, READY line, echo, stop on a signal.
//! Every socket has a read timeout and every wait a deadline, so a bug fails a test instead
//! of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// A running server; killed if a test fails before stopping it.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-limit"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("no READY line");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("READY"), "{line:?}");
        let address = words.next().unwrap().to_string();
        assert_eq!(words.next(), Some(format!("pid={}", child.id()).as_str()), "{line:?}");
        Server { child, address }
    }

    /// Sends `signal` and waits for the exit.
    fn stop(mut self, signal: libc::c_int) -> ExitStatus {
        // SAFETY: kill takes a pid and a signal number; the child has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after signal {signal}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tcp(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.address.strip_prefix("tcp:").unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn unix(server: &Server) -> UnixStream {
    let s = UnixStream::connect(server.address.strip_prefix("unix:").unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` from another thread while this one reads the echo back (after `delay`),
/// so the server sees a client that is slow to read; returns what came back.
fn echo_concurrently<S>(stream: S, data: Vec<u8>, delay: Duration) -> Vec<u8>
where
    S: Read + Write + Send + Sync + 'static,
    for<'a> &'a S: Read + Write,
{
    let stream = std::sync::Arc::new(stream);
    let writer = {
        let stream = stream.clone();
        let data = data.clone();
        thread::spawn(move || (&*stream).write_all(&data).unwrap())
    };
    thread::sleep(delay);
    let mut back = vec![0; data.len()];
    (&*stream).read_exact(&mut back).unwrap();
    writer.join().unwrap();
    back
}

#[test]
fn tcp_echo_many_connections_then_sigterm() {
    let server = Server::start(&["--tcp", "127.0.0.1:0"]);
    assert!(server.address.starts_with("tcp:127.0.0.1:"), "{}", server.address);
    let mut conns: Vec<TcpStream> = (0..16).map(|_| tcp(&server)).collect();
    for round in 0..20u8 {
        for (i, c) in conns.iter_mut().enumerate() {
            let msg = pattern(1 + (i * 997 + round as usize * 4099) % 70_000, round);
            c.write_all(&msg).unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert!(back == msg, "connection {i}, round {round}");
        }
    }
    // A client that leaves with its echo unread must not disturb the others.
    let mut rude = tcp(&server);
    rude.write_all(&pattern(4 << 20, 7)).unwrap();
    drop(rude);
    let back = echo_concurrently(conns.pop().unwrap(), pattern(3 << 20, 9), Duration::ZERO);
    assert!(back == pattern(3 << 20, 9));
    assert!(server.stop(libc::SIGTERM).success());
}

#[test]
fn unix_slow_reader_then_sigint() {
    let path: PathBuf = std::env::temp_dir().join(format!("echo-limit-test-{}.sock", std::process::id()));
    std::fs::write(&path, b"stale").unwrap(); // replaced by the socket
    let server = Server::start(&["--unix", path.to_str().unwrap()]);
    assert_eq!(server.address, format!("unix:{}", path.display()));
    // 8 MiB while the reader waits: the kernel's buffers fill, the server buffers up to its
    // bound, stops reading, and resumes as the echo is read.
    let data = pattern(8 << 20, 3);
    let back = echo_concurrently(unix(&server), data.clone(), Duration::from_millis(200));
    assert!(back == data);
    let status = server.stop(libc::SIGINT);
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-limit"))
        .args(["--tcp", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
