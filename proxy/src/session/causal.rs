//! Causal reads across connections and nodes. After a write a session
//! can ask `SELECT @@concord_token` for the position that covers it (its
//! last write's GTID, answered by concord); any connection on any node
//! can then read after that position with `/* concord:after=TOKEN */` on
//! a statement, or `SET @@concord_after = 'TOKEN'` for every following
//! read of the session (`NULL` or `''` clears it). Such a read goes to a
//! replica that has applied the position, or waits for one within
//! `routing.read_your_writes_wait` (as read-your-writes does); otherwise it
//! follows `routing.fallback`. On the primary the position must be in the
//! primary's history, compared exactly (MariaDB: domain, server id and
//! sequence): a token naming a transaction a failover lost is refused.
//!
//! A token is a GTID position as the backend writes it: MariaDB
//! `domain-server-seq[,...]`, MySQL `uuid:interval[,...]`.

use super::relay::CmdHead;
use super::Session;
use crate::classify::{self, Class};
use crate::error::SessionError;
use concord_protocol::codes;
use concord_protocol::column::Column;
use concord_protocol::resultset::write_resultset;

/// Code and SQLSTATE of a malformed or unusable token (MySQL's "Incorrect
/// GTID set" family is version-specific; this is the generic one).
const BAD_TOKEN: codes::Code = codes::Code(1231, b"42000");

/// A token as given, if it is one: GTID characters only (it is put into
/// SQL), normalized.
pub fn valid_token(t: &str) -> Option<String> {
    let t = concord_health::probe::normalize_gtids(t.trim());
    let num = |x: &str| !x.is_empty() && x.len() <= 19 && x.bytes().all(|c| c.is_ascii_digit());
    // MariaDB: domain-server-seq; MySQL: uuid:n[-m][:n[-m]...].
    let item_ok = |g: &str| match g.split_once(':') {
        None => {
            let p: Vec<&str> = g.split('-').collect();
            p.len() == 3
                && p.iter().all(|x| num(x))
                && p[0].parse::<u32>().is_ok()
                && p[1].parse::<u32>().is_ok()
                && p[2].parse::<u64>().is_ok()
        }
        Some((uuid, ranges)) => {
            uuid.len() == 36
                && uuid.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
                && ranges.split(':').all(|r| match r.split_once('-') {
                    Some((a, b)) => num(a) && num(b),
                    None => num(r),
                })
        }
    };
    (!t.is_empty() && t.len() <= 64 * 1024 && t.split(',').all(item_ok)).then_some(t)
}

