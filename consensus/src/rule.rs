//! Query rules: small typed data committed through Raft, so every node
//! applies the same rules from the same log index. Matching and the
//! compiled form live in the proxy (`concord_proxy::rules`); here is only
//! what is replicated and the checks that keep it bounded.

use serde::{Deserialize, Serialize};

/// At most this many rules (the rule set is replicated state).
pub const MAX_RULES: usize = 1000;
/// Longest pattern, name or message, in bytes.
pub const MAX_TEXT: usize = 1024;

/// One rule: which statements, and what to do with them. Every condition
/// given must hold; a rule with none matches every statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    /// The statement's fingerprint hash (the `digest` column of SHOW
    /// CONCORD DIGESTS).
    #[serde(default)]
    pub digest: Option<u64>,
    /// A regular expression searched in the normalized text (the
    /// `fingerprint` column).
    #[serde(default)]
    pub pattern: Option<String>,
    pub action: Action,
    /// The Raft log index the rule was committed at (set when applied).
    #[serde(default)]
    pub index: u64,
}

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run it on the primary.
    RoutePrimary,
    /// A read may run on a replica even when `routing.split_reads` is
    /// off. A statement that must run on the primary (a write, a locking
    /// read, one inside a transaction) is never moved.
    RouteReplica,
    /// Refuse it with this message (error 1148, SQLSTATE 42000).
    Block { message: String },
    /// Kill it on its server after this long (as `statement_timeout`).
    TimeoutMs(u64),
    /// Read it only from a replica at most this far behind.
    MaxLagMs(u64),
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::RoutePrimary => "ROUTE PRIMARY".into(),
            Action::RouteReplica => "ROUTE REPLICA".into(),
            Action::Block { message } => format!("BLOCK '{message}'"),
            Action::TimeoutMs(ms) => format!("TIMEOUT '{ms}ms'"),
            Action::MaxLagMs(ms) => format!("MAX_LAG '{ms}ms'"),
        }
    }
}

impl Rule {
    /// Size and shape limits (checked by the proposer and again when the
    /// command applies, so a bad entry cannot grow the state).
    pub fn check(&self) -> Result<(), String> {
        let long = [
            self.user.as_deref(),
            self.schema.as_deref(),
            self.pattern.as_deref(),
            match &self.action {
                Action::Block { message } => Some(message.as_str()),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .any(|t| t.len() > MAX_TEXT);
        if long {
            return Err(format!("a rule's texts are at most {MAX_TEXT} bytes"));
        }
        match self.action {
            Action::TimeoutMs(0) => Err("TIMEOUT must be more than 0".into()),
            _ => Ok(()),
        }
    }
}
