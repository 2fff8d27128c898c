//! Command line: the echo benchmark's server options that apply without a loop.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: echo-limit (--tcp HOST:PORT | --unix PATH) [--cpu N]

  --tcp HOST:PORT   listen on a loopback address ([::1]:PORT for IPv6); port 0 picks one
  --unix PATH       listen on a Unix socket (a stale socket file there is removed)
  --cpu N           pin the server to CPU N

Once listening it prints `READY <address> pid=<pid>` (`tcp:127.0.0.1:PORT`, `unix:PATH`) and
echoes every connection until SIGTERM or SIGINT, then exits 0. Exits 2 on bad arguments.";

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub address: Address,
    pub cpu: Option<usize>,
}

/// Parses the arguments after the program name. `Err(USAGE)` means help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut address, mut cpu) = (None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.into());
        }
        let Some(value) = inline.or_else(|| it.next()) else {
            return Err(format!("{name} needs a value"));
        };
        let parsed = match name.as_str() {
            "--tcp" => Some(Address::Tcp(loopback(&value)?)),
            "--unix" if value.is_empty() => return Err("--unix needs a path".into()),
            "--unix" => Some(Address::Unix(value.into())),
            "--cpu" => {
                cpu = Some(value.parse().map_err(|_| format!("--cpu {value}: not a CPU number"))?);
                None
            }
            _ => return Err(format!("unknown option {name} (--help lists them)")),
        };
        if parsed.is_some() {
            if address.is_some() {
                return Err("give one of --tcp and --unix, once".into());
            }
            address = parsed;
        }
    }
    let address = address.ok_or("--tcp or --unix is required")?;
    Ok(Args { address, cpu })
}

/// A HOST:PORT on loopback: the benchmark never leaves the machine.
fn loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("--tcp {text}: not HOST:PORT (an IP address and a port)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("--tcp {text}: {} is not a loopback address", addr.ip()));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Args, String> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn addresses_and_cpu() {
        let a = parse_str("--tcp 127.0.0.1:0 --cpu 1").unwrap();
        assert_eq!(a.address, Address::Tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(a.cpu, Some(1));
        let a = parse_str("--tcp=[::1]:8000").unwrap();
        assert_eq!(a.address, Address::Tcp("[::1]:8000".parse().unwrap()));
        let a = parse_str("--unix /tmp/x.sock").unwrap();
        assert_eq!((a.address, a.cpu), (Address::Unix("/tmp/x.sock".into()), None));
    }

    #[test]
    fn refusals() {
        for (line, says) in [
            ("--tcp 0.0.0.0:80", "not a loopback"),
            ("--tcp 192.168.1.1:80", "not a loopback"),
            ("--tcp localhost:80", "not HOST:PORT"),
            ("--tcp 127.0.0.1:0 --unix /tmp/x", "once"),
            ("--cpu 1", "required"),
            ("--cpu x --unix /tmp/x", "not a CPU"),
            ("--unix", "needs a value"),
            ("--port 1", "unknown option"),
        ] {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
        }
        assert_eq!(parse_str("--help").unwrap_err(), USAGE);
    }
}
