//! COM_QUERY: classify, answer locally or place the statement (router),
//! forward it, retry a read elsewhere if its replica died before
//! answering, then track what the statement changed.

use super::conns::{retryable, Which};
use super::relay::CmdHead;
use super::{local, Session};
use crate::classify::{self, flag, Class, KillTarget, Kind};
use crate::error::SessionError;
use crate::router::{self, Facts, Reason, Route};
use concord_protocol::codes;
use concord_protocol::consts::status;
use concord_protocol::packet::HEADER;
use concord_protocol::scan::Expect;

impl Session {
    /// COM_QUERY, recorded in the node's digests when they are on.
    /// Query rules see the same fingerprint.
    pub(super) async fn query(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let timing = self.shared.digests.timing();
        if !timing && self.shared.routing.load().rules.is_empty() {
            return self.query_inner(cmd, None, None).await;
        }
        let mut buf = std::mem::take(&mut self.digest_buf);
        let sql = &cmd.visible(&self.client.rbuf)[1..];
        // One lexer pass for both.
        let (class, digest) = classify::classify_digest(sql, &mut buf);
        let rules = self.rule_effect(digest, &buf);
        if !timing {
            self.digest_buf = buf;
            return self.query_inner(cmd, Some(class), rules).await;
        }
        // The literal text only when the slow log may show it.
        let values = self.shared.digests.slow_values().then(|| sql.to_vec());
        self.note = Default::default();
        // The command's arrival: its own clock read serves the digest.
        let t0 = self.cmd_at;
        let r = self.query_inner(cmd, Some(class), rules).await;
        self.record_digest(digest, &buf, t0, r.is_err(), values.as_deref());
        self.digest_buf = buf;
        r
    }

