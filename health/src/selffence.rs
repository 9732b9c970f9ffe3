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
//! Everything the switch writes (its table, its row, the event itself,
//! the event's bookkeeping) runs with `sql_log_bin=0` on a connection of
//! its own: nothing of it reaches the binlog, so a self-fenced server
//! holds no transaction the new primary lacks, and replicas never get the
//! event. Change is detected by a checksum of the heartbeat rows (any row
//! changing counts, whatever the nodes' clocks say) and time is UTC (no
//! daylight-saving jumps).
//!
//! The switch fails closed: a primary that fenced itself stays read-only
//! until a DBA lifts it (`SET GLOBAL read_only = 0`), even if the fleet
//! comes back. Lifting it from concord would need a statement that cannot
//! arrive late, and a lift delayed past a promotion would reopen the old
//! primary; `concord_self_fenced{backend}` and an event say it happened.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::time::Duration;

/// The event checks once a second; it sees a heartbeat up to a second
/// after it was written and fires up to a second after the silence passed
/// the threshold.
const EVENT_PERIOD: Duration = Duration::from_secs(1);

/// How long after the fleet wait a failover waits before it promotes,
/// when it could not fence the old primary itself: a heartbeat let
/// through the gate just before may still reach the server up to
/// `monitor.timeout` later (its future is dropped, not its packets), then
/// the threshold, two event periods, two lock waits (a direct client
/// holding a write lock, killed after the first), and the lease drift
/// margin for the scheduler running late.
pub fn wait_after_fleet(after: Duration, drift: Duration, in_flight: Duration) -> Duration {
    in_flight + after + EVENT_PERIOD * 2 + LOCK_WAIT * 2 + drift
}

/// How long the event's read_only waits for a lock before it kills the
/// other sessions and sets it again (at most as long once more).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// `schema.self_fence`, next to the heartbeat table.
fn table(heartbeat_table: &str) -> String {
    let schema = heartbeat_table.split('.').next().unwrap_or("concord");
    format!("{schema}.self_fence")
}

/// Installs (or replaces) the event and its bookkeeping row on the
/// primary at `opts`, on a connection of its own, and turns the event
/// scheduler on. The row's clock restarts, so a server that was primary
/// before does not fence itself at once. MySQL fences with
/// `super_read_only`, as concord's own fence does.
pub async fn install(
    opts: mysql_async::Opts,
    heartbeat_table: &str,
    after: Duration,
) -> Result<(), mysql_async::Error> {
    let mut conn = Conn::new(opts).await?;
    let version: Option<String> = conn.query_first("SELECT @@version").await?;
    let mariadb = crate::probe::Flavor::of_version(version.unwrap_or_default().as_bytes())
        == crate::probe::Flavor::MariaDb;
    let r = install_on(&mut conn, heartbeat_table, after, mariadb).await;
    let _ = conn.disconnect().await;
    r
}

