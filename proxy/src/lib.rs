//! concord's node: the MySQL-protocol data path, the admin port and HTTP.

pub mod backend;
pub mod classify;
pub mod error;
pub mod logging;
pub mod net;
pub mod node;
pub mod routing;
pub mod server;
pub mod session;
pub mod shared;
pub mod tls;
pub mod users;
