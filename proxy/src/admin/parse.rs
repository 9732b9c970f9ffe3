//! The admin port's statements, parsed from SQL-like text into typed
//! commands. Names are quoted strings (`'db2'`), numbers are bare.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCmd {
    ShowBackends,
    ShowCluster,
    ShowEvents {
        limit: usize,
    },
    ShowSessions,
    /// `SHOW CONCORD [FLEET] DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n]`.
    ShowDigests {
        order: String,
        desc: bool,
        limit: usize,
        /// Every node's table, merged.
        fleet: bool,
    },
    ResetDigests,
    /// `ADD RULE n [USER 'u'] [SCHEMA 's'] [DIGEST 'hex'] [MATCH 're'] action`.
    AddRule(concord_consensus::Rule),
    DropRule {
        id: u32,
    },
    ShowRules,
    KillSession {
        id: u64,
    },
    Drain {
        name: String,
        timeout: Duration,
    },
    Undrain {
        name: String,
    },
    SetWeight {
        name: String,
        weight: u32,
    },
    Maintenance {
        name: String,
        on: bool,
    },
    AddBackend {
        name: String,
        addr: String,
        weight: u32,
    },
    RemoveBackend {
        name: String,
    },
    AddNode {
        id: u64,
        addr: String,
    },
    RemoveNode {
        id: u64,
    },
    Switchover {
        to: String,
    },
    Failover,
    Rejoin {
        name: String,
    },
    ReloadConfig,
    /// Statements clients send on their own (`SET NAMES`, `SELECT
    /// DATABASE()`): answered with an empty OK or a one-cell result.
    ClientNoise(Option<(String, String)>),
    /// `SELECT @@a, @@b` as drivers send at connect: one row.
    Variables(Vec<(String, Option<String>)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum T {
    Word(String),
    Str(String),
    Num(u64),
}

fn lex(s: &str) -> Result<Vec<T>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() || c == b';' || c == b',' {
            i += 1;
        } else if c == b'\'' || c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != c {
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated string".into());
            }
            out.push(T::Str(String::from_utf8_lossy(&b[start..i]).into_owned()));
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = s[start..i]
                .parse()
                .map_err(|_| "number too large".to_string())?;
            out.push(T::Num(n));
        } else {
            let start = i;
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && !matches!(b[i], b'\'' | b'"' | b';' | b',')
            {
                i += 1;
            }
            out.push(T::Word(s[start..i].to_ascii_uppercase()));
        }
    }
    Ok(out)
}

struct P {
    t: Vec<T>,
    i: usize,
}

