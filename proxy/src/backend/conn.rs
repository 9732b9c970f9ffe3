//! One connection to a backend: login, its negotiated flavor, the session
//! state it currently carries, and small request/response helpers for the
//! commands concord issues itself (state replay, resets).

use super::login::{login, Credentials, LoginInfo};
use crate::error::BackendError;
use concord_health::Flavor;
use concord_protocol::column::ColumnInfo;
use concord_protocol::consts::{cap, com};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::OkPacket;
use concord_protocol::rd::Rd;
use concord_protocol::scan::{Expect, Scanner, Step};
use concord_protocol::PacketStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Asks the server to report every session-state change in OK packets:
/// system variables by name and value, the schema, a flag for anything
/// else (user variables, temporary tables, ...), and on MySQL the GTID of
/// the session's own commits. concord learns the session's state from
/// these, whatever statement changed it. On MariaDB the `last_gtid`
/// variable arrives the same way.
fn tracking_sql(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::MariaDb => "SET SESSION session_track_system_variables='*', session_track_schema=1, session_track_state_change=1",
        Flavor::MySql => "SET SESSION session_track_system_variables='*', session_track_schema=1, session_track_state_change=1, session_track_gtids='OWN_GTID'",
    }
}

/// Session state a backend connection carries; compared with the session's
/// wanted state before each use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub db: Option<String>,
    pub collation: u8,
    pub multi_statements: bool,
    /// (session id, version of the session's SET log) this connection has
    /// replayed, or `None` for a connection with server defaults.
    pub synced: Option<(u64, u64)>,
    /// Pooled in transaction mode: the variables the connection holds
    /// (left by the session that gave it back), so the next session
    /// applies only the difference (see `session::state::sync`).
    pub held: Option<std::sync::Arc<crate::session::state::Snapshot>>,
}

pub struct BackendConn {
    pub io: PacketStream<TcpStream>,
    /// Connection id (unique in this process), for logs.
    pub id: u64,
    /// The backend's own thread id (for KILL).
    pub thread_id: u32,
    pub caps: u32,
    pub state: ConnState,
    /// Server status flags after the last command.
    pub status: u16,
    /// Something may have changed session state the tracker does not know
    /// about: reset before handing this connection to anyone else.
    pub dirty: bool,
    /// Out of step with the server (it sent bytes after a response):
    /// closed after the current command, never reused.
    pub poisoned: bool,
    /// Variables a `SET STATEMENT ... FOR` set for one statement: MariaDB
    /// reports their reverting (with a state-change flag) along with the
    /// next statement that reports anything on this connection.
    pub reverting: Vec<Vec<u8>>,
    /// A command is on the wire and its answer not wholly read: a QUIT
    /// now could complete a half-sent packet, so dropping sends none.
    pub mid_command: bool,
    pub created: Instant,
    pub idle_since: Instant,
    pub server_version: Vec<u8>,
    /// Collation sent at login; COM_RESET_CONNECTION returns to it.
    pub login_collation: u8,
    pub flavor: Flavor,
    /// The server reports session-state changes (see [`tracking_sql`]);
    /// false for servers without CLIENT_SESSION_TRACK, or after a client
    /// statement changed the tracking settings (set again before reuse).
    pub tracking: bool,
    /// The server refused the tracking settings: not asked again on
    /// every statement (state changes on it pin sessions instead).
    pub tracking_refused: bool,
    /// Counts this connection in its pool's `open` until dropped, however
    /// the connection ends (a panicking session included).
    pub slot: Option<super::pool::OpenSlot>,
    /// The diagnostics area may hold warnings or an error: cleared before
    /// another session gets the connection.
    pub diag: bool,
    /// Session whose LAST_INSERT_ID() this connection holds (0: none).
    pub insert_id_of: u64,
    /// LAST_INSERT_ID() there, when known (fresh or reset: 0; read back
    /// or set by concord), whichever session it came from.
    pub insert_id_val: Option<u64>,
    /// Statements prepared on it, least recently used first: shared by
    /// every session that holds the connection (transaction mode: a
    /// session taking it finds the statements it needs there), bounded by
    /// `pool.max_prepared_per_connection`.
    pub prepared: Vec<Prepared>,
}

