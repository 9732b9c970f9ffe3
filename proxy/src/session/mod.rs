//! One client session: authenticate, then read a command, place it on a
//! backend, relay the answer, track what it changed, repeat.
//! `Session::serve` is the whole loop and `dispatch` the one place that
//! maps a command to its handler; the handlers live in small files:
//! `query` (COM_QUERY), `stmt` (prepared statements), `conns` (held
//! backend connections), `ryw` (read-your-writes), `state` (replayed
//! session state), `track` (what the server said changed), `kill` (KILL
//! and connection ids), `relay` (moving bytes), `local` (answered by
//! concord).

mod causal;
mod conns;
mod deadline;
mod digests;
pub mod handshake;
pub mod kill;
pub mod local;
mod multiplex;
mod query;
pub mod relay;
mod rules;
mod ryw;
pub mod state;
mod stmt;
mod track;

use crate::classify::Pin;
use crate::error::SessionError;
use crate::net::ClientIo;
use crate::shared::{Registered, SessionInfo, Shared};
use crate::users::User;
use concord_protocol::codes;
use concord_protocol::consts::{cap, com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::resultset::{write_err, write_ok};
use concord_protocol::scan::Expect;
use concord_protocol::{PacketStream, ProtoError};
use conns::{Conns, Which};
use relay::CmdHead;
use state::SessionState;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpStream;

pub struct Session {
    shared: Arc<Shared>,
    info: Arc<SessionInfo>,
    client: PacketStream<ClientIo>,
    peer: SocketAddr,
    user: Arc<User>,
    caps: u32,
    state: SessionState,
    conns: Conns,
    stmts: stmt::Stmts,
    /// Server status of the last response (transaction flags).
    status: u16,
    /// The statement's fingerprint is written here (reused: no allocation
    /// per statement once warm).
    digest_buf: Vec<u8>,
    /// Where the statement ran and what it returned, for its digest.
    note: crate::digest::Note,
    /// The running command's statement timeout (hint, user, global).
    stmt_timeout: Option<std::time::Duration>,
    /// Where the open transaction runs, if one is open.
    txn: Option<Which>,
    /// The open transaction's `transaction_timeout` deadline.
    txn_clock: deadline::TxnClock,
    /// The transaction was rolled back by `transaction_timeout` (this
    /// long): what the client is told until it sends ROLLBACK.
    txn_timed_out: Option<std::time::Duration>,
    /// The running command is BEGIN, COMMIT or ROLLBACK: it ends the open
    /// transaction (so it is not cut off by that transaction's deadline),
    /// and one open after it is a new one (AND CHAIN, an implicit commit).
    txn_boundary: bool,
    /// The last answer was a deadlock error (1213): the server rolled the
    /// transaction back, whatever the stale status says.
    deadlocked: bool,
    /// Why everything stays on the primary connection (`Pin` bits): state
    /// the server holds there that concord cannot replay elsewhere
    /// (temporary tables, locks, ...).
    pins: u16,
    /// Named causes of pins (SQL prepared statements, open handlers): the
    /// pin goes when the last one does.
    pinned_names: Vec<(Pin, String)>,
    /// The connection that ran the client's previous command: statement
    /// information (SHOW WARNINGS, FOUND_ROWS(), @@warning_count, ...) is
    /// read there.
    last: Option<Which>,
    /// The connection that ran the previous SELECT: FOUND_ROWS() is read
    /// there (statements other than SELECT leave it as it was).
    last_read: Option<Which>,
    /// The connection whose diagnostics area holds what a server would
    /// show now: the last statement that used a table or raised a
    /// warning or error (MariaDB keeps the area through statements that
    /// do neither).
    last_diag: Option<Which>,
    /// After SET TRANSACTION: the next transaction runs where it was set.
    next_on_primary: bool,
    /// For the next relayed answer: (status flags to clear, to set), when
    /// it comes from a connection other than the transaction's.
    status_fix: Option<(u16, u16)>,
    /// The last answer was an error alone: `status` may be out of date.
    status_stale: bool,
    /// Session state that lived only on a backend connection that is gone
    /// (why): the session ends, as a direct connection would have.
    lost: Option<String>,
    /// A backend died inside this session's transaction: everything but
    /// ROLLBACK fails until the client acknowledges it.
    txn_lost: bool,
    /// Epoch the last statement sent to the primary was routed under.
    write_epoch: u64,
    ryw: ryw::Ryw,
    /// `SET @@concord_after`: every read of the session waits for it.
    after: Option<String>,
    /// The current statement's `/* concord:after=TOKEN */`.
    pending_after: Option<String>,
    /// The causal token the statement being placed reads after (for a
    /// read re-run on the primary).
    read_token: Option<String>,
    /// The last token the primary vouched for, and under which epoch.
    token_checked: Option<(String, u64)>,
    /// Held from routing a command to the primary until its answer is
    /// relayed: a fence waits for it (see `concord_consensus::gate`).
    write_guard: Option<concord_consensus::WriteGuard>,
    /// The configuration as of the current command's arrival (see
    /// [`Shared::config_gen`]), and the generation it is of.
    cfg: Arc<concord_config::Config>,
    cfg_gen: u64,
    /// When the current command arrived.
    cmd_at: std::time::Instant,
    /// The command's number in the session (counts from 1).
    cmd_no: u64,
    /// What ROW_COUNT() says after the last statement, and FOUND_ROWS()
    /// after the last SELECT (for when their connection went back to
    /// the pool); whether that SELECT asked SQL_CALC_FOUND_ROWS (then
    /// only its connection knows).
    row_count: i64,
    /// concord sent a command of its own (a status COM_PING) on the
    /// connection that answered last: its ROW_COUNT() is no longer the
    /// session's (a ping sets it to 0), so `row_count` is written in.
    row_count_moved: bool,
    found_rows: u64,
    calc_found_rows: bool,
    /// A statement that sets FOUND_ROWS() without a result of its own
    /// (INSERT ... SELECT, CREATE TABLE ... SELECT, SET @v = (SELECT ...))
    /// ran on `last_read`: its value is read there before the connection
    /// goes back.
    found_rows_unread: bool,
    /// The session's LAST_INSERT_ID() (transaction mode: see `multiplex`),
    /// and the connection a statement may have changed it on since.
    insert_id: u64,
    insert_id_pending: Option<(u64, u64)>,
    /// Connection holding a one-statement variable (`SET insert_id`,
    /// `rand_seed1`, ...): until an insert generates an id with it.
    oneshot_on: Option<u64>,
    /// `oneshot_on` holds a RAND() state seeded by `SET rand_seed1/2`:
    /// kept with the session for good.
    rand_seeded: bool,
    /// The value `SET insert_id` forced (see `oneshot_on`).
    forced_insert_id: Option<u64>,
    /// The last statement was COMMIT/ROLLBACK RELEASE: the session ends
    /// after its answer, as the server's connection did.
    closing_after: bool,
    /// The statement about to be sent may write (see `relay::Stall`);
    /// set per statement, true unless it is a plain read.
    may_write: bool,
    /// In the registry and counted for its user until dropped.
    registered: Registered,
}

/// Runs one client connection from accept to close.
pub async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let id = shared.sessions.next_id(shared.node_id);
    let cfg = shared.config.load_full();
    let users = shared.users.load_full();
    let gate = handshake::Gate {
        users: &users,
        require_tls: cfg.listener.require_tls,
        max_packet: cfg.listener.max_allowed_packet.as_usize(),
    };
    // The greeting names the backends' version: drivers pick their code
    // paths (MySQL 8 or MariaDB) from it.
    shared
        .wait_server_version(cfg.listener.handshake_timeout.get() / 2)
        .await;
    let auth = handshake::login(tcp, peer, &shared, id as u32, &gate, "client").await;
    drop(cfg);
    let Some(auth) = auth else { return };
    let user_name = auth.user.name.clone();
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
        busy: Default::default(),
        db: std::sync::Mutex::new(auth.database.clone()),
        backend: std::sync::Mutex::new(None),
        kill_reason: std::sync::Mutex::new(None),
        kill: Default::default(),
        abort: Default::default(),
        held: Default::default(),
        running: Default::default(),
        kill_gate: Default::default(),
        pins: Default::default(),
    });
    let Some(registered) = Registered::new(&shared, info.clone(), auth.user.max_connections) else {
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
    };
    let multi = auth.caps & cap::MULTI_STATEMENTS != 0;
    let mut s = Session {
        state: SessionState::new(id, auth.database.clone(), auth.collation, multi),
        shared: shared.clone(),
        info: info.clone(),
        client: auth.stream,
        peer,
        user: auth.user,
        caps: auth.caps,
        conns: Conns::default(),
        stmts: stmt::Stmts::default(),
        status: status::AUTOCOMMIT,
        digest_buf: Vec::new(),
        note: Default::default(),
        stmt_timeout: None,
        txn: None,
        txn_clock: deadline::TxnClock::Off,
        txn_timed_out: None,
        txn_boundary: false,
        deadlocked: false,
        pins: 0,
        pinned_names: Vec::new(),
        last: None,
        last_read: None,
        last_diag: None,
        next_on_primary: false,
        status_fix: None,
        status_stale: false,
        lost: None,
        txn_lost: false,
        write_epoch: 0,
        ryw: ryw::Ryw::default(),
        after: None,
        pending_after: None,
        read_token: None,
        token_checked: None,
        write_guard: None,
        cfg_gen: shared.config_gen.load(Ordering::Acquire),
        cfg: shared.config.load_full(),
        cmd_at: std::time::Instant::now(),
        cmd_no: 0,
        row_count: -1,
        row_count_moved: false,
        found_rows: 0,
        calc_found_rows: false,
        found_rows_unread: false,
        insert_id: 0,
        insert_id_pending: None,
        oneshot_on: None,
        rand_seeded: false,
        forced_insert_id: None,
        closing_after: false,
        may_write: true,
        registered,
    };
    tracing::debug!(session = id, %peer, user = %user_name, "client logged in");
    let mut cut = false;
    if s.login_complete(auth.seq).await {
        tokio::select! {
            biased;
            _ = s.serve() => {}
            why = cut_off(&info) => {
                tracing::info!(session = id, "session cut off in the middle of a command: {why}");
                cut = true;
            }
        }
    }
    let (received, sent) = s.client.io.take_bytes();
    crate::metrics::client_bytes(received, sent);
    if cut {
        // Connections in the middle of a command: never reused.
        s.drop_all();
    } else {
        s.release_all();
    }
}

