//! What one request/response exchange sends and accepts: the protocol of a run.
//!
//! A connection drives any [`Exchange`]; adding a mode (an HTTP/1.1 keep-alive request
//! and its response, say) is a new implementation plus a name in [`Mode`].

use std::fmt;

use crate::http::HttpGet;

/// A request/response protocol, one exchange at a time on a connection.
pub trait Exchange {
    /// Prepares the next request (called before each one).
    fn start(&mut self);
    /// The current request's bytes.
    fn request(&self) -> &[u8];
    /// Checks reply bytes as they arrive: `Ok(true)` once the reply is complete, an error
    /// if they are not what the protocol allows (wrong bytes, too many).
    fn on_reply(&mut self, data: &[u8]) -> Result<bool, String>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Send `size` bytes, expect the same bytes back.
    Echo,
    /// HTTP/1.1 keep-alive `GET`, expect a 200 with a `size`-byte body.
    Http,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "echo" => Ok(Mode::Echo),
            "http" => Ok(Mode::Http),
            _ => Err(format!("unknown mode {s:?} (implemented: echo, http)")),
        }
    }

    /// The exchange for connection number `conn` of a run.
    pub fn exchange(self, size: usize, conn: usize) -> Box<dyn Exchange> {
        match self {
            Mode::Echo => Box::new(Echo::new(size, conn)),
            Mode::Http => Box::new(HttpGet::new(size, conn)),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
        })
    }
}

/// Echo: the reply must be the request, byte for byte. Each request starts with its
/// sequence number and the payload differs per connection, so a server that replays an
/// old buffer or mixes up connections fails instead of looking fast.
pub struct Echo {
    request: Vec<u8>,
    seq: u64,
    received: usize,
}

impl Echo {
    pub fn new(size: usize, conn: usize) -> Self {
        let request = (0..size)
            .map(|i| (i.wrapping_mul(31).wrapping_add(conn.wrapping_mul(7))) as u8)
            .collect();
        Echo {
            request,
            seq: 0,
            received: 0,
        }
    }
}

impl Exchange for Echo {
    fn start(&mut self) {
        self.seq += 1;
        let stamp = self.seq.to_le_bytes();
        let n = stamp.len().min(self.request.len());
        self.request[..n].copy_from_slice(&stamp[..n]);
        self.received = 0;
    }

    fn request(&self) -> &[u8] {
        &self.request
    }

    fn on_reply(&mut self, data: &[u8]) -> Result<bool, String> {
        let (size, at) = (self.request.len(), self.received);
        if at + data.len() > size {
            return Err(format!(
                "reply longer than the {size}-byte request ({} bytes)",
                at + data.len()
            ));
        }
        // Slice equality is a memcmp; a byte-at-a-time search here once took two thirds of
        // the load generator's time at 100 KiB, enough to make it the bottleneck.
        let expected = &self.request[at..at + data.len()];
        if data != expected {
            let i = data.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("reply differs from the request at byte {} of {size}", at + i));
        }
        self.received += data.len();
        Ok(self.received == size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_accepts_its_request_in_pieces() {
        let mut e = Echo::new(10, 3);
        e.start();
        let req = e.request().to_vec();
        assert_eq!(e.on_reply(&req[..4]), Ok(false));
        assert_eq!(e.on_reply(&req[4..]), Ok(true));
        e.start();
        assert_ne!(e.request(), &req[..], "each request is stamped with its number");
    }

    #[test]
    fn echo_rejects_wrong_and_extra_bytes() {
        let mut e = Echo::new(16, 0);
        e.start();
        let mut bad = e.request().to_vec();
        bad[9] ^= 1;
        assert!(e.on_reply(&bad).unwrap_err().contains("at byte 9"));
        e.start();
        let mut long = e.request().to_vec();
        long.push(0);
        assert!(e.on_reply(&long).unwrap_err().contains("longer"));
        e.start();
        let stale = Echo::new(16, 0).request().to_vec(); // sequence number 0
        assert!(e.on_reply(&stale).is_err());
    }

    #[test]
    fn tiny_requests_work() {
        let mut e = Echo::new(1, 0);
        e.start();
        let req = e.request().to_vec();
        assert_eq!(e.on_reply(&req), Ok(true));
        assert_eq!(Mode::parse("http"), Ok(Mode::Http));
        assert_eq!(
            Mode::parse("gopher").unwrap_err(),
            "unknown mode \"gopher\" (implemented: echo, http)"
        );
    }
}
