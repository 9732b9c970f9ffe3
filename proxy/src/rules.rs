//! Query rules as this node applies them: the rule set committed through
//! Raft (`concord_consensus::rule`), compiled once per change and kept in
//! the routing snapshot, so a session reads the rules of the same applied
//! log index its routing comes from. Matching costs nothing while there
//! are no rules; with rules, one pass over them per statement, on the
//! fingerprint the digests already compute.

use concord_consensus::rule::{Action, Rule};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Compiled patterns are capped, so a hostile pattern cannot take the
/// node's memory (the regex crate matches in linear time).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub struct Compiled {
    pub rule: Rule,
    re: Option<regex::bytes::Regex>,
    /// Statements this rule matched on this node.
    pub hits: Arc<AtomicU64>,
}

/// The node's compiled rules, in id order.
#[derive(Default)]
pub struct Rules {
    pub list: Vec<Compiled>,
}

/// What the matching rules say about one statement. Each kind of action
/// comes from the lowest-numbered rule that has it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// (rule id, message)
    pub block: Option<(u32, String)>,
    pub route_primary: bool,
    pub route_replica: bool,
    pub timeout: Option<Duration>,
    pub max_lag: Option<Duration>,
}

/// Compiles a pattern as a rule does (the admin port checks with it
/// before proposing).
pub fn compile(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("MATCH pattern: {e}"))
}

impl Rules {
    /// The rules for `defs`: `old` itself when they did not change, else
    /// compiled again, keeping the hit counts of rules that stayed.
    pub fn rebuild(old: &Arc<Rules>, defs: &BTreeMap<u32, Rule>) -> Arc<Rules> {
        if old.list.len() == defs.len()
            && old
                .list
                .iter()
                .zip(defs.values())
                .all(|(a, b)| a.rule == *b)
        {
            return old.clone();
        }
        let list = defs
            .values()
            .map(|rule| {
                let hits = old
                    .list
                    .iter()
                    .find(|c| c.rule == *rule)
                    .map_or_else(Default::default, |c| c.hits.clone());
                let re = rule.pattern.as_deref().and_then(|p| match compile(p) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(rule = rule.id, "rule not applied on this node: {e}");
                        None
                    }
                });
                Compiled {
                    rule: rule.clone(),
                    re,
                    hits,
                }
            })
            .collect();
        Arc::new(Rules { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Matches one statement: its fingerprint hash and text, user and
    /// current schema.
    pub fn apply(&self, digest: u64, text: &[u8], user: &str, schema: &str) -> Effect {
        let mut e = Effect::default();
        for c in &self.list {
            let r = &c.rule;
            let matched = r.digest.is_none_or(|d| d == digest)
                && r.user.as_deref().is_none_or(|u| u == user)
                && r.schema.as_deref().is_none_or(|s| s == schema)
                && match (&r.pattern, &c.re) {
                    (None, _) => true,
                    (Some(_), Some(re)) => re.is_match(text),
                    // A pattern this node could not compile matches nothing.
                    (Some(_), None) => false,
                };
            if !matched {
                continue;
            }
            c.hits.fetch_add(1, Ordering::Relaxed);
            match &r.action {
                Action::Block { message } => {
                    e.block.get_or_insert_with(|| (r.id, message.clone()));
                }
                Action::RoutePrimary if !e.route_replica => e.route_primary = true,
                Action::RouteReplica if !e.route_primary => e.route_replica = true,
                Action::TimeoutMs(ms) => {
                    e.timeout.get_or_insert(Duration::from_millis(*ms));
                }
                Action::MaxLagMs(ms) => {
                    e.max_lag.get_or_insert(Duration::from_millis(*ms));
                }
                _ => {}
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: u32, action: Action) -> Rule {
        Rule {
            id,
            user: None,
            schema: None,
            digest: None,
            pattern: None,
            action,
            index: 0,
        }
    }

    #[test]
    fn the_lowest_numbered_rule_decides_each_kind_of_action() {
        let mut defs = BTreeMap::new();
        let mut a = rule(1, Action::TimeoutMs(100));
        a.user = Some("app".into());
        defs.insert(1, a);
        let mut b = rule(2, Action::TimeoutMs(5000));
        b.pattern = Some("^select .* from big".into());
        defs.insert(2, b);
        let mut c = rule(
            3,
            Action::Block {
                message: "no".into(),
            },
        );
        c.digest = Some(42);
        defs.insert(3, c);
        defs.insert(4, rule(4, Action::RoutePrimary));
        defs.insert(5, rule(5, Action::RouteReplica));
        let rules = Rules::rebuild(&Arc::default(), &defs);
        let e = rules.apply(7, b"select a from big where id = ?", "app", "");
        assert_eq!(e.timeout, Some(Duration::from_millis(100)));
        assert!(e.route_primary && !e.route_replica && e.block.is_none());
        let e = rules.apply(42, b"select a from big where id = ?", "etl", "s");
        assert_eq!(e.timeout, Some(Duration::from_millis(5000)));
        assert_eq!(e.block, Some((3, "no".into())));
        let hits: Vec<u64> = rules
            .list
            .iter()
            .map(|c| c.hits.load(Ordering::Relaxed))
            .collect();
        assert_eq!(hits, [1, 2, 1, 2, 2]);
        // Unchanged: the same compiled set, counts kept.
        let again = Rules::rebuild(&rules, &defs);
        assert!(Arc::ptr_eq(&rules, &again));
        defs.remove(&1);
        let fewer = Rules::rebuild(&rules, &defs);
        assert_eq!(
            fewer.list[0].hits.load(Ordering::Relaxed),
            2,
            "rule 2 kept its count"
        );
    }

    #[test]
    fn a_pattern_too_large_is_refused_not_compiled() {
        assert!(compile("(a|b)").is_ok());
        assert!(compile("((").is_err());
        assert!(compile("\\w{1000}{1000}").is_err(), "over the size limit");
    }
}
