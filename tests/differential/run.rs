//! Runs a generated session on one endpoint (concord, or the primary
//! directly) over the raw protocol and records every response packet,
//! normalized only where `known.rs` says the two may differ.

use super::gen::Step;
use super::known;
use concord_protocol::consts::{cap, com};
use concord_protocol::ok::OkPacket;
use concord_protocol::scan::{Expect, Scanner, Step as ScanStep};
use harness::raw::{RawClient, CLIENT_CAPS};
use harness::PASSWORD;
use std::collections::HashMap;
use std::time::Duration;

/// How the client negotiates: like PyMySQL (no session tracking, old EOF
/// packets), like MySQL Connector/J and mysql_async (both), or one of the
/// two alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Plain,
    Tracking,
    TrackOnly,
    EofOnly,
}

impl Flavor {
    fn caps(self) -> u32 {
        match self {
            Flavor::Plain => CLIENT_CAPS,
            Flavor::Tracking => CLIENT_CAPS | cap::SESSION_TRACK | cap::DEPRECATE_EOF,
            Flavor::TrackOnly => CLIENT_CAPS | cap::SESSION_TRACK,
            Flavor::EofOnly => CLIENT_CAPS | cap::DEPRECATE_EOF,
        }
    }
}

/// What one step produced, comparable between runs.
pub type Outcome = Vec<Vec<u8>>;

pub struct Runner {
    port: u16,
    flavor: Flavor,
    /// The session's database (its tables, procedures and lock names).
    db: String,
    c: RawClient,
    /// Own session id, from the greeting.
    pub id: u32,
    /// Slot -> server statement id.
    stmts: HashMap<usize, u32>,
    /// Values of nondeterministic queries seen in this run, numbered.
    nondet: HashMap<Vec<u8>, usize>,
    pub closed: bool,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(20);

impl Runner {
    pub async fn connect(port: u16, flavor: Flavor, db: &str) -> Runner {
        let c = RawClient::connect_db(port, "app", PASSWORD, flavor.caps(), Some(db)).await;
        let id = c.connection_id;
        Runner {
            port,
            flavor,
            db: db.to_string(),
            c,
            id,
            stmts: HashMap::new(),
            nondet: HashMap::new(),
            closed: false,
        }
    }

    fn deprecate_eof(&self) -> bool {
        self.c.caps & cap::DEPRECATE_EOF != 0
    }

    /// Runs one step; a step after the connection closed yields "closed".
    pub async fn step(&mut self, s: &Step) -> Outcome {
        if self.closed {
            return vec![b"<closed>".to_vec()];
        }
        match tokio::time::timeout(STEP_TIMEOUT, self.step_inner(s)).await {
            Ok(o) => o,
            Err(_) => vec![b"<timeout>".to_vec()],
        }
    }

    async fn step_inner(&mut self, s: &Step) -> Outcome {
        match s {
            Step::Query(q) => {
                let q = q
                    .replace("{CID}", &self.id.to_string())
                    .replace("'diff_lock'", &format!("'{}_lock'", self.db));
                let mut p = vec![com::QUERY];
                p.extend_from_slice(q.as_bytes());
                self.command(&p, Expect::ResultSets).await
            }
            Step::QueryNondet(q) => {
                let mut p = vec![com::QUERY];
                p.extend_from_slice(q.as_bytes());
                let out = self.command(&p, Expect::ResultSets).await;
                self.number_values(out)
            }
            Step::Prepare(slot, q) => {
                let mut p = vec![com::STMT_PREPARE];
                p.extend_from_slice(q.as_bytes());
                let mut out = self.command(&p, Expect::Prepare).await;
                if let Some(first) = out.first_mut() {
                    if first.first() == Some(&0x00) && first.len() >= 5 {
                        let id = u32::from_le_bytes([first[1], first[2], first[3], first[4]]);
                        self.stmts.insert(*slot, id);
                        // Statement ids are the server's (or concord's) own.
                        first[1..5].copy_from_slice(&[0; 4]);
                    }
                }
                out
            }
            Step::Execute {
                slot,
                params,
                cursor,
            } => {
                let Some(&id) = self.stmts.get(slot) else {
                    return vec![b"<no statement>".to_vec()];
                };
                let mut p = vec![com::STMT_EXECUTE];
                p.extend_from_slice(&id.to_le_bytes());
                p.push(u8::from(*cursor));
                p.extend_from_slice(&1u32.to_le_bytes());
                if !params.is_empty() {
                    p.extend(std::iter::repeat_n(0u8, params.len().div_ceil(8)));
                    p.push(1);
                    for _ in params {
                        p.extend_from_slice(&[0x08, 0x00]);
                    }
                    for v in params {
                        p.extend_from_slice(&v.to_le_bytes());
                    }
                }
                // With a cursor opened, no rows follow the column EOF.
                let expect = if *cursor {
                    Expect::Cursor
                } else {
                    Expect::ResultSets
                };
                self.command(&p, expect).await
            }
            Step::Fetch(slot, rows) => {
                let Some(&id) = self.stmts.get(slot) else {
                    return vec![b"<no statement>".to_vec()];
                };
                let mut p = vec![com::STMT_FETCH];
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(&rows.to_le_bytes());
                self.command(&p, Expect::Rows).await
            }
            Step::ResetStmt(slot) => {
                let Some(&id) = self.stmts.get(slot) else {
                    return vec![b"<no statement>".to_vec()];
                };
                let mut p = vec![com::STMT_RESET];
                p.extend_from_slice(&id.to_le_bytes());
                self.command(&p, Expect::Single).await
            }
            Step::Close(slot) => {
                if let Some(id) = self.stmts.remove(slot) {
                    let mut p = vec![com::STMT_CLOSE];
                    p.extend_from_slice(&id.to_le_bytes());
                    self.c.send(&p).await;
                }
                Vec::new()
            }
            Step::ResetConnection => {
                self.stmts.clear();
                self.command(&[com::RESET_CONNECTION], Expect::Single).await
            }
            Step::ChangeUser => {
                self.stmts.clear();
                let r = self.c.change_user("app", PASSWORD, Some(&self.db)).await;
                vec![self.normalize_ok(r)]
            }
            Step::Ping => self.command(&[com::PING], Expect::Single).await,
            Step::KillHelper => self.kill_helper().await,
        }
    }