/// A statement prepared on a backend connection. The server binds table
/// names to the database, and reads quotes and literals by the `sql_mode`
/// and character set, current when it prepares: the same text is the same
/// statement only under the same parse context (see
/// `SessionState::parse_ctx`).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub sql: std::sync::Arc<[u8]>,
    pub ctx: u64,
    /// The server's statement id.
    pub id: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A reply to a command concord issued itself.
#[derive(Debug)]
pub enum Reply {
    Ok(OkPacket),
    Err(ErrPacket),
    Rows(Vec<Vec<Option<String>>>),
    /// COM_STMT_PREPARE succeeded.
    Prepared(concord_protocol::scan::PrepareOk),
}

/// A text result set with its column definitions.
#[derive(Debug, Default)]
pub struct Typed {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl BackendConn {
    pub async fn connect(
        addr: &str,
        creds: &Credentials<'_>,
        timeout: Duration,
    ) -> Result<BackendConn, BackendError> {
        // Counted from before the connect: the server may have started
        // the session (and read its globals) before the login ends, so a
        // SET GLOBAL meanwhile must retire it (see `BackendPool::retire`).
        let started = Instant::now();
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| BackendError::Connect {
                    addr: addr.to_string(),
                    source: e,
                })?;
            crate::net::tune(&tcp);
            let mut io = PacketStream::new(tcp);
            io.max_packet = 1 << 30;
            let info: LoginInfo = login(&mut io, creds).await.map_err(|e| match e {
                BackendError::Protocol(pe) => BackendError::Handshake(pe),
                other => other,
            })?;
            Ok::<_, BackendError>((io, info))
        };
        let (io, info) = tokio::time::timeout(timeout, fut).await.map_err(|_| {
            BackendError::ConnectTimeout {
                addr: addr.to_string(),
            }
        })??;
        let now = Instant::now();
        let mut conn = BackendConn {
            io,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            thread_id: info.thread_id,
            caps: info.caps,
            state: ConnState {
                db: creds.database.map(str::to_string),
                collation: creds.collation,
                multi_statements: true,
                synced: None,
                held: None,
            },
            status: info.status,
            dirty: false,
            poisoned: false,
            reverting: Vec::new(),
            mid_command: false,
            created: started,
            idle_since: now,
            flavor: Flavor::of_version(&info.server_version),
            server_version: info.server_version,
            login_collation: creds.collation,
            tracking: false,
            tracking_refused: false,
            slot: None,
            diag: false,
            insert_id_of: 0,
            insert_id_val: Some(0),
            prepared: Vec::new(),
        };
        tokio::time::timeout(timeout, conn.track())
            .await
            .map_err(|_| BackendError::ConnectTimeout {
                addr: addr.to_string(),
            })??;
        Ok(conn)
    }

    /// Turns session tracking on (see [`tracking_sql`]). A server that
    /// cannot track is still usable: state changes on it pin the session
    /// instead of being replayed elsewhere.
    pub async fn track(&mut self) -> Result<(), BackendError> {
        if self.caps & cap::SESSION_TRACK == 0 {
            self.tracking = false;
            return Ok(());
        }
        let sql = tracking_sql(self.flavor);
        self.tracking = match self.exec(sql).await? {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    "backend refused session tracking ({e}); state changes on it pin sessions"
                );
                self.tracking_refused = true;
                false
            }
        };
        Ok(())
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps & cap::DEPRECATE_EOF != 0
    }

    /// Best-effort check that an idle connection was not closed by the
    /// server while pooled (wait_timeout, restart): one non-blocking read.
    pub fn looks_alive(&self) -> bool {
        let mut b = [0u8; 1];
        match self.io.io.try_read(&mut b) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Sends one command (sequence 0) and reads its whole reply. Result sets
    /// are collected as text rows; meant for small internal queries only.
    pub async fn command(&mut self, payload: &[u8]) -> Result<Reply, BackendError> {
        let mut seq = 0;
        self.mid_command = true;
        self.io.send(&mut seq, payload).await?;
        let r = self
            .read_reply(payload.first().copied(), &mut Typed::default())
            .await?;
        self.mid_command = false;
        Ok(r)
    }

    /// Runs a query and returns its result set with column definitions
    /// (`Err`: the server's error).
    pub async fn query_typed(
        &mut self,
        sql: &str,
    ) -> Result<Result<Typed, ErrPacket>, BackendError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(com::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let mut seq = 0;
        self.mid_command = true;
        self.io.send(&mut seq, &payload).await?;
        let mut t = Typed::default();
        let r = self.read_reply(Some(com::QUERY), &mut t).await?;
        self.mid_command = false;
        match r {
            Reply::Err(e) => Ok(Err(e)),
            _ => Ok(Ok(t)),
        }
    }

    /// Reads the reply to one command; text rows and column definitions
    /// go to `typed`, and `Reply::Rows` carries the rows as strings.
    async fn read_reply(
        &mut self,
        command: Option<u8>,
        typed: &mut Typed,
    ) -> Result<Reply, BackendError> {
        let expect = match command {
            Some(com::QUERY) => Expect::ResultSets,
            Some(com::STMT_PREPARE) => Expect::Prepare,
            _ => Expect::Single,
        };
        let mut sc = Scanner::new(expect, self.deprecate_eof());
        let mut rows = Vec::new();
        let mut last_ok = None;
        let mut last_err = None;
        loop {
            let p = self.io.read_packet().await?;
            let in_rows = sc.in_rows();
            let in_columns = sc.in_columns();
            let step = sc.packet(
                &p.payload,
                p.payload.len().min(concord_protocol::MAX_PAYLOAD - 1),
            )?;
            if sc.last_was_ok {
                let ok = OkPacket::decode(&p.payload, self.caps)?;
                if ok.warnings > 0 {
                    // Concord's own statement left warnings there.
                    self.diag = true;
                }
                last_ok = Some(ok);
            }
            if sc.error.is_some() && last_err.is_none() {
                self.diag = true;
                last_err = Some(ErrPacket::decode(&p.payload)?);
            } else if in_rows && sc.in_rows() {
                let row = parse_text_row(&p.payload)?;
                rows.push(
                    row.iter()
                        .map(|c| c.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                );
                typed.rows.push(row);
            } else if in_columns && sc.result_sets == 1 {
                typed.columns.push(ColumnInfo::decode(&p.payload)?);
            }
            match step {
                Step::More => {}
                Step::Done => break,
                Step::LocalInfile => {
                    // Never requested by concord's own statements: refuse.
                    let mut s = p.next_seq();
                    self.io.send(&mut s, &[]).await?;
                    sc.after_local_infile();
                }
            }
        }
        self.status = sc.status;
        if let Some(e) = last_err {
            return Ok(Reply::Err(e));
        }
        if let Some(p) = sc.prepare {
            return Ok(Reply::Prepared(p));
        }
        if sc.result_sets > 0 {
            return Ok(Reply::Rows(rows));
        }
        Ok(Reply::Ok(last_ok.unwrap_or_default()))
    }

    /// COM_RESET_CONNECTION: server defaults again (the database stays),
    /// and session tracking turned back on in the same round trip (the
    /// reset returns the tracking variables to their global values).
    pub async fn reset(&mut self) -> Result<Result<(), ErrPacket>, BackendError> {
        let mut seq = 0;
        self.mid_command = true;
        self.reverting.clear();
        self.io.write_packet(&mut seq, &[com::RESET_CONNECTION]);
        let track = self.caps & cap::SESSION_TRACK != 0;
        if track {
            let sql = tracking_sql(self.flavor);
            let mut p = Vec::with_capacity(sql.len() + 1);
            p.push(com::QUERY);
            p.extend_from_slice(sql.as_bytes());
            let mut seq = 0;
            self.io.write_packet(&mut seq, &p);
        }
        self.io.flush().await?;
        let reset = self
            .read_reply(Some(com::RESET_CONNECTION), &mut Typed::default())
            .await?;
        self.tracking = if track {
            matches!(
                self.read_reply(Some(com::QUERY), &mut Typed::default())
                    .await?,
                Reply::Ok(_)
            )
        } else {
            false
        };
        self.mid_command = false;
        match reset {
            Reply::Err(e) => Ok(Err(e)),
            _ => {
                self.was_reset();
                Ok(Ok(()))
            }
        }
    }

    /// What a COM_RESET_CONNECTION that succeeded left: server defaults,
    /// no statements, no session's state (the database stays).
    pub fn was_reset(&mut self) {
        self.reverting.clear();
        self.dirty = false;
        self.diag = false;
        self.insert_id_of = 0;
        self.insert_id_val = Some(0);
        self.prepared.clear();
        self.state.synced = None;
        self.state.held = None;
        self.state.multi_statements = true;
        self.state.collation = self.login_collation;
    }

    /// Closes the statements in `prepared` (COM_STMT_CLOSE has no
    /// answer) and marks the connection as no session's: the session that
    /// prepared them finds them gone and prepares again.
    pub async fn close_statements(&mut self) -> Result<(), BackendError> {
        let ids: Vec<u32> = std::mem::take(&mut self.prepared)
            .into_iter()
            .map(|p| p.id)
            .collect();
        self.state.synced = self.state.synced.map(|(_, v)| (0, v));
        self.close_statement_ids(&ids).await
    }

    /// The statement prepared here for `sql` under parse context `ctx`,
    /// if any (marked used), other than those `taken` (the asking
    /// session's other statements: each keeps its own parameter types,
    /// cursor and long data, so two never share a server statement).
    pub fn cached_statement(
        &mut self,
        sql: &[u8],
        ctx: u64,
        taken: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let by_text = concord_config::testhooks::on("share-statements-by-text");
        let i = self
            .prepared
            .iter()
            .rposition(|p| &p.sql[..] == sql && (p.ctx == ctx || by_text) && !taken(p.id))?;
        let e = self.prepared.remove(i);
        let bid = e.id;
        self.prepared.push(e);
        Some(bid)
    }

    /// COM_STMT_CLOSE for each of `ids`, in one write.
    pub async fn close_statement_ids(&mut self, ids: &[u32]) -> Result<(), BackendError> {
        if ids.is_empty() {
            return Ok(());
        }
        for bid in ids {
            let mut p = [com::STMT_CLOSE, 0, 0, 0, 0];
            p[1..5].copy_from_slice(&bid.to_le_bytes());
            let mut seq = 0;
            self.io.write_packet(&mut seq, &p);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Says goodbye (COM_QUIT) so the server does not log an aborted
    /// connection; the connection is closed when dropped.
    pub async fn quit(mut self) {
        let mut seq = 0;
        if !self.mid_command {
            let _ = self.io.send(&mut seq, &[com::QUIT]).await;
        }
        // Sent (or not to be sent): not again on drop.
        self.mid_command = true;
    }

    /// Runs a statement concord needs to succeed; an ERR becomes `Err`.
    pub async fn exec(&mut self, sql: &str) -> Result<Result<Reply, ErrPacket>, BackendError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(com::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        Ok(match self.command(&payload).await? {
            Reply::Err(e) => Err(e),
            r => Ok(r),
        })
    }
}

impl Drop for BackendConn {
    /// Says goodbye without waiting (one small non-blocking write), so
    /// the server does not log every pooled connection concord closes as
    /// an aborted connection.
    fn drop(&mut self) {
        if !self.mid_command {
            let _ = self.io.io.try_write(&[1, 0, 0, 0, com::QUIT]);
        }
    }
}

fn parse_text_row(payload: &[u8]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
    let mut r = Rd::new(payload);
    let mut row = Vec::new();
    while !r.is_empty() {
        if r.peek() == Some(0xfb) {
            r.u8("null")?;
            row.push(None);
        } else {
            row.push(Some(r.lenenc_bytes("cell")?.to_vec()));
        }
    }
    Ok(row)
}
