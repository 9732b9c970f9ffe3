//! What SHOW commands show, built once as a table and served both as a
//! MySQL result set (admin port) and as JSON (`/api/v1/...`).

use crate::shared::Shared;
use concord_protocol::column::{ColType, Column};
use concord_protocol::resultset::Cell;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(cols: &[(&str, ColType)]) -> Self {
        Table {
            columns: cols
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    ty: *t,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut o = Map::new();
                for (c, v) in self.columns.iter().zip(r) {
                    let v = match (v, c.ty) {
                        (None, _) => Value::Null,
                        (Some(s), ColType::Int) => s
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| Value::from(s.clone())),
                        (Some(s), ColType::Str) => Value::from(s.clone()),
                    };
                    o.insert(c.name.clone(), v);
                }
                Value::Object(o)
            })
            .collect();
        Value::Array(rows)
    }
}

use ColType::{Int as I, Str as S};

fn s(v: impl ToString) -> Cell {
    Some(v.to_string())
}

pub fn backends_table(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", S),
        ("addr", S),
        ("role", S),
        ("state", S),
        ("weight", I),
        ("lag_ms", I),
        ("readable", S),
        ("gtid", S),
        ("active_conns", I),
        ("idle_conns", I),
        ("qps", I),
        ("queries", I),
        ("errors", I),
        ("epoch", I),
        ("preflight", S),
    ]);
    // One snapshot: the topology and health the router decides on.
    let routing = shared.routing.load();
    let applied = routing.applied.clone();
    // "readable": under the default bound (users and hints may differ).
    let bound = shared.config.load().routing.max_replica_lag.get();
    for b in applied.topology.backends.values() {
        let pool = routing.pool(&b.name);
        let (open, idle) = pool
            .map(|p| (p.open_count() as usize, p.idle_count()))
            .unwrap_or((0, 0));
        let stat = |f: fn(&crate::backend::pool::Stats) -> &std::sync::atomic::AtomicU64| {
            pool.map(|p| f(&p.stats).load(Ordering::Relaxed).to_string())
        };
        let h = routing.health.backends.get(&b.name);
        let role = if applied.topology.primary.as_deref() == Some(b.name.as_str()) {
            "primary"
        } else {
            "replica"
        };
        t.rows.push(vec![
            s(&b.name),
            s(&b.addr),
            s(role),
            s(b.state.as_str()),
            s(b.weight),
            h.as_ref()
                .and_then(|h| h.shown_lag_ms(role == "primary"))
                .map(|l| l.to_string()),
            h.as_ref().map(|h| {
                if !h.reachable {
                    "down"
                } else if role == "primary" || h.serves_reads(bound, false) {
                    "yes"
                } else {
                    "no"
                }
                .to_string()
            }),
            h.as_ref().map(|h| h.gtid.clone()),
            s(open.saturating_sub(idle)),
            s(idle),
            stat(|s| &s.qps),
            stat(|s| &s.queries),
            stat(|s| &s.errors),
            s(applied.topology.epoch),
            h.as_ref().map(|h| {
                if h.preflight.is_empty() {
                    "ok".to_string()
                } else {
                    h.preflight.join("; ")
                }
            }),
        ]);
    }
    t
}

pub async fn cluster_table(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("node_id", I),
        ("addr", S),
        ("role", S),
        ("leader", I),
        ("term", I),
        ("epoch", I),
        ("primary", S),
        ("lease", S),
        ("last_applied", I),
        ("reachable", S),
    ]);
    for st in shared.consensus.cluster_status().await {
        match st {
            Ok(st) => t.rows.push(vec![
                s(st.id),
                s(&st.addr),
                s(&st.state),
                st.leader.map(|l| l.to_string()),
                s(st.term),
                s(st.epoch),
                st.primary.clone(),
                s(if st.lease_valid {
                    format!("valid {}ms", st.lease_remaining_ms)
                } else {
                    "expired".to_string()
                }),
                s(st.last_applied),
                s("yes"),
            ]),
            Err((id, addr)) => t.rows.push(vec![
                s(id),
                s(addr),
                s("unreachable"),
                None,
                None,
                None,
                None,
                None,
                None,
                s("no"),
            ]),
        }
    }
    t
}

pub fn events_table(shared: &Shared, limit: usize) -> Table {
    let mut t = Table::new(&[
        ("index", I),
        ("time", S),
        ("at_ms", I),
        ("node", I),
        ("epoch", I),
        ("event", S),
        ("detail", S),
    ]);
    let applied = shared.consensus.applied().borrow().clone();
    let events = &applied.topology.events;
    for e in events.iter().skip(events.len().saturating_sub(limit)) {
        t.rows.push(vec![
            s(e.index),
            s(fmt_ms(e.at_ms)),
            s(e.at_ms),
            s(e.by),
            s(e.epoch),
            s(&e.kind),
            s(&e.detail),
        ]);
    }
    t
}

