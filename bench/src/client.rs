//! A lean MySQL client: login (native or caching_sha2 fast auth), text
//! queries, prepared statements. Responses are scanned in the read buffer
//! and dropped; nothing is allocated per query in the steady state.

use crate::BenchError;
use bytes::{Buf, BytesMut};
use concord_protocol::auth;
use concord_protocol::consts::{cap, com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::handshake::{sha2_more, AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use concord_protocol::packet::{header, HEADER, MAX_PAYLOAD};
use concord_protocol::scan::{Expect, Scanner, Step, WHOLE_LIMIT};
use concord_protocol::PacketStream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub struct Client {
    io: PacketStream<TcpStream>,
    caps: u32,
    out: BytesMut,
    /// The newest `SESSION_TRACK_GTIDS` entry an OK packet carried (a
    /// concord causal token), when the connection negotiated SESSION_TRACK.
    pub gtid: Option<String>,
}

/// What a command returned, minus the rows themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct Answer {
    pub rows: u64,
    pub prepared: Option<(u32, u16)>,
}

const CAPS: u32 = cap::LONG_PASSWORD
    | cap::LONG_FLAG
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::DEPRECATE_EOF
    | cap::CONNECT_WITH_DB;

fn scramble_for(plugin: &[u8], pw: &str, s: &[u8]) -> Vec<u8> {
    auth::scramble_for(plugin, pw.as_bytes(), s)
        .unwrap_or_else(|| auth::native_scramble(pw.as_bytes(), s))
}

impl Client {
    pub async fn connect(
        addr: &str,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<Client, BenchError> {
        Self::connect_caps(addr, user, password, db, 0).await
    }

    /// [`Client::connect`] asking for `extra` capabilities too
    /// (SESSION_TRACK: OK packets then carry session state).
    pub async fn connect_caps(
        addr: &str,
        user: &str,
        password: &str,
        db: Option<&str>,
        extra: u32,
    ) -> Result<Client, BenchError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut io = PacketStream::new(tcp);
        io.max_packet = 1 << 30;
        let g = io.read_packet().await?;
        if g.first() == Some(0xff) {
            return Err(server_error(&g.payload));
        }
        let hs = HandshakeV10::decode(&g.payload)?;
        let mut caps = (CAPS | extra) & hs.capabilities;
        if db.is_none() {
            caps &= !cap::CONNECT_WITH_DB;
        }
        let plugin = if hs.auth_plugin.is_empty() {
            b"mysql_native_password".to_vec()
        } else {
            hs.auth_plugin.clone()
        };
        let resp = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 30,
            collation: 45,
            user: user.as_bytes().to_vec(),
            auth_response: scramble_for(&plugin, password, &hs.scramble),
            database: db.map(|d| d.as_bytes().to_vec()),
            auth_plugin: Some(plugin.clone()),
            attrs: Vec::new(),
        };
        let mut b = BytesMut::new();
        resp.encode(&mut b);
        let mut seq = g.next_seq();
        io.send(&mut seq, &b).await?;
        loop {
            let p = io.read_packet().await?;
            let mut s = p.next_seq();
            match p.first() {
                Some(0x00) => break,
                Some(0xff) => return Err(server_error(&p.payload)),
                Some(0xfe) => {
                    let sw = AuthSwitchRequest::decode(&p.payload)?;
                    io.send(&mut s, &scramble_for(&sw.plugin, password, &sw.data))
                        .await?;
                }
                Some(0x01) if p.payload.get(1) == Some(&sha2_more::FAST_AUTH_OK) => {}
                _ => {
                    return Err(BenchError::Setup(
                        "unsupported authentication exchange".into(),
                    ))
                }
            }
        }
        Ok(Client {
            io,
            caps,
            out: BytesMut::with_capacity(256),
            gtid: None,
        })
    }

    /// Sends one command (sequence 0) built by `body`.
    async fn send(&mut self, body: impl FnOnce(&mut BytesMut)) -> Result<(), BenchError> {
        self.out.clear();
        let mut seq = 0;
        concord_protocol::packet::build(&mut self.out, &mut seq, body);
        self.io.io.write_all(&self.out).await?;
        Ok(())
    }

    pub async fn query(&mut self, sql: &str) -> Result<Answer, BenchError> {
        self.send(|b| {
            b.extend_from_slice(&[com::QUERY]);
            b.extend_from_slice(sql.as_bytes());
        })
        .await?;
        self.read(Expect::ResultSets).await
    }

    pub async fn ping(&mut self) -> Result<(), BenchError> {
        self.send(|b| b.extend_from_slice(&[com::PING])).await?;
        self.read(Expect::Single).await.map(|_| ())
    }

    /// Prepares a statement: (id, parameter count).
    pub async fn prepare(&mut self, sql: &str) -> Result<(u32, u16), BenchError> {
        self.send(|b| {
            b.extend_from_slice(&[com::STMT_PREPARE]);
            b.extend_from_slice(sql.as_bytes());
        })
        .await?;
        let a = self.read(Expect::Prepare).await?;
        a.prepared
            .ok_or_else(|| BenchError::Setup(format!("no statement id for {sql}")))
    }

    /// Executes a prepared statement with integer parameters.
    pub async fn execute(&mut self, stmt: u32, params: &[i64]) -> Result<Answer, BenchError> {
        self.send(|b| {
            b.extend_from_slice(&[com::STMT_EXECUTE]);
            b.extend_from_slice(&stmt.to_le_bytes());
            b.extend_from_slice(&[0]);
            b.extend_from_slice(&1u32.to_le_bytes());
            if !params.is_empty() {
                b.extend(std::iter::repeat_n(0u8, params.len().div_ceil(8)));
                b.extend_from_slice(&[1]);
                for _ in params {
                    b.extend_from_slice(&[0x08, 0]); // LONGLONG
                }
                for p in params {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
        })
        .await?;
        self.read(Expect::ResultSets).await
    }

    /// Reads a whole response, counting rows, without keeping it.
    async fn read(&mut self, expect: Expect) -> Result<Answer, BenchError> {
        let mut sc = Scanner::new(expect, self.caps & cap::DEPRECATE_EOF != 0);
        let mut answer = Answer::default();
        let mut skip = 0usize;
        let mut err: Option<BenchError> = None;
        loop {
            let mut pos = 0;
            let mut done = false;
            {
                let buf = &self.io.rbuf[..];
                while pos < buf.len() && !done {
                    if skip > 0 {
                        let n = skip.min(buf.len() - pos);
                        pos += n;
                        skip -= n;
                        continue;
                    }
                    let Some((len, _)) = header(&buf[pos..]) else {
                        break;
                    };
                    let avail = buf.len() - pos - HEADER;
                    let in_rows = sc.in_rows();
                    let step = if len <= WHOLE_LIMIT {
                        if avail < len {
                            break;
                        }
                        let body = &buf[pos + HEADER..pos + HEADER + len];
                        let step = sc.packet(body, len)?;
                        if sc.error.is_some() && err.is_none() {
                            err = Some(server_error(body));
                        }
                        if self.caps & cap::SESSION_TRACK != 0
                            && sc.last_was_ok
                            && sc.status & status::SESSION_STATE_CHANGED != 0
                        {
                            if let Some(g) = tracked_gtid(body) {
                                self.gtid = Some(g);
                            }
                        }
                        pos += HEADER + len;
                        step
                    } else {
                        if avail == 0 {
                            break;
                        }
                        let n = avail.min(len);
                        let step =
                            sc.packet(&buf[pos + HEADER..pos + HEADER + n], len.min(MAX_PAYLOAD))?;
                        pos += HEADER + n;
                        skip = len - n;
                        step
                    };
                    if in_rows && sc.in_rows() {
                        answer.rows += 1;
                    }
                    match step {
                        Step::More => {}
                        Step::Done => done = true,
                        Step::LocalInfile => {
                            return Err(BenchError::Setup("unexpected LOCAL INFILE request".into()))
                        }
                    }
                }
            }
            self.io.rbuf.advance(pos);
            if done && skip == 0 {
                if let Some(p) = sc.prepare {
                    answer.prepared = Some((p.statement_id, p.params));
                }
                return match err {
                    Some(e) => Err(e),
                    None => Ok(answer),
                };
            }
            self.io.fill().await?;
        }
    }
}

/// The `SESSION_TRACK_GTIDS` entry of an OK packet, if any.
fn tracked_gtid(payload: &[u8]) -> Option<String> {
    let ok = concord_protocol::ok::OkPacket::decode(payload, cap::SESSION_TRACK).ok()?;
    ok.state_changes().ok()?.into_iter().find_map(|c| match c {
        concord_protocol::ok::StateChange::Gtids(g) => String::from_utf8(g).ok(),
        _ => None,
    })
}

pub fn server_error(payload: &[u8]) -> BenchError {
    match ErrPacket::decode(payload) {
        Ok(e) => BenchError::Server {
            code: e.code,
            state: e.sqlstate().to_string(),
            message: e.message,
        },
        Err(e) => BenchError::Protocol(e),
    }
}
