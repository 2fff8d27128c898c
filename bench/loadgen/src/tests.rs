//! Whole runs against small servers on threads of the test process, correct and broken.
//! Every server thread ends when its clients close, and every run is bounded by
//! `--timeout`, so a bug fails a test instead of hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::Duration;

use crate::conn::Target;
use crate::exchange::Mode;
use crate::run::{run, Config, Outcome};

/// What a test server does with the bytes it read.
pub(crate) type Reply = fn(&mut Vec<u8>);

pub(crate) fn echo(_: &mut Vec<u8>) {}

/// Serves `conns` connections on `listener` (TCP or Unix), each on its own thread.
macro_rules! serve {
    ($listener:expr, $conns:expr, $reply:expr) => {{
        let (listener, conns, reply): (_, usize, Reply) = ($listener, $conns, $reply);
        thread::spawn(move || {
            for _ in 0..conns {
                let Ok((mut s, _)) = listener.accept() else { return };
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        let mut out = buf[..n].to_vec();
                        reply(&mut out);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }};
}

pub(crate) fn tcp_server(conns: usize, reply: Reply) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    serve!(listener, conns, reply);
    Target::Tcp(addr)
}

pub(crate) fn config(target: Target, connections: usize, size: usize) -> Config {
    Config {
        target,
        mode: Mode::Echo,
        connections,
        size,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(200),
        requests: None,
        timeout: Duration::from_secs(5),
        server_pid: None,
        pause: Duration::ZERO,
        tls: None,
        reconnect: false,
    }
}

pub(crate) fn counted(target: Target, connections: usize, size: usize, requests: u64) -> Outcome {
    let cfg = Config {
        requests: Some(requests),
        ..config(target, connections, size)
    };
    run(&cfg).unwrap()
}

#[test]
fn exact_request_count_over_tcp() {
    let out = counted(tcp_server(4, echo), 4, 1024, 1000);
    assert_eq!((out.errors, out.requests), (0, 1000), "{:?}", out.messages);
    assert_eq!(out.latency.count(), 1000);
}

#[test]
fn fewer_requests_than_connections() {
    let out = counted(tcp_server(3, echo), 3, 10, 2);
    assert_eq!((out.errors, out.requests), (0, 2), "{:?}", out.messages);
}

#[test]
fn timed_run_with_large_messages() {
    // 100 KiB in both directions at once: the client must read while it writes.
    let cfg = config(tcp_server(2, echo), 2, 100 * 1024);
    let out = run(&cfg).unwrap();
    assert_eq!(out.errors, 0, "{:?}", out.messages);
    assert!(out.requests > 0);
    assert!(out.elapsed >= Duration::from_millis(200) && out.elapsed < Duration::from_secs(2));
    let p50 = out.latency.percentile(0.5).unwrap();
    assert!(p50 <= out.latency.percentile(0.999).unwrap());
}

#[test]
fn unix_socket() {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    serve!(listener, 2, echo);
    let out = counted(Target::Unix(path.clone()), 2, 10 * 1024, 500);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((out.errors, out.requests), (0, 500), "{:?}", out.messages);
}

#[test]
fn ipv6_loopback_when_available() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        return;
    }; // no IPv6 here
    let addr: SocketAddr = listener.local_addr().unwrap();
    serve!(listener, 1, echo);
    let out = counted(Target::Tcp(addr), 1, 100, 100);
    assert_eq!((out.errors, out.requests), (0, 100), "{:?}", out.messages);
}

#[test]
fn corrupted_reply_is_an_error() {
    let out = counted(tcp_server(1, |b| b[0] ^= 0xff), 1, 64, 10);
    assert_eq!(out.errors, 1);
    assert!(out.messages[0].contains("differs"), "{:?}", out.messages);
}

#[test]
fn longer_reply_is_an_error() {
    let out = counted(tcp_server(1, |b| b.push(b'!')), 1, 64, 10);
    assert!(out.messages[0].contains("longer"), "{:?}", out.messages);
}

#[test]
fn short_reply_times_out() {
    let cfg = Config {
        timeout: Duration::from_millis(100),
        ..config(tcp_server(1, |b| b.truncate(10)), 1, 64)
    };
    let out = run(&cfg).unwrap();
    assert_eq!(out.errors, 1);
    assert!(out.messages[0].contains("no complete reply"), "{:?}", out.messages);
}

#[test]
fn server_closing_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || drop(listener.accept())); // accepts, then closes at once
    let out = counted(Target::Tcp(addr), 1, 64, 10);
    assert_eq!(out.errors, 1);
    assert!(
        out.messages[0].contains("closed") || out.messages[0].contains("reset"),
        "{:?}",
        out.messages
    );
}

#[test]
fn refused_connection_is_an_error() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
    let out = counted(Target::Tcp(addr), 1, 64, 10);
    assert_eq!((out.errors, out.requests), (1, 0));
    assert!(
        out.messages[0].contains("connect to tcp:127.0.0.1"),
        "{:?}",
        out.messages
    );
}

#[test]
fn server_cpu_time_is_measured() {
    let cfg = Config {
        server_pid: Some(std::process::id()),
        ..config(tcp_server(1, echo), 1, 1024)
    };
    let out = run(&cfg).unwrap();
    assert_eq!(out.errors, 0, "{:?}", out.messages);
    assert!(out.server_cpu.unwrap() > Duration::ZERO); // this process serves and loads
    let json = crate::report::json(&cfg, &out);
    assert!(json.contains("\"server_cpu_us_per_request\": ") && !json.contains("per_request\": null"));
}

#[test]
fn pause_between_requests() {
    let cfg = Config {
        pause: Duration::from_millis(2),
        requests: Some(20),
        ..config(tcp_server(2, echo), 2, 100)
    };
    let out = run(&cfg).unwrap();
    assert_eq!((out.errors, out.requests), (0, 20), "{:?}", out.messages);
    // Ten exchanges per connection, nine pauses each between them.
    assert!(out.elapsed >= Duration::from_millis(18), "{:?}", out.elapsed);
}
