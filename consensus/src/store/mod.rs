//! Durable Raft storage: the log (redb) and the state machine (snapshot file).

pub mod log;
pub mod state_machine;

pub use log::LogStore;
pub use state_machine::{Applied, StateMachine};

#[cfg(test)]
mod suite;
