//! TLS and `--reconnect` runs against servers on threads of the test process: a rustls
//! echo server with a certificate made for the test run by a CA made for it too.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::conn::Target;
use crate::run::{run, Config, Outcome};
use crate::tests::{config, echo, tcp_server};
use crate::tls::TlsOptions;

/// The test run's certificates, made once: the server's, for `localhost` and 127.0.0.1,
/// signed by the CA in `ca`; `other_ca` signed nothing.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    server: Arc<ServerConfig>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        // One directory per test process; those of earlier, finished ones go.
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("loadgen-tls-test-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("loadgen-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new_ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (ca, other) = (new_ca("loadgen test CA"), new_ca("another CA"));
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server: Arc::new(
                ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![leaf.der().clone()],
                        PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der())),
                    )
                    .unwrap(),
            ),
            dir,
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.other_ca, other.pem()).unwrap();
        pki
    })
}

/// Serves `conns` TLS connections, each on its own thread, echoing until the client goes.
fn serve_tls<S: Read + Write + Send + 'static>(
    conns: usize,
    mut accept: impl FnMut() -> io::Result<S> + Send + 'static,
) {
    let config = pki().server.clone();
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok(sock) = accept() else { return };
            let session = ServerConnection::new(config.clone()).unwrap();
            thread::spawn(move || {
                let mut tls = StreamOwned::new(session, sock);
                let mut buf = vec![0u8; 65536];
                // Ends on close_notify (Ok(0)), a bare close or a failed handshake.
                while let Ok(n @ 1..) = tls.read(&mut buf) {
                    if tls.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn tls_tcp_server(conns: usize) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    serve_tls::<TcpStream>(conns, move || listener.accept().map(|(s, _)| s));
    Target::Tcp(addr)
}

fn tls(cfg: Config, ca: &Path, name: &str) -> Config {
    Config {
        tls: Some(TlsOptions {
            ca: ca.to_path_buf(),
            name: name.into(),
        }),
        ..cfg
    }
}

fn counted_tls(target: Target, connections: usize, size: usize, requests: u64) -> Outcome {
    let cfg = Config {
        requests: Some(requests),
        ..config(target, connections, size)
    };
    run(&tls(cfg, &pki().ca, "localhost")).unwrap()
}

#[test]
fn tls_exact_request_count_over_tcp() {
    let out = counted_tls(tls_tcp_server(4), 4, 1024, 1000);
    assert_eq!((out.errors, out.requests), (0, 1000), "{:?}", out.messages);
    assert!(
        out.tls.as_deref().unwrap().starts_with("TLSv1_3 TLS13_"),
        "{:?}",
        out.tls
    );
}

#[test]
fn tls_many_connections() {
    let out = counted_tls(tls_tcp_server(64), 64, 1024, 640);
    assert_eq!((out.errors, out.requests), (0, 640), "{:?}", out.messages);
}

#[test]
fn tls_timed_run_with_large_messages() {
    // 100 KiB each way, encrypted in records of 16 KiB: the client must read while it
    // writes, and flush what the session holds whenever the socket has room.
    let cfg = tls(config(tls_tcp_server(2), 2, 100 * 1024), &pki().ca, "localhost");
    let out = run(&cfg).unwrap();
    assert_eq!(out.errors, 0, "{:?}", out.messages);
    assert!(out.requests > 0);
    let json = crate::report::json(&cfg, &out);
    assert!(
        json.contains("\"tls\": \"TLSv1_3 ") && json.contains("\"reconnect\": false"),
        "{json}"
    );
}

#[test]
fn tls_over_a_unix_socket_and_an_ip_name() {
    let path = pki().dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    serve_tls::<UnixStream>(2, move || listener.accept().map(|(s, _)| s));
    let out = counted_tls(Target::Unix(path), 2, 10 * 1024, 200);
    assert_eq!((out.errors, out.requests), (0, 200), "{:?}", out.messages);
    // The certificate names 127.0.0.1 too.
    let cfg = Config {
        requests: Some(10),
        ..config(tls_tcp_server(1), 1, 100)
    };
    let out = run(&tls(cfg, &pki().ca, "127.0.0.1")).unwrap();
    assert_eq!((out.errors, out.requests), (0, 10), "{:?}", out.messages);
}

/// A run that must fail in the handshake, never exchanging anything.
fn refused(cfg: Config, why: &str) {
    let cfg = Config {
        requests: Some(10),
        ..cfg
    };
    let out = run(&cfg).unwrap();
    assert_eq!((out.errors, out.requests), (1, 0), "{:?}", out.messages);
    assert!(out.messages[0].contains(why), "{:?}", out.messages);
}

#[test]
fn wrong_server_name_is_an_error() {
    let cfg = config(tls_tcp_server(1), 1, 64);
    refused(tls(cfg, &pki().ca, "other.example"), "not valid for name");
    let cfg = Config {
        reconnect: true,
        ..config(tls_tcp_server(1), 1, 64)
    };
    refused(tls(cfg, &pki().ca, "127.0.0.2"), "not valid for name");
}

#[test]
fn untrusted_certificate_is_an_error() {
    let cfg = config(tls_tcp_server(1), 1, 64);
    refused(tls(cfg, &pki().other_ca, "localhost"), "UnknownIssuer");
}

#[test]
fn plaintext_server_is_an_error() {
    // The echo server sends the ClientHello back: not a ServerHello.
    let cfg = Config {
        timeout: Duration::from_secs(2),
        ..config(tcp_server(1, echo), 1, 64)
    };
    let cfg = tls(cfg, &pki().ca, "localhost");
    let out = run(&Config {
        requests: Some(10),
        ..cfg
    })
    .unwrap();
    assert_eq!((out.errors, out.requests), (1, 0), "{:?}", out.messages);
    assert!(out.messages[0].contains("TLS"), "{:?}", out.messages);
}

#[test]
fn unusable_ca_file_stops_the_run() {
    let missing = pki().dir.join("missing.pem");
    let cfg = tls(config(tls_tcp_server(0), 1, 64), &missing, "localhost");
    assert!(run(&cfg).err().unwrap().contains("--tls-ca"));
    let empty = pki().dir.join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let cfg = tls(config(tls_tcp_server(0), 1, 64), &empty, "localhost");
    assert!(run(&cfg).err().unwrap().contains("no certificate"));
}

#[test]
fn reconnect_plain() {
    // Each of the 60 exchanges is a connection of its own.
    let cfg = Config {
        reconnect: true,
        requests: Some(60),
        ..config(tcp_server(60, echo), 3, 1024)
    };
    let out = run(&cfg).unwrap();
    assert_eq!((out.errors, out.requests), (0, 60), "{:?}", out.messages);
    assert_eq!(out.tls, None);
}

#[test]
fn reconnect_tls_counts_handshakes() {
    let cfg = Config {
        reconnect: true,
        requests: Some(100),
        ..config(tls_tcp_server(100), 4, 1024)
    };
    let out = run(&tls(cfg, &pki().ca, "localhost")).unwrap();
    assert_eq!((out.errors, out.requests), (0, 100), "{:?}", out.messages);
    assert!(out.tls.is_some());
    // Large messages on fresh connections too.
    let cfg = Config {
        reconnect: true,
        requests: Some(10),
        ..config(tls_tcp_server(10), 2, 100 * 1024)
    };
    let out = run(&tls(cfg, &pki().ca, "localhost")).unwrap();
    assert_eq!((out.errors, out.requests), (0, 10), "{:?}", out.messages);
}

#[test]
fn reconnect_over_a_unix_socket() {
    let path = pki().dir.join("reconnect.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    serve_tls::<UnixStream>(20, move || listener.accept().map(|(s, _)| s));
    let cfg = Config {
        reconnect: true,
        requests: Some(20),
        ..config(Target::Unix(path), 2, 1024)
    };
    let out = run(&tls(cfg, &pki().ca, "localhost")).unwrap();
    assert_eq!((out.errors, out.requests), (0, 20), "{:?}", out.messages);
}

#[test]
fn reconnect_refused_is_an_error() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
    let cfg = Config {
        reconnect: true,
        requests: Some(5),
        ..config(Target::Tcp(addr), 1, 64)
    };
    let out = run(&cfg).unwrap();
    assert_eq!((out.errors, out.requests), (1, 0), "{:?}", out.messages);
    assert!(out.messages[0].contains("refused"), "{:?}", out.messages);
}
