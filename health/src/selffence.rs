//! The primary's dead-man switch (`failover.self_fence`, off by default).
//!
//! concord fences an old primary by making it read-only, which needs the
//! server to be reachable. A primary cut off from every concord node is
//! fenced only for clients that go through concord; an application, cron
//! job or second proxy that connects to it directly could still write to
//! it after a replica was promoted. With the switch on, concord installs
//! an event on the primary that runs once a second and sets
//! `read_only=1` once the heartbeat table has not changed for
//! `self_fence_after`. Heartbeats are written only under a valid lease, so
//! the primary fences itself when no node may route writes to it any more,
//! and a failover of an unreachable primary waits
//! [`wait_after_fleet`] past the moment no node can write a heartbeat
//! (see docs/DESIGN.md, "The self-fencing primary").
//!
//! The event's own bookkeeping is kept out of the binlog (`sql_log_bin=0`
//! in its body), so a self-fenced server holds no transaction the new
//! primary lacks. When a node with a valid lease finds the routed primary
//! self-fenced (every node was away longer than `self_fence_after`), it
//! lifts the fence under the write gate.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::time::Duration;

/// The event checks once a second; it sees a heartbeat up to a second
/// after it was written and fires up to a second after the silence passed
/// the threshold.
const EVENT_PERIOD: Duration = Duration::from_secs(1);

/// How long after the last possible heartbeat a failover waits before it
/// promotes, when it could not fence the old primary itself: the
/// threshold, two event periods, and the lease drift margin for the
/// scheduler running late.
pub fn wait_after_fleet(after: Duration, drift: Duration) -> Duration {
    after + EVENT_PERIOD * 2 + drift
}

/// `schema.self_fence`, next to the heartbeat table.
fn table(heartbeat_table: &str) -> String {
    let schema = heartbeat_table.split('.').next().unwrap_or("concord");
    format!("{schema}.self_fence")
}

/// Installs (or replaces) the event and its bookkeeping row on the
/// primary and turns the event scheduler on. The row's clock restarts, so
/// a server that was primary before does not fence itself at once.
pub async fn install(
    conn: &mut Conn,
    heartbeat_table: &str,
    after: Duration,
) -> Result<(), mysql_async::Error> {
    let t = table(heartbeat_table);
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {t} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, seen BIGINT UNSIGNED NOT NULL, at DATETIME(6) NOT NULL, fired DATETIME(6) NULL) ENGINE=InnoDB"
    ))
    .await?;
    conn.query_drop(format!(
        "INSERT INTO {t} (id, seen, at) VALUES (1, 0, NOW(6)) ON DUPLICATE KEY UPDATE at = NOW(6)"
    ))
    .await?;
    conn.query_drop(format!("DROP EVENT IF EXISTS {t}")).await?;
    let us = after.as_micros();
    // `at` moves whenever the newest heartbeat changed since the last run
    // (assignments apply left to right: `at` compares the old `seen`).
    conn.query_drop(format!(
        "CREATE DEFINER = CURRENT_USER EVENT {t} ON SCHEDULE EVERY 1 SECOND ON COMPLETION PRESERVE ENABLE \
         COMMENT 'concord failover.self_fence: read_only=1 after {us} us without a heartbeat' DO BEGIN \
         DECLARE m BIGINT UNSIGNED DEFAULT 0; \
         SET SESSION sql_log_bin = 0; \
         SELECT COALESCE(MAX(ts), 0) INTO m FROM {heartbeat_table}; \
         UPDATE {t} SET at = IF(seen = m, at, NOW(6)), seen = m WHERE id = 1; \
         IF @@global.read_only = 0 AND (SELECT at FROM {t} WHERE id = 1) < NOW(6) - INTERVAL {us} MICROSECOND THEN \
           SET GLOBAL read_only = 1; \
           UPDATE {t} SET fired = NOW(6) WHERE id = 1; \
         END IF; \
         END"
    ))
    .await?;
    conn.query_drop("SET GLOBAL event_scheduler = ON").await?;
    Ok(())
}

/// When the routed primary fenced itself: the time it did, if it is
/// read-only now because of the event.
pub async fn fired(
    conn: &mut Conn,
    heartbeat_table: &str,
) -> Result<Option<String>, mysql_async::Error> {
    let t = table(heartbeat_table);
    let at: Option<Option<String>> = conn
        .query_first(format!(
            "SELECT CAST(fired AS CHAR) FROM {t} WHERE id = 1 AND @@global.read_only = 1"
        ))
        .await?;
    Ok(at.flatten())
}

/// Lifts a self-fence: the caller holds the write gate under a valid
/// lease for the epoch that routes to this server.
pub async fn lift(conn: &mut Conn, heartbeat_table: &str) -> Result<(), mysql_async::Error> {
    let t = table(heartbeat_table);
    conn.query_drop(format!(
        "UPDATE {t} SET at = NOW(6), fired = NULL WHERE id = 1"
    ))
    .await?;
    conn.query_drop("SET GLOBAL read_only = 0").await
}

/// Before a promoted server becomes writable: restart its event's clock
/// (it may hold an enabled event from an earlier term as primary).
/// Errors are ignored: most servers have no such table.
pub async fn rearm(conn: &mut Conn, heartbeat_table: &str) {
    let t = table(heartbeat_table);
    let _ = conn
        .query_drop(format!(
            "UPDATE {t} SET at = NOW(6), fired = NULL WHERE id = 1"
        ))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_covers_the_threshold_two_event_periods_and_the_drift() {
        assert_eq!(
            wait_after_fleet(Duration::from_secs(2), Duration::from_millis(200)),
            Duration::from_millis(4200)
        );
        assert_eq!(table("concord.heartbeat"), "concord.self_fence");
        assert_eq!(table("ops.hb"), "ops.self_fence");
    }
}
