//! SET GLOBAL through concord: every node's pooled connections to that
//! backend are renewed, so a session that starts afterwards, on whichever
//! node, begins from the new global value as it would on the server. The
//! client has its OK by then: the other nodes renew within one peer round
//! trip after it, before the session's next statement is read.

use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;

/// How long the session that ran SET GLOBAL waits for the other nodes.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Retires `backend`'s pooled connections here and on every other member
/// (test-only `retire-this-node-only`: here only). A node that does not
/// answer within [`TIMEOUT`] is logged; its connections are renewed by
/// `max_lifetime`.
pub async fn fleet(shared: &Arc<Shared>, backend: &str) {
    local(shared, backend);
    if concord_config::testhooks::on("retire-this-node-only") {
        return;
    }
    let req = serde_json::json!({ "retire": backend });
    for (id, r) in shared.ask_peers(&req, TIMEOUT).await {
        let why = match r {
            Ok(v) if v["ok"].as_bool() == Some(true) => continue,
            // (A node of an older version answers as to a malformed KILL.)
            Ok(v) => v["message"].as_str().unwrap_or("refused").to_string(),
            Err(e) => e,
        };
        tracing::warn!(
            node = id,
            backend,
            "SET GLOBAL: node {id} did not renew its connections: {why}"
        );
    }
}

/// Retires this node's pool for `backend`.
fn local(shared: &Shared, backend: &str) {
    if let Some(p) = shared.routing.load().pool(backend) {
        let closed = p.retire();
        tracing::info!(
            backend,
            closed,
            "SET GLOBAL: the pool's connections are renewed"
        );
    }
}

/// Another node's request.
pub fn answer(shared: &Shared, v: &serde_json::Value) -> serde_json::Value {
    match v["retire"].as_str() {
        Some(b) => {
            local(shared, b);
            serde_json::json!({ "ok": true })
        }
        None => serde_json::json!({ "ok": false, "message": "malformed request" }),
    }
}
