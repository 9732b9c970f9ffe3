//! Transaction mode (`pool.mode = "transaction"`): at every transaction
//! boundary a session gives back the backend connections it does not
//! need, and takes one again for its next statement (see `conns`), where
//! its state is brought in by `state::sync`: nothing replayed when the
//! connection holds the same variables, one `SET` of the difference
//! otherwise.
//!
//! What a connection holds that cannot move keeps it: a pin (temporary
//! table, lock, ...), an open cursor or long data, and, until the next
//! statement replaces them, the previous statement's diagnostics (when it
//! left warnings or an error) and SQL_CALC_FOUND_ROWS count. User
//! variables are read back and LAST_INSERT_ID() is read back before a
//! connection leaves, and set again where it is read. ROW_COUNT() and a
//! plain FOUND_ROWS() are known from the answers and written into the
//! statement that asks (see `classify::rewrite_calls`).

use super::conns::Which;
use super::Session;
use crate::classify::Pin;
use crate::error::SessionError;
use concord_config::PoolMode;

impl Session {
    /// Transaction mode is on.
    pub(super) fn multiplexed(&self) -> bool {
        self.cfg.pool.mode == PoolMode::Transaction
    }

    /// Between transactions, in transaction mode: gives back every held
    /// connection whose session state can move.
    pub(super) async fn give_back(&mut self) {
        if self.conns.primary.is_none() && self.conns.replicas.is_empty() {
            return;
        }
        if self.txn.is_some() || self.txn_lost || self.lost.is_some() || !self.multiplexed() {
            return;
        }
        if self.status_stale {
            // An error alone: whether it left a transaction open only the
            // server knows.
            self.refresh_status().await;
            if self.txn.is_some() || self.status_stale {
                return;
            }
        }
        let mut i = self.conns.replicas.len();
        while i > 0 {
            i -= 1;
            self.give(Which::Replica(i)).await;
        }
        self.give(Which::Primary).await;
    }

