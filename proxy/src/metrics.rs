//! Prometheus metrics through the `metrics` crate. Hot-path counters are
//! registered once and kept as handles (an atomic add per event, no map
//! lookup); gauges that mirror state are set when `/metrics` is scraped.
//! Names and labels are documented in `docs/metrics.md`.

use crate::router::Reason;
use crate::shared::Shared;
use metrics::{counter, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process).
pub fn install() -> Result<(), String> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let _ = HANDLE.set(handle);
    // Counters of rare events exist from the start (at zero), so a
    // dashboard or alert sees them before the first one happens.
    for why in crate::classify::Pin::ALL {
        counter!("concord_session_pins_total", "reason" => why.as_str()).increment(0);
    }
    for outcome in ["ok", "unknown", "failed"] {
        counter!("concord_kills_total", "outcome" => outcome).increment(0);
    }
    counter!("concord_failover_lost_transactions_total").increment(0);
    for stage in ["before_send", "late_answer"] {
        counter!("concord_fenced_statements_total", "stage" => stage).increment(0);
    }
    Ok(())
}

/// How a session's state was brought to a backend connection it took
/// from the pool (transaction mode shows how well fingerprints match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateHandover {
    /// A connection with server defaults (new, or reset before).
    Fresh,
    /// The session's own connection from before: nothing to do.
    Own,
    /// Another session's connection holding the same variables.
    Matched,
    /// Another session's: the difference applied in one statement.
    Adjusted,
    /// Another session's, reset and replayed whole.
    Reset,
}

impl StateHandover {
    pub const ALL: [StateHandover; 5] = [
        StateHandover::Fresh,
        StateHandover::Own,
        StateHandover::Matched,
        StateHandover::Adjusted,
        StateHandover::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateHandover::Fresh => "fresh",
            StateHandover::Own => "own",
            StateHandover::Matched => "matched",
            StateHandover::Adjusted => "adjusted",
            StateHandover::Reset => "reset",
        }
    }
}

/// Counts one connection taken from a pool, by how its state was brought.
pub fn handover(how: StateHandover) {
    hot().handovers[how as usize].increment(1);
}

/// Folds pending histogram samples into their buckets (run every second
/// by the node's upkeep; scrapes do it too).
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

struct Hot {
    /// [target (0 primary, 1 replica)][reason]
    routed: Vec<Counter>,
    /// By [`StateHandover`].
    handovers: Vec<Counter>,
    commands: Vec<Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
}

fn hot() -> &'static Hot {
    static H: OnceLock<Hot> = OnceLock::new();
    H.get_or_init(|| {
        let mut routed = Vec::new();
        for target in ["primary", "replica"] {
            for r in Reason::ALL {
                routed.push(counter!("concord_routed_total", "target" => target, "reason" => r.as_str()));
            }
        }
        let commands = (0..=0x20u8)
            .map(|c| counter!("concord_commands_total", "command" => concord_protocol::consts::com::name(c)))
            .collect();
        let handovers = StateHandover::ALL
            .iter()
            .map(|h| counter!("concord_pool_state_total", "how" => h.as_str()))
            .collect();
        Hot {
            routed,
            handovers,
            commands,
            bytes_in: counter!("concord_client_bytes_total", "direction" => "in"),
            bytes_out: counter!("concord_client_bytes_total", "direction" => "out"),
        }
    })
}

/// One routing decision.
#[inline]
pub fn route(replica: bool, reason: Reason) {
    // `ALL` lists the variants in declaration order (router's tests).
    let i = reason as usize;
    let h = hot();
    if let Some(c) = h.routed.get(usize::from(replica) * Reason::ALL.len() + i) {
        c.increment(1);
    }
}

/// One client command.
#[inline]
pub fn command(code: u8) {
    let h = hot();
    if let Some(c) = h.commands.get(usize::from(code.min(0x20))) {
        c.increment(1);
    }
}

/// Bytes a session received from and sent to its client (flushed once
/// per command).
#[inline]
pub fn client_bytes(received: u64, sent: u64) {
    let h = hot();
    h.bytes_in.increment(received);
    h.bytes_out.increment(sent);
}

/// A failover workflow finished (`kind`: automatic, forced, switchover,
/// rejoin; `outcome`: ok or failed).
pub fn workflow(kind: &'static str, ok: bool, seconds: f64) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("concord_failovers_total", "kind" => kind, "outcome" => outcome).increment(1);
    if ok {
        metrics::histogram!("concord_failover_duration_seconds", "kind" => kind).record(seconds);
    }
}

