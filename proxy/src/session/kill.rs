//! KILL through concord. The id a client sees (in its handshake, from
//! `CONNECTION_ID()`) is its session id everywhere, so `KILL [QUERY] n`
//! means session `n`: concord kills what that session runs on its
//! backends (a side connection with the session's own account runs
//! `KILL QUERY <thread>`) and, for KILL CONNECTION, ends the session. A
//! session on another node is reached through that node. A raw backend
//! thread id is never killed on a client's behalf; an unknown id, or a
//! session of another user (without `connection_admin`), gets MySQL's
//! 1094 "Unknown thread id".

use super::Session;
use crate::backend::login::Credentials;
use crate::backend::BackendConn;
use crate::classify::KillTarget;
use crate::error::SessionError;
use crate::shared::{node_of, HeldConn, Shared};
use concord_protocol::codes;
use concord_protocol::err::ErrPacket;
use std::sync::Arc;
use std::time::Duration;

/// How long a KILL waits for another node to carry it out.
const REMOTE_KILL_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// `KILL [QUERY | CONNECTION] target` sent by this session.
    pub(super) async fn kill_statement(
        &mut self,
        query_only: bool,
        target: KillTarget,
    ) -> Result<(), (SessionError, u8)> {
        let id = match target {
            KillTarget::Unsupported(msg) => {
                return Err((SessionError::reply(codes::NOT_SUPPORTED_YET, msg), 1))
            }
            KillTarget::Myself => self.info.id,
            KillTarget::Id(id) => id,
            KillTarget::Expr(e) => self.kill_id_of(&e).await.map_err(|e| (e, 1))?,
        };
        if id == self.info.id {
            // What a server answers a session that kills itself: the KILL
            // statement is the query interrupted, or the connection ends.
            return Err((
                if query_only {
                    SessionError::reply(codes::QUERY_INTERRUPTED, "Query execution was interrupted")
                } else {
                    SessionError::fatal(codes::CONNECTION_KILLED, "Connection was killed")
                },
                1,
            ));
        }
        let killer = Killer {
            user: self.user.name.clone(),
            admin: self.user.connection_admin,
        };
        match kill(&self.shared, id, query_only, &killer).await {
            Ok(()) => {
                crate::metrics::kill("ok");
                self.send_ok().await
            }
            Err(e) => {
                crate::metrics::kill(if e.code == codes::NO_SUCH_THREAD.0 {
                    "unknown"
                } else {
                    "failed"
                });
                Err((SessionError::Reply(e), 1))
            }
        }
    }

    /// The id `KILL <expression>` names (`KILL @id`, `KILL (SELECT ...)`):
    /// the expression evaluated on the session's primary connection, with
    /// its state, as an integer the way the server takes it (NULL is 0, a
    /// negative number wraps). Test-only `kill-expression-refused`: refused
    /// with 1235, as before.
    async fn kill_id_of(&mut self, expr: &str) -> Result<u64, SessionError> {
        if concord_config::testhooks::on("kill-expression-refused") {
            return Err(SessionError::reply(
                codes::NOT_SUPPORTED_YET,
                "KILL takes a connection id (a number) through concord",
            ));
        }
        // (Test-only `kill-expression-unchecked`: evaluated whatever it is.)
        if let Some(why) = not_evaluable(expr)
            .filter(|_| !concord_config::testhooks::on("kill-expression-unchecked"))
        {
            return Err(SessionError::reply(
                codes::NOT_SUPPORTED_YET,
                format!("KILL through concord takes a number or a plain expression: {why}"),
            ));
        }
        self.ensure_primary(0).await?;
        // The session's own CONNECTION_ID(), not the backend thread's. (On
        // lines of its own: a trailing `-- comment` ends with its line.)
        let expr = crate::classify::rewrite_ids(expr.as_bytes(), self.info.id);
        let sql = format!(
            "SELECT CAST((\n{}\n) AS SIGNED)",
            String::from_utf8_lossy(&expr)
        );
        let v = self.value_on(super::conns::Which::Primary, &sql).await?;
        Ok(v.and_then(|v| v.parse::<i64>().ok())
            .map_or(0, |n| u64::from_ne_bytes(n.to_ne_bytes())))
    }

    /// COM_PROCESS_KILL: the old command form of `KILL CONNECTION id`.
    pub(super) async fn process_kill(
        &mut self,
        cmd: super::relay::CmdHead,
    ) -> Result<(), (SessionError, u8)> {
        let p = cmd.visible(&self.client.rbuf);
        let id = p
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        match id {
            Some(id) => {
                self.kill_statement(false, KillTarget::Id(u64::from(id)))
                    .await
            }
            None => Err((
                SessionError::Client(concord_protocol::ProtoError::Truncated("COM_PROCESS_KILL")),
                1,
            )),
        }
    }
}

