//! Load generator for ferroloop's socket benchmarks.
//!
//! One thread and one edge-triggered epoll drive N connections; each runs request/response
//! exchanges back to back (ping-pong) and every reply is checked, so the figures are the
//! server's and a broken server cannot look fast. Per exchange the client makes about three
//! system calls (send, wait, receive) and no allocation, so it stays far from being the
//! bottleneck of a Python server on another CPU.
//!
//! `--tls` runs the same exchanges through rustls (ring provider), the server's certificate
//! verified against a given CA and name; records are read and written in the same
//! non-blocking loop. `--reconnect` opens a new connection (non-blocking connect, full TLS
//! handshake) for every exchange and closes it after the reply: connections or handshakes
//! per second. `--mode http` sends HTTP/1.1 keep-alive `GET`s instead of echo messages.

pub mod args;
pub mod conn;
pub mod exchange;
pub mod http;
pub mod report;
pub mod run;
pub mod stats;
pub mod sys;
pub mod tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
