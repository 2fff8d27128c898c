//! Bytes a transport accepted but the kernel has not taken yet.
//!
//! `bytes` objects are kept by reference (they are immutable); anything else
//! is copied, so a caller that reuses its `bytearray` after `write()` cannot
//! change what goes out. Flushing gathers up to `IOV_MAX` chunks per
//! `sendmsg`.
//!
//! Most of the time a connection has nothing queued: the queue is then no
//! more than an empty pointer, and it is allocated while there is something
//! in it (a transport is kept per connection, so every word of it counts).

use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::sys::socket::would_block;
use crate::sys::socket::IOV_MAX;
use crate::sys::Errno;

enum Data {
    Shared(Py<PyBytes>),
    Owned(Vec<u8>),
}

struct Chunk {
    data: Data,
    /// Bytes of `data` already sent.
    sent: usize,
    /// Size of `data`.
    total: usize,
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        let all = match &self.data {
            Data::Shared(b) => b.as_bytes(py),
            Data::Owned(v) => v.as_slice(),
        };
        &all[self.sent..]
    }
}

/// What [`WriteBuffer::write_or_queue`] did with the data.
pub enum Written {
    /// The kernel took all of it.
    All,
    /// The rest is queued: the caller watches for writability, if
    /// `first` (the buffer was empty, so nobody watches yet).
    Queued { first: bool },
    /// The write failed; nothing was queued.
    Failed(Errno),
}

/// A FIFO of unsent chunks with their total size; `None` while empty.
#[derive(Default)]
pub struct WriteBuffer {
    queue: Option<Box<Queue>>,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl WriteBuffer {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// A transport's `write()`: when nothing is queued, `write` tries the
    /// kernel at once; what it did not take is queued (`shared` is `data`
    /// itself when that is a `bytes`, kept by reference).
    pub fn write_or_queue(
        &mut self,
        data: &[u8],
        shared: Option<&Bound<'_, PyBytes>>,
        write: impl FnOnce(&[u8]) -> Result<usize, Errno>,
    ) -> Written {
        let first = self.is_empty();
        let mut done = 0;
        if first {
            match write(data) {
                Ok(n) if n == data.len() => return Written::All,
                Ok(n) => done = n,
                Err(e) if would_block(e) => {}
                Err(e) => return Written::Failed(e),
            }
        }
        match shared {
            Some(bytes) => self.push_shared(bytes.clone().unbind(), data.len(), done),
            None => self.push_copy(&data[done..]),
        }
        Written::Queued { first }
    }

    /// Queues `bytes[skip..]` by reference.
    pub fn push_shared(&mut self, bytes: Py<PyBytes>, total: usize, skip: usize) {
        if skip < total {
            let queue = self.queue();
            queue.len += total - skip;
            queue.chunks.push_back(Chunk {
                data: Data::Shared(bytes),
                sent: skip,
                total,
            });
        }
    }

    /// Queues a copy of `data`.
    pub fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let queue = self.queue();
        queue.len += data.len();
        // Small writes join the last owned chunk instead of adding an iovec.
        if data.len() <= 4096 {
            if let Some(back) = queue.chunks.back_mut() {
                if let Data::Owned(v) = &mut back.data {
                    v.extend_from_slice(data);
                    back.total += data.len();
                    return;
                }
            }
        }
        queue.chunks.push_back(Chunk {
            data: Data::Owned(data.to_vec()),
            sent: 0,
            total: data.len(),
        });
    }

    /// Fills `iov` with the first chunks, ready for `sendmsg`.
    pub fn iovecs(&self, py: Python<'_>, iov: &mut Vec<libc::iovec>) {
        iov.clear();
        let Some(queue) = self.queue.as_ref() else { return };
        for chunk in queue.chunks.iter().take(IOV_MAX) {
            let bytes = chunk.bytes(py);
            iov.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
        }
    }

    /// Drops the first `n` bytes (sent). Returns emptied shared chunks, for
    /// the caller to release once no borrow is held.
    pub fn consume(&mut self, mut n: usize) -> Vec<Py<PyBytes>> {
        let mut done = Vec::new();
        let Some(queue) = self.queue.as_mut() else { return done };
        queue.len -= n.min(queue.len);
        while n > 0 {
            let Some(front) = queue.chunks.front_mut() else { break };
            let left = front.total - front.sent;
            if n < left {
                front.sent += n;
                break;
            }
            n -= left;
            if let Some(Chunk {
                data: Data::Shared(b), ..
            }) = queue.chunks.pop_front()
            {
                done.push(b);
            }
        }
        if queue.len == 0 {
            done.extend(self.clear());
        }
        done
    }

    /// Empties the buffer; returns the shared chunks to release.
    pub fn clear(&mut self) -> Vec<Py<PyBytes>> {
        let Some(queue) = self.queue.take() else {
            return Vec::new();
        };
        queue
            .chunks
            .into_iter()
            .filter_map(|c| match c.data {
                Data::Shared(b) => Some(b),
                Data::Owned(_) => None,
            })
            .collect()
    }
}
