//! Command line: `--name value` or `--name=value`; every number is range-checked so a
//! typo cannot start an endless or absurd run.

use std::time::Duration;

use crate::conn::Target;
use crate::exchange::Mode;
use crate::run::Config;
use crate::tls::TlsOptions;

pub const USAGE: &str = "\
usage: loadgen --target ADDR [options]

  --target ADDR       [tcp:]HOST:PORT ([::1]:PORT for IPv6) or unix:PATH
  --mode MODE         exchange protocol: echo (default), or http: HTTP/1.1 keep-alive
                      GET requests, each reply a 200 with a --size-byte body
  --connections N     concurrent connections, each one exchange at a time (default 1)
  --size BYTES        echo: request size; http: response body size (default 1024)
  --warmup SECS       warm-up before measuring (default 1)
  --duration SECS     measured time (default 5)
  --requests N        instead of a duration: exactly N exchanges in all, no warm-up
  --timeout SECS      connect timeout, and longest wait for any reply (default 10)
  --pause-us N        pause between a reply and the next request on a connection (default 0)
  --server-pid PID    also report this process's CPU time over the measured window
  --cpu N             pin the load generator to CPU N
  --tls               speak TLS (rustls, TLS 1.3 or 1.2); the server's certificate must
                      chain to --tls-ca and be valid for --tls-name, or the run fails
  --tls-ca PATH       PEM file of the CA certificate(s) to trust; required with --tls
  --tls-name NAME     name the certificate must be valid for (default localhost)
  --reconnect         a new connection for every exchange: connect, TLS handshake (a full
                      one, no resumption), one request and its reply, close. Exchanges/s
                      are then connections/s, handshakes/s with --tls; latency covers all
                      of it. Without it, connections (and handshakes) are made before the
                      clock starts and kept.

Prints one JSON object; exits 1 if any exchange failed, 2 on bad arguments.";

/// Parsed command line.
pub struct Args {
    pub config: Config,
    pub cpu: Option<usize>,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut target = None;
    let mut cfg = Config {
        target: Target::Unix("".into()),
        mode: Mode::Echo,
        connections: 1,
        size: 1024,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(5),
        requests: None,
        timeout: Duration::from_secs(10),
        server_pid: None,
        pause: Duration::ZERO,
        tls: None,
        reconnect: false,
    };
    let mut cpu = None;
    let mut timed = false;
    let (mut tls, mut tls_ca, mut tls_name) = (false, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.into());
        }
        if name == "--tls" || name == "--reconnect" {
            if inline.is_some() {
                return Err(format!("{name} takes no value"));
            }
            *(if name == "--tls" { &mut tls } else { &mut cfg.reconnect }) = true;
            continue;
        }
        let value = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        match name.as_str() {
            "--target" => target = Some(Target::parse(&value)?),
            "--mode" => cfg.mode = Mode::parse(&value)?,
            "--connections" => cfg.connections = number(&name, &value, 1, 10_000)? as usize,
            "--size" => cfg.size = number(&name, &value, 1, 64 << 20)? as usize,
            "--warmup" => (cfg.warmup, timed) = (seconds(&name, &value, 0.0, 600.0)?, true),
            "--duration" => (cfg.duration, timed) = (seconds(&name, &value, 0.001, 3600.0)?, true),
            "--requests" => cfg.requests = Some(number(&name, &value, 1, 1_000_000_000)?),
            "--timeout" => cfg.timeout = seconds(&name, &value, 0.001, 600.0)?,
            "--server-pid" => cfg.server_pid = Some(number(&name, &value, 1, u32::MAX as u64)? as u32),
            "--pause-us" => cfg.pause = Duration::from_micros(number(&name, &value, 0, 1_000_000)?),
            "--cpu" => cpu = Some(number(&name, &value, 0, 1023)? as usize),
            "--tls-ca" => tls_ca = Some(value.into()),
            "--tls-name" => tls_name = Some(value),
            _ => return Err(format!("unknown option {name}\n\n{USAGE}")),
        }
    }
    cfg.target = target.ok_or_else(|| format!("--target is required\n\n{USAGE}"))?;
    if timed && cfg.requests.is_some() {
        return Err("--requests counts exchanges: it takes no --warmup or --duration".into());
    }
    cfg.tls = match (tls, tls_ca) {
        (true, Some(ca)) => Some(TlsOptions {
            ca,
            name: tls_name.unwrap_or_else(|| "localhost".into()),
        }),
        (true, None) => return Err("--tls needs --tls-ca (the CA file to trust)".into()),
        (false, Some(_)) => return Err("--tls-ca applies only with --tls".into()),
        (false, None) if tls_name.is_some() => return Err("--tls-name applies only with --tls".into()),
        (false, None) => None,
    };
    Ok(Args { config: cfg, cpu })
}

fn number(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} takes a whole number from {min} to {max}, not {value:?}"
        )),
    }
}

fn seconds(name: &str, value: &str, min: f64, max: f64) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if (min..=max).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{name} takes seconds from {min} to {max}, not {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn options_and_defaults() {
        let a = parse_str("--target 127.0.0.1:80 --connections=64 --size 10240 --duration 2.5 --cpu 1").unwrap();
        assert_eq!(a.config.target, Target::Tcp("127.0.0.1:80".parse().unwrap()));
        assert_eq!((a.config.connections, a.config.size), (64, 10240));
        assert_eq!(a.config.duration, Duration::from_millis(2500));
        assert_eq!(a.config.warmup, Duration::from_secs(1));
        assert_eq!(a.cpu, Some(1));
        let u = parse_str("--target unix:/tmp/x.sock --requests 100").unwrap();
        assert_eq!(u.config.target, Target::Unix("/tmp/x.sock".into()));
        assert_eq!(u.config.requests, Some(100));
        let v6 = parse_str("--target tcp:[::1]:8000").unwrap();
        assert_eq!(v6.config.target.to_string(), "tcp:[::1]:8000");
        assert_eq!((v6.config.tls, v6.config.reconnect), (None, false));
    }

    #[test]
    fn tls_and_reconnect() {
        let a = parse_str("--target 127.0.0.1:80 --tls --tls-ca ca.pem --reconnect").unwrap();
        let tls = a.config.tls.unwrap();
        assert_eq!((tls.ca.to_str(), tls.name.as_str()), (Some("ca.pem"), "localhost"));
        assert!(a.config.reconnect);
        let b = parse_str("--tls-name=example.test --tls --target 127.0.0.1:80 --tls-ca=ca.pem").unwrap();
        assert_eq!(b.config.tls.unwrap().name, "example.test");
        assert!(parse_str("--target unix:/tmp/x --reconnect").unwrap().config.reconnect);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            "--connections 1",
            "--target 127.0.0.1:80 --connections 0",
            "--target 127.0.0.1:80 --duration 1e9",
            "--target 127.0.0.1:80 --warmup -1",
            "--target 127.0.0.1:80 --requests 10 --duration 1",
            "--target 127.0.0.1:80 --mode gopher",
            "--target 127.0.0.1:80 --size",
            "--target 127.0.0.1:80 --frobnicate 1",
            "--target nonsense",
            "--target 127.0.0.1:80 --tls",
            "--target 127.0.0.1:80 --tls-ca ca.pem",
            "--target 127.0.0.1:80 --tls-name localhost",
            "--target 127.0.0.1:80 --tls=yes --tls-ca ca.pem",
            "--target 127.0.0.1:80 --reconnect=1",
        ] {
            assert!(parse_str(bad).is_err(), "{bad}");
        }
    }
}
