//! The session state a client expects every statement to run under, as
//! the servers reported it, and replaying it on whichever backend
//! connection runs the next statement.
//!
//! Nothing here is guessed from SQL text: system variables and the schema
//! come from the session-track information in OK packets (name and new
//! value, whatever statement changed them), user variables are read back
//! from the connection that assigned them (value, type and collation) and
//! replayed as literals. A replayed state is never re-evaluated.

use crate::backend::{BackendConn, Reply};
use crate::error::BackendError;
use crate::metrics::StateHandover;
use concord_protocol::consts::com;
use concord_protocol::err::ErrPacket;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Distinct variables a session may carry before it is pinned to its
/// connections instead (no unbounded growth), and their literal bytes.
pub const MAX_VARS: usize = 1024;
pub const MAX_VAR_BYTES: usize = 1 << 20;

/// Sessions with more variables than this give connections back reset
/// (no snapshot), and replay their state where they go next.
pub const SNAPSHOT_MAX_VARS: usize = 64;

/// Session variables whose reported value cannot be replayed faithfully:
/// `SET timestamp = DEFAULT` reports the frozen value it leaves, so a
/// session that sets it keeps its connections.
pub const PINNING_VARS: &[&str] = &["timestamp"];

/// Replication variables a session sets for what it writes next (binlog
/// replays by mysqlbinlog, appliers): not replayed, and another session
/// must not write under them, so a session that sets one to anything but
/// its default keeps its connections.
pub const SESSION_REPLICATION_VARS: &[&str] = &["pseudo_thread_id", "gtid_seq_no", "gtid_next"];

/// Variables set for the next statement only: the connection they were
/// set on stays with the session until a write consumes them.
pub const ONE_STATEMENT_VARS: &[&str] = &["insert_id", "rand_seed1", "rand_seed2"];

/// Session variables the server reports but that must not be replayed:
/// one-shot values consumed by the next statement, read-only statement
/// information, and concord's own tracking settings.
const NOT_REPLAYED: &[&str] = &[
    "last_gtid",
    "gtid_seq_no",
    "insert_id",
    "last_insert_id",
    "identity",
    "rand_seed1",
    "rand_seed2",
    "warning_count",
    "error_count",
    "in_transaction",
    "external_user",
    "proxy_user",
    "pseudo_thread_id",
    "gtid_next",
    "session_track_system_variables",
    "session_track_schema",
    "session_track_state_change",
    "session_track_gtids",
    "session_track_transaction_info",
];

/// Setting one of these (without its partner in the same statement) makes
/// the server derive the partner: the stale partner is forgotten.
const IMPLIES: &[(&str, &str)] = &[
    ("character_set_connection", "collation_connection"),
    ("character_set_database", "collation_database"),
    ("character_set_server", "collation_server"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An SQL literal ready to assign.
    Literal(String),
    /// A user variable assigned on this backend connection (by id) and not
    /// read back yet: it lives there until something needs it elsewhere.
    On(u64),
}

#[derive(Clone, Debug)]
pub struct Var {
    /// The assignment target: `@@session.name` or ``@`name` ``.
    pub target: String,
    pub value: Value,
    /// The state version that last assigned it.
    pub version: u64,
}

/// The variables a pooled connection holds, as a session left them, in
/// the order they were assigned, and a fingerprint of them: two sessions
/// with equal fingerprints share a connection with nothing replayed.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub fp: u64,
    /// (key, assignment target, literal), oldest assignment first.
    pub vars: Vec<(String, String, String)>,
}

impl Snapshot {
    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, l)| l.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct SessionState {
    /// Whose state this is: the session's id, a new one after each reset
    /// (see [`SessionState::reset`]).
    pub session_id: u64,
    pub db: Option<String>,
    pub collation: u8,
    pub multi_statements: bool,
    pub autocommit: bool,
    /// By lower-cased name; user variables start with `@`.
    pub vars: BTreeMap<String, Var>,
    bytes: usize,
    pub version: u64,
    /// Too many variables: no longer replayable (the session is pinned).
    pub overflow: bool,
    /// [`SessionState::snapshot`] of `version`, kept until it changes.
    snap: Option<(u64, std::sync::Arc<Snapshot>)>,
}

