//! The backend side effects of the workflows, in MariaDB's and MySQL's
//! dialects. Every statement that changes a server goes through [`exec`],
//! which first checks that this node still owns the workflow (see
//! `owner.rs`): a leader that lost its place stops before it touches a
//! server again.

use super::{owner, step, FailoverError, Fleet, R};
use crate::gtid;
use mysql_async::prelude::*;
use mysql_async::Conn;

pub(super) fn is_mariadb(c: &Conn) -> bool {
    c.server_version() >= (10, 0, 0)
        && c.server_version() < (20, 0, 0)
        && !matches!(c.server_version(), (8, _, _))
}

/// [`gtid::wait_sql`] in the dialect of the server behind `c`.
pub(super) fn gtid_wait_sql(c: &Conn, pos: &str, secs: f64) -> String {
    gtid::wait_sql(is_mariadb(c), pos, secs)
}

/// A statement that changes a server, run only while this node owns the
/// workflow.
pub(super) async fn exec(
    f: &Fleet<'_>,
    c: &mut Conn,
    name: &str,
    what: &'static str,
    sql: &str,
) -> R<()> {
    owner::owned(f).await?;
    c.query_drop(sql).await.map_err(|e| step(name, what, e))
}

/// The server's binlog position (what it wrote itself and logged).
pub(super) async fn binlog_pos(c: &mut Conn, name: &str) -> R<String> {
    let sql = if is_mariadb(c) {
        "SELECT @@gtid_binlog_pos"
    } else {
        "SELECT @@gtid_executed"
    };
    let p: Option<String> = c
        .query_first(sql)
        .await
        .map_err(|e| step(name, "read position", e))?;
    Ok(crate::probe::normalize_gtids(&p.unwrap_or_default()))
}

/// Every (domain, server, sequence) a server holds: MariaDB's binlog
/// state and applied position together (a promoted replica's own binlog
/// may lack what it applied without `log_slave_updates`); MySQL's
/// executed set.
pub(super) async fn gtid_state(c: &mut Conn, name: &str) -> R<String> {
    let sql = if is_mariadb(c) {
        "SELECT CONCAT_WS(',', NULLIF(@@gtid_binlog_state, ''), NULLIF(@@gtid_slave_pos, ''))"
    } else {
        "SELECT @@gtid_executed"
    };
    let p: Option<String> = c
        .query_first(sql)
        .await
        .map_err(|e| step(name, "read GTID state", e))?;
    Ok(crate::probe::normalize_gtids(&p.unwrap_or_default()))
}

/// Stops a replica's IO thread (what it received stays in its relay log
/// and is applied; nothing more arrives from a fenced source).
pub(super) async fn stop_receiving(f: &Fleet<'_>, c: &mut Conn, name: &str) -> R<()> {
    let sql = if is_mariadb(c) {
        "STOP SLAVE IO_THREAD"
    } else {
        "STOP REPLICA IO_THREAD"
    };
    exec(f, c, name, "stop receiving", sql).await
}

/// What a replica's replication applier waits for, when that is a lock
/// a backup takes for its whole run (FLUSH TABLES WITH READ LOCK, BACKUP
/// STAGE; MySQL and older MariaDB show the commit lock): the thread's
/// state. A snapshot: a backup that starts after it is not seen. Seen only with the `PROCESS` grant; `None`
/// without it, or when the query fails.
pub(super) async fn applier_held_by_backup(c: &mut Conn) -> Option<String> {
    c.query_first(
        "SELECT state FROM information_schema.processlist \
         WHERE (command LIKE 'Slave%' OR user = 'system user') \
         AND state IN ('Waiting for backup lock', 'Waiting for global read lock', \
         'Waiting for commit lock') LIMIT 1",
    )
    .await
    .ok()
    .flatten()
}

/// A candidate whose applier holds its relay log back (`MASTER_DELAY`)
/// or is stopped (an earlier attempt stopped here half-way) applies it
/// now: otherwise the catch-up waits the delay out and fails after
/// `failover.catchup_timeout`, on every retry. MariaDB only, one GTID
/// domain only (`None` otherwise: the caller keeps the old behaviour).
///
/// The applier restarts from its own relay log position, named in the
/// CHANGE MASTER: that also turns `Using_Gtid` off, and it must, because
/// in GTID mode a CHANGE MASTER, or an applier started while the receiver
/// is stopped (the failover stopped it), deletes the relay log and with it
/// what only this replica received. With one domain that position is
/// exact even under parallel replication (STOP waits for the workers);
/// with several it may lag a domain that ran ahead, so those are left
/// alone. The promotion resets replication anyway; a replica not promoted
/// after all keeps `Using_Gtid=No` and no delay until it is repointed.
pub(super) async fn apply_relay_log_now(
    f: &Fleet<'_>,
    c: &mut Conn,
    name: &str,
    io_pos: &str,
) -> Option<R<()>> {
    if !is_mariadb(c) || io_pos.contains(',') {
        return None;
    }
    Some(restart_applier_undelayed(f, c, name).await)
}