    async fn query_inner(
        &mut self,
        cmd: CmdHead,
        class: Option<Class>,
        rules: Option<crate::rules::Effect>,
    ) -> Result<(), (SessionError, u8)> {
        let sql = &cmd.visible(&self.client.rbuf)[1..];
        let mut class = class.unwrap_or_else(|| classify::classify(sql));
        self.stmt_timeout = super::deadline::hinted(self.default_timeout(), class.hint_timeout);
        self.txn_boundary = matches!(
            class.kind,
            Kind::Begin { .. } | Kind::Commit | Kind::Rollback
        );
        if !cmd.whole {
            class.flags |= flag::TRUNCATED;
            class.flags &= !flag::ONLY_SETS;
        }
        match class.kind {
            Kind::ConcordStatus => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                if class.has(flag::MULTI) {
                    return Err((
                        SessionError::reply(
                            codes::PARSE_ERROR,
                            "SHOW CONCORD STATUS is answered by concord and must be sent alone, not in a multi-statement; nothing was executed",
                        ),
                        1,
                    ));
                }
                return local::concord_status(self).await;
            }
            _ if super::causal::is_concord_var(&class) => return self.concord_var(cmd).await,
            Kind::Kill
                if cmd.whole || !concord_config::testhooks::on("kill-over-64k-forwarded") =>
            {
                // (One over 64 KiB is never sent on: a backend would take
                // its session id for a thread id. Test-only
                // `kill-over-64k-forwarded`: it is.)
                let (query_only, target) = if cmd.whole {
                    classify::kill_target(sql)
                } else {
                    (
                        false,
                        KillTarget::Unsupported(
                            "a KILL statement over 64 KiB is not supported through concord",
                        ),
                    )
                };
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return self.kill_statement(query_only, target).await;
            }
            _ => {}
        }
        if let Some(e) = rules {
            if let Err(e) = self.apply_rules(e, &mut class) {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        }
        let sql = &cmd.visible(&self.client.rbuf)[1..];
        self.pending_after = match Self::hint_token(&class, sql) {
            Ok(t) => t,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        // The names of user variables it assigns (read back from where it
        // runs when another connection needs them).
        let assigned = if class.has(flag::USER_VAR_WRITE | flag::INTO) && cmd.whole {
            classify::assigned_user_vars(sql)
        } else {
            Vec::new()
        };
        // Ends (or names) what pins the session (looked at only then).
        let pin_change = if (self.pins != 0 || class.pin.is_some()) && cmd.whole {
            classify::pin_change(sql)
        } else {
            None
        };
        // A multi-statement that pins: what it created is not named.
        let pin_change = match (pin_change, class.pin) {
            (None, Some(p)) if class.has(flag::MULTI) || !cmd.whole => {
                Some(classify::PinChange::Unnamed(p))
            }
            (c, _) => c,
        };
        // COMMIT/ROLLBACK [NO] RELEASE, or `completion_type` RELEASE: the
        // server closes the connection after its OK.
        let releases = matches!(class.kind, Kind::Commit | Kind::Rollback)
            && !class.has(flag::MULTI)
            && cmd.whole
            && classify::releases(sql).unwrap_or_else(|| self.state.completion_releases())
            && !concord_config::testhooks::on("release-ignored");
        // `SET TRANSACTION` inside a multi-statement (a lone one is seen
        // by its kind; see `after_statement`).
        // (Of one over 64 KiB, its first 64 KiB.)
        let sets_txn = class.has(flag::MULTI) && classify::sets_transaction(sql);
        // A global's new value reaches connections opened from now on: the
        // pool opens new ones for the sessions to come (as directly a new
        // connection starts from it).
        let multi = class.has(flag::MULTI);
        let sets_global = (multi || matches!(class.kind, Kind::SetSession | Kind::Write))
            && classify::sets_global(sql, multi);
        // Set for the statement only: the server reports their reverting
        // later (see `BackendConn::reverting`).
        let reverting = if class.has(flag::SET_STATEMENT) && cmd.whole {
            classify::set_statement_vars(sql)
        } else {
            Vec::new()
        };
        // `SET NAMES cs COLLATE x`: a server that reports the character
        // sets only (MySQL; MariaDB 10.11 reports the collation too) would
        // leave the replayed connection at the character set's default
        // collation.
        let names_collation = if class.kind == Kind::SetSession && cmd.whole {
            classify::set_names_collation(sql)
        } else {
            None
        };
        let known = self.known_info(&class);
        let cmd = if (class.has(flag::CONN_ID) || known.is_some()) && cmd.whole {
            let id = self.info.id;
            let known = known.unwrap_or_default();
            self.rewrite_command(cmd, |payload| {
                let mut p = vec![payload[0]];
                p.extend(classify::rewrite_calls(&payload[1..], id, &known));
                p
            })
        } else {
            cmd
        };

        let (w, reason) = match self.place(&class, cmd.len).await {
            Ok(x) => x,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        crate::metrics::route(w != Which::Primary, reason);
        loop {
            // (A stored procedure may read LAST_INSERT_ID() too.)
            if class.has(flag::INSERT_ID | flag::CALL) && self.multiplexed() {
                if let Err(e) = self.bring_insert_id(w).await {
                    self.discard(cmd).await.map_err(|e| (e, 1))?;
                    return Err((e, 1));
                }
            }
            if !self.replace_fenced_primary(w, cmd).await? {
                break;
            }
        }
        self.may_write = !plain_read(&class);
        let retry = w != Which::Primary && cmd.whole;
        let mut res = self
            .forward_to(w, cmd, Expect::ResultSets, false, None, !retry)
            .await;
        let mut w = w;
        if retry && res.as_ref().err().is_some_and(retryable) {
            // The replica failed before answering: a read is safe to run
            // on the primary instead.
            if let Err((e, _)) = &res {
                tracing::info!(session = self.info.id, "read re-run on the primary: {e}");
            }
            if let Err(e) = self.ensure_primary(cmd.len).await {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
            if let Some(t) = self.read_token.clone() {
                if let Err(e) = self.primary_has(&t, true).await {
                    self.discard(cmd).await.map_err(|e| (e, 1))?;
                    return Err((e, 1));
                }
            }
            crate::metrics::route(false, Reason::NoReplica);
            w = Which::Primary;
            res = self
                .forward_to(Which::Primary, cmd, Expect::ResultSets, false, None, true)
                .await;
        }
        let out = res?;
        self.note_outcome(w, &out);
        if !reverting.is_empty() {
            if let Some(b) = self.conns.get_mut(w) {
                b.conn.reverting.extend(reverting);
            }
        }
        self.after_statement(w, &class, &assigned, &out, pin_change.as_ref());
        if sets_global && !out.failed {
            self.renew_pools(w).await;
        }
        if releases && !out.failed {
            // The server closed it after the OK: so does the session.
            self.drop_conn(w);
            self.closing_after = true;
        }
        if sets_txn && w == Which::Primary {
            // (Even if a later statement failed: this one may have run.)
            self.next_on_primary = true;
        }
        if let (Some(c), false) = (pin_change, out.failed) {
            self.change_pins(c);
        }
        let name = b"collation_connection";
        let reported = out.changes.iter().any(|c| {
            matches!(c, concord_protocol::ok::StateChange::SystemVariable(n, _) if n.eq_ignore_ascii_case(name))
        });
        if let (Some(coll), false, false) = (names_collation, out.failed, reported) {
            let (sid, before) = (self.state.session_id, self.state.version);
            self.state.bump();
            self.state.record_sysvar(name, coll.as_bytes(), &[name]);
            // The connection that ran it holds it already.
            if let Some(b) = self.conns.get_mut(w) {
                if b.conn.state.synced == Some((sid, before)) {
                    b.conn.state.synced = Some((sid, self.state.version));
                }
            }
        }
        Ok(())
    }

    /// Replaces the whole command at the head of the client buffer by
    /// `f(payload)` (same sequence id), keeping what follows it.
    pub(super) fn rewrite_command(
        &mut self,
        cmd: CmdHead,
        f: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> CmdHead {
        let newp = f(cmd.visible(&self.client.rbuf));
        let rest = self.client.rbuf.split_off(HEADER + cmd.len);
        self.client.rbuf.clear();
        let mut seq = 0;
        concord_protocol::packet::put_packet(&mut self.client.rbuf, &mut seq, &newp);
        self.client.rbuf.extend_from_slice(&rest);
        CmdHead {
            len: newp.len(),
            whole: newp.len() <= concord_protocol::scan::WHOLE_LIMIT,
        }
    }

    /// Decides where a statement runs and makes sure the session holds a
    /// connection there. The routing snapshot is read once, here.
    /// A SET GLOBAL ran on `w` (a text statement or a prepared one): that
    /// backend's pooled connections are renewed on every node, so sessions
    /// to come start from the new value (test-only
    /// `pool-ignores-set-global`: they are not).
    pub(super) async fn renew_pools(&mut self, w: Which) {
        if concord_config::testhooks::on("pool-ignores-set-global") {
            return;
        }
        if let Some(name) = self.conns.get(w).map(|b| b.pool.name.clone()) {
            crate::retire::fleet(&self.shared, &name).await;
        }
    }

    pub(super) async fn place(
        &mut self,
        class: &Class,
        bytes: usize,
    ) -> Result<(Which, Reason), SessionError> {
        // This statement's hint, whatever happens below (never left for
        // the next statement). A token applies where a read is placed:
        // outside a transaction, or at START TRANSACTION READ ONLY.
        let hinted = self.pending_after.take();
        self.read_token = None;
        if class.kind == Kind::Read && !class.has(flag::STMT_INFO) && self.pins == 0 {
            // User variables assigned earlier are read back now, so a
            // failover or a lost connection loses nothing: before a read,
            // which replaces everything the read-back could disturb on
            // that connection (FOUND_ROWS(), ROW_COUNT(), diagnostics).
            // Before anything else they wait, unless another connection
            // needs them (see `sync_held`). A pinned session keeps them
            // where they are, with the rest of its state.
            self.capture_elsewhere(u64::MAX).await?;
        }
        if let Some(w) = self.txn {
            if self.conns.get(w).is_some() {
                if w == Which::Primary {
                    self.ensure_primary(bytes).await?;
                } else if class.has(flag::CONN_FUNC) {
                    // A read-only transaction on a replica calling GET_LOCK(),
                    // LAST_INSERT_ID(), ...: what they name lives on the
                    // primary connection (locks are not transactional). The
                    // answer carries the transaction's flags.
                    self.ensure_primary(bytes).await?;
                    let tx = status::IN_TRANS | status::IN_TRANS_READONLY;
                    self.status_fix = Some((tx, self.status & tx));
                    return Ok((Which::Primary, Reason::ConnectionBound));
                } else {
                    self.sync_held(w).await?;
                }
                return Ok((w, Reason::Transaction));
            }
            self.txn = None;
        }
        // Diagnostics and counters of the previous statement exist only on
        // the connection that ran it (inside a transaction, that is the
        // transaction's).
        if class.has(flag::STMT_INFO) {
            let from = if class.has(flag::FOUND_ROWS) {
                self.last_read
            } else if class.has(flag::DIAG) {
                self.last_diag
            } else {
                self.last
            };
            if let Some(w) = from.filter(|w| self.conns.get(*w).is_some()) {
                if w == Which::Primary {
                    self.ensure_primary(bytes).await?;
                } else {
                    self.sync_held(w).await?;
                }
                return Ok((w, Reason::ConnectionBound));
            }
        }
        let routing = self.shared.routing.load_full();
        let facts = {
            let pinned = self.pins != 0 || self.next_on_primary;
            let cfg = &self.cfg;
            Facts {
                pinned,
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
        // A causal token (this statement's hint, else the session's
        // @@concord_after) applies to reads, wherever they run.
        let token = if class.kind == Kind::Read || reads {
            hinted.or_else(|| self.after.clone())
        } else {
            None
        };
        self.read_token = token.clone();
        let mode = self.ryw_mode();
        let own = if reads && mode != concord_config::ReadYourWrites::Off {
            self.ryw_gtid().await?
        } else {
            None
        };
        // Everything the read must see, merged into one position.
        let merged = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => Some(super::causal::merge(&a, &b)),
            (a, b) => a.or(b),
        };
        let mut need = merged(own, token.clone());
        let mut route = router::route(class, &facts, &routing, need.as_deref());
        // Fleet mode: only a read bound for a replica needs the primary's
        // position (one that runs on the primary sees everything anyway).
        if reads
            && mode == concord_config::ReadYourWrites::Fleet
            && matches!(
                route,
                Route::Replica(..) | Route::Primary(Reason::ReadYourWrites)
            )
        {
            need = merged(need, self.fleet_position().await?);
            route = router::route(class, &facts, &routing, need.as_deref());
        }
        if let (Route::Primary(Reason::ReadYourWrites), Some(g)) = (&route, need.as_deref()) {
            if let Some(i) = self.ryw_wait(&routing, facts.max_lag, g).await {
                route = Route::Replica(i, Reason::Read);
                if token.is_some() {
                    crate::metrics::causal_read("waited");
                }
            } else if facts.fallback_error
                && !concord_config::testhooks::on("causal-reads-ignore-fallback")
            {
                route = Route::Refuse(format!(
                    "no replica within the lag bound of {:?} has applied {} (waited up to routing.read_your_writes_wait) and routing.fallback = \"error\"; the read was not run",
                    facts.max_lag,
                    if token.is_some() { "the causal token" } else { "this session's last write" }
                ));
            }
        } else if token.is_some() && matches!(route, Route::Replica(..)) {
            crate::metrics::causal_read("replica");
        }
        match route {
            Route::Primary(reason) => {
                self.ensure_primary_in(&routing, bytes).await?;
                if let Some(t) = &token {
                    self.primary_has(t, true).await?;
                }
                Ok((Which::Primary, reason))
            }
            Route::Replica(i, reason)
                if token.is_some() && !self.token_verified(&token, routing.epoch) =>
            {
                // A replica is judged by sequence numbers per domain (as
                // MASTER_GTID_WAIT does), which a new primary's own writes
                // pass even when the token's transaction was lost: the
                // primary's exact history vouches for the token first
                // (once per token and epoch), then the replica's position
                // is enough, since it replicates that history in order.
                self.ensure_primary_in(&routing, bytes).await?;
                if let Some(t) = &token {
                    self.primary_has(t, false).await?;
                }
                self.write_guard = None;
                self.token_checked = token.clone().map(|t| (t, routing.epoch));
                let pool = routing.replicas[i].pool.clone();
                match self.ensure_replica(&pool).await {
                    Ok(w) => Ok((w, reason)),
                    Err(SessionError::Backend { .. }) => {
                        self.ensure_primary(bytes).await?;
                        Ok((Which::Primary, Reason::NoReplica))
                    }
                    Err(e) => Err(e),
                }
            }
            Route::Replica(i, reason) => {
                let pool = routing.replicas[i].pool.clone();
                match self.ensure_replica(&pool).await {
                    Ok(w) => Ok((w, reason)),
                    Err(SessionError::Backend {
                        backend, source, ..
                    }) => {
                        tracing::info!(backend = %backend, "replica unusable ({source}); this read goes to the primary");
                        self.ensure_primary(bytes).await?;
                        if let Some(t) = &token {
                            self.primary_has(t, true).await?;
                        }
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

    /// ROW_COUNT() and FOUND_ROWS() values to write into a statement
    /// whose connection for them is no longer held (given back in
    /// transaction mode, or lost); `None`: nothing to write.
    fn known_info(&self, class: &Class) -> Option<classify::Known> {
        // Only a lone SELECT: a stored program's body, or a later
        // statement of a multi-statement, means the value at its own time.
        if !class.has(flag::ROW_COUNT | flag::FOUND_ROWS)
            || class.kind != Kind::Read
            || class.has(flag::MULTI)
            || !self.multiplexed()
        {
            return None;
        }
        // Inside a transaction the connections stay: only a LAST_INSERT_ID()
        // brought in first (see `bring_insert_id`) would change what
        // ROW_COUNT() says there.
        let in_txn = self.txn.is_some();
        let gone = |w: Option<Which>| !in_txn && w.is_none_or(|w| self.conns.get(w).is_none());
        let moved_id = class.has(flag::INSERT_ID);
        let k = classify::Known {
            row_count: (class.has(flag::ROW_COUNT)
                && (gone(self.last) || moved_id || self.row_count_moved))
                .then_some(self.row_count),
            found_rows: (class.has(flag::FOUND_ROWS)
                && gone(self.last_read)
                && !self.calc_found_rows)
                .then_some(self.found_rows),
        };
        (k.row_count.is_some() || k.found_rows.is_some()).then_some(k)
    }

    pub(super) fn set_db(&mut self, w: Which, db: Option<String>) {
        if let Some(b) = self.conns.get_mut(w) {
            b.conn.state.db = db.clone();
        }
        *self.info.db.lock().unwrap_or_else(|p| p.into_inner()) = db.clone();
        self.state.db = db;
    }
}

/// A read that neither locks nor assigns anything (whatever its hints):
/// nothing of it can outlive a fence on the server.
pub(super) fn plain_read(class: &Class) -> bool {
    let mut c = *class;
    c.hint_primary = false;
    c.replica_ok()
}
