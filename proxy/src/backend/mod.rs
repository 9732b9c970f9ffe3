//! The backend side: logging in as a client, single connections, pools.

pub mod conn;
pub mod login;
pub mod pool;

pub use conn::{BackendConn, ConnState, Prepared, Reply};
pub use pool::{BackendPool, Login, PoolKey, PoolSettings, Prefer};