pub fn sessions_table(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("id", I),
        ("user", S),
        ("client", S),
        ("program", S),
        ("db", S),
        ("backend", S),
        ("in_txn", S),
        ("queries", I),
        ("idle_ms", I),
        ("tls", S),
        ("pinned", S),
    ]);
    for x in shared.sessions.list() {
        let pins = x.pins.load(Ordering::Relaxed);
        let pinned: Vec<&str> = crate::classify::Pin::ALL
            .iter()
            .filter(|p| pins & p.bit() != 0)
            .map(|p| p.as_str())
            .collect();
        let lock = |m: &std::sync::Mutex<Option<String>>| {
            m.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        t.rows.push(vec![
            s(x.id),
            s(x.user.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            s(x.peer),
            s(&x.program),
            lock(&x.db),
            x.backend
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|b| b.to_string()),
            s(if x.in_txn.load(Ordering::Relaxed) {
                "yes"
            } else {
                "no"
            }),
            s(x.queries.load(Ordering::Relaxed)),
            s(x.idle_for().as_millis()),
            s(if x.tls { "yes" } else { "no" }),
            s(pinned.join(",")),
        ]);
    }
    t
}

pub fn backends(shared: &Arc<Shared>) -> Value {
    backends_table(shared).to_json()
}

pub async fn cluster(shared: &Arc<Shared>) -> Value {
    let status = shared.consensus.status();
    json!({
        "node": shared.node_id,
        "leader": status.leader,
        "term": status.term,
        "epoch": status.epoch,
        "primary": status.primary,
        "nodes": cluster_table(shared).await.to_json(),
    })
}

pub fn events(shared: &Arc<Shared>, limit: usize) -> Value {
    events_table(shared, limit).to_json()
}

pub fn sessions(shared: &Arc<Shared>) -> Value {
    sessions_table(shared).to_json()
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn fmt_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Columns `SHOW CONCORD DIGESTS ORDER BY` accepts.
pub const DIGEST_ORDER: &[&str] = &[
    "count",
    "errors",
    "rows_sent",
    "rows_affected",
    "total_us",
    "avg_us",
    "max_us",
    "p99_us",
];

/// The ordering of SHOW CONCORD DIGESTS: `order` is one of
/// [`DIGEST_ORDER`] (anything else: total time).
pub fn digest_key(order: &str) -> fn(&crate::digest::Row) -> u64 {
    match order {
        "count" => |r| r.count,
        "errors" => |r| r.errors,
        "rows_sent" => |r| r.rows_sent,
        "rows_affected" => |r| r.rows_affected,
        "avg_us" => |r| r.total_us / r.own_count().max(1),
        "max_us" => |r| r.max_us,
        "p99_us" => |r| r.quantile_us(0.99),
        _ => |r| r.total_us,
    }
}

/// The node's digest table, the top `limit` rows by `order`.
pub fn digests_table(shared: &Shared, order: &str, desc: bool, limit: usize) -> Table {
    let rows = shared.digests.top(limit, desc, digest_key(order));
    digest_rows(rows.iter().map(|r| (r, None)))
}

/// Digest rows as a table; with a node count for each (the fleet view),
/// a `nodes` column.
pub fn digest_rows<'a>(rows: impl Iterator<Item = (&'a crate::digest::Row, Option<u32>)>) -> Table {
    let mut rows = rows.peekable();
    let fleet = rows.peek().is_some_and(|(_, n)| n.is_some());
    let mut cols = vec![
        ("digest", S),
        ("fingerprint", S),
        ("user", S),
        ("schema", S),
        ("role", S),
        ("count", I),
        ("count_error", I),
        ("errors", I),
        ("rows_sent", I),
        ("rows_affected", I),
        ("total_us", I),
        ("avg_us", I),
        ("max_us", I),
        ("p50_us", I),
        ("p99_us", I),
    ];
    if fleet {
        cols.push(("nodes", I));
    }
    let mut t = Table::new(&cols);
    for (r, nodes) in rows {
        let mut row = vec![
            s(format!("{:016x}", r.digest)),
            s(&r.text),
            s(&r.user),
            s(&r.schema),
            s(r.role.name()),
            s(r.count),
            s(r.count_error),
            s(r.errors),
            s(r.rows_sent),
            s(r.rows_affected),
            s(r.total_us),
            s(r.total_us / r.own_count().max(1)),
            s(r.max_us),
            s(r.quantile_us(0.5)),
            s(r.quantile_us(0.99)),
        ];
        if let Some(n) = nodes {
            row.push(s(n));
        }
        t.rows.push(row);
    }
    t
}

/// The fleet's query rules as this node applies them, each with the Raft
/// log index it was committed at and this node's hit count.
pub fn rules_table(shared: &Shared) -> Table {
    let rules = shared.routing.load().rules.clone();
    let mut t = Table::new(&[
        ("id", I),
        ("user", S),
        ("schema", S),
        ("digest", S),
        ("match", S),
        ("action", S),
        ("hits", I),
        ("log_index", I),
    ]);
    let opt = |o: &Option<String>| o.as_deref().map(str::to_string);
    for c in &rules.list {
        let r = &c.rule;
        t.rows.push(vec![
            s(r.id),
            opt(&r.user),
            opt(&r.schema),
            r.digest.map(|d| format!("{d:016x}")),
            opt(&r.pattern),
            s(r.action.describe()),
            s(c.hits.load(std::sync::atomic::Ordering::Relaxed)),
            s(r.index),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::fmt_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::fmt_ms(1_795_000_000_123), "2026-11-18 11:06:40.123");
    }
}