/// Resolves when the session was killed while busy with a command (a
/// statement running, a half-sent packet, a LOCAL INFILE that went
/// quiet): the session future is then dropped, closing its sockets.
/// Between commands the command loop answers the kill itself, telling the
/// client why.
async fn cut_off(info: &SessionInfo) -> String {
    info.abort.notified().await;
    loop {
        if info.busy.load(Ordering::Relaxed) {
            return info.killed().unwrap_or_default();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl Session {
    /// Checks the requested database (if any) and sends the final OK.
    async fn login_complete(&mut self, seq: u8) -> bool {
        let mut seq = seq;
        if self.state.db.is_some() {
            if let Err(e) = self.ensure_primary(0).await {
                if let Some(p) = e.to_packet() {
                    let _ = self.client.send(&mut seq, &p.to_payload()).await;
                }
                return false;
            }
        }
        write_ok(&mut self.client.wbuf, &mut seq, self.caps, 0, "");
        if self.client.flush().await.is_err() {
            return false;
        }
        self.write_guard = None;
        self.give_back().await;
        true
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
            self.cmd_at = self.info.touch();
            self.cmd_no += 1;
            let gen = self.shared.config_gen.load(Ordering::Acquire);
            if gen != self.cfg_gen {
                self.cfg_gen = gen;
                self.cfg = self.shared.config.load_full();
            }
            self.expire_txn_at_arrival();
            self.stmt_timeout = None;
            self.txn_boundary = false;
            self.info.queries.fetch_add(1, Ordering::Relaxed);
            if let Some(why) = self.lost.take() {
                let _ = self.discard(cmd).await;
                self.report(SessionError::Fatal(lost_state(&why)), 1).await;
                return;
            }
            self.info.busy.store(true, Ordering::Relaxed);
            let done = self.dispatch(cmd).await;
            self.info.busy.store(false, Ordering::Relaxed);
            if self.client.io.pending_bytes() >= 64 * 1024 {
                let (received, sent) = self.client.io.take_bytes();
                crate::metrics::client_bytes(received, sent);
            }
            self.write_guard = None;
            // Meant for this command's answer only (a failure before it
            // was forwarded leaves it set).
            self.status_fix = None;
            self.drop_poisoned();
            self.tick_txn_clock();
            // At a transaction boundary: drop connections to backends the
            // routing no longer offers (drained, in maintenance, fenced),
            // and in transaction mode give back what can move.
            self.release_stale_replicas().await;
            if matches!(done, Ok(true) | Err((SessionError::Reply(_), _))) {
                self.give_back().await;
            }
            match done {
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
                .store(self.txn.is_some(), Ordering::Relaxed);
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
            if self.conns.primary.is_none() && self.conns.replicas.is_empty() {
                self.client.shrink();
            }
            // Node shutting down: close at the next transaction boundary.
            if self.txn.is_none() && self.shared.shutting_down.load(Ordering::Acquire) {
                return Err(SessionError::fatal(
                    codes::SERVER_SHUTDOWN,
                    "Server shutdown in progress: this concord node is stopping; reconnect (another node serves you)",
                ));
            }
            // Biased: the read is polled first, so when the command is
            // already there the kill Notify is never registered.
            let txn_deadline = self.txn_clock.at().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                r = self.client.fill() => { r.map_err(SessionError::Client)?; }
                _ = relay::until(txn_deadline), if txn_deadline.is_some() => {
                    // Idle in a transaction past its deadline.
                    if let deadline::TxnClock::Until { limit, .. } = self.txn_clock {
                        self.end_timed_out_txn(limit);
                    }
                }
                _ = self.info.kill.notified() => {
                    let why = self.info.kill_reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    // Without a reason it is a nudge (shutdown, or the
                    // routing took a backend out of rotation): let go of
                    // what is no longer offered, loop and check.
                    if let Some(why) = why {
                        return Err(SessionError::fatal(codes::CONNECTION_KILLED, format!("Connection was killed: concord closed this session ({why})")));
                    }
                    self.release_stale_replicas().await;
                }
            }
        }
    }

    /// Sends the client the packet for `e`; false if the session must end.
    async fn report(&mut self, e: SessionError, seq: u8) -> bool {
        let keep = (matches!(&e, SessionError::Reply(_))
            || matches!(
                &e,
                SessionError::Backend {
                    mid_response: false,
                    ..
                }
            ))
            && self.lost.is_none();
        if let Some(why) = self.lost.take() {
            // The error that lost the state ends the session with it.
            let p = as_sent(lost_state(&why));
            crate::metrics::client_error(p.code);
            let mut s = seq;
            write_err(&mut self.client.wbuf, &mut s, &p);
            let _ = self.client.flush().await;
            return false;
        }
        if matches!(
            &e,
            SessionError::Backend {
                mid_response: true,
                ..
            }
        ) {
            // Part of a packet reached the client: an error packet now
            // would be read as the rest of it. Only closing is clean.
            tracing::warn!(session = self.info.id, "{e}; closing the client mid-packet");
            return false;
        }
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
        if let Some(p) = e.to_packet().map(as_sent) {
            crate::metrics::client_error(p.code);
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
        let code = cmd.visible(&self.client.rbuf)[0];
        crate::metrics::command(code);
        if self.txn_lost && matches!(code, com::QUERY | com::STMT_EXECUTE) {
            return self.while_txn_lost(cmd).await.map(|_| true);
        }
        if code == com::QUERY
            && concord_config::testhooks::on("session-panic")
            && cmd.visible(&self.client.rbuf)[1..].starts_with(b"/* concord:test-panic */")
        {
            // Test-only: a bug in one session, with connections held.
            panic!("test hook: session {} panics on request", self.info.id);
        }
        let r = match code {
            com::QUIT => return Ok(false),
            com::QUERY => self.query(cmd).await,
            com::PING => self.local_ok(cmd).await,
            com::INIT_DB => self.init_db(cmd).await,
            com::STMT_PREPARE => self.stmt_prepare(cmd).await,
            com::STMT_EXECUTE => self.stmt_execute(cmd).await,
            com::STMT_FETCH => self.stmt_fetch(cmd).await,
            com::STMT_RESET => self.stmt_reset(cmd).await,
            com::STMT_CLOSE => self.stmt_close(cmd).await,
            com::STMT_SEND_LONG_DATA => self.stmt_long_data(cmd).await,
            com::FIELD_LIST => self.on_primary(cmd, Expect::FieldList).await,
            com::STATISTICS => self.on_primary(cmd, Expect::Single).await,
            com::PROCESS_KILL => self.process_kill(cmd).await,
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
        r.map(|_| !std::mem::take(&mut self.closing_after))
    }

    async fn discard(&mut self, cmd: CmdHead) -> Result<(), SessionError> {
        relay::discard_command(&mut self.client, cmd)
            .await
            .map_err(SessionError::Client)
    }

    async fn local_ok(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        self.send_ok().await
    }

    /// An OK answered by concord, with the session's current status flags
    /// (transaction, autocommit, sql_mode bits) as the server would set.
    async fn send_ok(&mut self) -> Result<(), (SessionError, u8)> {
        if self.status_stale {
            self.refresh_status().await;
        }
        let mut seq = 1;
        let ok = concord_protocol::ok::OkPacket {
            status: lasting_status(self.status),
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

    /// A command for the primary (or the open transaction's backend).
    async fn on_primary(&mut self, cmd: CmdHead, expect: Expect) -> Result<(), (SessionError, u8)> {
        let w = match self.txn {
            Some(w) if self.conns.get(w).is_some() => w,
            _ => {
                if let Err(e) = self.ensure_primary(cmd.len).await {
                    self.discard(cmd).await.map_err(|e| (e, 1))?;
                    return Err((e, 1));
                }
                Which::Primary
            }
        };
        self.forward_to(w, cmd, expect, false, None, true)
            .await
            .map(|_| ())
    }

    async fn init_db(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let db = String::from_utf8_lossy(&cmd.visible(&self.client.rbuf)[1..]).into_owned();
        if let Err(e) = self.ensure_primary(cmd.len).await {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((e, 1));
        }
        let out = self
            .forward_to(Which::Primary, cmd, Expect::Single, false, None, true)
            .await?;
        if !out.failed {
            self.set_db(Which::Primary, Some(db));
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
        if let Err(e) = self.ensure_primary(cmd.len).await {
            self.discard(cmd).await.map_err(|e| (e, 1))?;
            return Err((e, 1));
        }
        let out = self
            .forward_to(Which::Primary, cmd, Expect::Single, false, None, true)
            .await?;
        if !out.failed {
            self.state.multi_statements = on;
            if let Some(b) = self.conns.primary.as_mut() {
                b.conn.state.multi_statements = on;
            }
        }
        Ok(())
    }

    /// Asks the connection that answered last for the session's status
    /// (a COM_PING), after an error left it unknown.
    async fn refresh_status(&mut self) {
        let w = self.txn.or(self.last).unwrap_or(Which::Primary);
        if let Some(b) = self.conns.get_mut(w) {
            if b.conn.command(&[com::PING]).await.is_ok() {
                self.row_count_moved =
                    Some(w) == self.last && !concord_config::testhooks::on("ping-keeps-row-count");
                self.status = b.conn.status;
                self.txn = (self.status & status::IN_TRANS != 0).then_some(w);
                self.status_stale = false;
                return;
            }
            self.drop_conn(w);
        }
    }

    /// Server defaults again: session state, prepared statements, pins.
    fn forget_session_state(&mut self) {
        self.state.reset();
        // The status a fresh session starts with, as at login: not the
        // last answer's (autocommit off, sql_mode bits).
        if !concord_config::testhooks::on("reset-keeps-status") {
            self.status = status::AUTOCOMMIT;
            self.status_stale = false;
        }
        self.state.multi_statements = true;
        self.stmts.clear();
        self.set_pins(0);
        self.pinned_names.clear();
        // `ryw` stays: the session's writes are still its writes (a reset
        // connection on the primary sees them too).
        self.after = None;
        self.txn = None;
        self.txn_lost = false;
        self.txn_timed_out = None;
        self.next_on_primary = false;
        self.lost = None;
        self.last = None;
        self.last_read = None;
        self.last_diag = None;
        self.row_count = -1;
        self.row_count_moved = false;
        self.found_rows = 0;
        self.calc_found_rows = false;
        self.found_rows_unread = false;
        self.insert_id = 0;
        self.insert_id_pending = None;
        self.oneshot_on = None;
        self.rand_seeded = false;
        self.forced_insert_id = None;
    }

    async fn reset_connection(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        while !self.conns.replicas.is_empty() {
            self.release(Which::Replica(0));
        }
        self.forget_session_state();
        if self.conns.primary.is_none() {
            return self.local_ok(cmd).await;
        }
        let out = self
            .forward_to(Which::Primary, cmd, Expect::Single, false, None, true)
            .await?;
        if !out.failed {
            let (sid, v) = (self.state.session_id, self.state.version);
            if let Some(b) = self.conns.primary.as_mut() {
                // Its statements are gone too, whoever cached them there.
                if concord_config::testhooks::on("client-reset-keeps-statements") {
                    b.conn.dirty = false;
                } else {
                    b.conn.was_reset();
                }
                b.conn.state.synced = Some((sid, v));
                // The reset returned the tracking settings to their
                // global values: set again before the next statement.
                b.conn.tracking = false;
            }
        }
        Ok(())
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
            .registered
            .change_user(&user.name, user.max_connections)
        {
            return Err((
                SessionError::fatal(
                    codes::USER_LIMIT_REACHED,
                    format!("User '{}' has exceeded its max_connections", user.name),
                ),
                seq,
            ));
        }
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
        self.forget_session_state();
        self.status = status::AUTOCOMMIT;
        self.txn_lost = false;
        self.txn_timed_out = None;
        if let Some(db) = req.database {
            self.state.db = Some(db);
            if let Err(e) = self.ensure_primary(0).await {
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
        let p = cmd.visible(&self.client.rbuf);
        let kind = if p[0] == com::QUERY {
            Some(crate::classify::classify(&p[1..]).kind)
        } else {
            None
        };
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        if let Some(limit) = self.txn_timed_out {
            return self.while_txn_timed_out(kind, limit).await;
        }
        let lost = |msg: &str| ErrPacket {
            code: codes::BACKEND_LOST.0,
            state: *b"08007",
            message: msg.into(),
        };
        match kind {
            Some(crate::classify::Kind::Rollback) => {
                self.txn_lost = false;
                let mut seq = 1;
                write_ok(&mut self.client.wbuf, &mut seq, self.caps, 0, "");
                self.client.flush().await.map_err(|e| (SessionError::Client(e), 1))
            }
            Some(crate::classify::Kind::Commit) => {
                self.txn_lost = false;
                Err((SessionError::Reply(lost("COMMIT failed: the transaction was lost with its backend connection and rolled back by the server; nothing was committed")), 1))
            }
            _ => Err((SessionError::Reply(lost("The transaction was lost: its backend connection failed and the server rolled it back. Issue ROLLBACK and retry the transaction")), 1)),
        }
    }
}

/// Test-only `client-range-error-codes`: the client-side codes concord
/// sent before (2013, 2003), which Connector/C rejects from a server.
fn as_sent(mut p: ErrPacket) -> ErrPacket {
    if concord_config::testhooks::on("client-range-error-codes") {
        if p.code == codes::BACKEND_LOST.0 {
            p.code = 2013;
        } else if p.code == codes::BACKEND_UNREACHABLE.0 {
            p.code = 2003;
        }
    }
    p
}

/// The status flags that describe the session (transaction, autocommit,
/// sql_mode bits), without those that described one statement's answer
/// (index use, state changed, cursor, more results): what a server puts
/// in an OK concord answers itself.
pub fn lasting_status(s: u16) -> u16 {
    s & (status::IN_TRANS
        | status::AUTOCOMMIT
        | status::NO_BACKSLASH_ESCAPES
        | status::IN_TRANS_READONLY
        | status::ANSI_QUOTES)
}

/// What a client whose session state was lost gets: its session is over,
/// as it would be had its server connection died.
pub(super) fn lost_state(why: &str) -> ErrPacket {
    ErrPacket {
        code: codes::BACKEND_LOST.0,
        state: *b"08S01",
        message: format!(
            "Lost connection: {why}; this session's server-side state (user variables, temporary tables, locks) is gone with it. Reconnect"
        ),
    }
}

impl Session {
    /// Records why the session keeps to its primary connection.
    fn pin(&mut self, why: Pin) {
        if self.pins & why.bit() == 0 {
            tracing::debug!(
                session = self.info.id,
                reason = why.as_str(),
                "session pinned to its primary connection"
            );
            crate::metrics::pinned(why);
            self.set_pins(self.pins | why.bit());
        }
    }

    /// A statement ended or named what pins the session: a pin lasts
    /// only while its cause exists.
    pub(super) fn change_pins(&mut self, c: crate::classify::PinChange) {
        use crate::classify::PinChange;
        // A temporary table's name is its database's: `t` created in `a`
        // is not the `t` a DROP names in `b`.
        let qualified = |n: String| match &self.state.db {
            Some(db) if !n.contains('.') => format!("{db}.{n}"),
            _ => n,
        };
        let c = match c {
            PinChange::Add(Pin::TempTable, n) => PinChange::Add(Pin::TempTable, qualified(n)),
            PinChange::RemoveAll(Pin::TempTable, ns) => {
                PinChange::RemoveAll(Pin::TempTable, ns.into_iter().map(qualified).collect())
            }
            c => c,
        };
        let gone = match c {
            PinChange::Clear(p) => {
                self.pinned_names.retain(|(q, _)| *q != p);
                Some(p)
            }
            PinChange::Add(p, name) => {
                if !self.pinned_names.iter().any(|(q, n)| *q == p && *n == name) {
                    self.pinned_names.push((p, name));
                }
                None
            }
            PinChange::Unnamed(p) => {
                if !self.pinned_names.iter().any(|(q, n)| *q == p && n == "*") {
                    self.pinned_names.push((p, "*".into()));
                }
                None
            }
            PinChange::RemoveAll(p, names) => {
                self.pinned_names
                    .retain(|(q, n)| !(*q == p && names.contains(n)));
                (!self.pinned_names.iter().any(|(q, _)| *q == p)).then_some(p)
            }
            PinChange::Remove(p, name) => {
                self.pinned_names.retain(|(q, n)| !(*q == p && *n == name));
                (!self.pinned_names.iter().any(|(q, _)| *q == p)).then_some(p)
            }
        };
        if let Some(p) = gone.filter(|p| self.pins & p.bit() != 0) {
            tracing::debug!(
                session = self.info.id,
                reason = p.as_str(),
                "pin released: its cause is gone"
            );
            self.set_pins(self.pins & !p.bit());
        }
    }

    fn set_pins(&mut self, pins: u16) {
        self.pins = pins;
        self.info.pins.store(pins, Ordering::Relaxed);
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
