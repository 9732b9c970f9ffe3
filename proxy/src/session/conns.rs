//! The backend connections a session holds (the primary and any replicas
//! it read from), getting them in the session's state, and forwarding one
//! command on one of them.

use super::relay::{self, CmdHead, RelayError};
use super::{state, Session};
use crate::backend::{BackendConn, BackendPool, Login, PoolKey};
use crate::error::SessionError;
use concord_protocol::codes;
use concord_protocol::consts::{cap, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::StateChange;
use concord_protocol::scan::{Expect, PrepareOk, Scanner};
use concord_protocol::ProtoError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A held statement looks again at least this often; it is woken at once
/// when the routing is rebuilt or the lease comes back.
const HELD_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// A held connection unused for longer than this is checked for life
/// (one non-blocking read) before the next statement goes out on it.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// A backend connection the session holds, with what it needs to give it back.
pub struct Bound {
    /// Boxed: a session moves it in and out of the pool on every
    /// statement (transaction mode), a pointer rather than ~400 bytes.
    pub conn: Box<BackendConn>,
    pub pool: Arc<BackendPool>,
    pub key: PoolKey,
    pub gen: u64,
    /// Epoch of the routing snapshot the connection was taken under.
    pub epoch: u64,
    /// The command it was taken for ([`Session::cmd_no`]): a connection
    /// taken for the command running now holds nothing of the session
    /// that cannot be replayed elsewhere.
    pub taken: u64,
}

/// Which held connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Primary,
    /// Index into `Conns::replicas`.
    Replica(usize),
}

#[derive(Default)]
pub struct Conns {
    pub primary: Option<Bound>,
    pub replicas: Vec<Bound>,
}

impl Conns {
    pub fn get_mut(&mut self, w: Which) -> Option<&mut Bound> {
        match w {
            Which::Primary => self.primary.as_mut(),
            Which::Replica(i) => self.replicas.get_mut(i),
        }
    }

    pub fn get(&self, w: Which) -> Option<&Bound> {
        match w {
            Which::Primary => self.primary.as_ref(),
            Which::Replica(i) => self.replicas.get(i),
        }
    }

    pub fn take(&mut self, w: Which) -> Option<Bound> {
        match w {
            Which::Primary => self.primary.take(),
            Which::Replica(i) if i < self.replicas.len() => Some(self.replicas.remove(i)),
            Which::Replica(_) => None,
        }
    }

    /// The held connection with this id.
    pub fn which_conn(&self, conn_id: u64) -> Option<Which> {
        if self.primary.as_ref().is_some_and(|b| b.conn.id == conn_id) {
            return Some(Which::Primary);
        }
        self.replicas
            .iter()
            .position(|b| b.conn.id == conn_id)
            .map(Which::Replica)
    }
}

/// What one forwarded command produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The backend answered with an error (or refused LOCAL INFILE).
    pub failed: bool,
    pub prepare: Option<PrepareOk>,
    pub status: u16,
    /// The server sent status flags (not an error alone).
    pub status_seen: bool,
    /// Session-state changes the server reported (see `relay::RelayEnd`).
    pub changes: Vec<StateChange>,
    /// Id of the connection that ran it, and whether it tracks state.
    pub conn_id: u64,
    pub tracking: bool,
    /// Warnings the answer reported.
    pub warnings: u16,
    /// The server flagged a state change it gave no details of (see
    /// `relay::RelayEnd::state_unreadable`).
    pub state_unreadable: bool,
    /// (affected rows, last insert id) of the OK that ended it, if no rows.
    pub ok_counts: Option<(u64, u64)>,
    /// Rows of its last result set.
    pub rows: u64,
}

impl Session {
    fn pool_key(&self) -> (PoolKey, Login) {
        (
            PoolKey {
                user: self.user.backend_user.clone(),
                flavor: self.caps & cap::FLAVOR,
            },
            Login {
                user: self.user.backend_user.clone(),
                password: self.user.backend_password.clone(),
                collation: self.state.collation,
            },
        )
    }

