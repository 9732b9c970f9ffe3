//! Statements concord answers itself on the data port.

use super::Session;
use crate::error::SessionError;
use concord_protocol::column::Column;
use concord_protocol::resultset::write_resultset;

/// `SHOW CONCORD STATUS`: which node answered, the epoch and primary it
/// routes writes under, this session's id, the epoch its last statement
/// to the primary was routed under, and the node's lease. Lets applications and tests
/// see the routing decision without the admin port.
pub async fn concord_status(s: &mut Session) -> Result<(), (SessionError, u8)> {
    let routing = s.shared.routing.load();
    let columns = [
        Column::int("node_id"),
        Column::int("epoch"),
        Column::str("primary"),
        Column::int("session_id"),
        Column::str("backend"),
        Column::int("write_epoch"),
        Column::str("lease"),
    ];
    let backend = s.conns.primary.as_ref().map(|b| b.pool.name.to_string());
    let rows = vec![vec![
        Some(s.shared.node_id.to_string()),
        Some(routing.epoch.to_string()),
        routing.primary.as_ref().map(|p| p.name.to_string()),
        Some(s.info.id.to_string()),
        backend,
        Some(s.write_epoch.to_string()),
        Some(
            if s.shared.lease.valid() {
                "valid"
            } else {
                "expired"
            }
            .to_string(),
        ),
    ]];
    let mut seq = 1;
    write_resultset(
        &mut s.client.wbuf,
        &mut seq,
        s.caps,
        super::lasting_status(s.status),
        &columns,
        &rows,
    );
    s.client
        .flush()
        .await
        .map_err(|e| (SessionError::Client(e), 1))
}
