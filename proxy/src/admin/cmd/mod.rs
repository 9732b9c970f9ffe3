//! The admin port's commands, one file each (or one family of views).
//! [`ALL`] is the registry the parser walks.

pub mod add_backend;
pub mod digests;
pub mod drain;
pub mod failover;
pub mod kill_session;
pub mod nodes;
pub mod noise;
pub mod reload_config;
pub mod remove_backend;
pub mod rules;
pub mod set_backend;
pub mod show;
pub mod undrain;

use super::command::Entry;

/// Every command, in the order the help text lists them.
pub const ALL: &[Entry] = &[
    show::BACKENDS,
    show::CLUSTER,
    show::EVENTS,
    show::SESSIONS,
    kill_session::ENTRY,
    drain::ENTRY,
    undrain::ENTRY,
    set_backend::ENTRY,
    add_backend::ENTRY,
    remove_backend::ENTRY,
    nodes::ADD,
    nodes::REMOVE,
    failover::SWITCHOVER,
    failover::FAILOVER,
    failover::REJOIN,
    reload_config::ENTRY,
    digests::SHOW,
    digests::RESET,
    rules::ADD,
    rules::DROP,
    show::RULES,
];