/// A session was pinned to its primary connection, and why (once per
/// reason per session).
pub fn pinned(why: crate::classify::Pin) {
    counter!("concord_session_pins_total", "reason" => why.as_str()).increment(1);
}

/// A KILL a client sent through concord (`outcome`: ok, unknown, failed).
pub fn kill(outcome: &'static str) {
    counter!("concord_kills_total", "outcome" => outcome).increment(1);
}

/// A statement passed its timeout and was killed on its server.
pub fn statement_timeout() {
    counter!("concord_statement_timeouts_total").increment(1);
}

/// A statement refused by a query rule's BLOCK.
pub fn rule_blocked() {
    counter!("concord_rule_blocked_total").increment(1);
}

/// A transaction passed `transaction_timeout` and was rolled back.
pub fn transaction_timeout() {
    counter!("concord_transaction_timeouts_total").increment(1);
}

/// A client went away while its statement ran: the statement was killed
/// on its server.
pub fn client_gone_mid_statement() {
    counter!("concord_client_gone_mid_statement_total").increment(1);
}

/// A statement for a primary refused before its first byte went out
/// (this node's lease or epoch no longer covers the route).
pub fn refused_before_send() {
    counter!("concord_fenced_statements_total", "stage" => "before_send").increment(1);
}

/// A primary's answer withheld because it arrived after the lease lapsed
/// (the client got "outcome unknown").
pub fn late_answer() {
    counter!("concord_fenced_statements_total", "stage" => "late_answer").increment(1);
}

/// An error packet sent to a client.
pub fn client_error(code: u16) {
    counter!("concord_client_errors_total", "code" => code.to_string()).increment(1);
}

/// A login refused with a wrong password or unknown user.
pub fn auth_failed() {
    counter!("concord_auth_failures_total").increment(1);
}

/// A connection refused because its address failed to log in too often.
pub fn auth_throttled() {
    counter!("concord_auth_throttled_total").increment(1);
}

/// Sets state gauges and renders the Prometheus text.
pub fn render(shared: &Shared) -> String {
    let st = shared.consensus.status();
    gauge!("concord_up").set(1.0);
    gauge!("concord_client_connections").set(shared.sessions.count.load(Ordering::Relaxed) as f64);
    gauge!("concord_raft_term").set(st.term as f64);
    gauge!("concord_raft_is_leader").set(f64::from(u8::from(st.state == "leader")));
    gauge!("concord_raft_leader_id").set(st.leader.unwrap_or(0) as f64);
    gauge!("concord_raft_last_applied").set(st.last_applied as f64);
    gauge!("concord_raft_commit_index").set(st.committed as f64);
    gauge!("concord_raft_last_log_index").set(st.last_log_index as f64);
    gauge!("concord_raft_members").set(st.members.len() as f64);
    gauge!("concord_epoch").set(st.epoch as f64);
    gauge!("concord_lease_valid").set(f64::from(u8::from(st.lease_valid)));
    gauge!("concord_lease_remaining_seconds").set(st.lease_remaining_ms as f64 / 1000.0);
    gauge!("concord_buffered_writes").set(shared.buffered.load(Ordering::Relaxed) as f64);
    gauge!("concord_buffered_write_bytes")
        .set(shared.buffered_bytes.load(Ordering::Relaxed) as f64);
    let routing = shared.routing.load();
    for (name, pool) in &routing.pools {
        let b = name.to_string();
        let open = pool.open_count();
        let idle = pool.idle_count() as u32;
        gauge!("concord_pool_connections", "backend" => b.clone(), "state" => "idle")
            .set(f64::from(idle));
        gauge!("concord_pool_connections", "backend" => b.clone(), "state" => "active")
            .set(f64::from(open.saturating_sub(idle)));
        gauge!("concord_backend_outstanding_queries", "backend" => b.clone())
            .set(f64::from(pool.outstanding.load(Ordering::Relaxed)));
        let is_primary = routing.primary.as_ref().is_some_and(|p| &p.name == name);
        gauge!("concord_backend_is_primary", "backend" => b.clone())
            .set(f64::from(u8::from(is_primary)));
        counter!("concord_backend_queries_total", "backend" => b.clone())
            .absolute(pool.stats.queries.load(Ordering::Relaxed));
        counter!("concord_backend_errors_total", "backend" => b.clone())
            .absolute(pool.stats.errors.load(Ordering::Relaxed));
    }
    // The routed primary read-only or replicating: writes fail, or two
    // servers may take them. An alert, not a routing input.
    let misconfigured = routing
        .primary
        .as_ref()
        .and_then(|p| routing.health.backends.get(p.name.as_ref()))
        .is_some_and(|h| h.reachable && (h.read_only || h.source.is_some()));
    gauge!("concord_primary_misconfigured").set(f64::from(u8::from(misconfigured)));
    let bound = shared.config.load().routing.max_replica_lag.get();
    for (name, h) in routing.health.backends.iter() {
        let b = name.clone();
        let is_primary = routing.primary.as_ref().is_some_and(|p| &*p.name == name);
        gauge!("concord_backend_up", "backend" => b.clone()).set(f64::from(u8::from(h.reachable)));
        gauge!("concord_backend_readable", "backend" => b.clone())
            .set(f64::from(u8::from(h.serves_reads(bound, is_primary))));
        let lag = h
            .shown_lag_ms(is_primary)
            .map_or(f64::INFINITY, |l| l as f64 / 1000.0);
        gauge!("concord_backend_lag_seconds", "backend" => b.clone()).set(lag);
        gauge!("concord_backend_probe_failures", "backend" => b).set(f64::from(h.failures));
    }
    let mut text = match HANDLE.get() {
        Some(h) => h.render(),
        None => "# metrics recorder not installed\n".into(),
    };
    // Per-statement histograms of this node's own (no sample storage).
    let name = "concord_backend_query_duration_seconds";
    let _ = writeln!(
        text,
        "# HELP {name} time from sending a statement to the end of its response"
    );
    let _ = writeln!(text, "# TYPE {name} histogram");
    for (b, pool) in &routing.pools {
        pool.stats
            .latency
            .render(&mut text, name, &format!("backend=\"{}\"", escape(b)));
    }
    let top = shared.config.load().digests.prometheus_top as usize;
    if top > 0 {
        top_digests(&mut text, &shared.digests.top(top, true, |r| r.total_us));
    }
    text
}

