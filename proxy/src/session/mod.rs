//! One client session: authenticate, then read a command, route it, relay
//! the answer, track what it changed, repeat. `Session::serve` is the whole
//! loop; each command kind has one small method below it.

pub mod handshake;
pub mod local;
pub mod relay;
pub mod state;

use crate::backend::{BackendConn, BackendPool, Login, PoolKey};
use crate::classify::{self, flag, Kind};
use crate::error::SessionError;
use crate::net::ClientIo;
use crate::shared::{SessionInfo, Shared};
use crate::users::User;
use concord_protocol::codes;
use concord_protocol::consts::{cap, com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::StateChange;
use concord_protocol::resultset::{write_err, write_ok};
use concord_protocol::scan::{Expect, Scanner};
use concord_protocol::{PacketStream, ProtoError};
use relay::{CmdHead, RelayError};
use state::SessionState;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A backend connection the session holds, with what it needs to give it back.
pub struct Bound {
    pub conn: BackendConn,
    pub pool: Arc<BackendPool>,
    pub key: PoolKey,
    pub gen: u64,
    /// Epoch of the routing snapshot the connection was taken under.
    pub epoch: u64,
}

pub struct Session {
    shared: Arc<Shared>,
    info: Arc<SessionInfo>,
    client: PacketStream<ClientIo>,
    peer: SocketAddr,
    user: Arc<User>,
    caps: u32,
    state: SessionState,
    primary: Option<Bound>,
    /// Server status of the last response (transaction flags).
    status: u16,
    /// A backend died inside this session's transaction: everything but
    /// ROLLBACK fails until the client acknowledges it.
    txn_lost: bool,
    /// Epoch the last statement sent to the primary was routed under.
    write_epoch: u64,
}

/// Runs one client connection from accept to close.
pub async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let id = shared.sessions.next_id();
    let timeout = shared.config.load().listener.handshake_timeout.get();
    let users = shared.users.load_full();
    let cfg = shared.config.load_full();
    let gate = handshake::Gate {
        users: &users,
        require_tls: cfg.listener.require_tls,
        max_packet: cfg.listener.max_allowed_packet.as_usize(),
    };
    let accepted = tokio::time::timeout(
        timeout,
        handshake::accept(tcp, peer, &shared, id as u32, &gate),
    )
    .await;
    drop(cfg);
    let auth = match accepted {
        Err(_) => {
            tracing::info!(session = id, %peer, "handshake not finished within {timeout:?} (listener.handshake_timeout); closed");
            return;
        }
        Ok(Err((stream, seq, e))) => {
            tracing::info!(session = id, %peer, "login failed: {e}");
            if let (Some(mut s), Some(p)) = (stream, e.to_packet()) {
                let mut seq = seq;
                let _ = s.send(&mut seq, &p.to_payload()).await;
            }
            return;
        }
        Ok(Ok(a)) => a,
    };
    let user_name = auth.user.name.clone();
    if !shared
        .sessions
        .add_user(&user_name, auth.user.max_connections)
    {
        let mut s = auth.stream;
        let mut seq = auth.seq;
        let e = ErrPacket::new(
            codes::USER_LIMIT_REACHED,
            format!(
                "User '{user_name}' has exceeded its max_connections ({}) on this concord node",
                auth.user.max_connections
            ),
        );
        let _ = s.send(&mut seq, &e.to_payload()).await;
        return;
    }
    let info = Arc::new(SessionInfo {
        id,
        user: std::sync::Mutex::new(user_name.clone()),
        peer,
        tls: auth.stream.io.is_tls(),
        program: program_name(&auth.attrs),
        connected: std::time::Instant::now(),
        queries: Default::default(),
        in_txn: Default::default(),
        last_active_ms: Default::default(),
        db: std::sync::Mutex::new(auth.database.clone()),
        backend: std::sync::Mutex::new(None),
        kill_reason: std::sync::Mutex::new(None),
        kill: Default::default(),
    });
    shared.sessions.insert(info.clone());
    let multi = auth.caps & cap::MULTI_STATEMENTS != 0;
    let mut s = Session {
        state: SessionState::new(id, auth.database.clone(), auth.collation, multi),
        shared: shared.clone(),
        info,
        client: auth.stream,
        peer,
        user: auth.user,
        caps: auth.caps,
        primary: None,
        status: status::AUTOCOMMIT,
        txn_lost: false,
        write_epoch: 0,
    };
    tracing::debug!(session = id, %peer, user = %user_name, "client logged in");
    if s.login_complete(auth.seq).await {
        s.serve().await;
    }
    s.finish();
    shared.sessions.remove(id);
    shared.sessions.remove_user(&s.user.name);
}