/// A position covering both `a` and `b`. MariaDB: the higher sequence per
/// domain (replication applies a domain in order); MySQL: the union, which
/// the server's own functions accept as written.
pub fn merge(a: &str, b: &str) -> String {
    let mariadb = |s: &str| !s.contains(':');
    if !(mariadb(a) && mariadb(b)) {
        return format!("{a},{b}");
    }
    let mut best: Vec<(&str, u64, &str)> = Vec::new();
    for g in a.split(',').chain(b.split(',')).filter(|g| !g.is_empty()) {
        let mut p = g.splitn(3, '-');
        let (Some(d), Some(_), Some(q)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        let q: u64 = q.parse().unwrap_or(0);
        match best.iter_mut().find(|(bd, _, _)| *bd == d) {
            Some(e) if e.1 < q => *e = (d, q, g),
            Some(_) => {}
            None => best.push((d, q, g)),
        }
    }
    best.iter()
        .map(|(_, _, g)| *g)
        .collect::<Vec<_>>()
        .join(",")
}

/// What a `@@concord_...` statement asks.
#[derive(Debug, PartialEq, Eq)]
enum VarStmt {
    /// `SELECT @@concord_token` or `SELECT @@concord_after`.
    Select { token: bool },
    /// `SET [SESSION] @@concord_after = 'T' | NULL | '' | DEFAULT`.
    SetAfter(Option<String>),
}

/// Parses the only forms concord answers; anything else naming a
/// `@@concord_` variable is refused with the reason.
fn parse_var_stmt(sql: &str) -> Result<VarStmt, String> {
    let s = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let name = |w: &str| {
        let w = w.to_ascii_lowercase();
        let w = w.trim_start_matches("@@");
        let w = w
            .strip_prefix("session.")
            .or_else(|| w.strip_prefix("local."))
            .unwrap_or(w);
        w.to_string()
    };
    let usage = "concord answers `SELECT @@concord_token`, `SELECT @@concord_after` and `SET @@concord_after = 'TOKEN' | NULL`, each alone";
    match words.as_slice() {
        [sel, v] if sel.eq_ignore_ascii_case("select") => match name(v).as_str() {
            "concord_token" => Ok(VarStmt::Select { token: true }),
            "concord_after" => Ok(VarStmt::Select { token: false }),
            _ => Err(usage.into()),
        },
        [set, rest @ ..] if set.eq_ignore_ascii_case("set") => {
            let rest = rest.join(" ");
            let rest = rest
                .strip_prefix("SESSION ")
                .or_else(|| rest.strip_prefix("session "))
                .unwrap_or(&rest);
            let Some((var, value)) = rest.split_once('=') else {
                return Err(usage.into());
            };
            if name(var.trim()) != "concord_after" {
                return Err(usage.into());
            }
            let v = value.trim();
            if v.eq_ignore_ascii_case("null") || v.eq_ignore_ascii_case("default") {
                return Ok(VarStmt::SetAfter(None));
            }
            let quoted = v
                .strip_prefix('\'')
                .and_then(|x| x.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|x| x.strip_suffix('"')));
            match quoted {
                Some("") => Ok(VarStmt::SetAfter(None)),
                Some(t) => valid_token(t)
                    .map(|t| VarStmt::SetAfter(Some(t)))
                    .ok_or_else(|| format!("'{t}' is not a causal token (a GTID position)")),
                None => Err(usage.into()),
            }
        }
        _ => Err(usage.into()),
    }
}

impl Session {
    /// The statement's `/* concord:after=TOKEN */`, checked.
    pub(super) fn hint_token(class: &Class, sql: &[u8]) -> Result<Option<String>, SessionError> {
        let Some((a, b)) = class.hint_after else {
            return Ok(None);
        };
        let raw = sql
            .get(a as usize..b as usize)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        valid_token(&raw).map(Some).ok_or_else(|| {
            SessionError::reply(
                BAD_TOKEN,
                format!("concord: '{raw}' in /* concord:after=... */ is not a causal token (a GTID position from SELECT @@concord_token); nothing was executed"),
            )
        })
    }

    /// Answers a statement naming a `@@concord_...` variable.
    pub(super) async fn concord_var(&mut self, cmd: CmdHead) -> Result<(), (SessionError, u8)> {
        let sql = String::from_utf8_lossy(&cmd.visible(&self.client.rbuf)[1..]).into_owned();
        self.discard(cmd).await.map_err(|e| (e, 1))?;
        let stmt = if cmd.whole {
            parse_var_stmt(&sql)
        } else {
            Err("statement too long".into())
        };
        match stmt {
            Ok(VarStmt::SetAfter(t)) => {
                self.after = t;
                self.send_ok().await
            }
            Ok(VarStmt::Select { token }) => {
                let (col, value) = if token {
                    (
                        "@@concord_token",
                        self.ryw_gtid().await.map_err(|e| (e, 1))?,
                    )
                } else {
                    ("@@concord_after", self.after.clone())
                };
                let mut seq = 1;
                write_resultset(
                    &mut self.client.wbuf,
                    &mut seq,
                    self.caps,
                    super::lasting_status(self.status),
                    &[Column::str(col)],
                    &[vec![value]],
                );
                self.client
                    .flush()
                    .await
                    .map_err(|e| (SessionError::Client(e), 1))
            }
            Err(why) => Err((
                SessionError::reply(
                    codes::Code(1193, b"HY000"),
                    format!("concord: {why}; nothing was executed"),
                ),
                1,
            )),
        }
    }