    /// What `w` holds of the session that no other connection can be
    /// given: losing the connection loses it (see `ensure_primary_in`).
    pub(super) fn holds_unmovable(&self, w: Which) -> Option<&'static str> {
        let b = self.conns.get(w)?;
        let id = b.conn.id;
        // (NO_BACKSLASH_ESCAPES only routes: the mode replays anywhere.)
        if w == Which::Primary && self.pins & !Pin::NoBackslashEscapes.bit() != 0 {
            return Some("pinned");
        }
        if w == Which::Primary && self.next_on_primary {
            // SET TRANSACTION: for the next transaction, on this connection.
            return Some("transaction characteristics");
        }
        if self.oneshot_on == Some(id) {
            // SET insert_id / rand_seed1: for the next statement there.
            return Some("one-statement variable");
        }
        if self.stmts.holds_conn(id, w == Which::Primary) {
            return Some("cursor or long data");
        }
        None
    }

    /// Why `w` must stay with the session, if it must.
    pub(super) fn keeps(&self, w: Which) -> Option<&'static str> {
        if let Some(why) = self.holds_unmovable(w) {
            return Some(why);
        }
        let b = self.conns.get(w)?;
        if self.last_diag == Some(w) && b.conn.diag {
            return Some("diagnostics");
        }
        if self.stmts.info_readers > 0
            && [self.last, self.last_read, self.last_diag].contains(&Some(w))
        {
            // A prepared statement asks for them: no text to write values
            // into, so their connections stay.
            return Some("prepared statement reads statement information");
        }
        if self.last_read == Some(w) && self.calc_found_rows {
            return Some("found rows");
        }
        None
    }

    /// Gives `w` back to its pool unless it must stay.
    async fn give(&mut self, w: Which) {
        if let Some(why) = self.keeps(w) {
            tracing::trace!(session = self.info.id, ?w, why, "connection kept");
            return;
        }
        let Some(id) = self.conns.get(w).map(|b| b.conn.id) else {
            return;
        };
        // FOUND_ROWS() an INSERT ... SELECT (and the like) left there, read
        // first: the reads below are SELECTs that change it.
        if self.found_rows_unread && self.last_read == Some(w) {
            let n = self.value_on(w, "SELECT FOUND_ROWS()").await;
            let Ok(n) = n else { return };
            self.found_rows = n.and_then(|v| v.parse().ok()).unwrap_or(0);
            self.found_rows_unread = false;
        }
        // User variables assigned there are read back first (only from a
        // connection that leaves: a kept one keeps FOUND_ROWS() and the
        // rest of what the last statement left).
        if self.state.has_pending_on(id) && self.capture_from(id).await.is_err() {
            return;
        }
        if self.insert_id_pending.is_some_and(|(c, _)| c == id)
            && self.read_insert_id(w).await.is_err()
        {
            return;
        }
        // Its prepared statements stay, for any session that takes it and
        // executes the same text (`BackendConn::prepared`).
        let snap = self.state.snapshot();
        let now = (self.state.session_id, self.state.version);
        let Some(b) = self.conns.get_mut(w) else {
            return;
        };
        // Prepares (tracked in `prepared`) are all that make it dirty.
        b.conn.dirty = false;
        // Only a connection in the session's current state is described
        // by its snapshot; any other goes back reset.
        b.conn.state.held = snap.filter(|_| b.conn.state.synced == Some(now));
        // Not while a KILL QUERY aimed at this session's last statement
        // is on its way to this connection (bounded: a KILL that does not
        // finish costs the connection, never the session).
        let info = self.info.clone();
        // (Almost always free: no timer, clock or config read then.)
        if let Ok(_gate) = info.kill_gate.try_lock() {
            return self.hand_back(w);
        }
        let wait = self.cfg.pool.connect_timeout.get() * 2;
        let gate = tokio::time::timeout(wait, info.kill_gate.lock()).await;
        match gate {
            Ok(_gate) => self.hand_back(w),
            Err(_) => self.drop_conn(w),
        }
    }

    /// Reads LAST_INSERT_ID() back from `w`, where a statement may have
    /// changed it. A connection that held another session's value and
    /// reports something other than the statement's own generated id kept
    /// that value (an explicit id generates none; a CALL that inserted
    /// nothing): the session's stays.
    async fn read_insert_id(&mut self, w: Which) -> Result<(), SessionError> {
        let Some((_, ok_id)) = self.insert_id_pending else {
            return Ok(());
        };
        let v = self
            .value_on(w, "SELECT LAST_INSERT_ID()")
            .await?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let sid = self.state.session_id;
        if let Some(b) = self.conns.get_mut(w) {
            b.conn.insert_id_val = Some(v);
            // The connection held this session's value before the
            // statement (then whatever it says now is the session's), or
            // the statement generated the id it reported.
            if b.conn.insert_id_of == sid || (ok_id != 0 && v == ok_id) {
                self.insert_id = v;
                b.conn.insert_id_of = sid;
            }
        }
        self.insert_id_pending = None;
        Ok(())
    }

    /// Before a statement that reads LAST_INSERT_ID() on `w`: the
    /// session's value there (transaction mode).
    pub(super) async fn bring_insert_id(&mut self, w: Which) -> Result<(), SessionError> {
        let Some(here) = self.conns.get(w).map(|b| b.conn.id) else {
            return Ok(());
        };
        let sid = self.state.session_id;
        if let Some((c, _)) = self.insert_id_pending {
            let held_ours = self
                .conns
                .get(w)
                .is_some_and(|b| b.conn.insert_id_of == sid);
            if c == here && held_ours {
                // A statement of this session set it right there.
                return Ok(());
            }
            match self.conns.which_conn(c) {
                Some(p) => self.read_insert_id(p).await?,
                None => self.insert_id_pending = None,
            }
        }
        let value = self.insert_id;
        let known = !concord_config::testhooks::on("insert-id-values-unknown");
        if let Some(b) = self.conns.get_mut(w) {
            if known && self.insert_id_pending.is_none() && b.conn.insert_id_val == Some(value) {
                // It holds the same value already (from whichever session).
                b.conn.insert_id_of = sid;
            }
        }
        if self.conns.get(w).is_none_or(|b| b.conn.insert_id_of == sid) {
            return Ok(());
        }
        let set = format!("SET @@session.last_insert_id = {}", self.insert_id);
        self.value_on(w, &set).await?;
        if let Some(b) = self.conns.get_mut(w) {
            b.conn.insert_id_of = sid;
            b.conn.insert_id_val = Some(self.insert_id);
        }
        Ok(())
    }
}