/// Why `expr` is not evaluated for a KILL, if it is not. It runs on the
/// session's connection, which takes multi-statements: what could end the
/// wrapping SELECT early where concord's lexer does not see it (a
/// backslash, whose meaning depends on `NO_BACKSLASH_ESCAPES`; a byte of
/// a multi-byte client character set; an executable comment) is refused,
/// and so is what would leave state on the connection or read a table,
/// which the server refuses in a KILL too.
fn not_evaluable(expr: &str) -> Option<&'static str> {
    use crate::classify::{classify, flag, Kind};
    let upper = expr.to_ascii_uppercase();
    if expr.bytes().any(|b| b == b'\\' || !b.is_ascii()) {
        return Some("backslashes and non-ASCII text are not taken");
    }
    if upper.contains("/*!") || upper.contains("/*M!") {
        return Some("executable comments are not taken");
    }
    let class = classify(format!("SELECT {expr}").as_bytes());
    let stateful = flag::CONN_FUNC
        | flag::INTO
        | flag::USER_VAR_WRITE
        | flag::TEMP_TABLE
        | flag::MULTI
        | flag::PINS
        | flag::TRUNCATED
        | flag::STMT_INFO
        | flag::USES_TABLE
        | flag::CALL
        | flag::CONCORD_VAR
        | flag::INSERT_ID
        | flag::ROW_COUNT
        | flag::FOUND_ROWS;
    if class.kind != Kind::Read || class.has(stateful) {
        return Some("tables, assignments and connection functions are not taken");
    }
    None
}

/// Who asks for a kill.
#[derive(Clone, Debug)]
pub struct Killer {
    pub user: String,
    /// May kill other users' sessions (`[[users]] connection_admin`, or
    /// the admin port).
    pub admin: bool,
}

fn unknown(id: u64) -> ErrPacket {
    ErrPacket::new(codes::NO_SUCH_THREAD, format!("Unknown thread id: {id}"))
}

/// KILL [QUERY] of session `id`, wherever in the fleet it runs.
pub async fn kill(
    shared: &Arc<Shared>,
    id: u64,
    query_only: bool,
    killer: &Killer,
) -> Result<(), ErrPacket> {
    let node = node_of(id);
    if node == shared.node_id {
        return kill_local(shared, id, query_only, killer).await;
    }
    if node == 0 {
        return Err(unknown(id));
    }
    let req = serde_json::json!({
        "kill": id,
        "query": query_only,
        "user": killer.user,
        "admin": killer.admin,
    });
    match shared
        .consensus
        .call_app(node, req, REMOTE_KILL_TIMEOUT)
        .await
    {
        Ok(v) if v["ok"].as_bool() == Some(true) => Ok(()),
        Ok(v) => Err(ErrPacket::new(
            concord_protocol::codes::Code(
                // Server-range codes only (a client-range one reads as a
                // malformed packet to Connector/C).
                v["code"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| (1000..2000).contains(c) || (3000..5000).contains(c))
                    .unwrap_or(1094),
                b"HY000",
            ),
            v["message"]
                .as_str()
                .map_or_else(|| format!("Unknown thread id: {id}"), str::to_string),
        )),
        Err(e) if e.contains("is not a member") => Err(unknown(id)),
        Err(e) => Err(ErrPacket::new(
            codes::UNKNOWN_ERROR,
            format!("concord: session {id} is held by node {node}, which could not carry out the KILL: {e}"),
        )),
    }
}

/// A KILL request forwarded by another node.
pub async fn answer_remote(shared: &Arc<Shared>, v: serde_json::Value) -> serde_json::Value {
    let (Some(id), Some(user)) = (v["kill"].as_u64(), v["user"].as_str()) else {
        return serde_json::json!({"ok": false, "code": 1047, "message": "malformed request"});
    };
    let killer = Killer {
        user: user.to_string(),
        admin: v["admin"].as_bool().unwrap_or(false),
    };
    let query_only = v["query"].as_bool().unwrap_or(false);
    match kill_local(shared, id, query_only, &killer).await {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "code": e.code, "message": e.message}),
    }
}