impl Session {
    /// Checks the requested database (if any) and sends the final OK.
    async fn login_complete(&mut self, seq: u8) -> bool {
        if self.state.db.is_some() {
            if let Err(e) = self.ensure_primary(false, 0).await {
                if let Some(p) = e.to_packet() {
                    let mut seq = seq;
                    let _ = self.client.send(&mut seq, &p.to_payload()).await;
                }
                return false;
            }
        }
        let mut seq = seq;
        write_ok(&mut self.client.wbuf, &mut seq, self.caps, 0, "");
        self.client.flush().await.is_ok()
    }

    /// The command loop.
    async fn serve(&mut self) {
        loop {
            let cmd = match self.next_command().await {
                Ok(c) => c,
                Err(e) => {
                    self.report(e, 1).await;
                    return;
                }
            };
            self.info.touch();
            self.info.queries.fetch_add(1, Ordering::Relaxed);
            match self.dispatch(cmd).await {
                Ok(true) => {}
                Ok(false) => return,
                Err((e, seq)) => {
                    if !self.report(e, seq).await {
                        return;
                    }
                }
            }
            self.info
                .in_txn
                .store(self.status & status::IN_TRANS != 0, Ordering::Relaxed);
        }
    }

    /// Waits for the next command at the head of the client buffer.
    async fn next_command(&mut self) -> Result<CmdHead, SessionError> {
        loop {
            if let Some(c) = relay::command_ready(&self.client.rbuf, self.client.max_packet)
                .map_err(SessionError::Client)?
            {
                return Ok(c);
            }
            if self.primary.is_none() {
                self.client.shrink();
            }
            tokio::select! {
                r = self.client.fill() => { r.map_err(SessionError::Client)?; }
                _ = self.info.kill.notified() => {
                    let why = self.info.kill_reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    return Err(SessionError::fatal(codes::QUERY_INTERRUPTED, format!(
                        "concord closed this session: {}", why.unwrap_or_else(|| "killed".into()))));
                }
            }
        }
    }

    /// Sends the client the packet for `e`; false if the session must end.
    async fn report(&mut self, e: SessionError, seq: u8) -> bool {
        let keep = matches!(&e, SessionError::Reply(_))
            || matches!(
                &e,
                SessionError::Backend {
                    mid_response: false,
                    ..
                }
            );
        match &e {
            SessionError::Client(ProtoError::Closed) => {}
            SessionError::Client(pe) => {
                tracing::info!(session = self.info.id, peer = %self.peer, "closing session: client protocol error: {pe}")
            }
            SessionError::Backend { .. } => tracing::warn!(session = self.info.id, "{e}"),
            SessionError::Fatal(p) => {
                tracing::info!(session = self.info.id, "closing session: {p}")
            }
            SessionError::Reply(_) => {}
        }
        if let Some(p) = e.to_packet() {
            let mut s = seq;
            write_err(&mut self.client.wbuf, &mut s, &p);
            if self.client.flush().await.is_err() {
                return false;
            }
        }
        keep
    }

