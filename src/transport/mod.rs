//! Transports: the per-connection state machines that move bytes between
//! sockets and protocols.

mod datagram;
mod extra_info;
mod owner_methods;
pub mod pipe;
mod protocol_kind;
mod rare;
pub mod read_buffer;
pub mod socket;
pub mod table;
pub mod tls;
mod water_marks;
mod write_buffer;