    /// Takes a connection from `pool` and brings it to the session's state.
    /// `fence`: the pool is a primary's; stop waiting for a connection
    /// (`None`) once an epoch newer than `epoch` is applied. Only the wait
    /// is abandoned: readying a connection in hand is never cut short.
    async fn acquire(
        &mut self,
        pool: Arc<BackendPool>,
        epoch: u64,
        fence: bool,
    ) -> Result<Option<Bound>, SessionError> {
        let (key, login) = self.pool_key();
        let prefer = crate::backend::Prefer {
            session: self.state.session_id,
            fp: self.state.cached_fp(),
            no_db: self.state.db.is_none(),
        };
        let taken = pool.acquire(&key, &login, self.state.db.as_deref(), prefer);
        let taken = if fence {
            // Biased: a connection at hand never starts the fence watch.
            tokio::select! {
                biased;
                r = taken => r,
                _ = Self::fenced_after(&self.shared, epoch) => return Ok(None),
            }
        } else {
            taken.await
        };
        let (mut conn, gen) = taken.map_err(|e| SessionError::Backend {
            backend: pool.name.clone(),
            source: e,
            mid_response: false,
        })?;
        self.shared.learn_server_version(&conn.server_version);
        if conn.insert_id_of != self.state.session_id {
            conn.insert_id_of = 0;
        }
        let mine = conn
            .state
            .synced
            .is_some_and(|(s, _)| s == self.state.session_id);
        if mine {
            // The snapshot was for others; the session knows its state.
            conn.state.held = None;
        } else {
            // What this session knew of the connection from an earlier
            // turn on it is stale (others used and evicted statements
            // since): it finds what it needs in `prepared` by text. The
            // connection belongs to no session until synced.
            if !concord_config::testhooks::on("trust-remembered-statement") {
                self.stmts.forget_conn(conn.id);
            }
            conn.state.synced = conn.state.synced.map(|(_, v)| (0, v));
        }
        if let Err(e) = self.capture_elsewhere(conn.id).await {
            pool.release(conn, key, gen, true);
            return Err(e);
        }
        match state::sync(&mut conn, &self.state, true).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                pool.release(conn, key, gen, true);
                return Err(SessionError::Reply(e));
            }
            Err(e) => {
                pool.discard(conn);
                return Err(SessionError::Backend {
                    backend: pool.name.clone(),
                    source: e,
                    mid_response: false,
                });
            }
        }
        Ok(Some(Bound {
            conn,
            pool,
            key,
            gen,
            epoch,
            taken: self.cmd_no,
        }))
    }

    /// Brings a held connection up to date with the session's state
    /// (after SET / USE ran elsewhere).
    pub(super) async fn sync_held(&mut self, w: Which) -> Result<(), SessionError> {
        let Some(id) = self.conns.get(w).map(|b| b.conn.id) else {
            return Ok(());
        };
        self.capture_elsewhere(id).await?;
        let Some(b) = self.conns.get_mut(w) else {
            return Ok(());
        };
        if b.conn.state.synced == Some((self.state.session_id, self.state.version))
            && b.conn.state.db == self.state.db
            && b.conn.state.collation == self.state.collation
            && b.conn.state.multi_statements == self.state.multi_statements
            && (b.conn.tracking || b.conn.tracking_refused)
        {
            return Ok(());
        }
        match state::sync(&mut b.conn, &self.state, false).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::Reply(e)),
            Err(e) => {
                let name = b.pool.name.clone();
                self.drop_conn(w);
                Err(SessionError::Backend {
                    backend: name,
                    source: e,
                    mid_response: false,
                })
            }
        }
    }

    /// Makes sure the session holds a connection to the current primary,
    /// in its state. While no primary is routable (failover in progress,
    /// or this node holds no lease: everything sent to a primary needs
    /// one, reads and session statements included) the statement waits,
    /// bounded by `failover.write_buffer_timeout` and the buffer caps, then
    /// fails with 1290 and a message that says why.
    pub(super) async fn ensure_primary(&mut self, cmd_bytes: usize) -> Result<(), SessionError> {
        let routing = self.shared.routing.load();
        self.ensure_primary_in(&routing, cmd_bytes).await
    }

    /// [`Session::ensure_primary`] deciding on the routing snapshot the
    /// statement was placed with (a fresh one only while it waits).
    pub(super) async fn ensure_primary_in(
        &mut self,
        routing: &crate::routing::Routing,
        cmd_bytes: usize,
    ) -> Result<(), SessionError> {
        // Fast path, the common case: the held connection is to the
        // current primary under the current epoch.
        let fast = match &self.conns.primary {
            Some(b) if self.shared.lease.valid_for(routing.epoch) => {
                let current = held_is_current(b, routing)
                    && routing.epoch >= self.shared.gate.epoch()
                    && self.cmd_at.saturating_duration_since(b.conn.idle_since) <= IDLE_CHECK;
                current.then_some(routing.epoch)
            }
            _ => None,
        };
        if let Some(epoch) = fast {
            if let Some(guard) = self.shared.gate.enter(epoch) {
                self.write_guard = Some(guard);
                self.sync_held(Which::Primary).await?;
                if !self.leave_fenced_primary() {
                    return Ok(());
                }
            }
        }
        let mut waiting: Option<(Instant, crate::shared::BufferSlot)> = None;
        // When the statement began to be held (boot nanos).
        let mut held_from = 0u64;
        let shared = self.shared.clone();
        loop {
            // Created before looking, so a change while we look wakes us:
            // both are woken by `notify_waiters`, which reaches every
            // `Notified` created before it, enabled or not (enabling
            // would lock a Notify all sessions share, on every statement).
            let route_ev = shared.route_changed.notified();
            let lease_ev = shared.lease.regained.notified();
            tokio::pin!(route_ev, lease_ev);
            let routing = self.shared.routing.load_full();
            if let Some(b) = &self.conns.primary {
                let current = held_is_current(b, &routing);
                // A connection idle for a while may have died with its
                // server: find out before sending anything on it.
                let dead = current
                    && self.cmd_at.saturating_duration_since(b.conn.idle_since) > IDLE_CHECK
                    && !b.conn.looks_alive();
                if !current || dead {
                    let in_txn = self.txn == Some(Which::Primary);
                    let unmovable = self.holds_unmovable(Which::Primary);
                    self.drop_conn(Which::Primary);
                    // What the session kept there (a lock, a temporary
                    // table, user variables, SET TRANSACTION) is gone: the
                    // statement must not run without it on a new
                    // connection, as it would not on a direct one.
                    // (Kept in `lost` too: a caller that drops this
                    // error still ends the session at the next command.)
                    if let Some(why) = unmovable {
                        self.lost.get_or_insert_with(|| {
                            format!("the primary connection holding this session's {why} was fenced or lost")
                        });
                    }
                    if concord_config::testhooks::on("run-on-without-lost-state") {
                        self.lost = None;
                    }
                    if let Some(why) = &self.lost {
                        return Err(SessionError::Fatal(super::lost_state(why)));
                    }
                    if in_txn {
                        self.txn_lost = true;
                        self.txn = None;
                        self.status &= !status::IN_TRANS;
                        return Err(SessionError::Reply(ErrPacket {
                            code: codes::BACKEND_LOST.0,
                            state: *b"08007",
                            message: "The primary was fenced or lost during this transaction; the transaction is lost. Issue ROLLBACK and retry".into(),
                        }));
                    }
                }
            }
            // Raft applied a newer epoch than the routing snapshot shows
            // (the rebuild follows within moments): the snapshot's primary
            // is fenced already.
            let applied_epoch = self.shared.gate.epoch();
            let blocked = match &routing.primary {
                _ if routing.epoch < applied_epoch => {
                    format!("epoch {applied_epoch} is being applied")
                }
                None => routing.no_primary_reason.clone(),
                Some(_) if !self.shared.lease.valid_for(routing.epoch) => {
                    self.shared.write_block_reason().unwrap_or_default()
                }
                Some(p) => {
                    // Released: how long after the event that allowed it
                    // (a notification wakes it; a poll would show here).
                    let at = self.shared.last_release_event();
                    if waiting.is_some() && at > held_from {
                        let now = concord_consensus::lease::boot_nanos();
                        crate::metrics::held_write_released(std::time::Duration::from_nanos(
                            now.saturating_sub(at),
                        ));
                        held_from = u64::MAX;
                    }
                    if self.conns.primary.is_some() {
                        // The guard covers everything sent to the primary
                        // for this command, state replay included; a fence
                        // applied since the snapshot was read refuses it.
                        let Some(guard) = self.shared.gate.enter(routing.epoch) else {
                            continue;
                        };
                        self.write_guard = Some(guard);
                        self.sync_held(Which::Primary).await?;
                        if self.leave_fenced_primary() {
                            continue;
                        }
                        return Ok(());
                    }
                    // No guard while queueing for a pool slot: a fence must
                    // not wait on a queue. A fence applied meanwhile ends
                    // the wait; the guard is taken with the connection in
                    // hand (a fence since then moves the statement).
                    self.write_guard = None;
                    let epoch = routing.epoch;
                    match self.acquire(p.clone(), epoch, true).await {
                        Ok(None) => continue,
                        Ok(Some(b)) => {
                            *self.info.backend.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(b.pool.name.clone());
                            self.conns.primary = Some(b);
                            self.publish_held();
                            self.write_guard = self.shared.gate.enter(epoch);
                            if self.leave_fenced_primary() {
                                continue;
                            }
                            return Ok(());
                        }
                        // Nothing was sent: hold the statement while the
                        // fleet decides (the primary may be failing over).
                        Err(SessionError::Backend {
                            backend, source, ..
                        }) if source.is_unreachable() => {
                            format!("the primary '{backend}' is unreachable ({source})")
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            // Held statements hold no guard: a fence must not wait on them.
            self.write_guard = None;
            let cfg = self.shared.config.load();
            let limit = cfg.failover.write_buffer_timeout.get();
            if waiting.is_none() {
                let slot = self
                    .shared
                    .buffer_slot(cmd_bytes, &cfg.failover)
                    .map_err(|why| {
                        SessionError::reply(
                            codes::OPTION_PREVENTS_STATEMENT,
                            format!("concord: {blocked}; {why}"),
                        )
                    })?;
                waiting = Some((Instant::now(), slot));
                held_from = concord_consensus::lease::boot_nanos();
            }
            let since = waiting
                .as_ref()
                .map(|(t, _)| t.elapsed())
                .unwrap_or_default();
            if since >= limit {
                return Err(SessionError::reply(
                    codes::OPTION_PREVENTS_STATEMENT,
                    format!(
                        "concord held this statement {:.1}s (failover.write_buffer_timeout) and no primary became routable: {blocked}; it was not executed, safe to retry",
                        since.as_secs_f64()
                    ),
                ));
            }
            drop(routing);
            let left = limit.saturating_sub(since).min(HELD_RECHECK);
            // Test-only: held statements find the new primary by polling.
            let by_poll = concord_config::testhooks::on("held-writes-poll");
            tokio::select! {
                _ = &mut route_ev, if !by_poll => {}
                _ = &mut lease_ev, if !by_poll => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Whether the primary connection just readied for a statement (taken
    /// from the pool, its state replayed, a statement prepared on it) was
    /// fenced meanwhile by a newer epoch, and the statement, not sent yet,
    /// can move: then the connection is dropped and the caller places
    /// again, on the new primary or held until there is one. Only a
    /// connection taken for this command moves (it holds nothing of the
    /// session that is not replayed on the next); one the session kept
    /// (a transaction, a pin, SET TRANSACTION, long data, user variables
    /// assigned there) stays, and the pre-send check refuses with 1290.
    pub(super) fn leave_fenced_primary(&mut self) -> bool {
        let Some(b) = &self.conns.primary else {
            return false;
        };
        let (epoch, conn_id) = (b.epoch, b.conn.id);
        if self.shared.gate.epoch() <= epoch
            || b.taken < self.cmd_no
            || self.txn == Some(Which::Primary)
            || self.state.has_pending_on(conn_id)
            || self.keeps(Which::Primary).is_some()
            || concord_config::testhooks::on("stay-on-fenced-primary")
        {
            return false;
        }
        // Held statements hold no guard: a fence must not wait on them.
        self.write_guard = None;
        tracing::debug!(
            session = self.info.id,
            epoch,
            "primary fenced while the statement was readied: placing again"
        );
        self.drop_conn(Which::Primary);
        true
    }

    /// Resolves once this node applied an epoch newer than `epoch` (the
    /// primary it names is fenced), and never otherwise.
    async fn fenced_after(shared: &crate::shared::Shared, epoch: u64) {
        if concord_config::testhooks::on("queue-through-fence") {
            return std::future::pending().await;
        }
        loop {
            // Not enabled: a `notify_waiters` after `notified()` wakes it
            // anyway (tokio counts those calls), and enabling would lock
            // the Notify every session shares.
            let ev = shared.route_changed.notified();
            if shared.gate.epoch() > epoch {
                return;
            }
            ev.await;
        }
    }

    /// [`Session::leave_fenced_primary`] for `cmd`, placed on `w`, then
    /// placed again on the primary: true when it moved (the caller readies
    /// the new connection and asks again). On error `cmd` is dropped.
    pub(super) async fn replace_fenced_primary(
        &mut self,
        w: Which,
        cmd: CmdHead,
    ) -> Result<bool, (SessionError, u8)> {
        if w != Which::Primary || !self.leave_fenced_primary() {
            return Ok(false);
        }
        let mut placed = self.ensure_primary(cmd.len).await;
        // A token read vouched for by the old primary asks the new one.
        if let (Ok(()), Some(t)) = (&placed, self.read_token.clone()) {
            placed = self.primary_has(&t, true).await;
        }
        if let Err(e) = placed {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((e, 1));
        }
        Ok(true)
    }

    /// A held (or new) connection to the replica behind `pool`.
    pub(super) async fn ensure_replica(
        &mut self,
        pool: &Arc<BackendPool>,
    ) -> Result<Which, SessionError> {
        if let Some(i) = self
            .conns
            .replicas
            .iter()
            .position(|b| Arc::ptr_eq(&b.pool, pool))
        {
            if self.conns.replicas[i].gen == pool.generation() {
                let w = Which::Replica(i);
                self.sync_held(w).await?;
                return Ok(w);
            }
            self.drop_conn(Which::Replica(i));
        }
        let epoch = self.shared.routing.load().epoch;
        let Some(b) = self.acquire(pool.clone(), epoch, false).await? else {
            return Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                "concord: no connection to the replica",
            ));
        };
        self.conns.replicas.push(b);
        self.publish_held();
        Ok(Which::Replica(self.conns.replicas.len() - 1))
    }

    /// Tells the session registry which backend threads this session
    /// holds (for KILL); called when that changes, not per statement.
    pub(super) fn publish_held(&self) {
        let mut held = self.info.held.lock().unwrap_or_else(|p| p.into_inner());
        // Refilled in place: no allocation once it has room.
        held.clear();
        held.extend(
            self.conns
                .primary
                .iter()
                .chain(self.conns.replicas.iter())
                .map(|b| crate::shared::HeldConn {
                    conn_id: b.conn.id,
                    thread_id: b.conn.thread_id,
                    pool: b.pool.clone(),
                    user: self.user.clone(),
                }),
        );
    }

    /// The lease lapsed between routing and sending, usually because a
    /// Raft leader is being elected: hold the statement, not sent yet, until
    /// this node's lease for `epoch` is back, as [`Session::ensure_primary`]
    /// would have, and re-enter the write gate. False when a newer epoch
    /// was applied (the held connection is fenced), the write buffer is
    /// full, or `failover.write_buffer_timeout` passes.
    async fn rehold(&mut self, epoch: u64, cmd_bytes: usize) -> bool {
        // Held statements hold no guard: a fence must not wait on them.
        self.write_guard = None;
        let cfg = self.shared.config.load_full();
        let Ok(_slot) = self.shared.buffer_slot(cmd_bytes, &cfg.failover) else {
            return false;
        };
        let limit = cfg.failover.write_buffer_timeout.get();
        let start = Instant::now();
        let shared = self.shared.clone();
        loop {
            let route_ev = shared.route_changed.notified();
            let lease_ev = shared.lease.regained.notified();
            tokio::pin!(route_ev, lease_ev);
            route_ev.as_mut().enable();
            lease_ev.as_mut().enable();
            if self.shared.gate.epoch() != epoch || self.conns.primary.is_none() {
                return false;
            }
            if self.shared.lease.valid_for(epoch) {
                let Some(guard) = self.shared.gate.enter(epoch) else {
                    return false;
                };
                self.write_guard = Some(guard);
                if self.shared.primary_usable(epoch) {
                    return true;
                }
                self.write_guard = None;
            }
            if start.elapsed() >= limit {
                return false;
            }
            let left = limit.saturating_sub(start.elapsed()).min(HELD_RECHECK);
            tokio::select! {
                _ = &mut route_ev => {}
                _ = &mut lease_ev => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Forwards the command at the head of the client buffer on `w` and
    /// relays the response. `consume_now = false` leaves a whole command in
    /// the buffer for a retry elsewhere if the backend fails before
    /// answering anything.
    pub(super) async fn forward_to(
        &mut self,
        w: Which,
        cmd: CmdHead,
        expect: Expect,
        dirty: bool,
        prepare_id: Option<u32>,
        consume_now: bool,
    ) -> Result<Outcome, (SessionError, u8)> {
        // Test-only: a CURSOR_EXISTS flag ends any result set, as before.
        let expect = match expect {
            Expect::ResultSets if concord_config::testhooks::on("cursor-flag-anywhere") => {
                Expect::Cursor
            }
            e => e,
        };
        if w == Which::Primary {
            // The last check before the first byte goes out: everything
            // since the route was chosen (a pool slot, a connect, the
            // session's state replayed) may have taken longer than the
            // lease, or a fence may have been applied meanwhile.
            let epoch = self.conns.primary.as_ref().map_or(0, |b| b.epoch);
            if !self.shared.primary_usable(epoch)
                && !concord_config::testhooks::on("no-presend-check")
                && !self.rehold(epoch, cmd.len).await
            {
                crate::metrics::refused_before_send();
                relay::discard_command(&mut self.client, cmd)
                    .await
                    .map_err(|e| (SessionError::Client(e), 1))?;
                return Err((
                    SessionError::reply(
                        codes::OPTION_PREVENTS_STATEMENT,
                        format!("concord: the route to the primary of epoch {epoch} lapsed just before the statement was sent (a newer epoch was applied, or this node's lease did not come back within failover.write_buffer_timeout); it was not executed, safe to retry"),
                    ),
                    1,
                ));
            }
            self.write_epoch = epoch;
        }
        let timeout = self.deadline();
        let Some(b) = self.conns.get_mut(w) else {
            return Err((
                SessionError::reply(codes::UNKNOWN_ERROR, "concord: no backend connection"),
                1,
            ));
        };
        if dirty {
            b.conn.dirty = true;
        }
        tracing::trace!(session = self.info.id, backend = %b.pool.name, conn = b.conn.id, "forward");
        let mut sc = Scanner::new(expect, b.conn.deprecate_eof());
        b.pool.outstanding.fetch_add(1, Ordering::Relaxed);
        self.info.running.store(b.conn.id, Ordering::Relaxed);
        let started = Instant::now();
        let running = relay::Running {
            shared: &self.shared,
            info: &self.info,
            conn_id: b.conn.id,
            thread_id: b.conn.thread_id,
            pool: &b.pool,
            user: &self.user,
        };
        let shared = &self.shared;
        let epoch = b.epoch;
        let may_send = move || w != Which::Primary || shared.primary_usable(epoch);
        let patience = self.cfg.failover.write_buffer_timeout.get();
        let res = match relay::forward_command(
            &mut self.client,
            &mut b.conn.io,
            cmd,
            consume_now,
            &may_send,
            patience,
        )
        .await
        {
            Ok(()) => {
                relay::relay_response(
                    &mut b.conn.io,
                    &mut self.client,
                    &mut sc,
                    self.caps,
                    b.conn.caps,
                    prepare_id,
                    self.status_fix.take(),
                    &relay::Stall {
                        pool: &b.pool,
                        nudge: &self.info.kill,
                        kill_reason: &self.info.kill_reason,
                        config: &self.shared.config,
                        lease: (w == Which::Primary).then_some((&*self.shared.lease, b.epoch)),
                        timeout,
                        running: Some(running),
                        may_write: std::mem::replace(&mut self.may_write, true),
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        b.pool.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.info.running.store(0, Ordering::Relaxed);
        let now = Instant::now();
        b.conn.idle_since = now;
        let stats = &b.pool.stats;
        stats.queries.fetch_add(1, Ordering::Relaxed);
        stats.latency.record(now.duration_since(started));
        if res.is_err() || sc.error.is_some() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        match res {
            Ok(end) => {
                b.conn.mid_command = false;
                if !consume_now {
                    relay::consume(&mut self.client, cmd);
                }
                if sc.status_seen {
                    b.conn.status = sc.status;
                }
                if end.trailing {
                    tracing::warn!(backend = %b.pool.name, "backend sent data after the end of a response; its connection is closed after this command");
                    b.conn.poisoned = true;
                }
                // Whatever the command (a PREPARE, COM_INIT_DB, ...), its
                // conditions are what SHOW WARNINGS shows there, and no
                // other session may see them.
                let diag = sc.error.is_some() || end.warnings > 0;
                if diag {
                    b.conn.diag = true;
                }
                let (conn_id, tracking) = (b.conn.id, b.conn.tracking);
                // An error alone carries no status: the transaction state
                // stays what it was (an open transaction is still open),
                // but whether a failed statement opened one with
                // autocommit off, or a deadlock ended one, only the server
                // knows: asked before concord answers with a status itself.
                if self.txn.is_some_and(|t| t != w) {
                    // An answer from beside the transaction's connection
                    // (a cursor, a lock): the transaction is where it was.
                } else if sc.status_seen {
                    self.status = sc.status;
                    self.status_stale = false;
                    self.txn = (sc.status & status::IN_TRANS != 0).then_some(w);
                } else if sc.error.is_some() {
                    self.status_stale = true;
                    self.deadlocked |= sc.error == Some(codes::LOCK_DEADLOCK.0);
                }
                self.last = Some(w);
                self.row_count_moved = false;
                if diag {
                    self.last_diag = Some(w);
                }
                if matches!(expect, Expect::ResultSets | Expect::Cursor | Expect::Single) {
                    // What ROW_COUNT() now says on that connection.
                    self.row_count = match (sc.error, end.ok_counts) {
                        (None, Some((affected, _))) => affected as i64,
                        _ => -1,
                    };
                }
                Ok(Outcome {
                    failed: sc.error.is_some() || end.refused_infile || end.timed_out,
                    prepare: sc.prepare,
                    status: sc.status,
                    status_seen: sc.status_seen,
                    changes: end.changes,
                    conn_id,
                    tracking,
                    warnings: end.warnings,
                    state_unreadable: end.state_unreadable,
                    ok_counts: end.ok_counts,
                    rows: sc.rows,
                })
            }
            Err(e) => {
                let e = self.lost(w, e);
                if !consume_now && !retryable(&e) {
                    relay::consume(&mut self.client, cmd);
                }
                Err(e)
            }
        }
    }

    /// Sends a command with no reply (COM_STMT_CLOSE, SEND_LONG_DATA).
    pub(super) async fn forward_no_reply_on(
        &mut self,
        w: Which,
        cmd: CmdHead,
    ) -> Result<(), (SessionError, u8)> {
        let Some(b) = self.conns.get_mut(w) else {
            return Ok(());
        };
        b.conn.mid_command = true;
        let shared = &self.shared;
        let epoch = b.epoch;
        let may_send = move || w != Which::Primary || shared.primary_usable(epoch);
        let patience = self.cfg.failover.write_buffer_timeout.get();
        match relay::forward_command(
            &mut self.client,
            &mut b.conn.io,
            cmd,
            true,
            &may_send,
            patience,
        )
        .await
        {
            Ok(()) => {
                b.conn.mid_command = false;
                Ok(())
            }
            Err(e) => match self.lost(w, e) {
                (SessionError::Client(pe), _) => Err((SessionError::Client(pe), 1)),
                // The client expects no reply; it learns at its next command.
                _ => Ok(()),
            },
        }
    }

    /// A relay failed: drop the connection and decide what the client sees.
    fn lost(&mut self, w: Which, e: RelayError) -> (SessionError, u8) {
        let name = self.conns.get(w).map(|b| b.pool.name.clone());
        self.drop_conn(w);
        let (source, mid_packet, next_seq) = match e {
            RelayError::Client(pe) => return (SessionError::Client(pe), 1),
            RelayError::Late {
                mid_packet: false,
                next_seq,
            } if self.lost.is_none() => {
                crate::metrics::late_answer();
                return (SessionError::Fatal(outcome_unknown()), next_seq);
            }
            RelayError::Late {
                mid_packet,
                next_seq,
            } => {
                crate::metrics::late_answer();
                let why =
                    "its answer arrived after this node's lease lapsed; the outcome is unknown";
                (
                    ProtoError::Io(std::io::Error::other(why)),
                    mid_packet,
                    next_seq,
                )
            }
            RelayError::Backend {
                source,
                mid_packet,
                next_seq,
            } => (source, mid_packet, next_seq),
        };
        // A transaction on `w` ended with it (see `take_conn`).
        if self.txn.is_none() {
            self.status &= !status::IN_TRANS;
        }
        (
            SessionError::Backend {
                backend: name.unwrap_or_else(|| "?".into()),
                source: source.into(),
                mid_response: mid_packet,
            },
            next_seq,
        )
    }

    /// Takes a held connection out of `conns`, keeping `txn` and `last`
    /// pointing at the same connections.
    fn take_conn(&mut self, w: Which) -> Option<Bound> {
        let b = self.take_conn_keeping_stmts(w)?;
        self.stmts.forget_conn(b.conn.id);
        Some(b)
    }

    /// [`Session::take_conn`], remembering the statements prepared on it
    /// (valid if the session gets the connection back before any other
    /// session takes it: see `acquire`).
    fn take_conn_keeping_stmts(&mut self, w: Which) -> Option<Bound> {
        let b = self.conns.take(w)?;
        // Later replicas move down one place.
        let shift = |x: Option<Which>| match (x, w) {
            (Some(Which::Replica(t)), Which::Replica(i)) if t > i => Some(Which::Replica(t - 1)),
            _ => x,
        };
        for x in [&mut self.last, &mut self.last_read, &mut self.last_diag] {
            if *x == Some(w) {
                *x = None;
            }
            *x = shift(*x);
        }
        if self.txn == Some(w) {
            // The transaction dies with its connection (the server rolls it
            // back): the client hears so at its next statement, instead of
            // finding its later writes autocommitted and its COMMIT "ok".
            self.txn = None;
            self.txn_lost = true;
            self.status &= !status::IN_TRANS;
        } else {
            self.txn = shift(self.txn);
        }
        if self.state.has_pending_on(b.conn.id) {
            self.lost.get_or_insert_with(|| {
                format!(
                    "the connection to backend '{}' holding this session's user variables was closed",
                    b.pool.name
                )
            });
        } else if w == Which::Primary
            && self.pins & !crate::classify::Pin::NoBackslashEscapes.bit() != 0
        {
            self.lost.get_or_insert_with(|| {
                format!(
                    "the connection to backend '{}' this session was pinned to ({}) was closed",
                    b.pool.name,
                    crate::classify::Pin::ALL
                        .iter()
                        .filter(|p| self.pins & p.bit() != 0)
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        Some(b)
    }

    /// Closes a held connection (it will not be reused).
    pub(super) fn drop_conn(&mut self, w: Which) {
        if let Some(b) = self.take_conn(w) {
            b.pool.discard(b.conn);
            self.publish_held();
        }
    }

    /// Gives a held connection back to its pool (reset if it changed).
    pub(super) fn release(&mut self, w: Which) {
        if let Some(b) = self.take_conn(w) {
            let reusable = b.conn.status & status::IN_TRANS == 0 && !b.conn.poisoned;
            b.pool.release(b.conn, b.key, b.gen, reusable);
            self.publish_held();
        }
    }

    /// Gives a held connection back keeping the session's state and
    /// statements on it (transaction mode).
    pub(super) fn hand_back(&mut self, w: Which) {
        if let Some(b) = self.take_conn_keeping_stmts(w) {
            let reusable = b.conn.status & status::IN_TRANS == 0 && !b.conn.poisoned;
            b.pool.release(b.conn, b.key, b.gen, reusable);
            self.publish_held();
        }
    }

    /// After a command: closes connections that turned out broken (the
    /// backend sent bytes after a complete response).
    pub(super) fn drop_poisoned(&mut self) {
        if self.conns.primary.as_ref().is_some_and(|b| b.conn.poisoned) {
            self.drop_conn(Which::Primary);
        }
        while let Some(i) = self.conns.replicas.iter().position(|b| b.conn.poisoned) {
            self.drop_conn(Which::Replica(i));
        }
    }

    /// Between transactions: lets go of replica connections the routing no
    /// longer offers (drained, removed, fenced), so a drain completes;
    /// user variables living on one are read back first.
    pub(super) async fn release_stale_replicas(&mut self) {
        if self.txn.is_some() || self.conns.replicas.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.conns.replicas.len() {
            let offered = {
                let routing = self.shared.routing.load();
                let b = &self.conns.replicas[i];
                routing
                    .replicas
                    .iter()
                    .any(|r| Arc::ptr_eq(&r.pool, &b.pool))
                    && b.gen == b.pool.generation()
            };
            if offered {
                i += 1;
                continue;
            }
            let id = self.conns.replicas[i].conn.id;
            if self.state.has_pending_on(id) {
                // Read them back from it (any other connection id will do).
                let _ = self.capture_elsewhere(u64::MAX).await;
            }
            self.release(Which::Replica(i));
        }
    }

    pub(super) fn release_all(&mut self) {
        while !self.conns.replicas.is_empty() {
            self.release(Which::Replica(0));
        }
        self.release(Which::Primary);
    }

    /// Closes every held connection (the session was cut off in the
    /// middle of a command: they are in an unknown state).
    pub(super) fn drop_all(&mut self) {
        while !self.conns.replicas.is_empty() {
            self.drop_conn(Which::Replica(0));
        }
        self.drop_conn(Which::Primary);
    }
}

/// The held primary connection is to the snapshot's primary, of its
/// current pool generation, under the snapshot's epoch.
fn held_is_current(b: &Bound, routing: &crate::routing::Routing) -> bool {
    routing
        .primary
        .as_ref()
        .is_some_and(|p| Arc::ptr_eq(p, &b.pool))
        && b.gen == b.pool.generation()
        && b.epoch == routing.epoch
}

/// Nothing reached the client yet: a read can be retried elsewhere.
pub fn retryable(e: &(SessionError, u8)) -> bool {
    matches!(
        e,
        (
            SessionError::Backend {
                mid_response: false,
                ..
            },
            1
        )
    )
}

/// What a client gets when the primary's answer came too late to vouch
/// for: the statement may or may not have taken effect, and the session
/// (its transaction, its connection) cannot carry on.
fn outcome_unknown() -> ErrPacket {
    ErrPacket {
        code: codes::UNKNOWN_ERROR.0,
        // "Transaction resolution unknown".
        state: *b"08007",
        message: "concord: the primary answered after this node's routing lease lapsed (a failover may have promoted another server meanwhile), so the answer was not relayed: the statement may or may not have been applied; the outcome is unknown. Check before retrying. The connection is closed".into(),
    }
}