    /// Runs one command; `Ok(false)` ends the session.
    async fn dispatch(&mut self, cmd: CmdHead) -> Result<bool, (SessionError, u8)> {
        let payload = cmd.visible(&self.client.rbuf);
        let code = payload[0];
        if self.txn_lost && code == com::QUERY {
            return self.while_txn_lost(cmd).await.map(|_| true);
        }
        let r = match code {
            com::QUIT => return Ok(false),
            com::QUERY => self.query(cmd).await,
            com::PING => self.local_ok(cmd).await,
            com::INIT_DB => self.init_db(cmd).await,
            com::STMT_PREPARE => self.forward(cmd, Expect::Prepare, true).await,
            com::STMT_EXECUTE => self.forward(cmd, Expect::ResultSets, false).await,
            com::STMT_FETCH => self.forward(cmd, Expect::Rows, false).await,
            com::STMT_RESET => self.forward(cmd, Expect::Single, false).await,
            com::STMT_CLOSE | com::STMT_SEND_LONG_DATA => self.forward_no_reply(cmd).await,
            com::FIELD_LIST => self.forward(cmd, Expect::FieldList, false).await,
            com::STATISTICS | com::PROCESS_KILL => self.forward(cmd, Expect::Single, false).await,
            com::SET_OPTION => self.set_option(cmd).await,
            com::RESET_CONNECTION => self.reset_connection(cmd).await,
            com::CHANGE_USER => self.change_user(cmd).await,
            other => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                Err((
                    SessionError::reply(
                        codes::UNKNOWN_COM_ERROR,
                        format!(
                            "Unknown command 0x{other:02x}: concord does not relay {}",
                            com::name(other)
                        ),
                    ),
                    1,
                ))
            }
        };
        r.map(|_| true)
    }

    async fn discard(&mut self, cmd: CmdHead) -> Result<(), SessionError> {
        relay::discard_command(&mut self.client, cmd)
            .await
            .map_err(SessionError::Client)
    }

    async fn local_ok(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let mut seq = 1;
        let ok = concord_protocol::ok::OkPacket {
            status: self.status,
            ..Default::default()
        };
        concord_protocol::packet::build(&mut self.client.wbuf, &mut seq, |b| {
            ok.encode(b, self.caps)
        });
        self.client
            .flush()
            .await
            .map_err(|e| (SessionError::Client(e), 1))
    }

    /// COM_QUERY: classify, answer locally or forward, then track effects.
    async fn query(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let sql = &cmd.visible(&self.client.rbuf)[1..];
        let mut class = classify::classify(sql);
        if !cmd.whole {
            class.flags |= flag::TRUNCATED;
        }
        if class.kind == Kind::ConcordStatus {
            let sql = sql.to_vec();
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return local::concord_status(self, &sql).await;
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
        ) || (matches!(class.kind, Kind::SetSession) && !cmd.whole);
        // Plain reads may use the last known primary without the lease
        // (they cannot write); everything else needs it.
        let need_lease = !class.replica_ok();
        let (failed, ok) = self
            .forward_on_primary(cmd, Expect::ResultSets, dirty, need_lease)
            .await?;
        if failed {
            return Ok(());
        }
        if let Some(ok) = ok {
            self.apply_state_changes(&ok);
        }
        match (class.kind, text) {
            (Kind::Use, Some(t)) => {
                if let Some(db) = classify::use_target(&t) {
                    self.set_db(Some(db));
                }
            }
            (Kind::SetSession, Some(t)) => self.record_set(classify::set_target(&t), &t),
            (Kind::SetAutocommit(on), Some(t)) => {
                self.state.autocommit = on;
                self.record_set(Some("autocommit".into()), &t);
            }
            _ => {}
        }
        Ok(())
    }

    fn record_set(&mut self, key: Option<String>, sql: &[u8]) {
        let before = self.state.version;
        self.state.record_set(key, sql);
        // The connection that ran it is now in the new state.
        if let Some(b) = self.primary.as_mut() {
            if b.conn.state.synced == Some((self.state.session_id, before)) {
                b.conn.state.synced = Some((self.state.session_id, self.state.version));
            }
        }
    }

    fn set_db(&mut self, db: Option<String>) {
        if let Some(b) = self.primary.as_mut() {
            b.conn.state.db = db.clone();
        }
        *self.info.db.lock().unwrap_or_else(|p| p.into_inner()) = db.clone();
        self.state.db = db;
    }

    /// Schema changes reported by session tracking (e.g. USE inside a
    /// multi-statement or a procedure).
    fn apply_state_changes(&mut self, ok: &concord_protocol::ok::OkPacket) {
        if let Ok(changes) = ok.state_changes() {
            for c in changes {
                if let StateChange::Schema(s) = c {
                    self.set_db(Some(String::from_utf8_lossy(&s).into_owned()));
                }
            }
        }
    }

    /// Forwards a command to the primary and relays the answer.
    async fn forward(
        &mut self,
        cmd: CmdHead,
        expect: Expect,
        dirty: bool,
    ) -> Result<(), (SessionError, u8)> {
        self.forward_tracked(cmd, expect, dirty).await.map(|_| ())
    }

    /// Like `forward`, returning (failed, final OK with state changes).
    async fn forward_tracked(
        &mut self,
        cmd: CmdHead,
        expect: Expect,
        dirty: bool,
    ) -> Result<(bool, Option<concord_protocol::ok::OkPacket>), (SessionError, u8)> {
        self.forward_on_primary(cmd, expect, dirty, true).await
    }

    async fn forward_on_primary(
        &mut self,
        cmd: CmdHead,
        expect: Expect,
        dirty: bool,
        need_lease: bool,
    ) -> Result<(bool, Option<concord_protocol::ok::OkPacket>), (SessionError, u8)> {
        if let Err(e) = self.ensure_primary(need_lease, cmd.len).await {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((e, 1));
        }
        let Some(b) = self.primary.as_mut() else {
            return Err((
                SessionError::reply(codes::UNKNOWN_ERROR, "concord: no backend connection"),
                1,
            ));
        };
        if dirty {
            b.conn.dirty = true;
        }
        self.write_epoch = b.epoch;
        let in_txn_before = self.status & status::IN_TRANS != 0;
        let mut sc = Scanner::new(expect, b.conn.deprecate_eof());
        let res = match relay::forward_command(&mut self.client, &mut b.conn.io, cmd).await {
            Ok(()) => {
                relay::relay_response(
                    &mut b.conn.io,
                    &mut self.client,
                    &mut sc,
                    self.caps,
                    b.conn.caps,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(end) => {
                b.conn.status = sc.status;
                if sc.error.is_none() || expect != Expect::Single {
                    self.status = sc.status;
                }
                Ok((sc.error.is_some() || end.refused_infile, end.ok))
            }
            Err(e) => Err(self.lost_primary(e, in_txn_before)),
        }
    }

    /// A relay failed: drop the connection and decide what the client sees.
    fn lost_primary(&mut self, e: RelayError, in_txn: bool) -> (SessionError, u8) {
        let Some(b) = self.primary.take() else {
            return (SessionError::Client(ProtoError::Closed), 1);
        };
        let name = b.pool.name.clone();
        b.pool.discard(b.conn);
        match e {
            RelayError::Client(pe) => (SessionError::Client(pe), 1),
            RelayError::Backend {
                source,
                mid_packet,
                next_seq,
            } => {
                if in_txn {
                    self.txn_lost = true;
                }
                self.status &= !status::IN_TRANS;
                (
                    SessionError::Backend {
                        backend: name,
                        source: source.into(),
                        mid_response: mid_packet,
                    },
                    next_seq,
                )
            }
        }
    }

    async fn forward_no_reply(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        if let Err(e) = self.ensure_primary(false, cmd.len).await {
            // No reply is expected, so none can be sent: drop the command.
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            tracing::debug!(session = self.info.id, "dropped a no-reply command: {e}");
            return Ok(());
        }
        let in_txn = self.status & status::IN_TRANS != 0;
        let Some(b) = self.primary.as_mut() else {
            return Ok(());
        };
        match relay::forward_command(&mut self.client, &mut b.conn.io, cmd).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let (err, _) = self.lost_primary(e, in_txn);
                match err {
                    SessionError::Client(pe) => Err((SessionError::Client(pe), 1)),
                    // The client expects no reply; it learns at its next command.
                    _ => Ok(()),
                }
            }
        }
    }

    async fn init_db(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let db = String::from_utf8_lossy(&cmd.visible(&self.client.rbuf)[1..]).into_owned();
        let (failed, _) = self.forward_tracked(cmd, Expect::Single, false).await?;
        if !failed {
            self.set_db(Some(db));
        }
        Ok(())
    }

    async fn set_option(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let p = cmd.visible(&self.client.rbuf);
        let on = match p.get(1..3) {
            Some([0, 0]) => true,
            Some([1, 0]) => false,
            _ => {
                self.discard(cmd).await.map_err(|e| (e, 1))?;
                return Err((
                    SessionError::reply(codes::UNKNOWN_COM_ERROR, "Unknown COM_SET_OPTION value"),
                    1,
                ));
            }
        };
        let (failed, _) = self.forward_tracked(cmd, Expect::Single, false).await?;
        if !failed {
            self.state.multi_statements = on;
            if let Some(b) = self.primary.as_mut() {
                b.conn.state.multi_statements = on;
            }
        }
        Ok(())
    }

    async fn reset_connection(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        self.state.reset();
        if self.primary.is_some() {
            let (failed, _) = self.forward_tracked(cmd, Expect::Single, false).await?;
            if !failed {
                if let Some(b) = self.primary.as_mut() {
                    b.conn.state.synced = Some((self.state.session_id, self.state.version));
                    b.conn.state.multi_statements = true;
                    b.conn.state.collation = b.conn.login_collation;
                    b.conn.dirty = false;
                }
            }
            self.state.multi_statements = true;
            return Ok(());
        }
        self.state.multi_statements = true;
        self.local_ok(cmd).await
    }

    async fn change_user(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        if !cmd.whole {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((
                SessionError::Client(ProtoError::malformed("oversized COM_CHANGE_USER")),
                1,
            ));
        }
        let payload = cmd.visible(&self.client.rbuf)[1..].to_vec();
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let req =
            parse_change_user(&payload, self.caps).map_err(|e| (SessionError::Client(e), 1))?;
        let mut seq = 1;
        let user = handshake::change_user(
            &mut self.client,
            &self.shared,
            &self.peer,
            &req.user,
            &mut seq,
        )
        .await
        .map_err(|e| (e, seq))?;
        // The new user gets fresh connections with its own backend account.
        self.release_all();
        if !self
            .shared
            .sessions
            .add_user(&user.name, user.max_connections)
        {
            return Err((
                SessionError::fatal(
                    codes::USER_LIMIT_REACHED,
                    format!("User '{}' has exceeded its max_connections", user.name),
                ),
                seq,
            ));
        }
        self.shared.sessions.remove_user(&self.user.name);
        *self.info.user.lock().unwrap_or_else(|p| p.into_inner()) = user.name.clone();
        self.user = user;
        let collation = req.collation.unwrap_or(self.state.collation);
        let version = self.state.version + 1;
        self.state = SessionState::new(
            self.state.session_id,
            None,
            collation,
            self.caps & cap::MULTI_STATEMENTS != 0,
        );
        self.state.version = version;
        self.status = status::AUTOCOMMIT;
        self.txn_lost = false;
        if let Some(db) = req.database {
            self.state.db = Some(db);
            if let Err(e) = self.ensure_primary(false, 0).await {
                return Err((e, seq));
            }
        }
        write_ok(&mut self.client.wbuf, &mut seq, self.caps, 0, "");
        self.client
            .flush()
            .await
            .map_err(|e| (SessionError::Client(e), seq))
    }

    /// After a backend died inside a transaction: everything fails with
    /// the same explanation until ROLLBACK (or COMMIT, which is told that
    /// nothing was committed).
    async fn while_txn_lost(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let kind = classify::classify(&cmd.visible(&self.client.rbuf)[1..]).kind;
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let lost = |msg: &str| ErrPacket {
            code: codes::CR_SERVER_LOST.0,
            state: *b"08007",
            message: msg.into(),
        };
        match kind {
            Kind::Rollback => {
                self.txn_lost = false;
                let mut seq = 1;
                write_ok(&mut self.client.wbuf, &mut seq, self.caps, 0, "");
                self.client.flush().await.map_err(|e| (SessionError::Client(e), 1))
            }
            Kind::Commit => {
                self.txn_lost = false;
                Err((SessionError::Reply(lost("COMMIT failed: the transaction was lost with its backend connection and rolled back by the server; nothing was committed")), 1))
            }
            _ => Err((SessionError::Reply(lost("The transaction was lost: its backend connection failed and the server rolled it back. Issue ROLLBACK and retry the transaction")), 1)),
        }
    }

    /// Makes sure the session holds a connection to the current primary,
    /// in its state. While no primary is routable (failover in progress,
    /// or this node lost its lease) the statement waits, bounded by
    /// `failover.write_buffer_timeout` and the buffer caps, then fails
    /// with 1290 and a message that says why.
    async fn ensure_primary(
        &mut self,
        need_lease: bool,
        cmd_bytes: usize,
    ) -> Result<(), SessionError> {
        let mut waiting: Option<(std::time::Instant, crate::shared::BufferSlot)> = None;
        let pool = loop {
            let routing = self.shared.routing.load();
            if let Some(b) = &self.primary {
                let current = routing
                    .primary
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(p, &b.pool))
                    && b.gen == b.pool.generation()
                    && b.epoch == routing.epoch;
                if !current {
                    let in_txn = self.status & status::IN_TRANS != 0;
                    if let Some(b) = self.primary.take() {
                        b.pool.discard(b.conn);
                    }
                    if in_txn {
                        self.txn_lost = true;
                        self.status &= !status::IN_TRANS;
                        return Err(SessionError::Reply(ErrPacket {
                            code: codes::CR_SERVER_LOST.0,
                            state: *b"08007",
                            message: "The primary was fenced during this transaction; the transaction is lost. Issue ROLLBACK and retry".into(),
                        }));
                    }
                }
            }
            let blocked = match &routing.primary {
                None => Some(routing.no_primary_reason.clone()),
                Some(_) if need_lease && !self.shared.lease.valid() => {
                    self.shared.write_block_reason()
                }
                Some(p) => {
                    if self.primary.is_some() {
                        return Ok(());
                    }
                    break (p.clone(), routing.epoch);
                }
            };
            let reason = blocked.unwrap_or_default();
            let cfg = self.shared.config.load();
            let limit = cfg.failover.write_buffer_timeout.get();
            if waiting.is_none() {
                let slot = self
                    .shared
                    .buffer_slot(cmd_bytes, &cfg.failover)
                    .map_err(|why| {
                        SessionError::reply(
                            codes::OPTION_PREVENTS_STATEMENT,
                            format!("concord: {reason}; {why}"),
                        )
                    })?;
                waiting = Some((std::time::Instant::now(), slot));
            }
            let since = waiting
                .as_ref()
                .map(|(t, _)| t.elapsed())
                .unwrap_or_default();
            if since >= limit {
                return Err(SessionError::reply(
                    codes::OPTION_PREVENTS_STATEMENT,
                    format!(
                        "concord held this statement {:.1}s (failover.write_buffer_timeout) and no primary became routable: {reason}; it was not executed, safe to retry",
                        since.as_secs_f64()
                    ),
                ));
            }
            drop(routing);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        drop(waiting);
        let (pool, epoch) = pool;
        let key = PoolKey {
            user: self.user.backend_user.as_str().into(),
            flavor: self.caps & cap::FLAVOR,
        };
        let login = Login {
            user: self.user.backend_user.clone(),
            password: self.user.backend_password.clone(),
            collation: self.state.collation,
        };
        let (mut conn, gen) = pool
            .acquire(&key, &login, self.state.db.as_deref())
            .await
            .map_err(|e| SessionError::Backend {
                backend: pool.name.clone(),
                source: e,
                mid_response: false,
            })?;
        self.shared.learn_server_version(&conn.server_version);
        match state::sync(&mut conn, &self.state).await {
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
        *self.info.backend.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool.name.clone());
        self.primary = Some(Bound {
            conn,
            pool,
            key,
            gen,
            epoch,
        });
        Ok(())
    }

    /// Gives every held backend connection back to its pool.
    fn release_all(&mut self) {
        if let Some(b) = self.primary.take() {
            let reusable = b.conn.status & status::IN_TRANS == 0;
            b.pool.release(b.conn, b.key, b.gen, reusable);
        }
    }

    fn finish(&mut self) {
        self.release_all();
    }
}

/// The client's program name from its connect attributes, for SHOW SESSIONS.
fn program_name(attrs: &[u8]) -> String {
    let attrs = concord_protocol::handshake::parse_attrs(attrs).unwrap_or_default();
    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    get("program_name")
        .or_else(|| get("_client_name"))
        .unwrap_or_default()
}

struct ChangeUser {
    user: Vec<u8>,
    database: Option<String>,
    collation: Option<u8>,
}

fn parse_change_user(p: &[u8], caps: u32) -> Result<ChangeUser, ProtoError> {
    let mut r = concord_protocol::rd::Rd::new(p);
    let user = r.null_str("user")?.to_vec();
    if caps & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8("auth length")?);
        r.skip(n, "auth response")?;
    } else {
        r.null_str("auth response")?;
    }
    let db = if r.is_empty() {
        b"" as &[u8]
    } else {
        r.null_str_or_rest()
    };
    let collation = if r.remaining() >= 2 {
        Some(r.u16("collation")? as u8)
    } else {
        None
    };
    Ok(ChangeUser {
        user,
        database: (!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned()),
        collation,
    })
}
