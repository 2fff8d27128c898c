//! HTTP/1.1 keep-alive: a `GET` and its response, many on one connection.
//!
//! The response must be `200` with a `Content-Length` body of exactly the run's `--size`
//! bytes, on a connection the server keeps open. The servers of the http suite are
//! configured with the same size, so a server that answers with the wrong body, closes
//! the connection or sends more than one response fails the run instead of looking fast.
//! Chunked bodies are refused: every server of the suite can send a length.

use crate::exchange::Exchange;

/// Longest status line plus headers accepted before the body.
const MAX_HEAD: usize = 16 * 1024;

pub struct HttpGet {
    request: Vec<u8>,
    body_size: usize,
    /// The status line and headers received so far, until the blank line.
    head: Vec<u8>,
    /// Body bytes still expected, once the head is complete.
    body_left: Option<usize>,
}

impl HttpGet {
    pub fn new(body_size: usize, conn: usize) -> Self {
        // The connection number in the path lets a server log tell connections apart.
        let request =
            format!("GET /bench?c={conn} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ferroloop-loadgen\r\n\r\n")
                .into_bytes();
        HttpGet {
            request,
            body_size,
            head: Vec::with_capacity(512),
            body_left: None,
        }
    }

    /// Checks a complete head and returns the body length it announces.
    fn parse_head(&self, head: &[u8]) -> Result<usize, String> {
        let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let mut parts = status.splitn(3, ' ');
        match (parts.next(), parts.next()) {
            (Some("HTTP/1.1"), Some("200")) => {}
            _ => return Err(format!("expected an HTTP/1.1 200 response, got {status:?}")),
        }
        let mut length = None;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed header line {line:?}"))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n: usize = value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?;
                    if length.replace(n).is_some_and(|old| old != n) {
                        return Err("conflicting Content-Length headers".into());
                    }
                }
                "transfer-encoding" => {
                    return Err(format!(
                        "Transfer-Encoding {value:?}: the server must send a Content-Length"
                    ))
                }
                "connection" if value.eq_ignore_ascii_case("close") => {
                    return Err("the server closes the connection (Connection: close): keep-alive expected".into())
                }
                _ => {}
            }
        }
        let length = length.ok_or("response without Content-Length")?;
        if length != self.body_size {
            return Err(format!(
                "body of {length} bytes, the run expects {} (--size)",
                self.body_size
            ));
        }
        Ok(length)
    }
}

impl Exchange for HttpGet {
    fn start(&mut self) {
        self.head.clear();
        self.body_left = None;
    }

    fn request(&self) -> &[u8] {
        &self.request
    }

    fn on_reply(&mut self, data: &[u8]) -> Result<bool, String> {
        if self.body_left.is_none() {
            // Search from a little before the new bytes: the blank line may straddle reads.
            let from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(data);
            let Some(end) = self.head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > MAX_HEAD {
                    return Err(format!("response head longer than {MAX_HEAD} bytes"));
                }
                return Ok(false);
            };
            let end = from + end + 4;
            let length = self.parse_head(&self.head[..end - 4])?;
            self.body_left = Some(length);
            // What followed the head in these reads is body.
            return self.consume(self.head.len() - end);
        }
        self.consume(data.len())
    }
}

impl HttpGet {
    /// Counts `n` body bytes: true once the body is complete.
    fn consume(&mut self, n: usize) -> Result<bool, String> {
        let left = self.body_left.expect("head parsed");
        if n > left {
            return Err(format!(
                "{} bytes after the {}-byte body: one response per request expected",
                n - left,
                self.body_size
            ));
        }
        self.body_left = Some(left - n);
        Ok(left == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn accepts_a_response_in_any_pieces() {
        let reply = response("hello", "");
        for cut in 0..=reply.len() {
            let mut h = HttpGet::new(5, 0);
            h.start();
            let first = h.on_reply(&reply[..cut]).unwrap();
            assert_eq!(first, cut == reply.len(), "cut at {cut}");
            if cut < reply.len() {
                assert_eq!(h.on_reply(&reply[cut..]), Ok(true), "cut at {cut}");
            }
        }
    }

    #[test]
    fn keeps_going_on_one_connection() {
        let mut h = HttpGet::new(2, 7);
        assert!(std::str::from_utf8(h.request())
            .unwrap()
            .starts_with("GET /bench?c=7 HTTP/1.1\r\n"));
        for _ in 0..3 {
            h.start();
            assert_eq!(h.on_reply(&response("ok", "Connection: keep-alive\r\n")), Ok(true));
        }
    }

    #[test]
    fn refuses_what_a_keep_alive_benchmark_cannot_count() {
        let cases: [(Vec<u8>, &str); 7] = [
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno".to_vec(), "200"),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), "200"),
            (response("ok", "Connection: close\r\n"), "keep-alive"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                "Content-Length",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), "without Content-Length"),
            (response("toolong", ""), "the run expects 2"),
            (
                [response("ok", ""), response("ok", "")].concat(),
                "one response per request",
            ),
        ];
        for (reply, why) in cases {
            let mut h = HttpGet::new(2, 0);
            h.start();
            let err = h.on_reply(&reply).unwrap_err();
            assert!(err.contains(why), "{err:?} should mention {why:?}");
        }
    }

    #[test]
    fn refuses_an_endless_head() {
        let mut h = HttpGet::new(2, 0);
        h.start();
        assert_eq!(h.on_reply(b"HTTP/1.1 200 OK\r\n"), Ok(false));
        let filler = vec![b'x'; MAX_HEAD];
        assert!(h.on_reply(&filler).unwrap_err().contains("longer than"));
    }
}