async fn restart_applier_undelayed(f: &Fleet<'_>, c: &mut Conn, name: &str) -> R<()> {
    let what = "stop the applier";
    exec(f, c, name, what, "STOP SLAVE SQL_THREAD").await?;
    let st: Option<mysql_async::Row> = c
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| step(name, "read the applier's relay log position", e))?;
    let text = |r: &mysql_async::Row, col: &str| -> Option<String> {
        r.get_opt::<Option<String>, _>(col)?.ok().flatten()
    };
    let at = st.and_then(|r| {
        let file = text(&r, "Relay_Log_File")?;
        let pos: u64 = text(&r, "Relay_Log_Pos")?.parse().ok()?;
        Some((file, pos))
    });
    // Left stopped when unknown: started in GTID mode it would delete the
    // relay log. The next attempt tries again.
    let Some((file, pos)) = at.filter(|(file, _)| {
        !file.is_empty()
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    }) else {
        return Err(step(
            name,
            "read the applier's relay log position",
            "none; the applier is left stopped",
        ));
    };
    let sql = if concord_config::testhooks::on("delay-removal-purges-relay-log") {
        "CHANGE MASTER TO MASTER_DELAY = 0".to_string()
    } else {
        format!(
            "CHANGE MASTER TO MASTER_DELAY = 0, RELAY_LOG_FILE = '{file}', RELAY_LOG_POS = {pos}"
        )
    };
    exec(f, c, name, "remove the replication delay", &sql).await?;
    exec(f, c, name, "start the applier", "START SLAVE SQL_THREAD").await
}

/// Makes a server writable and not a replica any more.
pub(super) async fn promote_server(f: &Fleet<'_>, c: &mut Conn, name: &str) -> R<()> {
    let (stop, reset) = if is_mariadb(c) {
        ("STOP SLAVE", "RESET SLAVE ALL")
    } else {
        ("STOP REPLICA", "RESET REPLICA ALL")
    };
    exec(f, c, name, "stop replication", stop).await?;
    exec(f, c, name, "reset replication", reset).await?;
    make_writable(f, c, name).await
}

/// read_only off, with the self-fence clock restarted just before (on
/// MySQL once `super_read_only` is off: writable for the monitor account,
/// still read-only for others).
pub(super) async fn make_writable(f: &Fleet<'_>, c: &mut Conn, name: &str) -> R<()> {
    if !is_mariadb(c) {
        let sql = "SET GLOBAL super_read_only = 0";
        exec(f, c, name, "set super_read_only=0", sql).await?;
    }
    rearm_self_fence(f, c).await?;
    exec(f, c, name, "set read_only=0", "SET GLOBAL read_only = 0").await
}

/// A server that was primary before may hold an enabled self-fence event
/// whose clock is old: restart it before the server becomes writable
/// (or, in a switchover, before read_only waits on a lock). Only while
/// this node owns the workflow (a late restart delays the switch): not
/// owning it stops the workflow here, before the server becomes writable
/// with an old clock.
pub(super) async fn rearm_self_fence(f: &Fleet<'_>, c: &mut Conn) -> R<()> {
    if f.cfg.failover.self_fence {
        owner::owned(f).await?;
        crate::selffence::rearm(c, &f.cfg.monitor.heartbeat_table).await;
    }
    Ok(())
}

/// Points a replica at a new source with GTID auto-positioning.
/// `credentials` is needed for a server that never replicated. The
/// heartbeat period follows `monitor.interval` (at most MariaDB's default
/// of half `slave_net_timeout`), so a replica notices a silent source in
/// seconds, and the failure verdict with it.
pub(super) async fn repoint(
    f: &Fleet<'_>,
    c: &mut Conn,
    name: &str,
    source: &str,
    credentials: Option<(&str, &str)>,
    pos: &str,
) -> R<()> {
    let (host, port) = source.rsplit_once(':').unwrap_or((source, "3306"));
    let creds = credentials
        .map(|(u, p)| {
            format!(
                ", MASTER_USER='{}', MASTER_PASSWORD='{}'",
                u.replace('\'', "''"),
                p.replace('\'', "''")
            )
        })
        .unwrap_or_default();
    let hb = f.cfg.monitor.interval.get().as_secs_f64().clamp(0.5, 30.0);
    if is_mariadb(c) {
        owner::owned(f).await?;
        let _ = c.query_drop("STOP SLAVE").await;
        exec(
            f,
            c,
            name,
            "repoint replication",
            &format!("CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}{creds}, MASTER_USE_GTID={pos}, MASTER_HEARTBEAT_PERIOD={hb:.3}"),
        )
        .await?;
        exec(f, c, name, "set read_only=1", "SET GLOBAL read_only = 1").await?;
        exec(f, c, name, "start replication", "START SLAVE").await
    } else {
        owner::owned(f).await?;
        let _ = c.query_drop("STOP REPLICA").await;
        let creds = creds
            .replace("MASTER_USER", "SOURCE_USER")
            .replace("MASTER_PASSWORD", "SOURCE_PASSWORD");
        exec(
            f,
            c,
            name,
            "repoint replication",
            &format!("CHANGE REPLICATION SOURCE TO SOURCE_HOST='{host}', SOURCE_PORT={port}{creds}, SOURCE_AUTO_POSITION=1, SOURCE_HEARTBEAT_PERIOD={hb:.3}"),
        )
        .await?;
        exec(
            f,
            c,
            name,
            "set read_only=1",
            "SET GLOBAL super_read_only = 1",
        )
        .await?;
        exec(f, c, name, "start replication", "START REPLICA").await
    }
}

