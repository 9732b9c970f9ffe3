//! Prometheus text for `/metrics`.

use crate::shared::Shared;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub fn render(shared: &Shared) -> String {
    let st = shared.consensus.status();
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    g("concord_up", "1 while the node runs.", 1.0);
    g(
        "concord_client_connections",
        "Open client connections.",
        shared.sessions.count.load(Ordering::Relaxed) as f64,
    );
    g("concord_raft_term", "Current Raft term.", st.term as f64);
    g(
        "concord_raft_is_leader",
        "1 if this node is the Raft leader.",
        (st.state == "leader") as u8 as f64,
    );
    g(
        "concord_raft_last_applied",
        "Last applied Raft log index.",
        st.last_applied as f64,
    );
    g(
        "concord_epoch",
        "Fencing epoch of the current primary.",
        st.epoch as f64,
    );
    g(
        "concord_lease_valid",
        "1 while this node holds the write lease.",
        st.lease_valid as u8 as f64,
    );
    g(
        "concord_buffered_writes",
        "Statements waiting for a routable primary.",
        shared.buffered.load(Ordering::Relaxed) as f64,
    );
    out
}
