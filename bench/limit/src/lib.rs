//! `echo-limit`: the echo benchmark's server without Python.
//!
//! One thread and one level-triggered epoll serve every connection over TCP or a Unix
//! socket. Each readable event gets one read of up to 256 KiB, written straight back; what
//! the kernel does not take waits in the connection's buffer, and only then does the
//! connection ask for writability. Above 1 MiB buffered it stops reading until the client
//! has taken most of it back. This is what an event loop does for `asyncio.Protocol`'s
//! `data_received` -> `transport.write`, minus the interpreter, so its requests/s and CPU
//! per request are what the machine allows the Python servers at best.

pub mod args;
pub mod server;
pub mod sys;
