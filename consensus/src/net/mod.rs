//! The peer transport: authenticated TCP between concord nodes.

pub mod frame;
pub mod peer;
pub mod rpc;
pub mod server;
