//! Query rules applied to one statement (see `crate::rules`): a block
//! answers it, the other actions act as the matching hints would.

use super::Session;
use crate::classify::Class;
use crate::error::SessionError;
use crate::rules::Effect;
use concord_protocol::codes;

impl Session {
    /// What the node's rules say about a statement with this fingerprint,
    /// or `None` without rules (nothing is matched then).
    pub(super) fn rule_effect(&self, digest: u64, text: &[u8]) -> Option<Effect> {
        let routing = self.shared.routing.load();
        if routing.rules.is_empty() {
            return None;
        }
        Some(routing.rules.apply(
            digest,
            text,
            &self.user.name,
            self.state.db.as_deref().unwrap_or(""),
        ))
    }

    /// Applies an effect to the statement's class and timeout. A rule's
    /// timeout replaces the user's or global one (a hint can still only
    /// shorten it); a rule's max lag and the statement's own hint: the
    /// stricter.
    pub(super) fn apply_rules(&mut self, e: Effect, class: &mut Class) -> Result<(), SessionError> {
        if let Some((id, message)) = e.block {
            crate::metrics::rule_blocked();
            return Err(SessionError::reply(
                codes::NOT_ALLOWED_COMMAND,
                format!("concord: statement blocked by query rule {id}: {message}"),
            ));
        }
        if e.route_primary {
            class.hint_primary = true;
        }
        if e.route_replica {
            class.rule_replica = true;
        }
        if let Some(l) = e.max_lag {
            class.hint_max_lag = Some(class.hint_max_lag.map_or(l, |h| h.min(l)));
        }
        if let Some(t) = e.timeout {
            self.stmt_timeout = super::deadline::hinted(Some(t), class.hint_timeout);
        }
        Ok(())
    }
}
