//! COM_QUERY: classify, answer locally or place the statement (router),
//! forward it, retry a read elsewhere if its replica died before
//! answering, then track what the statement changed.

use super::conns::{retryable, Outcome, Which};
use super::relay::CmdHead;
use super::{local, Session};
use crate::classify::{self, flag, Class, Kind};
use crate::error::SessionError;
use crate::router::{self, Facts, Reason, Route};
use concord_protocol::codes;
use concord_protocol::ok::StateChange;
use concord_protocol::scan::Expect;

impl Session {
    pub(super) async fn query(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let sql = &cmd.visible(&self.client.rbuf)[1..];
        let mut class = classify::classify(sql);
        if !cmd.whole {
            class.flags |= flag::TRUNCATED;
        }
        if class.kind == Kind::ConcordStatus {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return local::concord_status(self).await;
        }
        // Keep the text of statements whose effect is tracked.
        let tracked = matches!(
            class.kind,
            Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use
        ) && cmd.whole;
        let text = tracked.then(|| sql.to_vec());
        let dirty = class.has(
            flag::PINS | flag::TEMP_TABLE | flag::USER_VAR_WRITE | flag::MULTI | flag::TRUNCATED,
        ) || matches!(
            class.kind,
            Kind::SetSession | Kind::SetAutocommit(_) | Kind::SetTransaction
        );

        let (w, reason) = match self.place(&class, cmd.len, false).await {
            Ok(x) => x,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        crate::metrics::route(w != Which::Primary, reason);
        let retry = w != Which::Primary && cmd.whole;
        let mut res = self
            .forward_to(w, cmd, Expect::ResultSets, dirty, None, !retry)
            .await;
        if retry && res.as_ref().err().is_some_and(retryable) {
            // The replica failed before answering: a read is safe to run
            // on the primary instead.
            if let Err((e, _)) = &res {
                tracing::info!(session = self.info.id, "read re-run on the primary: {e}");
            }
            if let Err(e) = self.ensure_primary(false, cmd.len).await {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
            crate::metrics::route(false, Reason::NoReplica);
            res = self
                .forward_to(Which::Primary, cmd, Expect::ResultSets, dirty, None, true)
                .await;
        }
        let out = res?;
        self.after_statement(w, &class, text, &out);
        Ok(())
    }

    /// Decides where a statement runs and makes sure the session holds a
    /// connection there. `prepare`: placing a COM_STMT_PREPARE (never needs
    /// the lease: preparing writes nothing).
    pub(super) async fn place(
        &mut self,
        class: &Class,
        bytes: usize,
        prepare: bool,
    ) -> Result<(Which, Reason), SessionError> {
        if let Some(w) = self.txn {
            if self.conns.get(w).is_some() {
                if w == Which::Primary {
                    self.ensure_primary(!prepare, bytes).await?;
                } else {
                    self.sync_held(w).await?;
                }
                return Ok((w, Reason::Transaction));
            }
            self.txn = None;
        }
        // A guard, not a clone: no shared reference count per statement.
        let facts = {
            let cfg = self.shared.config.load();
            Facts {
                pinned: self.pinned,
                autocommit: self.state.autocommit,
                split_reads: cfg.routing.split_reads,
                max_lag: class
                    .hint_max_lag
                    .or(self.user.max_replica_lag.map(|d| d.get()))
                    .unwrap_or(cfg.routing.max_replica_lag.get()),
                fallback_error: Facts::fallback(cfg.routing.fallback),
            }
        };
        let reads = class.replica_ok() || matches!(class.kind, Kind::Begin { read_only: true });
        let need = if reads && self.ryw_enabled() {
            self.ryw_gtid().await?
        } else {
            None
        };
        let routing = self.shared.routing.load_full();
        let mut route = router::route(class, &facts, &routing, need.as_deref());
        if let (Route::Primary(Reason::ReadYourWrites), Some(g)) = (&route, need.as_deref()) {
            if let Some(i) = self.ryw_wait(&routing, facts.max_lag, g).await {
                route = Route::Replica(i, Reason::Read);
            }
        }
        match route {
            Route::Primary(reason) => {
                let session_only = matches!(
                    class.kind,
                    Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use
                );
                let need_lease = !prepare && !class.replica_ok() && !session_only;
                self.ensure_primary(need_lease, bytes).await?;
                Ok((Which::Primary, reason))
            }
            Route::Replica(i, reason) => {
                let pool = routing.replicas[i].pool.clone();
                match self.ensure_replica(&pool).await {
                    Ok(w) => Ok((w, reason)),
                    Err(SessionError::Backend {
                        backend, source, ..
                    }) => {
                        tracing::info!(backend = %backend, "replica unusable ({source}); this read goes to the primary");
                        self.ensure_primary(false, bytes).await?;
                        Ok((Which::Primary, Reason::NoReplica))
                    }
                    Err(e) => Err(e),
                }
            }
            Route::Refuse(msg) => Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                format!("concord: {msg}"),
            )),
        }
    }

    /// Tracks what a successful statement changed in the session.
    pub(super) fn after_statement(
        &mut self,
        w: Which,
        class: &Class,
        text: Option<Vec<u8>>,
        out: &Outcome,
    ) {
        if out.failed {
            return;
        }
        if let Some(ok) = &out.ok {
            if let Ok(changes) = ok.state_changes() {
                for c in changes {
                    if let StateChange::Schema(s) = c {
                        self.set_db(w, Some(String::from_utf8_lossy(&s).into_owned()));
                    }
                }
            }
        }
        match (class.kind, text) {
            (Kind::Use, Some(t)) => {
                if let Some(db) = classify::use_target(&t) {
                    self.set_db(w, Some(db));
                }
            }
            (Kind::SetSession, Some(t)) => self.record_set(w, classify::set_target(&t), &t),
            (Kind::SetAutocommit(on), Some(t)) => {
                self.state.autocommit = on;
                self.record_set(w, Some("autocommit".into()), &t);
            }
            _ => {}
        }
        let query_vars = class.has(flag::USER_VAR_WRITE) && class.kind != Kind::SetSession;
        if class.has(flag::TEMP_TABLE | flag::PINS) || query_vars || self.state.overflow {
            if !self.pinned {
                tracing::debug!(session = self.info.id, "session pinned to the primary (temp tables, locks or query-assigned variables)");
            }
            self.pinned = true;
        }
        self.after_write_check(w, class, false);
    }

    /// Read-your-writes bookkeeping after anything that may have written.
    pub(super) fn after_write_check(&mut self, w: Which, class: &Class, failed: bool) {
        let session_only = matches!(
            class.kind,
            Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use | Kind::SetTransaction
        );
        if !failed && w == Which::Primary && !class.replica_ok() && !session_only {
            self.ryw_note_write();
        }
    }

    fn record_set(&mut self, w: Which, key: Option<String>, sql: &[u8]) {
        let before = self.state.version;
        self.state.record_set(key, sql);
        // The connection that ran it is now in the new state.
        let sid = self.state.session_id;
        let after = self.state.version;
        if let Some(b) = self.conns.get_mut(w) {
            if b.conn.state.synced == Some((sid, before)) {
                b.conn.state.synced = Some((sid, after));
            }
        }
    }

    pub(super) fn set_db(&mut self, w: Which, db: Option<String>) {
        if let Some(b) = self.conns.get_mut(w) {
            b.conn.state.db = db.clone();
        }
        *self.info.db.lock().unwrap_or_else(|p| p.into_inner()) = db.clone();
        self.state.db = db;
    }
}
