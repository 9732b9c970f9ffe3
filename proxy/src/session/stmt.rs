//! Prepared statements across backends. The client sees statement ids
//! concord assigns; each backend connection gets the statement prepared
//! lazily when a statement first executes there, and the id in every
//! COM_STMT_* packet is rewritten in place. Each connection keeps at most
//! `pool.max_prepared_per_connection` statements (least recently used ones
//! are closed), so backends never hit `max_prepared_stmt_count`.

use super::conns::Which;
use super::relay::CmdHead;
use super::Session;
use crate::backend::Reply;
use crate::classify::{self, Class};
use crate::error::SessionError;
use concord_protocol::codes;
use concord_protocol::consts::{com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::packet::HEADER;
use concord_protocol::scan::Expect;
use std::collections::{HashMap, VecDeque};

impl ClientStmt {
    /// It has an open cursor on `conn_id`, or long data waiting (on the
    /// primary, where its next execute goes).
    fn busy_on(&self, conn_id: u64) -> bool {
        !concord_config::testhooks::on("evict-busy-statements")
            && (self.cursor_on == Some(conn_id) || self.long_data)
    }
}

pub struct ClientStmt {
    pub sql: Vec<u8>,
    pub class: Class,
    /// User variables its executions assign (`SET @a = ?`, `... INTO @b`).
    pub assigned: Vec<String>,
    /// It sets a global: each execution renews the fleet's pools, as a
    /// text SET GLOBAL does.
    pub sets_global: bool,
    pub params: u16,
    /// (backend connection id, that backend's statement id)
    pub on: Vec<(u64, u32)>,
    /// Parameter types from the last execute that bound them.
    pub types: Option<Vec<u8>>,
    /// Connections that have seen `types`.
    pub types_on: Vec<u64>,
    /// COM_STMT_SEND_LONG_DATA went to the primary since the last execute.
    pub long_data: bool,
    /// Connection holding this statement's open cursor.
    pub cursor_on: Option<u64>,
    /// Connection of the last execute (for COM_STMT_RESET).
    pub last_on: Option<u64>,
    /// Its digest and fingerprint (see `classify::fingerprint`).
    pub digest: (u64, std::sync::Arc<[u8]>),
    /// The session's parse context when the client prepared it (see
    /// `SessionState::parse_ctx`).
    pub ctx: u64,
}

/// Open statements one session may hold, and the total size of their SQL
/// text: concord keeps every statement's text to prepare it lazily on
/// other backends, so without a cap a client could PREPARE without bound.
/// Past either, PREPARE gets MySQL's error 1461, as a server would past
/// `max_prepared_stmt_count`.
pub const MAX_SESSION_STMTS: usize = 4096;
pub const MAX_SESSION_STMT_TEXT: usize = 16 << 20;

#[derive(Default)]
pub struct Stmts {
    next: u32,
    /// (Ids are concord's own, so a fast hasher is safe.)
    map: HashMap<u32, ClientStmt, foldhash::fast::RandomState>,
    /// Bytes of SQL text held in `map`.
    text: usize,
    /// Per backend connection, client statement ids, least recent first.
    lru: HashMap<u64, VecDeque<u32>, foldhash::fast::RandomState>,
    /// Open statements that read the previous statement's information
    /// (ROW_COUNT(), FOUND_ROWS(), warnings): while any is open, the
    /// connections holding that information stay (transaction mode).
    pub info_readers: usize,
    /// The statement the session prepared last, if that prepare worked
    /// and it is still open: what [`LAST_STMT_ID`] names.
    last: Option<u32>,
}

/// MariaDB's id for "the statement this connection prepared last", which
/// lets a client send COM_STMT_PREPARE and COM_STMT_EXECUTE back to back
/// without waiting for the id (MariaDB Connector/J 3, the Node.js
/// `mariadb` connector).
pub const LAST_STMT_ID: u32 = u32::MAX;

impl Stmts {
    fn alloc(&mut self) -> u32 {
        self.next = self.next.wrapping_add(1).max(1);
        if self.next == LAST_STMT_ID {
            self.next = 1;
        }
        self.next
    }

    /// The client's statement id in a COM_STMT_* payload, with
    /// [`LAST_STMT_ID`] read as the server does: the last statement
    /// prepared, if that prepare worked and the statement is open (else
    /// it stays unknown).
    fn id_in(&self, payload: &[u8]) -> u32 {
        match stmt_id(payload) {
            Some(LAST_STMT_ID) if !concord_config::testhooks::on("no-last-statement-id") => {
                self.last.unwrap_or(LAST_STMT_ID)
            }
            id => id.unwrap_or(0),
        }
    }

    pub fn forget_conn(&mut self, conn_id: u64) {
        for s in self.map.values_mut() {
            s.on.retain(|(c, _)| *c != conn_id);
            s.types_on.retain(|c| *c != conn_id);
            if s.cursor_on == Some(conn_id) {
                s.cursor_on = None;
            }
        }
        self.lru.remove(&conn_id);
    }

    /// Forgets backend statement `bid` of `conn_id` (closed there).
    pub fn forget_backend(&mut self, conn_id: u64, bid: u32) {
        for (id, s) in self.map.iter_mut() {
            if s.on.contains(&(conn_id, bid)) {
                s.on.retain(|x| *x != (conn_id, bid));
                s.types_on.retain(|c| *c != conn_id);
                if let Some(q) = self.lru.get_mut(&conn_id) {
                    q.retain(|x| x != id);
                }
            }
        }
    }

    /// One of the session's statements is `bid` on `conn_id`.
    fn uses(&self, conn_id: u64, bid: u32) -> bool {
        self.map.values().any(|s| s.on.contains(&(conn_id, bid)))
    }

    /// One of the session's statements is `bid` on `conn_id` and has an
    /// open cursor or long data there.
    fn busy(&self, conn_id: u64, bid: u32) -> bool {
        self.map
            .values()
            .any(|s| s.on.contains(&(conn_id, bid)) && s.busy_on(conn_id))
    }

    /// A statement's open cursor is on `conn_id`, or long data waits on
    /// the primary for its execute: the connection cannot be given back.
    pub fn holds_conn(&self, conn_id: u64, primary: bool) -> bool {
        self.map
            .values()
            .any(|s| s.cursor_on == Some(conn_id) || (primary && s.long_data))
    }

    /// Whether one more statement of `len` bytes stays within the caps.
    fn has_room(&self, len: usize) -> bool {
        self.map.len() < MAX_SESSION_STMTS && self.text + len <= MAX_SESSION_STMT_TEXT
    }

    fn insert(&mut self, id: u32, s: ClientStmt) {
        self.text += s.sql.len();
        self.info_readers += usize::from(s.class.has(classify::flag::STMT_INFO));
        if let Some(old) = self.map.insert(id, s) {
            self.text -= old.sql.len();
            self.info_readers -= usize::from(old.class.has(classify::flag::STMT_INFO));
        }
    }

    fn remove(&mut self, id: u32) -> Option<ClientStmt> {
        let s = self.map.remove(&id)?;
        if self.last == Some(id) {
            self.last = None;
        }
        self.text -= s.sql.len();
        self.info_readers -= usize::from(s.class.has(classify::flag::STMT_INFO));
        Some(s)
    }

    pub fn clear(&mut self) {
        self.last = None;
        self.text = 0;
        self.info_readers = 0;
        self.map.clear();
        self.lru.clear();
    }

    fn backend_id(&self, id: u32, conn_id: u64) -> Option<u32> {
        self.map
            .get(&id)?
            .on
            .iter()
            .find(|(c, _)| *c == conn_id)
            .map(|(_, b)| *b)
    }

    /// Records `id` as prepared on `conn_id` (room was made first).
    fn note(&mut self, id: u32, conn_id: u64, backend_id: u32) {
        if let Some(s) = self.map.get_mut(&id) {
            s.on.retain(|(c, _)| *c != conn_id);
            s.on.push((conn_id, backend_id));
        }
        let q = self.lru.entry(conn_id).or_default();
        q.retain(|x| *x != id);
        q.push_back(id);
    }

    /// Before preparing one more statement on `conn_id`: the backend id of
    /// the least recently used one to close there if it already holds
    /// `max`, so a connection never holds more than `max`, not even for a
    /// moment.
    fn make_room(&mut self, conn_id: u64, max: usize) -> Option<u32> {
        let q = self.lru.get(&conn_id)?;
        if q.len() < max.max(1) {
            return None;
        }
        // Not one with an open cursor or long data there: closing it
        // would lose them (the bound is passed for a while instead).
        let at = q
            .iter()
            .position(|id| self.map.get(id).is_none_or(|s| !s.busy_on(conn_id)))?;
        let victim = self.lru.get_mut(&conn_id)?.remove(at)?;
        let s = self.map.get_mut(&victim)?;
        let pos = s.on.iter().position(|(c, _)| *c == conn_id)?;
        let (_, bid) = s.on.remove(pos);
        s.types_on.retain(|c| *c != conn_id);
        Some(bid)
    }

    fn touch(&mut self, id: u32, conn_id: u64) {
        if let Some(q) = self.lru.get_mut(&conn_id) {
            // Hot statements sit at the back: look from there, and a
            // statement executed again in a row costs one compare.
            if q.back() == Some(&id) {
                return;
            }
            if let Some(p) = q.iter().rposition(|x| *x == id) {
                q.remove(p);
                q.push_back(id);
            }
        }
    }
}

fn unknown(id: u32, what: &str) -> SessionError {
    SessionError::Reply(ErrPacket::new(
        codes::UNKNOWN_STMT_HANDLER,
        format!("Unknown prepared statement handler ({id}) given to {what}"),
    ))
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Session {
    fn max_prepared(&self) -> usize {
        self.cfg.pool.max_prepared_per_connection as usize
    }

    /// Writes the backend's statement id over the client's in the command.
    fn rewrite_id(&mut self, backend_id: u32) {
        self.client.rbuf[HEADER + 1..HEADER + 5].copy_from_slice(&backend_id.to_le_bytes());
    }

    /// Closes a backend statement (no reply expected).
    async fn close_on(&mut self, w: Which, backend_id: u32) {
        if let Some(b) = self.conns.get_mut(w) {
            b.conn.prepared.retain(|p| p.id != backend_id);
            let mut p = [com::STMT_CLOSE, 0, 0, 0, 0];
            p[1..5].copy_from_slice(&backend_id.to_le_bytes());
            let mut seq = 0;
            if b.conn.io.send(&mut seq, &p).await.is_err() {
                self.drop_conn(w);
            }
        }
    }

    /// Records `bid` as prepared on `w` for `sql` (under the session's
    /// parse context, which the connection holds), closing the
    /// connection's least recently used statement past the per-connection
    /// bound (and forgetting it wherever this session used it).
    async fn cache_on(&mut self, w: Which, sql: std::sync::Arc<[u8]>, bid: u32) {
        let max = self.max_prepared().max(1);
        let ctx = self.state.parse_ctx();
        let Some(b) = self.conns.get_mut(w) else {
            return;
        };
        let conn_id = b.conn.id;
        b.conn
            .prepared
            .push(crate::backend::Prepared { sql, ctx, id: bid });
        let mut victims = Vec::new();
        while b.conn.prepared.len() > max {
            // The least recently used one this session has no cursor or
            // long data on.
            let stmts = &self.stmts;
            let busy = |p: &crate::backend::Prepared| stmts.busy(conn_id, p.id);
            let Some(at) = b.conn.prepared.iter().position(|p| p.id != bid && !busy(p)) else {
                break;
            };
            victims.push(b.conn.prepared.remove(at).id);
        }
        for v in victims {
            self.stmts.forget_backend(conn_id, v);
            self.close_on(w, v).await;
        }
    }

    /// The statement prepared on `w`, preparing it there if needed.
    async fn prepared_on(&mut self, id: u32, w: Which) -> Result<u32, SessionError> {
        let Some(conn_id) = self.conns.get(w).map(|b| b.conn.id) else {
            return Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                "concord: no backend connection",
            ));
        };
        if let Some(bid) = self.stmts.backend_id(id, conn_id) {
            // Still there: the session may have closed a statement of the
            // same text that shared this id, and while the connection was
            // in the pool the upkeep or another session may have closed it.
            let there = self
                .conns
                .get(w)
                .is_some_and(|b| b.conn.prepared.iter().any(|p| p.id == bid));
            if there || concord_config::testhooks::on("trust-remembered-statement") {
                self.stmts.touch(id, conn_id);
                return Ok(bid);
            }
            self.stmts.forget_backend(conn_id, bid);
        }
        let Some((sql, ctx)) = self.stmts.map.get(&id).map(|s| (s.sql.clone(), s.ctx)) else {
            return Err(unknown(id, "mysqld_stmt_execute"));
        };
        // Prepared there already, by this session or another, under the
        // context the client prepared it in.
        let twins = !concord_config::testhooks::on("twin-statements-share");
        let stmts = &self.stmts;
        if let Some(bid) = self.conns.get_mut(w).and_then(|b| {
            b.conn
                .cached_statement(&sql, ctx, |bid| twins && stmts.uses(conn_id, bid))
        }) {
            if let Some(s) = self.stmts.map.get_mut(&id) {
                // Its last parameter types were someone else's.
                s.types_on.retain(|c| *c != conn_id);
            }
            self.stmts.note(id, conn_id, bid);
            return Ok(bid);
        }
        let max = self.max_prepared();
        if let Some(victim) = self.stmts.make_room(conn_id, max) {
            self.close_on(w, victim).await;
        }
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(&sql);
        let Some(b) = self.conns.get_mut(w) else {
            return Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                "concord: no backend connection",
            ));
        };
        b.conn.dirty = true;
        let name = b.pool.name.clone();
        let reply = b.conn.command(&p).await;
        let bid = match reply {
            Ok(Reply::Prepared(pr)) => pr.statement_id,
            Ok(Reply::Err(e)) => return Err(SessionError::Reply(e)),
            Ok(_) => {
                return Err(SessionError::reply(
                    codes::UNKNOWN_ERROR,
                    "concord: unexpected prepare reply",
                ))
            }
            Err(e) => {
                self.drop_conn(w);
                return Err(SessionError::Backend {
                    backend: name,
                    source: e,
                    mid_response: false,
                });
            }
        };
        self.stmts.note(id, conn_id, bid);
        self.cache_on(w, sql.into(), bid).await;
        Ok(bid)
    }

    /// COM_STMT_PREPARE: prepare where the statement will most likely run
    /// and hand the client concord's own statement id.
    pub(super) async fn stmt_prepare(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        // A failed prepare leaves no last statement, as on the server.
        self.stmts.last = None;
        if !cmd.whole {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((
                SessionError::reply(
                    codes::UNKNOWN_ERROR,
                    "concord: statements to prepare are limited to 64 KiB",
                ),
                1,
            ));
        }
        let mut sql = cmd.visible(&self.client.rbuf)[1..].to_vec();
        let class = classify::classify(&sql);
        let mut cmd = cmd;
        if class.has(crate::classify::flag::CONN_ID) {
            // Prepared with the session's id in place of CONNECTION_ID(),
            // here and wherever it is prepared later.
            sql = classify::rewrite_ids(&sql, self.info.id);
            let text = sql.clone();
            cmd = self.rewrite_command(cmd, move |p| {
                let mut v = vec![p[0]];
                v.extend_from_slice(&text);
                v
            });
        }
        if !self.stmts.has_room(sql.len()) {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((
                SessionError::reply(
                    codes::MAX_PREPARED_STMT_COUNT_REACHED,
                    format!(
                        "Can't create more than max_prepared_stmt_count statements (current value: {}); concord allows {MAX_SESSION_STMTS} open statements or {} MiB of statement text per session: close some",
                        self.stmts.map.len(),
                        MAX_SESSION_STMT_TEXT >> 20
                    ),
                ),
                1,
            ));
        }
        let (w, _reason) = match self.place(&class, cmd.len).await {
            Ok(x) => x,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        loop {
            if let Some(conn_id) = self.conns.get(w).map(|b| b.conn.id) {
                let max = self.max_prepared();
                if let Some(victim) = self.stmts.make_room(conn_id, max) {
                    self.close_on(w, victim).await;
                }
            }
            if !self.replace_fenced_primary(w, cmd).await? {
                break;
            }
        }
        let id = self.stmts.alloc();
        let out = self
            .forward_to(w, cmd, Expect::Prepare, true, Some(id), true)
            .await?;
        if let (false, Some(p)) = (out.failed, out.prepare) {
            let conn_id = self.conns.get(w).map(|b| b.conn.id).unwrap_or(0);
            let assigned =
                if class.has(crate::classify::flag::USER_VAR_WRITE | crate::classify::flag::INTO) {
                    classify::assigned_user_vars(&sql)
                } else {
                    Vec::new()
                };
            let sets_global = matches!(
                class.kind,
                crate::classify::Kind::SetSession | crate::classify::Kind::Write
            ) && classify::sets_global(&sql, false);
            let digest = classify::fingerprint(&sql, &mut self.digest_buf);
            let kept = self.digest_buf.len().min(self.shared.digests.max_text());
            let digest = (digest, self.digest_buf[..kept].into());
            self.stmts.insert(
                id,
                ClientStmt {
                    digest,
                    ctx: self.state.parse_ctx(),
                    sql,
                    class,
                    assigned,
                    sets_global,
                    params: p.params,
                    on: Vec::new(),
                    types: None,
                    types_on: Vec::new(),
                    long_data: false,
                    cursor_on: None,
                    last_on: None,
                },
            );
            self.stmts.note(id, conn_id, p.statement_id);
            self.stmts.last = Some(id);
            let text: std::sync::Arc<[u8]> = self
                .stmts
                .map
                .get(&id)
                .map(|s| s.sql.as_slice().into())
                .unwrap_or_else(|| std::sync::Arc::from(&b""[..]));
            self.cache_on(w, text, p.statement_id).await;
            // Preparing `SET @v = ?` (or `... INTO @v`) already defines
            // the variable on that connection.
            let assigned = self
                .stmts
                .map
                .get(&id)
                .map(|s| s.assigned.clone())
                .unwrap_or_default();
            if !assigned.is_empty() {
                self.state.bump();
                for name in &assigned {
                    self.state.record_user_on(name, conn_id);
                }
                let (sid, v) = (self.state.session_id, self.state.version);
                if let Some(b) = self.conns.get_mut(w) {
                    if b.conn.state.synced == Some((sid, v - 1)) {
                        b.conn.state.synced = Some((sid, v));
                    }
                }
            }
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE: route like the statement's text, prepare there if
    /// needed, re-send parameter types a new backend has not seen.
    pub(super) async fn stmt_execute(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let id = self.stmts.id_in(cmd.visible(&self.client.rbuf));
        let (digest, rules) = match self.stmts.map.get(&id) {
            Some(s) => (
                self.shared.digests.timing().then(|| s.digest.clone()),
                self.rule_effect(s.digest.0, &s.digest.1),
            ),
            None => (None, None),
        };
        let Some(digest) = digest else {
            return self.stmt_execute_inner(cmd, rules).await;
        };
        self.note = Default::default();
        let t0 = self.cmd_at;
        let r = self.stmt_execute_inner(cmd, rules).await;
        self.record_digest(digest.0, &digest.1, t0, r.is_err(), None);
        r
    }

    async fn stmt_execute_inner(
        &mut self,
        cmd: CmdHead,
        rules: Option<crate::rules::Effect>,
    ) -> Result<(), (SessionError, u8)> {
        let payload = cmd.visible(&self.client.rbuf);
        let id = self.stmts.id_in(payload);
        // (A CALL opens no cursor of the client's; its procedure's own
        // cursors set CURSOR_EXISTS on its result sets all the same.)
        let cursor = payload.get(5).is_some_and(|f| f & 0x01 != 0);
        let Some(stmt) = self.stmts.map.get(&id) else {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((unknown(id, "mysqld_stmt_execute"), 1));
        };
        let mut class = stmt.class;
        let params = stmt.params;
        let long_data = stmt.long_data;
        let assigned = stmt.assigned.clone();
        let sets_global = stmt.sets_global;
        // What it changes about pins, from its text as for COM_QUERY (a
        // statement's table names are never parameters).
        let pin_change = if self.pins != 0 || class.pin.is_some() {
            classify::pin_change(&stmt.sql)
        } else {
            None
        };
        self.stmt_timeout = super::deadline::hinted(self.default_timeout(), class.hint_timeout);
        if let Some(e) = rules {
            if let Err(e) = self.apply_rules(e, &mut class) {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        }
        let placed = if long_data {
            self.ensure_primary(cmd.len)
                .await
                .map(|_| (Which::Primary, crate::router::Reason::Write))
        } else {
            self.place(&class, cmd.len).await
        };
        let (w, reason) = match placed {
            Ok(x) => x,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        crate::metrics::route(w != Which::Primary, reason);
        let bid = loop {
            if class.has(classify::flag::INSERT_ID) && self.multiplexed() {
                if let Err(e) = self.bring_insert_id(w).await {
                    self.discard(cmd).await.map_err(|e| (e, 1))?;
                    return Err((e, 1));
                }
            }
            let bid = match self.prepared_on(id, w).await {
                Ok(b) => b,
                Err(e) => {
                    self.discard(cmd).await.map_err(|e| (e, 1))?;
                    return Err((e, 1));
                }
            };
            // Readying took round trips: a fence meanwhile moves the
            // statement (see `leave_fenced_primary`).
            if !self.replace_fenced_primary(w, cmd).await? {
                break bid;
            }
        };
        let conn_id = self.conns.get(w).map(|b| b.conn.id).unwrap_or(0);
        // A new execute closes the statement's open cursor, as on a
        // server; one left open on another connection is reset there.
        let old_cursor = self
            .stmts
            .map
            .get_mut(&id)
            .and_then(|s| s.cursor_on.take())
            .filter(|c| *c != conn_id);
        if let Some(c) = old_cursor {
            self.reset_on(id, c).await;
        }
        let cmd = match self.bind_types(id, conn_id, params, cmd) {
            Ok(c) => c,
            Err(e) => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((e, 1));
            }
        };
        self.rewrite_id(bid);
        self.may_write = !super::query::plain_read(&class);
        let out = self
            .forward_to(
                w,
                cmd,
                if cursor && !class.has(classify::flag::CALL) {
                    Expect::Cursor
                } else {
                    Expect::ResultSets
                },
                false,
                None,
                true,
            )
            .await?;
        self.note_outcome(w, &out);
        if let Some(s) = self.stmts.map.get_mut(&id) {
            s.long_data = false;
            s.last_on = Some(conn_id);
            if cursor && out.status & status::CURSOR_EXISTS != 0 {
                s.cursor_on = Some(conn_id);
            }
        }
        self.after_statement(w, &class, &assigned, &out, pin_change.as_ref());
        if sets_global && !out.failed {
            self.renew_pools(w).await;
        }
        if let (Some(c), false) = (pin_change, out.failed) {
            self.change_pins(c);
        }
        Ok(())
    }

    /// Tracks the parameter types a client binds, and re-sends them to a
    /// connection that has not seen them (the client only sends types
    /// when they change). May rebuild the packet in the buffer.
    fn bind_types(
        &mut self,
        id: u32,
        conn_id: u64,
        params: u16,
        cmd: CmdHead,
    ) -> Result<CmdHead, SessionError> {
        if params == 0 {
            return Ok(cmd);
        }
        let nb = (usize::from(params)).div_ceil(8);
        let flag_at = 1 + 4 + 1 + 4 + nb;
        let payload = cmd.visible(&self.client.rbuf);
        let Some(&bound) = payload.get(flag_at) else {
            return Err(SessionError::Client(
                concord_protocol::ProtoError::Truncated("execute parameters"),
            ));
        };
        let Some(s) = self.stmts.map.get_mut(&id) else {
            return Ok(cmd);
        };
        if bound == 1 {
            let types = payload
                .get(flag_at + 1..flag_at + 1 + 2 * usize::from(params))
                .ok_or(SessionError::Client(
                    concord_protocol::ProtoError::Truncated("parameter types"),
                ))?;
            // Reused: a driver that sends types with every execute costs
            // no allocation per statement.
            let t = s.types.get_or_insert_with(Vec::new);
            t.clear();
            t.extend_from_slice(types);
            s.types_on.clear();
            s.types_on.push(conn_id);
            return Ok(cmd);
        }
        if s.types_on.contains(&conn_id) {
            return Ok(cmd);
        }
        let Some(types) = s.types.clone() else {
            return Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                "concord: the statement was executed without parameter types ever being bound",
            ));
        };
        if !cmd.whole {
            return Err(SessionError::reply(
                codes::UNKNOWN_ERROR,
                "concord: cannot re-bind parameter types on a statement over 64 KiB; bind types on each execute",
            ));
        }
        // Rebuild: same packet with the bound flag set and types inserted.
        let mut newp = Vec::with_capacity(cmd.len + types.len());
        newp.extend_from_slice(&payload[..flag_at]);
        newp.push(1);
        newp.extend_from_slice(&types);
        newp.extend_from_slice(&payload[flag_at + 1..]);
        s.types_on.push(conn_id);
        let rest = self.client.rbuf.split_off(HEADER + cmd.len);
        self.client.rbuf.clear();
        let mut seq = 0;
        concord_protocol::packet::put_packet(&mut self.client.rbuf, &mut seq, &newp);
        self.client.rbuf.extend_from_slice(&rest);
        Ok(CmdHead {
            len: newp.len(),
            whole: newp.len() <= concord_protocol::scan::WHOLE_LIMIT,
        })
    }

    /// COM_STMT_RESET of statement `id` on held connection `conn_id`,
    /// answered here (it closes a cursor the client no longer sees).
    async fn reset_on(&mut self, id: u32, conn_id: u64) {
        let (Some(w), Some(bid)) = (
            self.conns.which_conn(conn_id),
            self.stmts.backend_id(id, conn_id),
        ) else {
            return;
        };
        let Some(b) = self.conns.get_mut(w) else {
            return;
        };
        let mut p = [com::STMT_RESET, 0, 0, 0, 0];
        p[1..5].copy_from_slice(&bid.to_le_bytes());
        if b.conn.command(&p).await.is_err() {
            self.drop_conn(w);
        }
    }

    /// COM_STMT_FETCH: to the connection holding the cursor.
    pub(super) async fn stmt_fetch(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let id = self.stmts.id_in(cmd.visible(&self.client.rbuf));
        let known = self.stmts.map.contains_key(&id);
        let target = self
            .stmts
            .map
            .get(&id)
            .and_then(|s| s.cursor_on)
            .and_then(|c| self.conns.which_conn(c).map(|w| (c, w)));
        let Some((conn_id, w)) = target else {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            if known {
                // What the server says for a statement without a cursor.
                return Err((
                    SessionError::Reply(ErrPacket::new(
                        codes::STMT_HAS_NO_OPEN_CURSOR,
                        format!("The statement ({id}) has no open cursor"),
                    )),
                    1,
                ));
            }
            return Err((unknown(id, "mysqld_stmt_fetch"), 1));
        };
        let Some(bid) = self.stmts.backend_id(id, conn_id) else {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((unknown(id, "mysqld_stmt_fetch"), 1));
        };
        // The cursor's connection in the session's state (its sql_mode
        // flags), and, when a transaction runs elsewhere, the answer's
        // transaction flags the session's own.
        if let Err(e) = self.sync_held(w).await {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((e, 1));
        }
        if self.txn.is_some_and(|t| t != w) {
            let tx = status::IN_TRANS | status::IN_TRANS_READONLY;
            self.status_fix = Some((tx, self.status & tx));
        }
        self.rewrite_id(bid);
        let out = self
            .forward_to(w, cmd, Expect::Rows, false, None, true)
            .await?;
        if out.failed || out.status & status::LAST_ROW_SENT != 0 {
            // The server closed the cursor after its last row.
            if let Some(s) = self.stmts.map.get_mut(&id) {
                s.cursor_on = None;
            }
        }
        Ok(())
    }

    /// COM_STMT_CLOSE: close it everywhere it was prepared; no reply.
    pub(super) async fn stmt_close(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let id = self.stmts.id_in(cmd.visible(&self.client.rbuf));
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let Some(s) = self.stmts.remove(id) else {
            return Ok(());
        };
        for q in self.stmts.lru.values_mut() {
            q.retain(|x| *x != id);
        }
        for (conn_id, bid) in s.on {
            // On a connection given back meanwhile it stays, for whoever
            // prepares the same text there (bounded per connection, and
            // closed by the pool's upkeep once the connection idles).
            if let Some(w) = self.conns.which_conn(conn_id) {
                self.close_on(w, bid).await;
            }
        }
        Ok(())
    }

    /// COM_STMT_RESET: where it last ran (or nothing to reset).
    pub(super) async fn stmt_reset(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let id = self.stmts.id_in(cmd.visible(&self.client.rbuf));
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let Some(s) = self.stmts.map.get_mut(&id) else {
            return Err((unknown(id, "mysqld_stmt_reset"), 1));
        };
        s.long_data = false;
        s.cursor_on = None;
        // Reset wherever it is prepared (long data, cursors), then answer
        // with the session's own status: the connection the statement last
        // ran on may not be the one holding the session's transaction.
        let on: Vec<u64> = s.on.iter().map(|(c, _)| *c).collect();
        for c in on {
            self.reset_on(id, c).await;
        }
        self.send_ok().await
    }

    /// COM_STMT_SEND_LONG_DATA: to the primary, where the next execute of
    /// this statement will then run.
    pub(super) async fn stmt_long_data(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let id = self.stmts.id_in(cmd.visible(&self.client.rbuf));
        if !self.stmts.map.contains_key(&id) {
            // No reply is expected; the error surfaces at execute.
            return self.discard(cmd).await.map_err(|e| (e, 1));
        }
        if self.ensure_primary(cmd.len).await.is_err() {
            return self.discard(cmd).await.map_err(|e| (e, 1));
        }
        let bid = match self.prepared_on(id, Which::Primary).await {
            Ok(b) => b,
            Err(_) => return self.discard(cmd).await.map_err(|e| (e, 1)),
        };
        if let Some(s) = self.stmts.map.get_mut(&id) {
            s.long_data = true;
        }
        self.rewrite_id(bid);
        self.forward_no_reply_on(Which::Primary, cmd).await
    }
}
