//! One connection to a backend: login, its negotiated flavor, the session
//! state it currently carries, and small request/response helpers for the
//! commands concord issues itself (state replay, resets).

use super::login::{login, Credentials, LoginInfo};
use crate::error::BackendError;
use concord_protocol::consts::{cap, com};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::OkPacket;
use concord_protocol::rd::Rd;
use concord_protocol::scan::{Expect, Scanner, Step};
use concord_protocol::PacketStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

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
    pub created: Instant,
    pub idle_since: Instant,
    pub server_version: Vec<u8>,
    /// Collation sent at login; COM_RESET_CONNECTION returns to it.
    pub login_collation: u8,
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

impl BackendConn {
    pub async fn connect(
        addr: &str,
        creds: &Credentials<'_>,
        timeout: Duration,
    ) -> Result<BackendConn, BackendError> {
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
        Ok(BackendConn {
            io,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            thread_id: info.thread_id,
            caps: info.caps,
            state: ConnState {
                db: creds.database.map(str::to_string),
                collation: creds.collation,
                multi_statements: true,
                synced: None,
            },
            status: info.status,
            dirty: false,
            created: now,
            idle_since: now,
            server_version: info.server_version,
            login_collation: creds.collation,
        })
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
        self.io.send(&mut seq, payload).await?;
        let expect = match payload.first() {
            Some(&com::QUERY) => Expect::ResultSets,
            Some(&com::STMT_PREPARE) => Expect::Prepare,
            _ => Expect::Single,
        };
        let mut sc = Scanner::new(expect, self.deprecate_eof());
        let mut rows = Vec::new();
        let mut last_ok = None;
        let mut last_err = None;
        loop {
            let p = self.io.read_packet().await?;
            let in_rows = sc.in_rows();
            let step = sc.packet(
                &p.payload,
                p.payload.len().min(concord_protocol::MAX_PAYLOAD - 1),
            )?;
            if sc.last_was_ok {
                last_ok = Some(OkPacket::decode(&p.payload, self.caps)?);
            }
            if sc.error.is_some() && last_err.is_none() {
                last_err = Some(ErrPacket::decode(&p.payload)?);
            } else if in_rows && sc.in_rows() {
                rows.push(parse_text_row(&p.payload)?);
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

    /// COM_RESET_CONNECTION: server defaults again (the database stays).
    pub async fn reset(&mut self) -> Result<Result<(), ErrPacket>, BackendError> {
        match self.command(&[com::RESET_CONNECTION]).await? {
            Reply::Err(e) => Ok(Err(e)),
            _ => {
                self.dirty = false;
                self.state.synced = None;
                self.state.multi_statements = true;
                self.state.collation = self.login_collation;
                Ok(Ok(()))
            }
        }
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

fn parse_text_row(payload: &[u8]) -> Result<Vec<Option<String>>, BackendError> {
    let mut r = Rd::new(payload);
    let mut row = Vec::new();
    while !r.is_empty() {
        if r.peek() == Some(0xfb) {
            r.u8("null")?;
            row.push(None);
        } else {
            row.push(Some(
                String::from_utf8_lossy(r.lenenc_bytes("cell")?).into_owned(),
            ));
        }
    }
    Ok(row)
}
