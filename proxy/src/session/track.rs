//! What a statement changed in the session, as the server reported it:
//! system variables and schema from the session tracker, user variables
//! assigned (read back from their connection when another one needs
//! them), pins for state that cannot move, and the GTID of the session's
//! last write for read-your-writes.

use super::conns::{Outcome, Which};
use super::state::{capture_sql, user_literal};
use super::Session;
use crate::classify::{flag, Class, Kind, Pin};
use crate::error::SessionError;
use concord_protocol::codes;
use concord_protocol::consts::status;
use concord_protocol::ok::StateChange;

impl Session {
    /// Records what a statement run on `w` changed. Applied even when it
    /// failed: a multi-statement may have changed state before its error.
    /// `naming`: what the statement's text says it changed about pins
    /// (COM_QUERY only).
    pub(super) fn after_statement(
        &mut self,
        w: Which,
        class: &Class,
        assigned: &[String],
        out: &Outcome,
        naming: Option<&crate::classify::PinChange>,
    ) {
        if class.has(flag::PINS) || class.has(flag::TEMP_TABLE) {
            let p = class
                .pin
                .or_else(|| class.has(flag::TEMP_TABLE).then_some(Pin::TempTable));
            let p = p.filter(|p| {
                *p != Pin::Sequence || !concord_config::testhooks::on("sequences-unpinned")
            });
            if let Some(p) = p {
                self.pin(p);
                // A temporary table whose statement concord did not read
                // (prepared, CREATE OR REPLACE ...) keeps the pin: no
                // DROP of another name may end it while the table exists.
                let made = !out.failed || class.has(flag::MULTI);
                if p == Pin::TempTable
                    && naming.is_none()
                    && made
                    && !concord_config::testhooks::on("unnamed-pins-end-on-drop")
                {
                    self.change_pins(crate::classify::PinChange::Unnamed(p));
                }
            }
        }
        if out.status_seen {
            // Held while the mode is on (the server reports it with every
            // answer); nothing lives on the connection because of it.
            let nbe = out.status & status::NO_BACKSLASH_ESCAPES != 0
                && !concord_config::testhooks::on("no-backslash-escapes-unpinned");
            let bit = Pin::NoBackslashEscapes.bit();
            if nbe {
                self.pin(Pin::NoBackslashEscapes);
            } else if self.pins & bit != 0 {
                self.set_pins(self.pins & !bit);
            }
        }
        let assigns = class.has(flag::USER_VAR_WRITE | flag::INTO);
        if !out.tracking {
            // A backend that reports nothing: state the statement may have
            // changed stays where it is.
            let changes_state = class.has(flag::ONLY_SETS) || assigns;
            if changes_state {
                self.pin(Pin::NoTracking);
            }
        }
        // What a previous SET STATEMENT on this connection set, reported
        // as it reverts (see `BackendConn::reverting`); a name leaves the
        // list once its revert was reported.
        let reverting = match self.conns.get_mut(w) {
            // (A SET STATEMENT's own report is the setting, not a revert.)
            Some(b) if !b.conn.reverting.is_empty() && !class.has(flag::SET_STATEMENT) => {
                if out.state_unreadable {
                    // A change flagged without details (an old-style EOF):
                    // taken as the pending reverts.
                    std::mem::take(&mut b.conn.reverting)
                } else {
                    let (seen, kept): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut b.conn.reverting).into_iter().partition(|r| {
                        out.changes.iter().any(|c| {
                            matches!(c, StateChange::SystemVariable(n, _) if n.eq_ignore_ascii_case(r))
                        })
                    });
                    b.conn.reverting = kept;
                    seen
                }
            }
            _ => Vec::new(),
        };
        // What this SET STATEMENT sets for its own duration (its names are
        // on the connection's revert list already): reported now as the
        // setting, not as the session's state. Anything else it reports
        // (a procedure it runs may set a variable for good) is recorded.
        let for_statement: Vec<Vec<u8>> = if class.has(flag::SET_STATEMENT) {
            self.conns
                .get(w)
                .map(|b| b.conn.reverting.clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if class.has(flag::SET_STATEMENT) && class.has(flag::TRUNCATED) {
            // Which names revert is unknown (cut at 64 KiB).
            self.pin(Pin::Untracked);
        }
        tracing::trace!(session = self.info.id, conn = out.conn_id, changes = ?out.changes, reverting = ?reverting, kind = ?class.kind, "tracked");
        if self.oneshot_on == Some(out.conn_id)
            && class.kind != Kind::Read
            && !self.rand_seeded
            && (out
                .ok_counts
                .is_some_and(|(_, id)| id != 0 && Some(id) == self.forced_insert_id)
                || concord_config::testhooks::on("one-shot-vars-end-early"))
        {
            // SET insert_id: consumed once an insert generated an id with
            // it (the server keeps it until then, past other statements).
            // A seeded RAND() state stays on the connection for good.
            self.oneshot_on = None;
        }
        let before = self.state.version;
        let mut bumped = false;
        let mut state_changed = false;
        let mut own_gtid: Option<Vec<u8>> = None;
        let names: Vec<&[u8]> = out
            .changes
            .iter()
            .filter_map(|c| match c {
                StateChange::SystemVariable(n, _) => Some(n.as_slice()),
                _ => None,
            })
            .collect();
        for c in &out.changes {
            match c {
                StateChange::SystemVariable(name, value) => {
                    if name.eq_ignore_ascii_case(b"last_gtid") {
                        own_gtid = Some(value.clone());
                        continue;
                    }
                    if super::state::ONE_STATEMENT_VARS
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
                    {
                        if value.as_slice() != b"0" {
                            self.oneshot_on = Some(out.conn_id);
                            if name.eq_ignore_ascii_case(b"insert_id") {
                                self.forced_insert_id =
                                    std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                            } else {
                                self.rand_seeded = true;
                            }
                        }
                        continue;
                    }
                    if name.len() > 14 && name[..14].eq_ignore_ascii_case(b"session_track_") {
                        // The client changed the tracking settings: set ours
                        // again before the connection's next statement.
                        if let Some(b) = self.conns.get_mut(w) {
                            b.conn.tracking = false;
                        }
                        continue;
                    }
                    if class.has(flag::SET_STATEMENT)
                        && (class.has(flag::TRUNCATED)
                            || for_statement.iter().any(|r| r.eq_ignore_ascii_case(name)))
                    {
                        // Set for the statement's duration only.
                        continue;
                    }
                    if super::state::PINNING_VARS
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
                    {
                        self.pin(Pin::Untracked);
                        continue;
                    }
                    if super::state::SESSION_REPLICATION_VARS
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
                    {
                        let default =
                            value.as_slice() == b"0" || value.eq_ignore_ascii_case(b"AUTOMATIC");
                        if !default && !concord_config::testhooks::on("replication-vars-unpinned") {
                            self.pin(Pin::Untracked);
                        }
                        continue;
                    }
                    if !bumped {
                        self.state.bump();
                        bumped = true;
                    }
                    self.state.record_sysvar(name, value, &names);
                }
                StateChange::Schema(s) => {
                    let db = (!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned());
                    if db != self.state.db {
                        self.set_db(w, db);
                    }
                }
                StateChange::Gtids(g) => own_gtid = Some(g.clone()),
                StateChange::StateChanged(on) => state_changed |= *on,
                StateChange::Other(_) => {}
            }
        }
        if assigns && class.has(flag::TRUNCATED) {
            // Assigned, but the names are not known (a statement cut at
            // 64 KiB): the values stay where they are.
            self.pin(Pin::Untracked);
        } else if !assigned.is_empty() {
            if !bumped {
                self.state.bump();
                bumped = true;
            }
            for name in assigned {
                self.state.record_user_on(name, out.conn_id);
            }
        }
        // The flag is the revert's echo only if every variable reported is
        // one that reverts (a CALL that also changed something stays
        // unexplained).
        let reverts = |n: &[u8]| reverting.iter().any(|r| r.eq_ignore_ascii_case(n));
        let echo = out
            .changes
            .iter()
            .any(|c| matches!(c, StateChange::SystemVariable(n, _) if reverts(n)))
            && out.changes.iter().all(|c| match c {
                StateChange::SystemVariable(n, _) => {
                    n.eq_ignore_ascii_case(b"last_gtid") || reverts(n)
                }
                StateChange::StateChanged(_) => true,
                _ => false,
            });
        // A SET STATEMENT's own setting raises the flag too; only one
        // running a procedure may have changed what no value reports.
        let set_statement_explains = class.has(flag::SET_STATEMENT) && !class.has(flag::CALL);
        let state_changed = state_changed || (out.state_unreadable && reverting.is_empty());
        if state_changed
            && !class.has(flag::ONLY_SETS)
            && !set_statement_explains
            && class.pin.is_none()
            && !assigns
            && !echo
        {
            // The server says something changed that no tracked value,
            // schema or named user variable accounts for (a stored program
            // assigned a user variable, ...): it stays where it is.
            tracing::debug!(session = self.info.id, changes = ?out.changes, reverting = ?reverting, class = ?class, "state change no tracked value explains");
            self.pin(Pin::Untracked);
        }
        if self.state.overflow {
            self.pin(Pin::Overflow);
        }
        if bumped {
            // The connection that ran it is in the new state already.
            let (sid, now) = (self.state.session_id, self.state.version);
            if let Some(b) = self.conns.get_mut(w) {
                if b.conn.state.synced == Some((sid, before)) {
                    b.conn.state.synced = Some((sid, now));
                }
            }
        }
        if out.status_seen {
            // The server's own flag: however autocommit was changed.
            self.state.autocommit = out.status & status::AUTOCOMMIT != 0;
        }
        // (GET DIAGNOSTICS answers with an OK: FOUND_ROWS() stays.)
        let leaves = (class.has(flag::DIAG) && out.ok_counts.is_some())
            || (class.has(flag::KEEPS_FOUND_ROWS)
                && !concord_config::testhooks::on("found-rows-untracked"));
        if class.kind == Kind::Read && !leaves && !class.has(flag::SETS_FOUND_ROWS) {
            self.last_read = Some(w);
            self.found_rows = out.rows;
            self.calc_found_rows = class.has(flag::CALC_FOUND_ROWS) && !out.failed;
            self.found_rows_unread = false;
        } else if class.has(flag::SETS_FOUND_ROWS)
            && !concord_config::testhooks::on("found-rows-untracked")
        {
            self.last_read = Some(w);
            self.calc_found_rows = false;
            self.found_rows_unread = true;
        }
        if out.failed || out.warnings > 0 || class.has(flag::USES_TABLE) {
            self.last_diag = Some(w);
        }
        if let Some(b) = self.conns.get_mut(w) {
            // Whether its diagnostics area holds anything now.
            if out.failed || out.warnings > 0 {
                b.conn.diag = true;
            } else if class.has(flag::USES_TABLE) {
                b.conn.diag = false;
            }
            // A statement that may have set LAST_INSERT_ID() there: read
            // back before the connection leaves (transaction mode).
            // (An OK's id is not enough: an INSERT of an explicit value
            // reports it without setting LAST_INSERT_ID().)
            let id = out.ok_counts.map_or(0, |(_, id)| id);
            let unseen = concord_config::testhooks::on("multi-statement-insert-id-unseen");
            let may_change = (matches!(class.kind, Kind::Write | Kind::SetSession)
                || class.has(flag::MULTI | flag::CALL))
                && !unseen;
            let multi = if unseen { 0 } else { flag::MULTI };
            if (id != 0 && !out.failed) || class.has(flag::INSERT_ID | flag::CALL | multi) {
                // It held the session's value before (its known value is
                // the session's): what it holds now is the session's, so
                // a statement reading it there needs no read back (which
                // would reset ROW_COUNT() and FOUND_ROWS()).
                if self.insert_id_pending.is_none()
                    && b.conn.insert_id_val == Some(self.insert_id)
                    && !concord_config::testhooks::on("insert-id-values-unknown")
                {
                    b.conn.insert_id_of = self.state.session_id;
                }
                b.conn.insert_id_val = None;
                self.insert_id_pending = Some((b.conn.id, id));
            } else if may_change {
                // (A failed multi-row INSERT may have set it too.)
                b.conn.insert_id_val = None;
            }
        }
        if class.kind == Kind::SetTransaction && !out.failed {
            self.next_on_primary = true;
        } else if self.next_on_primary
            && w == Which::Primary
            && !out.failed
            && out.status & status::IN_TRANS == 0
            && (matches!(class.kind, Kind::Commit | Kind::Rollback)
                || concord_config::testhooks::on("one-shot-characteristics-end-early"))
        {
            // The server keeps them until a transaction ends (or a
            // statement commits on a transactional engine, which concord
            // cannot tell from one on MyISAM): only then may the
            // connection serve another session.
            self.next_on_primary = false;
        }
        self.after_write_check(w, class, out.failed, out.tracking, own_gtid);
    }

    /// Read-your-writes bookkeeping after anything that may have written.
    /// `own_gtid`: the GTID the server reported for this session's commit.
    pub(super) fn after_write_check(
        &mut self,
        w: Which,
        class: &Class,
        failed: bool,
        tracking: bool,
        own_gtid: Option<Vec<u8>>,
    ) {
        let session_only = matches!(
            class.kind,
            Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use | Kind::SetTransaction
        ) && own_gtid.is_none();
        if w == Which::Primary && !class.replica_ok() && !session_only {
            let conn_id = self.conns.get(w).map_or(0, |b| b.conn.id);
            if !failed || own_gtid.is_some() {
                self.ryw_note_write(tracking, own_gtid, conn_id);
            } else if (class.has(flag::CALL) || class.has(flag::MULTI))
                && self.txn.is_none()
                && !concord_config::testhooks::on("failed-writes-unseen")
            {
                // An error carries no GTID, yet a procedure or a
                // multi-statement outside a transaction may have committed
                // part of its work (a single statement on InnoDB rolls
                // back whole): the next read learns the session's last
                // write position first.
                self.ryw_unknown_write(conn_id);
            }
        }
    }

    /// Reads back user variables that live on connections other than
    /// `except` (by connection id), so they can be replayed as literals.
    /// A variable whose connection is gone is lost with it.
    pub(super) async fn capture_elsewhere(&mut self, except: u64) -> Result<(), SessionError> {
        let pending = self.state.pending_elsewhere(except);
        self.capture(pending).await
    }

    /// Reads back the user variables living on connection `conn` only.
    pub(super) async fn capture_from(&mut self, conn: u64) -> Result<(), SessionError> {
        let mut pending = self.state.pending_elsewhere(u64::MAX);
        pending.retain(|(c, _)| *c == conn);
        self.capture(pending).await
    }

    /// Reads back `pending` (connection, key) user variables.
    async fn capture(&mut self, pending: Vec<(u64, String)>) -> Result<(), SessionError> {
        /// Variables read back per query (a bounded result row).
        const BATCH: usize = 64;
        if pending.is_empty() {
            return Ok(());
        }
        let mut conns: Vec<u64> = pending.iter().map(|(c, _)| *c).collect();
        conns.sort_unstable();
        conns.dedup();
        for c in conns {
            let all: Vec<&String> = pending
                .iter()
                .filter(|(x, _)| *x == c)
                .map(|(_, k)| k)
                .collect();
            for keys in all.chunks(BATCH) {
                self.capture_batch(c, keys).await?;
            }
        }
        Ok(())
    }

    /// Reads back `keys` from connection `c`.
    async fn capture_batch(&mut self, c: u64, keys: &[&String]) -> Result<(), SessionError> {
        {
            let Some(w) = self.conns.which_conn(c) else {
                let why = "the backend connection holding this session's user variables was closed before they were read back".to_string();
                self.lost.get_or_insert(why.clone());
                return Err(SessionError::Fatal(super::lost_state(&why)));
            };
            // Keys and their targets side by side: column i*4 is key i.
            let (keys, targets): (Vec<&String>, Vec<String>) = keys
                .iter()
                .filter_map(|k| self.state.vars.get(*k).map(|v| (*k, v.target.clone())))
                .unzip();
            if keys.is_empty() {
                return Ok(());
            }
            let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
            let sql = capture_sql(&refs);
            let Some(b) = self.conns.get_mut(w) else {
                return Ok(());
            };
            let name = b.pool.name.clone();
            let got = match b.conn.query_typed(&sql).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return Err(SessionError::Reply(e)),
                Err(e) => {
                    self.drop_conn(w);
                    return Err(SessionError::Backend {
                        backend: name,
                        source: e,
                        mid_response: false,
                    });
                }
            };
            let row = got.rows.first();
            for (i, key) in keys.iter().enumerate() {
                let cell = |j: usize| {
                    row.and_then(|r| r.get(i * 4 + j))
                        .and_then(|c| c.as_deref())
                };
                let (ty, flags) = got
                    .columns
                    .get(i * 4)
                    .map(|c| (c.ty, c.flags))
                    .unwrap_or((0xff, 0));
                match user_literal(ty, flags, cell(0), cell(1), cell(2), cell(3)) {
                    Some(lit) => self.state.set_user_literal(key, lit),
                    None => {
                        // Not a type a literal reproduces exactly: the
                        // session keeps to the connection holding it.
                        self.pin(Pin::Untracked);
                        return Err(SessionError::reply(
                            codes::UNKNOWN_ERROR,
                            format!("concord: user variable {key} holds a value of column type {ty} that cannot be carried to another backend; the session now stays on its primary connection, retry the statement"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