/// A hasher keyed per process: a client cannot craft a collision of
/// fingerprints or parse contexts.
fn hasher() -> std::collections::hash_map::DefaultHasher {
    use std::hash::BuildHasher;
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEYS.get_or_init(Default::default).build_hasher()
}

impl SessionState {
    /// `_client_id` is the session's id on the wire; the state gets its
    /// own, unique for the process's life (wire ids wrap and are reused,
    /// and a pooled connection remembers whose state it holds).
    pub fn new(_client_id: u64, db: Option<String>, collation: u8, multi_statements: bool) -> Self {
        SessionState {
            session_id: next_state_id(),
            db,
            collation,
            multi_statements,
            autocommit: true,
            vars: BTreeMap::new(),
            bytes: 0,
            version: 0,
            overflow: false,
            snap: None,
        }
    }

    /// The variables as literals, for a connection going back to the pool
    /// (`None` while a user variable has not been read back).
    pub fn snapshot(&mut self) -> Option<std::sync::Arc<Snapshot>> {
        if let Some((v, s)) = &self.snap {
            if *v == self.version {
                return Some(s.clone());
            }
        }
        if self.vars.len() > SNAPSHOT_MAX_VARS {
            // Copying this many at every change would cost more than a
            // reset and a replay where the session goes next.
            return None;
        }
        use std::hash::{Hash, Hasher};
        let mut h = hasher();
        let mut vars = Vec::with_capacity(self.vars.len());
        for (k, v) in &self.vars {
            let Value::Literal(l) = &v.value else {
                return None;
            };
            (k, l).hash(&mut h);
            vars.push((v.version, k.clone(), v.target.clone(), l.clone()));
        }
        vars.sort_by_key(|v| v.0);
        let snap = std::sync::Arc::new(Snapshot {
            fp: h.finish(),
            vars: vars.into_iter().map(|(_, k, t, l)| (k, t, l)).collect(),
        });
        self.snap = Some((self.version, snap.clone()));
        Some(snap)
    }

    /// What the server parses a statement to prepare under: the database
    /// (unqualified table names bind to it at PREPARE), the collation and
    /// the session's system variables (`sql_mode`'s ANSI_QUOTES, the
    /// client character set, ...). Text prepared under one context is a
    /// different statement under another. User variables take no part:
    /// they are read when the statement runs.
    pub fn parse_ctx(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = hasher();
        (&self.db, self.collation).hash(&mut h);
        for (k, v) in &self.vars {
            if let (false, Value::Literal(l)) = (k.starts_with('@'), &v.value) {
                (k, l).hash(&mut h);
            }
        }
        h.finish()
    }

    /// The fingerprint of the current variables, if a snapshot of them
    /// was taken.
    pub fn cached_fp(&self) -> Option<u64> {
        self.snap
            .as_ref()
            .filter(|(v, _)| *v == self.version)
            .map(|(_, s)| s.fp)
    }

    /// One `SET` taking a connection that holds `held` (another session's
    /// variables) to this session's variables, when that needs no reset:
    /// system variables it lacks go back to their defaults, the ones that
    /// differ are assigned. `None`: a reset is needed (a user variable or
    /// a character set variable would have to be removed, which no
    /// assignment undoes exactly). `Some(None)`: nothing to do.
    pub fn diff_sql(&self, held: &Snapshot) -> Option<Option<String>> {
        let mut sql = String::new();
        let mut put = |target: &str, lit: &str| {
            sql.push_str(if sql.is_empty() { "SET " } else { ", " });
            let _ = write!(sql, "{target} = {lit}");
        };
        for (k, t, _) in &held.vars {
            if self.vars.contains_key(k) {
                continue;
            }
            if k.starts_with('@') || k.starts_with("character_set_") || k.starts_with("collation_")
            {
                return None;
            }
            put(t, "DEFAULT");
        }
        let mut changed: Vec<&Var> = Vec::new();
        for (k, v) in &self.vars {
            let Value::Literal(l) = &v.value else {
                return None;
            };
            if held.get(k) != Some(l.as_str()) {
                changed.push(v);
            }
        }
        changed.sort_by_key(|v| v.version);
        for v in changed {
            if let Value::Literal(l) = &v.value {
                put(&v.target, l);
            }
        }
        Some((!sql.is_empty()).then_some(sql))
    }