/// The top digests, written at scrape time rather than registered, so a
/// digest that left the top leaves `/metrics` too: the series are never
/// more than `digests.prometheus_top` per metric.
fn top_digests(out: &mut String, rows: &[crate::digest::Row]) {
    use std::fmt::Write;
    if rows.is_empty() {
        return;
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            // The text, cut short: `digest` is the key to the whole row.
            let mut cut = r.text.len().min(120);
            while !r.text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!(
                "digest=\"{:016x}\",role=\"{}\",user=\"{}\",schema=\"{}\",fingerprint=\"{}\"",
                r.digest,
                r.role.name(),
                escape(&r.user),
                escape(&r.schema),
                escape(&r.text[..cut])
            )
        })
        .collect();
    type Value = fn(&crate::digest::Row) -> f64;
    let series: [(&str, &str, Value); 4] = [
        // Own statements only (what the other series cover too), not the
        // count a row inherited from the rows it replaced.
        ("concord_digest_statements_total", "statements", |r| {
            r.own_count() as f64
        }),
        (
            "concord_digest_errors_total",
            "statements that failed",
            |r| r.errors as f64,
        ),
        ("concord_digest_rows_sent_total", "rows sent", |r| {
            r.rows_sent as f64
        }),
        ("concord_digest_seconds_total", "time spent", |r| {
            r.total_us as f64 / 1e6
        }),
    ];
    for (name, what, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {what}, for the top digests by total time (digests.prometheus_top)"
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (r, l) in rows.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(r));
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A read with a causal token: `replica` (a replica's probed position
/// covered it), `waited` (a replica applied it while the read waited),
/// `primary` (ran on a primary holding it), `refused` (the primary does
/// not have it).
pub fn causal_read(outcome: &'static str) {
    metrics::counter!("concord_causal_reads_total", "outcome" => outcome).increment(1);
}

/// How long a causal read waited: `position` (learning the primary's
/// position, fleet mode) or `replica` (a replica applying a position).
/// A statement held for a primary was released by a routing change, this
/// long after the change was published (its wake-up delay: taking a
/// connection to the new primary comes after).
pub fn held_write_released(delay: std::time::Duration) {
    metrics::histogram!("concord_held_write_release_seconds").record(delay.as_secs_f64());
}

pub fn read_wait(what: &'static str, took: std::time::Duration) {
    metrics::histogram!("concord_read_wait_seconds", "what" => what).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
