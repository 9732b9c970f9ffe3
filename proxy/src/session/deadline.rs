//! How long a statement and a transaction may run: `statement_timeout`
//! (global, per user, per statement by hint) and `transaction_timeout`
//! (global, per user). The relay kills a statement past either deadline
//! on its server; a transaction past its own is rolled back by closing its
//! server connection, and the client hears why at its next statement.

use super::conns::Which;
use super::relay::Timeout;
use super::Session;
use std::time::{Duration, Instant};

/// The open transaction's deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum TxnClock {
    /// No transaction open.
    #[default]
    Off,
    /// Open, with no `transaction_timeout`.
    Untimed,
    /// Open since `since`; rolled back at `since + limit`.
    Until { since: Instant, limit: Duration },
}

impl TxnClock {
    pub(super) fn at(self) -> Option<Instant> {
        match self {
            TxnClock::Until { since, limit } => Some(since + limit),
            _ => None,
        }
    }
}

impl Session {
    /// The statement timeout of a command without a hint: the user's,
    /// else `listener.statement_timeout` (zero: none).
    pub(super) fn default_timeout(&self) -> Option<Duration> {
        let t = match self.user.statement_timeout {
            Some(t) => t.get(),
            None => self.cfg.listener.statement_timeout.get(),
        };
        (!t.is_zero()).then_some(t)
    }

    /// The user's `transaction_timeout`, else the listener's (zero: none).
    fn txn_timeout(&self) -> Option<Duration> {
        let t = match self.user.transaction_timeout {
            Some(t) => t.get(),
            None => self.cfg.listener.transaction_timeout.get(),
        };
        (!t.is_zero()).then_some(t)
    }

    /// When the statement being sent is cut off: its own timeout (from
    /// when it is sent), or its transaction's fixed deadline, whichever
    /// comes first. A statement that ends the transaction (COMMIT,
    /// ROLLBACK, BEGIN) is never cut off by it: a COMMIT killed mid-flush
    /// could be durable while the client hears "rolled back". With
    /// autocommit off, the statement that opens a transaction counts from
    /// its own arrival.
    pub(super) fn deadline(&self) -> Option<Timeout> {
        let own = self.stmt_timeout.map(|limit| Timeout {
            limit,
            txn: None,
            at: None,
        });
        if self.txn_boundary {
            return own;
        }
        let (since, limit) = match (self.txn_clock, self.txn.is_some()) {
            (TxnClock::Until { since, limit }, true) => (since, limit),
            (TxnClock::Off, false) if !self.state.autocommit => match self.txn_timeout() {
                Some(limit) => (self.cmd_at, limit),
                None => return own,
            },
            _ => return own,
        };
        let at = since + limit;
        let left = at.saturating_duration_since(self.cmd_at);
        match own {
            Some(o) if o.limit <= left => Some(o),
            _ => Some(Timeout {
                limit: left,
                txn: Some(limit),
                at: Some(at),
            }),
        }
    }

    /// After each command: starts the transaction's clock when one opened
    /// (at the arrival of the command that opened it), stops it when it
    /// ended, and rolls back one that ran past its deadline.
    pub(super) fn tick_txn_clock(&mut self) {
        if self.txn_boundary && !concord_config::testhooks::on("txn-clock-no-restart") {
            // Whatever is open now began with this command.
            self.txn_clock = TxnClock::Off;
        }
        if std::mem::take(&mut self.deadlocked) {
            // The server rolled the transaction back; no clock runs until
            // the client begins again.
            self.txn_clock = TxnClock::Untimed;
            return;
        }
        match (self.txn.is_some(), self.txn_clock) {
            (false, _) => self.txn_clock = TxnClock::Off,
            (true, TxnClock::Off) => {
                self.txn_clock = match self.txn_timeout() {
                    Some(limit) => TxnClock::Until {
                        since: self.cmd_at,
                        limit,
                    },
                    None => TxnClock::Untimed,
                }
            }
            (true, TxnClock::Until { since, limit }) => {
                if since.elapsed() >= limit {
                    self.end_timed_out_txn(limit);
                }
            }
            (true, TxnClock::Untimed) => {}
        }
    }

    /// A command arriving after its transaction's deadline (just as the
    /// idle watch was to fire) does not run in it.
    pub(super) fn expire_txn_at_arrival(&mut self) {
        if let TxnClock::Until { since, limit } = self.txn_clock {
            if self.txn.is_some() && self.cmd_at >= since + limit {
                self.end_timed_out_txn(limit);
            }
        }
    }

    /// The transaction passed `transaction_timeout`: its server connection
    /// is closed (the server rolls the transaction back and frees its
    /// locks) and everything but ROLLBACK fails until the client
    /// acknowledges it, so no later statement runs outside the
    /// transaction the client thinks it is in.
    pub(super) fn end_timed_out_txn(&mut self, limit: Duration) {
        let w = self.txn.unwrap_or(Which::Primary);
        tracing::info!(
            session = self.info.id,
            "transaction_timeout of {limit:?} passed; rolling the transaction back"
        );
        crate::metrics::transaction_timeout();
        if concord_config::testhooks::on("txn-timeout-keeps-txn") {
            self.txn_clock = TxnClock::Untimed;
            return;
        }
        self.drop_conn(w);
        // `take_conn` marked the transaction lost; say why.
        self.txn_timed_out = Some(limit);
        self.txn_clock = TxnClock::Off;
    }
}

/// Applies a `/* concord:timeout=... */` hint: it can only shorten the
/// limit (0 is ignored).
pub(super) fn hinted(default: Option<Duration>, hint: Option<Duration>) -> Option<Duration> {
    match hint.filter(|h| !h.is_zero()) {
        Some(h) => Some(default.map_or(h, |d| d.min(h))),
        None => default,
    }
}

impl Session {
    /// A statement after `transaction_timeout` rolled the transaction
    /// back: ROLLBACK acknowledges it; COMMIT and anything else are told
    /// what happened (1969, naming the key).
    pub(super) async fn while_txn_timed_out(
        &mut self,
        kind: Option<crate::classify::Kind>,
        limit: Duration,
    ) -> Result<(), (crate::error::SessionError, u8)> {
        use crate::classify::Kind;
        use concord_protocol::{codes, err::ErrPacket};
        let said = |msg: String| {
            Err((
                crate::error::SessionError::Reply(ErrPacket::new(codes::STATEMENT_TIMEOUT, msg)),
                1,
            ))
        };
        match kind {
            Some(Kind::Rollback) => {
                self.txn_lost = false;
                self.txn_timed_out = None;
                self.send_ok().await
            }
            Some(Kind::Commit) => {
                self.txn_lost = false;
                self.txn_timed_out = None;
                said(format!("COMMIT failed: concord rolled this transaction back when it passed transaction_timeout of {limit:?}; nothing was committed"))
            }
            _ => said(format!("concord rolled this transaction back: it was open longer than transaction_timeout of {limit:?} (listener.transaction_timeout or the user's). The statement was not executed; issue ROLLBACK and retry the transaction")),
        }
    }
}
