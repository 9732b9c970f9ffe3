//! `ADD RULE n [USER 'u'] [SCHEMA 's'] [DIGEST 'hex'] [MATCH 'regex']
//! action` and `DROP RULE n`: query rules, committed through Raft (see
//! `concord_consensus::rule` and `crate::rules`).

use crate::admin::command::{propose, Command, Ctx, Entry};
use crate::admin::parse::P;
use crate::admin::Output;
use concord_consensus::rule::Action;
use concord_consensus::{Op, Rule};
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub enum RuleChange {
    Add(Rule),
    Drop { id: u32 },
}

pub const ADD: Entry = Entry {
    words: &["ADD", "RULE"],
    syntax: "ADD RULE n [USER 'u'] [SCHEMA 's'] [DIGEST 'hex'] [MATCH 'regex'] ROUTE PRIMARY|ROUTE REPLICA|BLOCK ['message']|TIMEOUT '2s'|MAX_LAG '1s'",
    parse: |p| Ok(Box::new(RuleChange::Add(add_rule(p)?))),
};

pub const DROP: Entry = Entry {
    words: &["DROP", "RULE"],
    syntax: "DROP RULE n",
    parse: |p| {
        let id = p.num("the rule id")?;
        Ok(Box::new(RuleChange::Drop {
            id: u32::try_from(id).map_err(|_| "rule id too large".to_string())?,
        }))
    },
};

impl Command for RuleChange {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        let op = match *self {
            RuleChange::Add(rule) => Op::AddRule { rule },
            RuleChange::Drop { id } => Op::DropRule { id },
        };
        Box::pin(propose(cx.shared, op))
    }
}

/// `ADD RULE` after its two words.
fn add_rule(p: &mut P) -> Result<Rule, String> {
    let id = u32::try_from(p.num("the rule id")?).map_err(|_| "rule id too large".to_string())?;
    let mut rule = Rule {
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
        let message = if p.at_string() {
            p.quoted("the message")?
        } else {
            "this statement is blocked on this fleet".to_string()
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
