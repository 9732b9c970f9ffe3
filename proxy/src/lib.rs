//! concord's node: the MySQL-protocol data path, the admin port and HTTP.

pub mod admin;
pub mod alloc_track;
pub mod backend;
pub mod classify;
pub mod digest;
pub mod duties;
pub mod error;
pub mod fleetpos;
pub mod http;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod reload;
pub mod retire;
pub mod router;
pub mod routing;
pub mod rules;
pub mod server;
pub mod session;
pub mod shared;
pub mod throttle;
pub mod tls;
pub mod users;