    /// Starts recording one statement's changes; returns its version.
    pub fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn put(&mut self, key: String, target: String, value: Value) {
        let size = key.len()
            + target.len()
            + match &value {
                Value::Literal(l) => l.len(),
                Value::On(_) => 8,
            };
        if let Some(old) = self.vars.get_mut(&key) {
            let old_size = key.len()
                + old.target.len()
                + match &old.value {
                    Value::Literal(l) => l.len(),
                    Value::On(_) => 8,
                };
            self.bytes = self.bytes - old_size + size;
            old.value = value;
            old.version = self.version;
            old.target = target;
        } else {
            if self.vars.len() >= MAX_VARS || self.bytes + size > MAX_VAR_BYTES {
                self.overflow = true;
                return;
            }
            self.bytes += size;
            self.vars.insert(
                key,
                Var {
                    target,
                    value,
                    version: self.version,
                },
            );
        }
        if self.bytes > MAX_VAR_BYTES {
            self.overflow = true;
        }
    }

    /// A system variable's new value from the session tracker (call
    /// [`SessionState::bump`] first). `batch`: every variable the same
    /// statement reported, for derived partners.
    pub fn record_sysvar(&mut self, name: &[u8], value: &[u8], batch: &[&[u8]]) {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if !is_name(&name) || NOT_REPLAYED.contains(&name.as_str()) {
            return;
        }
        for (set, derived) in IMPLIES {
            if name == *set
                && !batch
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(derived.as_bytes()))
            {
                if let Some(old) = self.vars.remove(*derived) {
                    self.bytes = self
                        .bytes
                        .saturating_sub(derived.len() + old.target.len() + literal_len(&old.value));
                }
            }
        }
        let literal = sysvar_literal(&name, value);
        self.put(
            name.clone(),
            format!("@@session.{name}"),
            Value::Literal(literal),
        );
    }

    /// `completion_type` is RELEASE (2): COMMIT and ROLLBACK close the
    /// connection.
    pub fn completion_releases(&self) -> bool {
        match self.vars.get("completion_type").map(|v| &v.value) {
            Some(Value::Literal(l)) => {
                let l = l.trim_matches('\'');
                l == "2" || l.eq_ignore_ascii_case("RELEASE")
            }
            _ => false,
        }
    }

    /// A user variable assigned on backend connection `conn` (call
    /// [`SessionState::bump`] first).
    pub fn record_user_on(&mut self, name: &str, conn: u64) {
        let key = format!("@{}", name.to_lowercase());
        let target = format!("@`{}`", name.replace('`', "``"));
        self.put(key, target, Value::On(conn));
    }

    /// The value read back for a user variable that lived on a connection.
    /// Keeps its version: the connection it came from has it already.
    pub fn set_user_literal(&mut self, key: &str, literal: String) {
        if let Some(v) = self.vars.get_mut(key) {
            self.bytes = self.bytes - literal_len(&v.value) + literal.len();
            v.value = Value::Literal(literal);
        }
        if self.bytes > MAX_VAR_BYTES {
            self.overflow = true;
        }
    }

    /// User variables living on a connection other than `except`, by key.
    pub fn pending_elsewhere(&self, except: u64) -> Vec<(u64, String)> {
        self.vars
            .iter()
            .filter_map(|(k, v)| match v.value {
                Value::On(c) if c != except => Some((c, k.clone())),
                _ => None,
            })
            .collect()
    }

    /// Any user variable living on connection `conn`.
    pub fn has_pending_on(&self, conn: u64) -> bool {
        self.vars.values().any(|v| v.value == Value::On(conn))
    }

    /// One `SET` bringing a connection synced to `since` up to date, in the
    /// order the changes happened (`None`: nothing to do). Variables living
    /// on `conn` itself are there already.
    pub fn replay_sql(&self, since: u64, conn: u64) -> Result<Option<String>, String> {
        let mut changed: Vec<&Var> = self.vars.values().filter(|v| v.version > since).collect();
        if changed.is_empty() {
            return Ok(None);
        }
        changed.sort_by_key(|v| v.version);
        let mut sql = String::from("SET ");
        let mut any = false;
        for v in changed {
            let lit = match &v.value {
                Value::Literal(l) => l,
                Value::On(c) if *c == conn => continue,
                Value::On(_) => {
                    return Err(format!(
                        "user variable {} was not read back before replay",
                        v.target
                    ))
                }
            };
            if any {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{} = {}", v.target, lit);
            any = true;
        }
        Ok(any.then_some(sql))
    }

    /// After COM_RESET_CONNECTION / COM_CHANGE_USER: server defaults again.
    /// The state gets a new identity, so connections that held the old
    /// one (given back in transaction mode) count as another session's.
    pub fn reset(&mut self) {
        self.session_id = next_state_id();
        self.snap = None;
        self.vars.clear();
        self.bytes = 0;
        self.version += 1;
        self.autocommit = true;
        self.overflow = false;
    }
}

