//! Read-your-writes: after a session writes, its reads go only to
//! replicas that have applied that write. The write's GTID comes with the
//! OK packet (MariaDB's tracked `last_gtid`, MySQL's `OWN_GTID`); from a
//! backend that does not track it is fetched lazily (only when a read
//! follows). A replica qualifies if its probed position covers it, or
//! after a bounded `MASTER_GTID_WAIT` / `WAIT_FOR_EXECUTED_GTID_SET` on
//! it; otherwise the read goes to the primary.

use super::conns::Which;
use super::Session;
use crate::backend::Reply;
use crate::error::SessionError;
use crate::routing::Routing;
use concord_config::ReadYourWrites;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Ryw {
    /// A write happened and its GTID has not been fetched yet.
    pub pending: bool,
    /// The connection that ran it (its `@@last_gtid` is the write's only
    /// there: a pooled connection's is whoever wrote last).
    pub pending_on: u64,
    /// The GTID reads must see (None: nothing to wait for).
    pub gtid: Option<String>,
    /// Replicas known to have applied `covered_for` (by waiting on them).
    pub covered: Vec<Arc<str>>,
    /// The position `covered` is about (the session's write, or that
    /// merged with a causal token).
    pub covered_for: Option<String>,
}

impl Session {
    pub(super) fn ryw_mode(&self) -> ReadYourWrites {
        self.user
            .read_your_writes
            .unwrap_or(self.cfg.routing.read_your_writes)
    }

    /// `read_your_writes = "fleet"`: the primary's position as read after
    /// this read arrived (see `crate::fleetpos`).
    pub(super) async fn fleet_position(&self) -> Result<Option<String>, SessionError> {
        // A fetch in flight when the read arrived, then its own.
        let timeout = self.cfg.monitor.timeout.get() * 2;
        let t = std::time::Instant::now();
        let pos = self
            .shared
            .primary_pos
            .after_now(&self.shared, timeout)
            .await
            .map_err(|why| {
                SessionError::reply(
                    concord_protocol::codes::OPTION_PREVENTS_STATEMENT,
                    format!("concord: read_your_writes = \"fleet\" could not learn the primary's position ({why}); the read was not run"),
                )
            })?;
        crate::metrics::read_wait("position", t.elapsed());
        Ok((!pos.is_empty()).then_some(pos))
    }

    /// After a statement on the primary that may have written: `own` is
    /// the GTID the server reported for it. A tracking backend that
    /// reported none wrote nothing to its binlog (the last write stands).
    /// Recorded even with read-your-writes off: it is the session's
    /// causal token (`SELECT @@concord_token`).
    pub(super) fn ryw_note_write(&mut self, tracking: bool, own: Option<Vec<u8>>, conn_id: u64) {
        match own {
            Some(g) => {
                let g = gtid_text(&String::from_utf8_lossy(&g));
                if g.is_some() {
                    self.ryw.pending = false;
                    self.ryw.gtid = g;
                    self.ryw.covered.clear();
                }
            }
            None if tracking => {}
            None => self.ryw_unknown_write(conn_id),
        }
    }

    /// A write whose GTID the answer did not carry (a backend that does
    /// not track it, or an error after part of the work committed): the
    /// next read learns the position first, the earlier write still
    /// counting.
    pub(super) fn ryw_unknown_write(&mut self, conn_id: u64) {
        self.ryw.pending = true;
        self.ryw.pending_on = conn_id;
        self.ryw.covered.clear();
    }

    /// The GTID the next read must see.
    pub(super) async fn ryw_gtid(&mut self) -> Result<Option<String>, SessionError> {
        if !self.ryw.pending {
            return Ok(self.ryw.gtid.clone());
        }
        // The writing connection is gone (fenced, failed, given back):
        // the primary's whole position is a safe, stricter stand-in for
        // the write's GTID.
        let own = self
            .conns
            .primary
            .as_ref()
            .is_some_and(|b| b.conn.id == self.ryw.pending_on);
        if self.conns.primary.is_none() {
            self.ensure_primary(0).await?;
        }
        let Some(b) = self.conns.primary.as_mut() else {
            return Err(SessionError::reply(
                concord_protocol::codes::UNKNOWN_ERROR,
                "concord: no primary to learn the session's last write position from (read_your_writes)",
            ));
        };
        let mariadb = b.conn.flavor == concord_health::Flavor::MariaDb;
        let sql = match (mariadb, own) {
            (true, true) => "SELECT @@last_gtid",
            (true, false) => "SELECT @@global.gtid_binlog_pos",
            (false, _) => "SELECT @@global.gtid_executed",
        };
        let fetched = self.primary_value(sql).await?.and_then(|g| gtid_text(&g));
        let gtid = match (self.ryw.gtid.take(), fetched) {
            (Some(a), Some(b)) => Some(super::causal::merge(&a, &b)),
            (a, b) => a.or(b),
        };
        self.ryw.pending = false;
        self.ryw.gtid = gtid.clone();
        Ok(gtid)
    }