async fn install_on(
    conn: &mut Conn,
    heartbeat_table: &str,
    after: Duration,
    mariadb: bool,
) -> Result<(), mysql_async::Error> {
    let t = table(heartbeat_table);
    conn.query_drop("SET SESSION sql_log_bin = 0").await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {t} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, seen BIGINT UNSIGNED NOT NULL, at DATETIME(6) NOT NULL, fired DATETIME(6) NULL) ENGINE=InnoDB"
    ))
    .await?;
    conn.query_drop(format!(
        "INSERT INTO {t} (id, seen, at) VALUES (1, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE at = UTC_TIMESTAMP(6)"
    ))
    .await?;
    let us = after.as_micros();
    let fence = if mariadb {
        "SET GLOBAL read_only = 1"
    } else {
        "SET GLOBAL super_read_only = 1"
    };
    // `at` moves whenever the heartbeat rows changed since the last run
    // (assignments apply left to right: `at` compares the old `seen`);
    // `fired` is written before the server turns read-only. read_only
    // waits for every write lock and running write (up to
    // `lock_wait_timeout`, a day by default): held by a direct client, it
    // would keep the server writable. So the wait is bounded to
    // LOCK_WAIT, then every other session is killed (not replication's,
    // not the server's own threads) and read_only set again.
    let wait = LOCK_WAIT.as_secs();
    let unblock = if concord_config::testhooks::on("fence-waits-for-locks") {
        format!("{fence};")
    } else {
        // One run at a time kills (runs start every second and may
        // overlap); the others leave it to that one.
        format!(
            "IF GET_LOCK('concord_self_fence', 0) = 1 THEN \
             BEGIN \
               DECLARE CONTINUE HANDLER FOR 1205 SET blocked = 1; \
               SET SESSION lock_wait_timeout = {wait}; \
               {fence}; \
             END; \
             IF blocked = 1 THEN \
               OPEN others; \
               kill_all: LOOP \
                 FETCH others INTO victim; \
                 IF done = 1 THEN LEAVE kill_all; END IF; \
                 BEGIN \
                   DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; \
                   KILL victim; \
                 END; \
               END LOOP; \
               CLOSE others; \
               {fence}; \
             END IF; \
             DO RELEASE_LOCK('concord_self_fence'); \
             END IF;"
        )
    };
    let body = format!(
        "BEGIN \
         DECLARE m BIGINT UNSIGNED DEFAULT 0; \
         DECLARE blocked INT DEFAULT 0; \
         DECLARE done INT DEFAULT 0; \
         DECLARE victim BIGINT UNSIGNED DEFAULT 0; \
         DECLARE others CURSOR FOR SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler') AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon'); \
         DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
         SET SESSION sql_log_bin = 0; \
         SELECT COALESCE(BIT_XOR(ts), 0) INTO m FROM {heartbeat_table}; \
         UPDATE {t} SET at = IF(seen = m, at, UTC_TIMESTAMP(6)), seen = m WHERE id = 1; \
         IF @@global.read_only = 0 AND (SELECT at FROM {t} WHERE id = 1) < UTC_TIMESTAMP(6) - INTERVAL {us} MICROSECOND THEN \
           UPDATE {t} SET fired = UTC_TIMESTAMP(6) WHERE id = 1; \
           {unblock} \
         END IF; \
         END"
    );
    let create = format!(
        "EVENT {t} ON SCHEDULE EVERY 1 SECOND ON COMPLETION PRESERVE ENABLE \
         COMMENT 'concord failover.self_fence: read-only after {us} us without a heartbeat' DO {body}"
    );
    if mariadb {
        conn.query_drop(format!("CREATE OR REPLACE DEFINER = CURRENT_USER {create}"))
            .await?;
    } else {
        conn.query_drop(format!("DROP EVENT IF EXISTS {t}")).await?;
        match conn
            .query_drop(format!("CREATE DEFINER = CURRENT_USER {create}"))
            .await
        {
            // Another node installed it at the same moment.
            Err(mysql_async::Error::Server(e)) if e.code == 1537 => {}
            r => r?,
        }
    }
    conn.query_drop("SET GLOBAL event_scheduler = ON").await?;
    conn.query_drop("SET SESSION sql_log_bin = 1").await?;
    Ok(())
}

/// When the server fenced itself, if it did and is still read-only.
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

/// Before a promoted server becomes writable: restart its event's clock
/// (it may hold an enabled event from an earlier term as primary). Out of
/// the binlog; errors are ignored (most servers have no such table).
pub async fn rearm(conn: &mut Conn, heartbeat_table: &str) {
    let t = table(heartbeat_table);
    let _ = conn.query_drop("SET SESSION sql_log_bin = 0").await;
    let _ = conn
        .query_drop(format!(
            "UPDATE {t} SET at = UTC_TIMESTAMP(6), fired = NULL WHERE id = 1"
        ))
        .await;
    let _ = conn.query_drop("SET SESSION sql_log_bin = 1").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_covers_in_flight_heartbeats_the_threshold_two_event_periods_two_lock_waits_and_the_drift(
    ) {
        assert_eq!(
            wait_after_fleet(
                Duration::from_secs(2),
                Duration::from_millis(200),
                Duration::from_secs(1)
            ),
            Duration::from_millis(7200)
        );
        assert_eq!(table("concord.heartbeat"), "concord.self_fence");
        assert_eq!(table("ops.hb"), "ops.self_fence");
    }
}
