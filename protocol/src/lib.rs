//! The MySQL wire protocol, shared by concord's data path, its admin port and
//! `concord-bench`.
//!
//! Framing lives in [`packet`] and [`stream`]; each packet type has its own
//! module with a typed struct that can decode and encode itself; [`scan`]
//! follows a command's response packet by packet (reading only headers and
//! status flags) so a relay knows where the response ends without
//! re-encoding anything. Nothing here allocates per relayed packet.

pub mod auth;
pub mod codes;
pub mod column;
pub mod consts;
pub mod err;
pub mod error;
pub mod fuzzing;
pub mod handshake;
pub mod ok;
pub mod packet;
pub mod rd;
pub mod resultset;
pub mod scan;
pub mod stream;
pub mod wr;

pub use error::ProtoError;
pub use packet::{Packet, MAX_PAYLOAD};
pub use stream::PacketStream;