    /// The first column of the first row `sql` returns on the held primary
    /// connection (None: no row, NULL, or an error reply). A connection
    /// that fails is dropped and the error returned.
    pub(super) async fn primary_value(
        &mut self,
        sql: &str,
    ) -> Result<Option<String>, SessionError> {
        match self.value_on(Which::Primary, sql).await {
            Err(SessionError::Reply(_)) => Ok(None),
            r => r,
        }
    }

    /// The first column of the first row `sql` returns on held connection
    /// `w` (None: no row, NULL, or no rows at all); an error reply is
    /// returned as `SessionError::Reply`, a connection that fails is
    /// dropped.
    pub(super) async fn value_on(
        &mut self,
        w: Which,
        sql: &str,
    ) -> Result<Option<String>, SessionError> {
        let Some(b) = self.conns.get_mut(w) else {
            return Ok(None);
        };
        let name = b.pool.name.clone();
        match b.conn.exec(sql).await {
            Ok(Ok(Reply::Rows(rows))) => Ok(rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => Err(SessionError::Reply(e)),
            Err(e) => {
                self.drop_conn(w);
                Err(SessionError::Backend {
                    backend: name,
                    source: e,
                    mid_response: false,
                })
            }
        }
    }

    /// No replica's probed position covers the write yet: try a covered
    /// one, else wait (bounded) on one about as current as the least
    /// lagged ([`crate::router::soonest`]). Returns the
    /// replica index in `routing` to use.
    pub(super) async fn ryw_wait(
        &mut self,
        routing: &Routing,
        max_lag: Duration,
        gtid: &str,
    ) -> Option<usize> {
        if self.ryw.covered_for.as_deref() != Some(gtid) {
            self.ryw.covered.clear();
            self.ryw.covered_for = Some(gtid.to_string());
        }
        let eligible = |i: usize| routing.replicas[i].health.within(max_lag);
        if let Some(i) = (0..routing.replicas.len())
            .find(|&i| eligible(i) && self.ryw.covered.contains(&routing.replicas[i].pool.name))
        {
            return Some(i);
        }
        let wait = self
            .shared
            .config
            .load()
            .routing
            .read_your_writes_wait
            .get();
        if wait.is_zero() {
            return None;
        }
        let i = if concord_config::testhooks::on("ryw-wait-any-replica") {
            crate::router::pick_replica(routing, max_lag, None)?
        } else {
            crate::router::soonest(routing, max_lag, wait)?
        };
        let pool = routing.replicas[i].pool.clone();
        let w = self.ensure_replica(&pool).await.ok()?;
        let b = self.conns.get_mut(w)?;
        let mariadb = b.conn.flavor == concord_health::Flavor::MariaDb;
        let secs = wait.as_secs_f64();
        let sql = concord_health::gtid::wait_sql(mariadb, gtid, secs);
        let t = std::time::Instant::now();
        let res = b.conn.exec(&sql).await;
        crate::metrics::read_wait("replica", t.elapsed());
        match res {
            Ok(Ok(Reply::Rows(rows)))
                if rows
                    .first()
                    .and_then(|r| r.first())
                    .cloned()
                    .flatten()
                    .as_deref()
                    == Some("0") =>
            {
                self.ryw.covered.push(pool.name.clone());
                Some(i)
            }
            Ok(_) => None,
            Err(_) => {
                self.drop_conn(w);
                None
            }
        }
    }
}

/// A GTID position as reported, normalized, if it holds only GTID
/// characters (it is put into SQL later).
fn gtid_text(g: &str) -> Option<String> {
    let g = concord_health::probe::normalize_gtids(g);
    (!g.is_empty()
        && g.bytes()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b'-' | b':' | b',')))
    .then_some(g)
}