    /// Whether the primary already vouched for `token` under `epoch` in
    /// this session.
    pub(super) fn token_verified(&self, token: &Option<String>, epoch: u64) -> bool {
        matches!((&self.token_checked, token), (Some((t, e)), Some(x)) if t == x && *e == epoch)
    }

    /// A read after `token` is about to run (`runs_there`), or to be
    /// vouched for, on the primary: the primary's history must hold it
    /// exactly, or the token names transactions a failover lost (or
    /// another cluster's).
    pub(super) async fn primary_has(
        &mut self,
        token: &str,
        runs_there: bool,
    ) -> Result<(), SessionError> {
        let Some(b) = self.conns.primary.as_mut() else {
            return Ok(());
        };
        let mariadb = b.conn.flavor == concord_health::Flavor::MariaDb;
        let sql = if mariadb {
            "SELECT @@global.gtid_binlog_state"
        } else {
            "SELECT @@global.gtid_executed"
        };
        let name = b.pool.name.clone();
        let have = self.primary_value(sql).await?.unwrap_or_default();
        let have = concord_health::probe::normalize_gtids(&have);
        if concord_health::gtid::covers_exact(&have, token) {
            if runs_there {
                crate::metrics::causal_read("primary");
            }
            return Ok(());
        }
        crate::metrics::causal_read("refused");
        Err(SessionError::reply(
            BAD_TOKEN,
            format!("concord: the causal token '{token}' names transactions the primary '{name}' does not have (lost in a failover, or a token from another cluster); the read was not run"),
        ))
    }
}

/// Whether a statement is one concord answers for causal reads.
pub fn is_concord_var(class: &Class) -> bool {
    class.has(classify::flag::CONCORD_VAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_gtid_positions_only() {
        assert_eq!(valid_token(" 0-1-55 ").as_deref(), Some("0-1-55"));
        assert_eq!(valid_token("0-1-5,1-2-7").as_deref(), Some("0-1-5,1-2-7"));
        assert!(valid_token("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5").is_some());
        assert_eq!(valid_token("0-1-5'; DROP TABLE t; --"), None);
        assert_eq!(valid_token(""), None);
        // Shapes the GTID parsers would drop (and so cover vacuously).
        for bad in [
            "0-1-5a",
            "0-1",
            "0-1-99999999999999999999",
            "0-1-5,",
            "u:1-5",
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:",
        ] {
            assert_eq!(valid_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn merging_keeps_the_newest_per_domain() {
        assert_eq!(merge("0-1-5,1-1-9", "0-2-7"), "0-2-7,1-1-9");
        assert_eq!(merge("0-1-9", "0-2-7"), "0-1-9");
        assert_eq!(merge("u:1-5", "v:1-2"), "u:1-5,v:1-2");
    }

    #[test]
    fn only_the_documented_forms_are_answered() {
        assert_eq!(
            parse_var_stmt("select @@concord_token;"),
            Ok(VarStmt::Select { token: true })
        );
        assert_eq!(
            parse_var_stmt("SELECT @@session.concord_after"),
            Ok(VarStmt::Select { token: false })
        );
        assert_eq!(
            parse_var_stmt("SET @@concord_after = '0-1-5,1-1-2'"),
            Ok(VarStmt::SetAfter(Some("0-1-5,1-1-2".into())))
        );
        assert_eq!(
            parse_var_stmt("set @@session.concord_after=NULL"),
            Ok(VarStmt::SetAfter(None))
        );
        assert_eq!(
            parse_var_stmt("SET @@concord_after = ''"),
            Ok(VarStmt::SetAfter(None))
        );
        assert!(parse_var_stmt("SET @@concord_after = 'x; y'").is_err());
        assert!(parse_var_stmt("SET @@concord_after = '0-1-5', @a = 1").is_err());
        assert!(parse_var_stmt("SELECT @@concord_token, 1").is_err());
        assert!(parse_var_stmt("SET @@concord_token = '0-1-1'").is_err());
    }
}
