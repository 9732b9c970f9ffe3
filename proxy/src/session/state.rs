//! The session state a client expects every statement to run under, and
//! replaying it on whichever backend connection runs the next statement.

use crate::backend::{BackendConn, Reply};
use crate::error::BackendError;
use concord_protocol::consts::com;
use concord_protocol::err::ErrPacket;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Cap on remembered session-level SET statements; more distinct ones pin
/// the session to its connections instead of growing without bound.
pub const MAX_SETS: usize = 256;

#[derive(Clone, Debug)]
pub struct SetEntry {
    /// The variable it assigns, when the statement assigns exactly one.
    pub key: Option<String>,
    pub sql: String,
    pub version: u64,
}

#[derive(Clone, Debug)]
pub struct SessionState {
    pub session_id: u64,
    pub db: Option<String>,
    pub collation: u8,
    pub multi_statements: bool,
    pub autocommit: bool,
    /// Session-level SETs in the order they ran, newest assignment only.
    pub sets: Vec<SetEntry>,
    pub version: u64,
    /// Too many distinct SETs: no longer replayable.
    pub overflow: bool,
}

impl SessionState {
    pub fn new(session_id: u64, db: Option<String>, collation: u8, multi_statements: bool) -> Self {
        SessionState {
            session_id,
            db,
            collation,
            multi_statements,
            autocommit: true,
            sets: Vec::new(),
            version: 0,
            overflow: false,
        }
    }

    /// Remembers a SET that succeeded, replacing an older assignment of
    /// the same variable.
    pub fn record_set(&mut self, key: Option<String>, sql: &[u8]) {
        self.version += 1;
        if self.overflow {
            // Pinned already: nothing more to remember (and nothing to grow).
            return;
        }
        let sql = String::from_utf8_lossy(sql)
            .trim()
            .trim_end_matches(';')
            .to_string();
        self.sets.retain(|e| match (&e.key, &key) {
            (Some(a), Some(b)) => a != b,
            _ => e.sql != sql,
        });
        self.sets.push(SetEntry {
            key,
            sql,
            version: self.version,
        });
        if self.sets.len() > MAX_SETS {
            self.overflow = true;
        }
    }

    /// After COM_RESET_CONNECTION / COM_CHANGE_USER: server defaults again.
    pub fn reset(&mut self) {
        self.sets.clear();
        self.version += 1;
        self.autocommit = true;
        self.overflow = false;
    }

    pub fn is_default(&self) -> bool {
        self.sets.is_empty()
    }
}

/// Brings `conn` to the session's state. Returns the backend's error if a
/// replayed statement failed (the connection is still usable).
pub async fn sync(
    conn: &mut BackendConn,
    want: &SessionState,
) -> Result<Result<(), ErrPacket>, BackendError> {
    if matches!(conn.state.synced, Some((sid, _)) if sid != want.session_id) {
        // Another session's state: back to server defaults first.
        if let Err(e) = conn.reset().await? {
            return Ok(Err(e));
        }
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
        // A session without a database on a connection with one: harmless
        // except that unqualified names resolve; nothing can unselect it.
        conn.state.db = want.db.clone();
    }
    if conn.state.multi_statements != want.multi_statements {
        let opt: u16 = if want.multi_statements { 0 } else { 1 };
        let [a, b] = opt.to_le_bytes();
        if let Reply::Err(e) = conn.command(&[com::SET_OPTION, a, b]).await? {
            return Ok(Err(e));
        }
        conn.state.multi_statements = want.multi_statements;
    }
    let since = match conn.state.synced {
        Some((_, v)) => v,
        None => 0,
    };
    for e in want.sets.iter().filter(|e| e.version > since) {
        if let Err(err) = conn.exec(&e.sql).await? {
            return Ok(Err(err));
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
    fn keeps_newest_assignment_only() {
        let mut s = SessionState::new(1, None, 45, true);
        s.record_set(Some("sql_mode".into()), b"SET sql_mode=''");
        s.record_set(Some("time_zone".into()), b"SET time_zone='+00:00'");
        s.record_set(Some("sql_mode".into()), b"SET sql_mode='ANSI';");
        assert_eq!(s.sets.len(), 2);
        assert_eq!(s.sets[1].sql, "SET sql_mode='ANSI'");
        s.record_set(None, b"SET a=1, b=2");
        s.record_set(None, b"SET a=1, b=2");
        assert_eq!(s.sets.len(), 3);
        s.reset();
        assert!(s.is_default());
    }
}