/// A state identity never handed out before in this process.
fn next_state_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn literal_len(v: &Value) -> usize {
    match v {
        Value::Literal(l) => l.len(),
        Value::On(_) => 8,
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A system variable's reported value as an SQL literal: numbers bare
/// (numeric variables refuse strings), simple words quoted, anything else
/// as a hex string with an introducer (no quoting or escaping rules of the
/// connection's sql_mode can change it).
fn sysvar_literal(name: &str, value: &[u8]) -> String {
    if value.is_empty() && name.starts_with("character_set_") {
        // Reported as '' when set to NULL (character_set_results).
        return "NULL".into();
    }
    let is_number = {
        let v = value.strip_prefix(b"-").unwrap_or(value);
        !v.is_empty()
            && v.iter().all(|c| c.is_ascii_digit() || *c == b'.')
            && v[0].is_ascii_digit()
            && v.iter().filter(|c| **c == b'.').count() <= 1
    };
    if is_number {
        return String::from_utf8_lossy(value).into_owned();
    }
    let simple = value
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"_,.:+-/ ".contains(c));
    if simple {
        return format!("'{}'", String::from_utf8_lossy(value));
    }
    let mut s = String::with_capacity(12 + value.len() * 2);
    s.push_str("_utf8mb4 X'");
    for b in value {
        let _ = write!(s, "{b:02X}");
    }
    s.push('\'');
    s
}

/// MySQL column types a user variable can have, as their literal form.
mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const YEAR: u8 = 13;
    pub const VARCHAR: u8 = 15;
    pub const NEWDECIMAL: u8 = 246;
    pub const TINY_BLOB: u8 = 249;
    pub const STRING: u8 = 254;
}

/// The query that reads user variables back: per variable its value, its
/// bytes in hex, its character set and its collation.
pub fn capture_sql(targets: &[&str]) -> String {
    let mut sql = String::from("SELECT ");
    for (i, t) in targets.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "{t}, HEX({t}), CHARSET({t}), COLLATION({t})");
    }
    sql
}

