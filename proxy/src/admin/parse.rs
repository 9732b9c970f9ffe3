//! The admin port's statements: a small lexer, and the walk over the
//! command registry (`cmd::ALL`) that hands the rest of the statement to
//! the command's own parser. Names are quoted strings (`'db2'`), numbers
//! are bare.

use super::cmd::noise::Noise;
use super::command::Command;

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

/// The tokens of one statement and the position in them.
pub struct P {
    t: Vec<T>,
    i: usize,
}

impl P {
    pub fn word(&mut self, w: &str) -> bool {
        if matches!(self.t.get(self.i), Some(T::Word(x)) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    pub fn expect(&mut self, w: &str) -> Result<(), String> {
        if self.word(w) {
            Ok(())
        } else {
            Err(format!("expected {w}"))
        }
    }
    pub fn string(&mut self, what: &str) -> Result<String, String> {
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
    /// The next token is a quoted string.
    pub fn at_string(&self) -> bool {
        matches!(self.t.get(self.i), Some(T::Str(_)))
    }
    /// A quoted string only (case and spaces kept).
    pub fn quoted(&mut self, what: &str) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(T::Str(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            _ => Err(format!("expected {what} in quotes")),
        }
    }
    pub fn duration_ms(&mut self, what: &str) -> Result<u64, String> {
        let t = self.quoted(what)?;
        let d = t.parse::<concord_config::Duration>()?.get();
        u64::try_from(d.as_millis()).map_err(|_| format!("{what} too large"))
    }
    pub fn num(&mut self, what: &str) -> Result<u64, String> {
        match self.t.get(self.i) {
            Some(T::Num(n)) => {
                self.i += 1;
                Ok(*n)
            }
            _ => Err(format!("expected a number for {what}")),
        }
    }
    pub fn end(&self) -> Result<(), String> {
        match self.t.get(self.i) {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?} at the end")),
        }
    }
}

/// Every command's syntax, for the error a statement that is none gets.
pub fn help() -> String {
    super::cmd::ALL
        .iter()
        .map(|e| e.syntax)
        .collect::<Vec<_>>()
        .join(" | ")
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

pub fn parse(sql: &str) -> Result<Box<dyn Command>, String> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    // Words as one space apart: `SET  BACKEND` or a tab must not pass
    // for a client's harmless SET.
    let lower = trimmed
        .to_ascii_lowercase()
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if lower.starts_with("select @@") {
        return Ok(Box::new(Noise::Row(variables(trimmed))));
    }
    if lower.starts_with("select database()") {
        return Ok(Box::new(Noise::Row(vec![(
            "DATABASE()".into(),
            Some(String::new()),
        )])));
    }
    if (lower.starts_with("set ") && !lower.starts_with("set backend"))
        || lower.is_empty()
        || lower.starts_with("use ")
    {
        return Ok(Box::new(Noise::Ok));
    }
    let mut p = P {
        t: lex(trimmed)?,
        i: 0,
    };
    // The entry naming the most leading words.
    let entry = super::cmd::ALL
        .iter()
        .filter(|e| {
            e.words.len() <= p.t.len()
                && e.words
                    .iter()
                    .zip(&p.t)
                    .all(|(w, t)| matches!(t, T::Word(x) if x == w))
        })
        .max_by_key(|e| e.words.len());
    let Some(entry) = entry else {
        let first = match p.t.first() {
            Some(T::Word(w)) => w.clone(),
            _ => String::new(),
        };
        let close: Vec<&str> = super::cmd::ALL
            .iter()
            .filter(|e| e.words[0] == first)
            .map(|e| e.syntax)
            .collect();
        return Err(if close.is_empty() {
            "unknown admin command".into()
        } else {
            format!("did you mean {}?", close.join(" or "))
        });
    };
    p.i = entry.words.len();
    let cmd = (entry.parse)(&mut p)?;
    p.end()?;
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::cmd::*;
    use concord_consensus::rule::Action;
    use std::time::Duration;

    /// The parsed command, as its Debug form (commands are trait objects).
    fn parsed(sql: &str) -> String {
        format!("{:?}", parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")))
    }

    fn same(sql: &str, want: impl std::fmt::Debug) {
        assert_eq!(parsed(sql), format!("{want:?}"), "{sql}");
    }

    #[test]
    fn parses_rules() {
        same(
            "ADD RULE 7 USER 'app' SCHEMA 'Shop' DIGEST '00000000000000ff' MATCH '^select .* from big' TIMEOUT '2s'",
            rules::RuleChange::Add(concord_consensus::Rule {
                id: 7,
                user: Some("app".into()),
                schema: Some("Shop".into()),
                digest: Some(255),
                pattern: Some("^select .* from big".into()),
                action: Action::TimeoutMs(2000),
                index: 0,
            }),
        );
        assert!(parsed("add rule 8 block 'not now'").contains("Block { message: \"not now\" }"));
        assert!(parsed("add rule 8 block").contains("blocked on this fleet"));
        same("DROP RULE 8", rules::RuleChange::Drop { id: 8 });
        same("show rules", show::Show::Rules);
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
        same("show backends;", show::Show::Backends);
        same("SHOW EVENTS LIMIT 5", show::Show::Events { limit: 5 });
        same(
            "DRAIN BACKEND 'db2' TIMEOUT '5s'",
            drain::Drain {
                name: "db2".into(),
                timeout: Duration::from_secs(5),
            },
        );
        same(
            "SET BACKEND 'db2' WEIGHT 50",
            set_backend::SetBackend::Weight {
                name: "db2".into(),
                weight: 50,
            },
        );
        // Any whitespace between the words: not taken for a client's SET.
        same(
            "SET  BACKEND\t'db2' WEIGHT 50",
            set_backend::SetBackend::Weight {
                name: "db2".into(),
                weight: 50,
            },
        );
        same(
            "add node 4 address '127.0.0.1:7004'",
            nodes::Membership::Add {
                id: 4,
                addr: "127.0.0.1:7004".into(),
            },
        );
        same(
            "SWITCHOVER TO 'db3'",
            failover::Run(concord_consensus::Workflow::Switchover { to: "db3".into() }),
        );
        same(
            "SHOW CONCORD FLEET DIGESTS ORDER BY count LIMIT 3",
            digests::ShowDigests {
                order: "count".into(),
                desc: true,
                limit: 3,
                fleet: true,
            },
        );
        same("SET NAMES utf8", noise::Noise::Ok);
        assert!(parsed("SELECT @@max_allowed_packet,@@wait_timeout").contains("max_allowed_packet"));
        for bad in [
            "DROP TABLE x",
            "SET BACKEND 'x' WEIGHT",
            "SHOW BACKENDS EXTRA",
            "DRAIN BACKEND 'x' TIMEOUT 'soon'",
            "SET BACKEND 'x' WEIGHT 99999999999",
            "ADD BACKEND 'x' ADDRESS 'h:1' WEIGHT 99999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("SHOW TABLES").unwrap_err();
        assert!(e.contains("did you mean SHOW BACKENDS"), "{e}");
        // Every registered command's own syntax line starts with its words.
        for e in crate::admin::cmd::ALL {
            assert!(e.syntax.starts_with(&e.words.join(" ")), "{}", e.syntax);
        }
    }
}