    /// Sends a command and returns its normalized response packets.
    async fn command(&mut self, payload: &[u8], expect: Expect) -> Outcome {
        let mut seq = 0;
        if self.c.s.send(&mut seq, payload).await.is_err() {
            self.closed = true;
            return vec![b"<closed>".to_vec()];
        }
        let mut sc = Scanner::new(expect, self.deprecate_eof());
        let mut out = Vec::new();
        loop {
            let p = match self.c.s.read_packet().await {
                Ok(p) => p,
                Err(_) => {
                    self.closed = true;
                    out.push(b"<closed>".to_vec());
                    return out;
                }
            };
            let len = p.payload.len().min(concord_protocol::MAX_PAYLOAD - 1);
            let step = match sc.packet(&p.payload, len) {
                Ok(s) => s,
                Err(e) => {
                    out.push(format!("<protocol error: {e}>").into_bytes());
                    self.closed = true;
                    return out;
                }
            };
            let mut bytes = p.payload.to_vec();
            let old_eof = bytes.first() == Some(&0xfe) && bytes.len() < 9;
            if sc.last_was_ok || old_eof {
                bytes = self.normalize_ok(bytes);
            }
            if p.payload.first() == Some(&0xff) {
                if known::closes_session(&bytes) {
                    self.closed = true;
                }
                bytes = self.name_statements(bytes);
            }
            out.push(bytes);
            match step {
                ScanStep::More => {}
                ScanStep::Done => return out,
                ScanStep::LocalInfile => {
                    out.push(b"<local infile>".to_vec());
                    self.closed = true;
                    return out;
                }
            }
        }
    }

    /// Error messages name statements by id ("The statement (6) has no
    /// open cursor"): ids are numbered differently (known.rs), so a known
    /// id becomes its slot.
    fn name_statements(&self, p: Vec<u8>) -> Vec<u8> {
        // 0xff, code, '#', SQLSTATE: then the message.
        let (head, msg) = p.split_at(p.len().min(9));
        let mut text = String::from_utf8_lossy(msg).into_owned();
        for (slot, id) in &self.stmts {
            text = text.replace(&format!("({id})"), &format!("(slot {slot})"));
        }
        let mut out = head.to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// With session tracking, concord reports every variable it tracks
    /// (see `known.rs`): compare OK packets without their state block.
    fn normalize_ok(&self, p: Vec<u8>) -> Vec<u8> {
        if self.c.caps & cap::SESSION_TRACK == 0 || p.first() == Some(&0xff) {
            return p;
        }
        if p.first() == Some(&0xfe) && p.len() < 9 {
            // An old-style EOF: its state-changed flag, likewise.
            let mut p = p;
            if p.len() >= 5 {
                let st = u16::from_le_bytes([p[3], p[4]])
                    & !concord_protocol::consts::status::SESSION_STATE_CHANGED;
                p[3..5].copy_from_slice(&st.to_le_bytes());
            }
            return p;
        }
        match OkPacket::decode(&p, cap::SESSION_TRACK) {
            Ok(mut ok) => {
                ok.status &= !concord_protocol::consts::status::SESSION_STATE_CHANGED;
                ok.session_state.clear();
                let mut b = bytes::BytesMut::new();
                ok.encode(&mut b, cap::SESSION_TRACK);
                b.to_vec()
            }
            Err(_) => p,
        }
    }

    /// Replaces each row's bytes by the number of the first time this run
    /// saw them: equal values stay equal, whatever they are.
    fn number_values(&mut self, out: Outcome) -> Outcome {
        let n = self.nondet.len();
        out.into_iter()
            .enumerate()
            .map(|(i, p)| {
                let is_row = i > 0 && p.first() != Some(&0xfe) && p.first() != Some(&0xff);
                // Column definitions stay; rows (after them) are numbered.
                if is_row && !p.starts_with(b"\x03def") {
                    let k = *self.nondet.entry(p.clone()).or_insert(n);
                    format!("<value {k}>").into_bytes()
                } else {
                    p
                }
            })
            .collect()
    }

    /// KILL QUERY then KILL of a helper session of the same user.
    async fn kill_helper(&mut self) -> Outcome {
        let mut helper = Runner::connect(self.port, self.flavor, &self.db).await;
        let hid = helper.id;
        let mut out = Vec::new();
        let q = |s: &str| {
            let mut p = vec![com::QUERY];
            p.extend_from_slice(s.as_bytes());
            p
        };
        out.extend(
            self.command(&q(&format!("KILL QUERY {hid}")), Expect::ResultSets)
                .await,
        );
        out.extend(helper.command(&q("SELECT 1"), Expect::ResultSets).await);
        out.extend(
            self.command(&q(&format!("KILL {hid}")), Expect::ResultSets)
                .await,
        );
        // The helper is gone, however the server says so.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = helper.command(&q("SELECT 1"), Expect::ResultSets).await;
        out.push(known::gone(&after));
        out
    }
}