/// KILL [QUERY] of a session on this node.
pub async fn kill_local(
    shared: &Arc<Shared>,
    id: u64,
    query_only: bool,
    killer: &Killer,
) -> Result<(), ErrPacket> {
    let Some(s) = shared.sessions.get(id) else {
        return Err(unknown(id));
    };
    let owner = s.user.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if owner != killer.user && !killer.admin {
        return Err(unknown(id));
    }
    let running = s.running_conn();
    if !query_only {
        // Cut off at once if busy; told why if idle.
        s.kill(&format!(
            "KILL {id} from a session of user '{}'",
            killer.user
        ));
    }
    if let Some(h) = running {
        // Stop the server's work too: closing a connection does not stop
        // a statement that is not sending anything.
        // Checked again once the side connection is up: if the statement
        // ended meanwhile, the backend connection may be serving another
        // session by now.
        let still = || s.running.load(std::sync::atomic::Ordering::Relaxed) == h.conn_id;
        if let Err(e) = kill_backend_query(shared, &h, &s.kill_gate, still).await {
            tracing::warn!(session = id, backend = %h.pool.name, "KILL QUERY on backend thread {} failed: {e}", h.thread_id);
        }
    }
    Ok(())
}

/// `KILL QUERY <thread>` on a backend, from a side connection with the
/// account that owns the thread (any account may kill its own threads).
/// `still()` is asked right before the KILL is sent.
pub async fn kill_backend_query(
    shared: &Shared,
    h: &HeldConn,
    gate: &tokio::sync::Mutex<()>,
    still: impl Fn() -> bool,
) -> Result<(), String> {
    let timeout = shared.config.load().pool.connect_timeout.get();
    let creds = Credentials {
        user: &h.user.backend_user,
        password: &h.user.backend_password,
        database: None,
        collation: concord_protocol::consts::DEFAULT_COLLATION,
        flavor: 0,
    };
    let mut c = BackendConn::connect(&h.pool.addr, &creds, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let gate = gate.lock().await;
    if !still() {
        drop(gate);
        c.quit().await;
        return Ok(());
    }
    let r =
        match tokio::time::timeout(timeout, c.exec(&format!("KILL QUERY {}", h.thread_id))).await {
            Ok(r) => r,
            Err(_) => Err(crate::error::BackendError::ConnectTimeout {
                addr: h.pool.addr.clone(),
            }),
        };
    drop(gate);
    c.quit().await;
    match r {
        Ok(Ok(_)) => Ok(()),
        // The statement ended before the KILL arrived: nothing to stop.
        Ok(Err(e)) if e.code == codes::NO_SUCH_THREAD.0 => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A statement must stop (its timeout passed, its client went away):
/// `KILL QUERY` on its backend thread, run to completion by the relay
/// that waits for the statement's answer (so the session cannot give the
/// connection to anyone meanwhile, and the kill gate keeps another
/// session's KILL out).
pub async fn kill_running(
    shared: &Shared,
    info: &crate::shared::SessionInfo,
    h: &HeldConn,
    why: &str,
) {
    let still = || info.running.load(std::sync::atomic::Ordering::Relaxed) == h.conn_id;
    if let Err(e) = kill_backend_query(shared, h, &info.kill_gate, still).await {
        tracing::warn!(session = info.id, backend = %h.pool.name, "{why}: KILL QUERY on backend thread {} failed: {e}", h.thread_id);
    }
}

#[cfg(test)]
mod tests {
    use super::not_evaluable;

    #[test]
    fn only_plain_expressions_are_evaluated_for_a_kill() {
        for e in [
            "@id",
            "(('x' IN ( SELECT 1)) MOD 44)",
            "CONNECTION_ID() + 1",
            "@id -- why",
            "1+1",
            "NULL",
        ] {
            assert_eq!(not_evaluable(e), None, "{e}");
        }
        for e in [
            // What could end the wrapping SELECT where the lexer does not
            // see it.
            "'\\' ) AS SIGNED); BEGIN; -- '",
            "'中'",
            "5 /*!; DROP TABLE t */",
            "5 /*m!100000 ; DROP TABLE t */",
            // State left on the connection, or a table read.
            "@a := 5",
            "(SELECT id FROM t)",
            "GET_LOCK('x', 0)",
            "LAST_INSERT_ID(7)",
            "NEXTVAL(s)",
            "FOUND_ROWS()",
            "ROW_COUNT()",
        ] {
            assert!(not_evaluable(e).is_some(), "{e}");
        }
    }
}