/// The statement that makes a server read-only for everyone concord's
/// accounts could be (MySQL's SUPER users ignore plain `read_only`).
pub(super) fn read_only_sql(c: &Conn) -> &'static str {
    if is_mariadb(c) {
        "SET GLOBAL read_only = 1"
    } else {
        "SET GLOBAL super_read_only = 1"
    }
}

/// `SET GLOBAL read_only = 1`, waiting at most `wait` (whole seconds, at
/// least one) for the locks it needs: [`FailoverError::LockWait`] after
/// that. It waits for every session holding `LOCK TABLES ... WRITE` and
/// every write still running, each for up to `lock_wait_timeout`: a day
/// on MariaDB, a year on MySQL. A direct client's long UPDATE would
/// otherwise hold a failover, or a switchover's frozen writes, that long.
pub(super) async fn set_read_only(
    f: &Fleet<'_>,
    c: &mut Conn,
    name: &str,
    wait: std::time::Duration,
) -> R<()> {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if !concord_config::testhooks::on("fence-waits-for-locks") {
        let sql = format!("SET SESSION lock_wait_timeout = {secs}");
        exec(f, c, name, "bound the lock wait", &sql).await?;
    }
    let sql = read_only_sql(c);
    owner::owned(f).await?;
    match c.query_drop(sql).await {
        Ok(()) => Ok(()),
        // ER_LOCK_WAIT_TIMEOUT, in both dialects.
        Err(mysql_async::Error::Server(e)) if e.code == 1205 => Err(FailoverError::LockWait {
            backend: name.to_string(),
            waited: std::time::Duration::from_secs(secs),
        }),
        Err(e) => Err(step(name, "set read_only=1", e)),
    }
}

/// What fencing a server did.
pub(super) struct Fenced {
    /// For the event log.
    pub msg: String,
    /// read_only is set (as of the answer).
    pub done: bool,
    /// The server's final binlog position (`None` when unreachable: one
    /// connect timeout, not two, on a black-holed server).
    pub pos: Option<String>,
}

/// On a demoted primary: read-only, and every connection but replication
/// and this one killed, concord's own monitor connections included (a
/// heartbeat in flight from a node that has not applied the fence yet
/// must fail rather than commit later: the monitor account may bypass
/// `read_only`). A session whose lock or running write keeps read_only
/// from taking effect within `monitor.timeout` is killed with the rest,
/// and read_only set again: on a fenced server nothing may go on writing.
/// Best effort; the result says what happened.
pub(super) async fn fence_server(f: &Fleet<'_>, name: &str, addr: &str) -> Fenced {
    let failed = |msg: String| Fenced {
        msg,
        done: false,
        pos: None,
    };
    let mut c = match super::connect(f, name, addr).await {
        Ok(c) => c,
        Err(e) => {
            return failed(format!(
                "'{name}' unreachable for read_only ({e}); it stays fenced in the topology"
            ))
        }
    };
    let wait = f.cfg.monitor.timeout.get();
    let mut set = set_read_only(f, &mut c, name, wait).await;
    let blocked = match &set {
        Ok(()) => None,
        // Only a lock wait is cured by the kill. (The test-only switch
        // gives up here, as concord did before.)
        Err(e @ FailoverError::LockWait { .. })
            if !concord_config::testhooks::on("fence-waits-for-locks") =>
        {
            Some(e.to_string())
        }
        Err(e) => return failed(format!("'{name}': setting read_only failed: {e}")),
    };
    let mut killed = kill_others(f, &mut c).await;
    if let Some(why) = &blocked {
        set = set_read_only(f, &mut c, name, wait).await;
        if let Err(e) = &set {
            return failed(format!(
                "'{name}': setting read_only failed ({why}), and again after {killed} connections were killed: {e}"
            ));
        }
        // Whoever connected between the kill and read_only.
        killed += kill_others(f, &mut c).await;
    }
    let pos = binlog_pos(&mut c, name).await.ok();
    let _ = c.disconnect().await;
    let how = match blocked {
        Some(why) => format!(" (it waited on a lock: {why}; set after the kill)"),
        None => String::new(),
    };
    Fenced {
        msg: format!("'{name}' set read_only and {killed} connections killed{how}"),
        done: true,
        pos,
    }
}

/// Kills every connection on the server but this one, replication's and
/// the server's own threads, while this node owns the workflow.
async fn kill_others(f: &Fleet<'_>, c: &mut Conn) -> usize {
    let ids: Vec<u64> = c
        .query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler') AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')",
        )
        .await
        .unwrap_or_default();
    let mut killed = 0;
    if owner::owned(f).await.is_ok() {
        for id in &ids {
            if c.query_drop(format!("KILL {id}")).await.is_ok() {
                killed += 1;
            }
        }
    }
    killed
}