/// A user variable's captured value as a literal that gives the same
/// type (signedness included), value and collation when assigned; a NULL
/// keeps its type too. `None`: a type concord cannot reproduce exactly.
pub fn user_literal(
    col_type: u8,
    col_flags: u16,
    value: Option<&[u8]>,
    hex: Option<&[u8]>,
    charset: Option<&[u8]>,
    collation: Option<&[u8]>,
) -> Option<String> {
    const UNSIGNED: u16 = 0x20;
    fn word(b: Option<&[u8]>) -> Option<&str> {
        b.and_then(|b| std::str::from_utf8(b).ok())
            .filter(|w| is_name(w))
    }
    let unsigned = col_flags & UNSIGNED != 0;
    let text = value.and_then(|v| std::str::from_utf8(v).ok());
    match col_type {
        ty::TINY | ty::SHORT | ty::LONG | ty::LONGLONG | ty::INT24 | ty::YEAR => {
            let cast = if unsigned { "UNSIGNED" } else { "SIGNED" };
            let Some(t) = text else {
                return Some(format!("CAST(NULL AS {cast})"));
            };
            let digits = t.strip_prefix('-').unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some(if unsigned {
                format!("CAST({t} AS UNSIGNED)")
            } else {
                t.to_string()
            })
        }
        ty::DECIMAL | ty::NEWDECIMAL => {
            let Some(t) = text else {
                return Some("CAST(NULL AS DECIMAL(65,30))".into());
            };
            t.bytes()
                .all(|c| c.is_ascii_digit() || c == b'.' || c == b'-')
                .then(|| t.to_string())
        }
        ty::FLOAT | ty::DOUBLE => {
            let Some(t) = text else {
                return Some("CAST(NULL AS DOUBLE)".into());
            };
            if !t
                .bytes()
                .all(|c| c.is_ascii_digit() || b".-+eE".contains(&c))
            {
                return None;
            }
            Some(if t.contains(['e', 'E']) {
                t.to_string()
            } else {
                format!("{t}e0")
            })
        }
        ty::VARCHAR | ty::TINY_BLOB..=ty::STRING => {
            let cs = word(charset)?;
            if value.is_none() {
                // Typed, even for the binary kind a bare NULL gives a
                // fresh variable: a bare NULL keeps the type the variable
                // had on the connection it is replayed on.
                return Some(if cs == "binary" {
                    "CAST(NULL AS BINARY)".into()
                } else {
                    format!(
                        "CAST(NULL AS CHAR CHARACTER SET {cs}) COLLATE {}",
                        word(collation)?
                    )
                });
            }
            let hex = std::str::from_utf8(hex?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            if cs == "binary" {
                return Some(format!("_binary X'{hex}'"));
            }
            Some(format!("_{cs} X'{hex}' COLLATE {}", word(collation)?))
        }
        ty::NULL => Some("CAST(NULL AS BINARY)".into()),
        _ => None,
    }
}

/// Brings `conn` to the session's state (everything but user variables
/// living on another connection, which the caller reads back first).
/// Returns the backend's error if a replayed statement failed (the
/// connection is still usable).
/// `handover`: the connection was just taken from the pool (counted).
pub async fn sync(
    conn: &mut BackendConn,
    want: &SessionState,
    handover: bool,
) -> Result<Result<(), ErrPacket>, BackendError> {
    tracing::debug!(conn = conn.id, synced = ?conn.state.synced, db = ?conn.state.db, want_db = ?want.db, version = want.version, "sync");
    // Variables a pooled connection holds from another session, to be
    // changed into this session's with one SET after the rest is in place.
    let mut diff = None;
    if matches!(conn.state.synced, Some((sid, _)) if sid != want.session_id) {
        let held = conn.state.held.take();
        match held.as_deref().and_then(|h| {
            if want.cached_fp() == Some(h.fp)
                || concord_config::testhooks::on("handover-without-state")
            {
                Some(None)
            } else {
                want.diff_sql(h)
            }
        }) {
            Some(d) => {
                crate::metrics::handover(if d.is_some() {
                    StateHandover::Adjusted
                } else {
                    StateHandover::Matched
                });
                diff = Some(d);
            }
            None => {
                crate::metrics::handover(StateHandover::Reset);
                // Another session's state: back to server defaults first.
                if let Err(e) = conn.reset().await? {
                    return Ok(Err(e));
                }
            }
        }
    } else if handover {
        crate::metrics::handover(if conn.state.synced.is_some() {
            StateHandover::Own
        } else {
            StateHandover::Fresh
        });
    }
    if !conn.tracking
        && !conn.tracking_refused
        && conn.caps & concord_protocol::consts::cap::SESSION_TRACK != 0
    {
        // A client statement changed the tracking settings.
        conn.track().await?;
    }
    if conn.state.collation != want.collation {
        match collation_names(conn, want.collation).await? {
            Ok((cs, coll)) => {
                if let Err(e) = conn
                    .exec(&format!("SET NAMES '{cs}' COLLATE '{coll}'"))
                    .await?
                {
                    return Ok(Err(e));
                }
            }
            Err(e) => return Ok(Err(e)),
        }
        conn.state.collation = want.collation;
    }
    if conn.state.db != want.db {
        if let Some(db) = &want.db {
            let mut p = Vec::with_capacity(db.len() + 1);
            p.push(com::INIT_DB);
            p.extend_from_slice(db.as_bytes());
            if let Reply::Err(e) = conn.command(&p).await? {
                return Ok(Err(e));
            }
        }
        // A session without a database on a connection with one keeps the
        // record of it (nothing can unselect it; the pool gives sessions
        // without a database only connections without one).
        if want.db.is_some() {
            conn.state.db = want.db.clone();
        }
    }
    if conn.state.multi_statements != want.multi_statements {
        let opt: u16 = if want.multi_statements { 0 } else { 1 };
        let [a, b] = opt.to_le_bytes();
        if let Reply::Err(e) = conn.command(&[com::SET_OPTION, a, b]).await? {
            return Ok(Err(e));
        }
        conn.state.multi_statements = want.multi_statements;
    }
    if let Some(d) = diff {
        if let Some(sql) = d {
            tracing::debug!(
                conn = conn.id,
                "changing another session's variables: {sql}"
            );
            if let Err(err) = conn.exec(&sql).await? {
                return Ok(Err(err));
            }
        }
        conn.state.synced = Some((want.session_id, want.version));
        return Ok(Ok(()));
    }
    let since = match conn.state.synced {
        Some((_, v)) => v,
        None => 0,
    };
    if since < want.version {
        match want.replay_sql(since, conn.id) {
            Ok(Some(sql)) => {
                tracing::debug!(conn = conn.id, since, "replaying session state: {sql}");
                if let Err(err) = conn.exec(&sql).await? {
                    return Ok(Err(err));
                }
            }
            Ok(None) => {}
            Err(why) => {
                return Ok(Err(ErrPacket::new(
                    concord_protocol::codes::UNKNOWN_ERROR,
                    format!("concord: {why}"),
                )))
            }
        }
    }
    conn.state.synced = Some((want.session_id, want.version));
    Ok(Ok(()))
}

/// Character set and collation names for a collation id, asked of the
/// backend once and cached for the process.
async fn collation_names(
    conn: &mut BackendConn,
    id: u8,
) -> Result<Result<(String, String), ErrPacket>, BackendError> {
    static CACHE: OnceLock<Mutex<HashMap<u8, (String, String)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(Ok(v.clone()));
    }
    let sql = format!(
        "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID = {id}"
    );
    match conn.exec(&sql).await? {
        Ok(Reply::Rows(rows)) => {
            let Some([Some(cs), Some(coll)]) = rows
                .first()
                .map(|r| [r.first().cloned().flatten(), r.get(1).cloned().flatten()])
            else {
                return Ok(Err(ErrPacket::new(
                    concord_protocol::codes::UNKNOWN_ERROR,
                    format!("concord: the backend does not know collation id {id}"),
                )));
            };
            let v = (cs, coll);
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, v.clone());
            Ok(Ok(v))
        }
        Ok(_) => Ok(Err(ErrPacket::new(
            concord_protocol::codes::UNKNOWN_ERROR,
            "concord: unexpected reply to a collation lookup",
        ))),
        Err(e) => Ok(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_variables_replay_newest_value_in_order() {
        let mut s = SessionState::new(1, None, 45, true);
        s.bump();
        s.record_sysvar(b"sql_mode", b"ANSI_QUOTES", &[b"sql_mode"]);
        s.bump();
        s.record_sysvar(b"max_statement_time", b"5.000000", &[]);
        s.record_sysvar(b"last_gtid", b"0-1-5", &[]);
        s.bump();
        s.record_sysvar(b"SQL_MODE", b"", &[]);
        s.record_sysvar(b"time_zone", b"+01:00", &[]);
        assert_eq!(
            s.replay_sql(0, 9).unwrap().unwrap(),
            "SET @@session.max_statement_time = 5.000000, @@session.sql_mode = '', @@session.time_zone = '+01:00'"
        );
        assert_eq!(
            s.replay_sql(2, 9).unwrap().unwrap(),
            "SET @@session.sql_mode = '', @@session.time_zone = '+01:00'"
        );
        assert_eq!(s.replay_sql(3, 9).unwrap(), None);
    }

    #[test]
    fn odd_values_become_hex_strings_and_null_charsets_null() {
        assert_eq!(
            sysvar_literal("init_connect", b"it's"),
            "_utf8mb4 X'69742773'"
        );
        assert_eq!(sysvar_literal("character_set_results", b""), "NULL");
        assert_eq!(sysvar_literal("sql_mode", b""), "''");
        assert_eq!(sysvar_literal("wait_timeout", b"100"), "100");
        assert_eq!(sysvar_literal("time_zone", b"-01:00"), "'-01:00'");
    }

    #[test]
    fn a_charset_change_forgets_the_derived_collation() {
        let mut s = SessionState::new(1, None, 45, true);
        s.bump();
        s.record_sysvar(b"collation_connection", b"latin1_bin", &[]);
        s.bump();
        s.record_sysvar(
            b"character_set_connection",
            b"utf8mb4",
            &[b"character_set_connection"],
        );
        assert!(!s.vars.contains_key("collation_connection"));
    }

    #[test]
    fn user_variables_live_on_their_connection_until_read_back() {
        let mut s = SessionState::new(1, None, 45, true);
        s.bump();
        s.record_user_on("Id", 7);
        assert_eq!(s.pending_elsewhere(7), vec![]);
        assert_eq!(s.pending_elsewhere(8), vec![(7, "@id".to_string())]);
        assert_eq!(s.replay_sql(0, 7).unwrap(), None, "already there");
        assert!(s.replay_sql(0, 8).is_err(), "must be read back first");
        s.set_user_literal("@id", "42".into());
        assert_eq!(s.replay_sql(0, 8).unwrap().unwrap(), "SET @`Id` = 42");
    }

    #[test]
    fn captured_values_keep_type_and_collation() {
        let lit = |t, f, v: Option<&str>, h: Option<&str>, cs: &str, co: &str| {
            user_literal(
                t,
                f,
                v.map(str::as_bytes),
                h.map(str::as_bytes),
                Some(cs.as_bytes()),
                Some(co.as_bytes()),
            )
        };
        assert_eq!(
            lit(8, 0x80, Some("-5"), Some("FFFF"), "binary", "binary").unwrap(),
            "-5"
        );
        assert_eq!(
            lit(8, 0xa0, Some("5"), Some("5"), "binary", "binary").unwrap(),
            "CAST(5 AS UNSIGNED)"
        );
        assert_eq!(
            lit(8, 0xa0, None, None, "binary", "binary").unwrap(),
            "CAST(NULL AS UNSIGNED)"
        );
        assert_eq!(
            lit(246, 0, Some("1.50"), None, "binary", "binary").unwrap(),
            "1.50"
        );
        assert_eq!(
            lit(5, 0, Some("0.3333333333333333"), None, "binary", "binary").unwrap(),
            "0.3333333333333333e0"
        );
        assert_eq!(
            lit(251, 0, Some("abc"), Some("616263"), "latin1", "latin1_bin").unwrap(),
            "_latin1 X'616263' COLLATE latin1_bin"
        );
        assert_eq!(
            lit(251, 0x80, Some("\u{0}"), Some("00FF"), "binary", "binary").unwrap(),
            "_binary X'00FF'"
        );
        assert_eq!(
            lit(251, 0x80, None, None, "binary", "binary").unwrap(),
            "CAST(NULL AS BINARY)"
        );
        assert_eq!(
            lit(251, 0, None, None, "utf8mb4", "utf8mb4_general_ci").unwrap(),
            "CAST(NULL AS CHAR CHARACTER SET utf8mb4) COLLATE utf8mb4_general_ci"
        );
        assert_eq!(
            lit(251, 0, Some("x"), Some("78"), "latin1", "x'; DROP").map(|_| ()),
            None
        );
        assert_eq!(
            lit(7, 0, Some("2020-01-01"), None, "binary", "binary"),
            None
        );
    }

    #[test]
    fn state_is_bounded() {
        let mut s = SessionState::new(1, None, 45, true);
        for i in 0..MAX_VARS + 10 {
            s.bump();
            s.record_user_on(&format!("v{i}"), 1);
        }
        assert!(s.overflow);
        assert_eq!(s.vars.len(), MAX_VARS);
    }
}