impl P {
    fn word(&mut self, w: &str) -> bool {
        if matches!(self.t.get(self.i), Some(T::Word(x)) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, w: &str) -> Result<(), String> {
        if self.word(w) {
            Ok(())
        } else {
            Err(format!("expected {w}"))
        }
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(T::Str(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            // Bare names are accepted too.
            Some(T::Word(w)) => {
                self.i += 1;
                Ok(w.to_ascii_lowercase())
            }
            _ => Err(format!("expected {what} in quotes")),
        }
    }
    /// A quoted string only (case and spaces kept).
    fn quoted(&mut self, what: &str) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(T::Str(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            _ => Err(format!("expected {what} in quotes")),
        }
    }
    fn duration_ms(&mut self, what: &str) -> Result<u64, String> {
        let t = self.quoted(what)?;
        let d = t.parse::<concord_config::Duration>()?.get();
        u64::try_from(d.as_millis()).map_err(|_| format!("{what} too large"))
    }
    fn num(&mut self, what: &str) -> Result<u64, String> {
        match self.t.get(self.i) {
            Some(T::Num(n)) => {
                self.i += 1;
                Ok(*n)
            }
            _ => Err(format!("expected a number for {what}")),
        }
    }
    fn end(&self) -> Result<(), String> {
        match self.t.get(self.i) {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?} at the end")),
        }
    }
}

pub const HELP: &str = "SHOW BACKENDS | SHOW CLUSTER | SHOW EVENTS [LIMIT n] | SHOW SESSIONS | KILL SESSION n | \
DRAIN BACKEND 'x' [TIMEOUT '30s'] | UNDRAIN BACKEND 'x' | SET BACKEND 'x' WEIGHT n | \
SET BACKEND 'x' MAINTENANCE ON|OFF | ADD BACKEND 'x' ADDRESS 'host:port' [WEIGHT n] | REMOVE BACKEND 'x' | \
ADD NODE n ADDRESS 'host:port' | REMOVE NODE n | SWITCHOVER TO 'x' | FAILOVER | REJOIN BACKEND 'x' | RELOAD CONFIG | \
SHOW CONCORD [FLEET] DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n] | RESET CONCORD DIGESTS | \
ADD RULE n [USER 'u'] [SCHEMA 's'] [DIGEST 'hex'] [MATCH 'regex'] ROUTE PRIMARY|ROUTE REPLICA|BLOCK ['message']|TIMEOUT '2s'|MAX_LAG '1s' | \
DROP RULE n | SHOW RULES";

/// `ADD RULE` after its two words.
fn add_rule(p: &mut P) -> Result<concord_consensus::Rule, String> {
    use concord_consensus::rule::Action;
    let id = u32::try_from(p.num("the rule id")?).map_err(|_| "rule id too large".to_string())?;
    let mut rule = concord_consensus::Rule {
        id,
        user: None,
        schema: None,
        digest: None,
        pattern: None,
        action: Action::RoutePrimary,
        index: 0,
    };
    loop {
        if p.word("USER") {
            rule.user = Some(p.quoted("the user name")?);
        } else if p.word("SCHEMA") {
            rule.schema = Some(p.quoted("the schema name")?);
        } else if p.word("DIGEST") {
            let h = p.quoted("the digest (hex, as SHOW CONCORD DIGESTS shows it)")?;
            rule.digest = Some(
                u64::from_str_radix(&h, 16)
                    .map_err(|_| format!("DIGEST '{h}' is not a 16-digit hex digest"))?,
            );
        } else if p.word("MATCH") {
            let re = p.quoted("the pattern")?;
            crate::rules::compile(&re)?;
            rule.pattern = Some(re);
        } else {
            break;
        }
    }
    rule.action = if p.word("ROUTE") {
        if p.word("PRIMARY") {
            Action::RoutePrimary
        } else if p.word("REPLICA") || p.word("REPLICAS") {
            Action::RouteReplica
        } else {
            return Err("ROUTE PRIMARY or ROUTE REPLICA".into());
        }
    } else if p.word("BLOCK") {
        let message = match p.t.get(p.i) {
            Some(T::Str(_)) => p.quoted("the message")?,
            _ => "this statement is blocked on this fleet".to_string(),
        };
        Action::Block { message }
    } else if p.word("TIMEOUT") {
        Action::TimeoutMs(p.duration_ms("TIMEOUT")?)
    } else if p.word("MAX_LAG") {
        Action::MaxLagMs(p.duration_ms("MAX_LAG")?)
    } else {
        return Err("ADD RULE n [USER 'u'] [SCHEMA 's'] [DIGEST 'hex'] [MATCH 'regex'] then ROUTE PRIMARY, ROUTE REPLICA, BLOCK ['message'], TIMEOUT '2s' or MAX_LAG '1s'".into());
    };
    rule.check()?;
    Ok(rule)
}

/// Values of the system variables drivers ask the admin port about.
fn variables(sql: &str) -> Vec<(String, Option<String>)> {
    let list = sql[6..].split(" limit ").next().unwrap_or("");
    list.split(',')
        .map(|v| {
            let name = v.trim().to_string();
            let key = name.trim_start_matches('@').to_ascii_lowercase();
            let key = key.strip_prefix("session.").unwrap_or(&key).to_string();
            let value = match key.as_str() {
                "version_comment" => Some("concord admin".to_string()),
                "version" => Some(format!("{}-concord-admin", env!("CARGO_PKG_VERSION"))),
                "max_allowed_packet" => Some("1048576".to_string()),
                "wait_timeout" | "interactive_timeout" => Some("28800".to_string()),
                "autocommit" => Some("1".to_string()),
                _ => None,
            };
            (name, value)
        })
        .collect()
}

pub fn parse(sql: &str) -> Result<AdminCmd, String> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("select @@") {
        return Ok(AdminCmd::Variables(variables(trimmed)));
    }
    if lower.starts_with("select database()") {
        return Ok(AdminCmd::ClientNoise(Some((
            "DATABASE()".into(),
            String::new(),
        ))));
    }
    if (lower.starts_with("set ") && !lower.starts_with("set backend"))
        || lower.is_empty()
        || lower.starts_with("use ")
    {
        return Ok(AdminCmd::ClientNoise(None));
    }
    let mut p = P {
        t: lex(trimmed)?,
        i: 0,
    };
    let cmd = if p.word("SHOW") {
        if p.word("BACKENDS") {
            AdminCmd::ShowBackends
        } else if p.word("CLUSTER") {
            AdminCmd::ShowCluster
        } else if p.word("EVENTS") {
            let limit = if p.word("LIMIT") {
                p.num("LIMIT")? as usize
            } else {
                50
            };
            AdminCmd::ShowEvents { limit }
        } else if p.word("SESSIONS") {
            AdminCmd::ShowSessions
        } else if p.word("RULES") {
            AdminCmd::ShowRules
        } else if p.word("CONCORD") {
            let fleet = p.word("FLEET");
            p.expect("DIGESTS")?;
            let (order, desc) = if p.word("ORDER") {
                p.expect("BY")?;
                let col = p.string("a column")?;
                if !super::views::DIGEST_ORDER.contains(&col.as_str()) {
                    return Err(format!(
                        "ORDER BY one of {}",
                        super::views::DIGEST_ORDER.join(", ")
                    ));
                }
                let desc = !p.word("ASC");
                if desc {
                    p.word("DESC");
                }
                (col, desc)
            } else {
                ("total_us".to_string(), true)
            };
            let limit = if p.word("LIMIT") {
                p.num("LIMIT")? as usize
            } else {
                20
            };
            AdminCmd::ShowDigests {
                order,
                desc,
                limit,
                fleet,
            }
        } else {
            return Err(
                "SHOW what? BACKENDS, CLUSTER, EVENTS, SESSIONS, RULES or CONCORD DIGESTS".into(),
            );
        }
    } else if p.word("KILL") {
        p.expect("SESSION")?;
        AdminCmd::KillSession {
            id: p.num("the session id")?,
        }
    } else if p.word("DRAIN") {
        p.expect("BACKEND")?;
        let name = p.string("the backend name")?;
        let timeout = if p.word("TIMEOUT") {
            let t = p.string("the timeout")?;
            t.parse::<concord_config::Duration>()?.get()
        } else {
            Duration::from_secs(30)
        };
        AdminCmd::Drain { name, timeout }
    } else if p.word("UNDRAIN") {
        p.expect("BACKEND")?;
        AdminCmd::Undrain {
            name: p.string("the backend name")?,
        }
    } else if p.word("SET") {
        p.expect("BACKEND")?;
        let name = p.string("the backend name")?;
        if p.word("WEIGHT") {
            let w = p.num("WEIGHT")?;
            let weight = u32::try_from(w).map_err(|_| "weight too large".to_string())?;
            AdminCmd::SetWeight { name, weight }
        } else if p.word("MAINTENANCE") {
            let on = if p.word("ON") {
                true
            } else if p.word("OFF") {
                false
            } else {
                return Err("MAINTENANCE ON or OFF".into());
            };
            AdminCmd::Maintenance { name, on }
        } else {
            return Err("SET BACKEND 'x' WEIGHT n or MAINTENANCE ON|OFF".into());
        }
    } else if p.word("ADD") {
        if p.word("BACKEND") {
            let name = p.string("the backend name")?;
            p.expect("ADDRESS")?;
            let addr = p.string("the address")?;
            let weight = if p.word("WEIGHT") {
                p.num("WEIGHT")? as u32
            } else {
                100
            };
            AdminCmd::AddBackend { name, addr, weight }
        } else if p.word("NODE") {
            let id = p.num("the node id")?;
            p.expect("ADDRESS")?;
            AdminCmd::AddNode {
                id,
                addr: p.string("the Raft address")?,
            }
        } else if p.word("RULE") {
            AdminCmd::AddRule(add_rule(&mut p)?)
        } else {
            return Err("ADD BACKEND, ADD NODE or ADD RULE".into());
        }
    } else if p.word("REMOVE") {
        if p.word("BACKEND") {
            AdminCmd::RemoveBackend {
                name: p.string("the backend name")?,
            }
        } else if p.word("NODE") {
            AdminCmd::RemoveNode {
                id: p.num("the node id")?,
            }
        } else {
            return Err("REMOVE BACKEND or REMOVE NODE".into());
        }
    } else if p.word("SWITCHOVER") {
        p.expect("TO")?;
        AdminCmd::Switchover {
            to: p.string("the target backend")?,
        }
    } else if p.word("FAILOVER") {
        AdminCmd::Failover
    } else if p.word("REJOIN") {
        p.expect("BACKEND")?;
        AdminCmd::Rejoin {
            name: p.string("the backend name")?,
        }
    } else if p.word("RESET") {
        p.expect("CONCORD")?;
        p.expect("DIGESTS")?;
        AdminCmd::ResetDigests
    } else if p.word("DROP") {
        p.expect("RULE")?;
        let id = p.num("the rule id")?;
        AdminCmd::DropRule {
            id: u32::try_from(id).map_err(|_| "rule id too large".to_string())?,
        }
    } else if p.word("RELOAD") {
        p.expect("CONFIG")?;
        AdminCmd::ReloadConfig
    } else {
        return Err("unknown admin command".into());
    };
    p.end()?;
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        use concord_consensus::rule::Action;
        let AdminCmd::AddRule(r) = parse(
            "ADD RULE 7 USER 'app' SCHEMA 'Shop' DIGEST '00000000000000ff' MATCH '^select .* from big' TIMEOUT '2s'",
        )
        .unwrap() else {
            panic!("not a rule")
        };
        assert_eq!(r.id, 7);
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.schema.as_deref(), Some("Shop"));
        assert_eq!(r.digest, Some(255));
        assert_eq!(r.pattern.as_deref(), Some("^select .* from big"));
        assert_eq!(r.action, Action::TimeoutMs(2000));
        let AdminCmd::AddRule(r) = parse("add rule 8 block 'not now'").unwrap() else {
            panic!("not a rule")
        };
        assert_eq!(
            r.action,
            Action::Block {
                message: "not now".into()
            }
        );
        assert_eq!(parse("DROP RULE 8").unwrap(), AdminCmd::DropRule { id: 8 });
        assert_eq!(parse("show rules").unwrap(), AdminCmd::ShowRules);
        for bad in [
            "ADD RULE 1",
            "ADD RULE 1 MATCH '((' ROUTE PRIMARY",
            "ADD RULE 1 DIGEST 'xyz' ROUTE PRIMARY",
            "ADD RULE 1 TIMEOUT '0s'",
            "ADD RULE 99999999999 ROUTE PRIMARY",
            "ADD RULE 1 ROUTE SIDEWAYS",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse("show backends;").unwrap(), AdminCmd::ShowBackends);
        assert_eq!(
            parse("SHOW EVENTS LIMIT 5").unwrap(),
            AdminCmd::ShowEvents { limit: 5 }
        );
        assert_eq!(
            parse("DRAIN BACKEND 'db2' TIMEOUT '5s'").unwrap(),
            AdminCmd::Drain {
                name: "db2".into(),
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(
            parse("SET BACKEND 'db2' WEIGHT 50").unwrap(),
            AdminCmd::SetWeight {
                name: "db2".into(),
                weight: 50
            }
        );
        assert_eq!(
            parse("add node 4 address '127.0.0.1:7004'").unwrap(),
            AdminCmd::AddNode {
                id: 4,
                addr: "127.0.0.1:7004".into()
            }
        );
        assert_eq!(
            parse("SWITCHOVER TO 'db3'").unwrap(),
            AdminCmd::Switchover { to: "db3".into() }
        );
        assert_eq!(
            parse("SET NAMES utf8").unwrap(),
            AdminCmd::ClientNoise(None)
        );
        assert!(
            matches!(parse("SELECT @@max_allowed_packet,@@wait_timeout").unwrap(), AdminCmd::Variables(v) if v.len() == 2)
        );
        assert!(parse("DROP TABLE x").is_err());
        assert!(parse("SET BACKEND 'x' WEIGHT").is_err());
        assert!(parse("SHOW BACKENDS EXTRA").is_err());
        assert!(parse("DRAIN BACKEND 'x' TIMEOUT 'soon'").is_err());
        assert!(parse("SET BACKEND 'x' WEIGHT 99999999999").is_err());
    }
}
