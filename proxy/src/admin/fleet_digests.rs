//! `SHOW CONCORD FLEET DIGESTS`: every member's digest table, fetched over
//! the authenticated peer transport and merged by digest × user × schema
//! × role (counts, times and histograms add up, so merged quantiles are
//! exact to the bucket). Each node sends at most its top [`PER_NODE`] rows
//! by the view's order: a row beyond that on some node counts only where
//! it made the cut (its `nodes` column says how many).

use crate::digest::{Role, Row};
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Rows one node sends (bounded so a large table cannot exceed a frame).
pub const PER_NODE: usize = 5000;
/// How long the view waits for a node.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A merged row and how many nodes had it.
pub struct Merged {
    pub row: Row,
    pub nodes: u32,
}

/// The fleet's rows, top `limit` by `order`. An error names the nodes that
/// did not answer: a partial table would pass for the whole.
pub async fn merged(
    shared: &Arc<Shared>,
    order: &str,
    desc: bool,
    limit: usize,
) -> Result<Vec<Merged>, String> {
    let key = super::views::digest_key(order);
    let req = serde_json::json!({ "digests": PER_NODE, "order": order, "desc": desc });
    let answers = shared.ask_peers(&req, TIMEOUT).await;
    let mut all: Vec<Vec<Row>> = vec![shared.digests.top(PER_NODE, desc, key)];
    let mut failed = Vec::new();
    for (id, a) in answers {
        let rows = a.and_then(|v| {
            v["rows"]
                .as_array()
                .ok_or_else(|| format!("node {id} sent no rows"))?
                .iter()
                .take(PER_NODE)
                .map(|r| Row::from_wire(r).ok_or_else(|| format!("node {id} sent a malformed row")))
                .collect::<Result<Vec<Row>, String>>()
        });
        match rows {
            Ok(r) => all.push(r),
            Err(e) => failed.push(format!("node {id}: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "the fleet view needs every node; not answered: {} (SHOW CONCORD DIGESTS shows one node's table)",
            failed.join("; ")
        ));
    }
    let mut by_key: HashMap<(u64, Box<str>, Box<str>, Role), Merged> = HashMap::new();
    for row in all.into_iter().flatten() {
        let k = (row.digest, row.user.clone(), row.schema.clone(), row.role);
        match by_key.get_mut(&k) {
            Some(m) => {
                m.row.absorb(&row);
                m.nodes += 1;
            }
            None => {
                by_key.insert(k, Merged { row, nodes: 1 });
            }
        }
    }
    let mut rows: Vec<Merged> = by_key.into_values().collect();
    if desc {
        rows.sort_unstable_by_key(|m| std::cmp::Reverse(key(&m.row)));
    } else {
        rows.sort_unstable_by_key(|m| key(&m.row));
    }
    rows.truncate(limit);
    Ok(rows)
}

/// Another node asks for this node's rows.
pub fn answer(shared: &Shared, v: &serde_json::Value) -> serde_json::Value {
    let limit = v["digests"]
        .as_u64()
        .map_or(PER_NODE, |n| (n as usize).min(PER_NODE));
    let order = v["order"].as_str().unwrap_or("total_us");
    let desc = v["desc"].as_bool().unwrap_or(true);
    let rows = shared
        .digests
        .top(limit, desc, super::views::digest_key(order));
    serde_json::json!({
        "ok": true,
        "rows": rows.iter().map(Row::to_wire).collect::<Vec<_>>(),
    })
}
