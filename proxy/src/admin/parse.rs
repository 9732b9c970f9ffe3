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
    /// `SHOW CONCORD DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n]`.
    ShowDigests {
        order: String,
        desc: bool,
        limit: usize,
    },
    ResetDigests,
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
SHOW CONCORD DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n] | RESET CONCORD DIGESTS";

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
        } else if p.word("CONCORD") {
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
            AdminCmd::ShowDigests { order, desc, limit }
        } else {
            return Err("SHOW what? BACKENDS, CLUSTER, EVENTS, SESSIONS or CONCORD DIGESTS".into());
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
        } else {
            return Err("ADD BACKEND or ADD NODE".into());
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
