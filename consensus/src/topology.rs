//! The replicated state: backends, roles, states, weights, the primary and
//! its fencing epoch, and a bounded event log. Changed only by
//! [`Topology::apply`], the one reducer shared by Raft, the admin port and
//! config seeding, so every node applies the same command at the same log
//! index and ends in the same state.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Events kept in the replicated log of decisions.
pub const MAX_EVENTS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Active,
    /// No new work; sessions move at their next transaction boundary.
    Draining,
    /// Out of rotation on purpose (DBA work).
    Maintenance,
    /// A former primary: never routed to until REJOIN makes it a replica.
    Fenced,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Maintenance => "maintenance",
            BackendState::Fenced => "fenced",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub name: String,
    pub addr: String,
    pub role: Role,
    pub state: BackendState,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Raft log index of the command that produced it.
    pub index: u64,
    /// Wall-clock milliseconds on the proposing node.
    pub at_ms: u64,
    /// Node that decided.
    pub by: u64,
    pub epoch: u64,
    pub kind: String,
    pub detail: String,
}

/// A seed entry from a node's config file (first bootstrap only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedBackend {
    pub name: String,
    pub addr: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// First bootstrap: the backends from the config. Ignored once seeded.
    Seed {
        backends: Vec<SeedBackend>,
    },
    /// First primary, found by probing (the single writable backend).
    Discover {
        primary: String,
    },
    AddBackend {
        name: String,
        addr: String,
        weight: u32,
    },
    RemoveBackend {
        name: String,
    },
    SetWeight {
        name: String,
        weight: u32,
    },
    SetState {
        name: String,
        state: BackendState,
    },
    /// `(E, P) -> (E+1, None)`, P fenced; applies only if the epoch is
    /// still `expected_epoch` (so two deciders cannot fence twice).
    Fence {
        expected_epoch: u64,
    },
    /// Planned switchover: `(E, P) -> (E+1, None)` with P kept healthy
    /// (it becomes a replica of the new primary, or is restored on abort).
    Freeze {
        expected_epoch: u64,
    },
    /// `(E, None) -> (E, P')`, only under `epoch` and with no primary.
    Promote {
        epoch: u64,
        primary: String,
        /// The GTID position the new primary starts from (what it had
        /// received from the old one); a fenced server holding more diverged.
        #[serde(default)]
        from_pos: String,
        /// The primary the last Fence or Freeze took away becomes fenced
        /// too, if it is not already (a switchover resumed as a failover:
        /// it may hold writes the new primary never got).
        #[serde(default)]
        fence_deposed: bool,
        /// Servers found writable and replicating from nobody, other than
        /// the new primary: promoted by an earlier, interrupted owner of
        /// the workflow. Fenced too: they may hold writes the new primary
        /// lacks, and come back only through REJOIN's errant check.
        #[serde(default)]
        also_fenced: Vec<String>,
    },
    /// The workflow's owner is about to make `backend` writable, under
    /// `epoch` with no primary: recorded first, so an owner that resumes
    /// an interrupted workflow knows which server replicating from nobody
    /// is its own promotion (adopted) and not a server made writable by
    /// hand (fenced). Cleared by the Promote.
    Promoting {
        epoch: u64,
        backend: String,
    },
    /// A fenced former primary becomes a replica again.
    Rejoin {
        name: String,
    },
    /// Only records an event (evidence, progress of a workflow).
    Note,
    /// Node `node`, leader in Raft term `term`, takes over the promotion
    /// workflows: any other workflow still running stops at its next step
    /// (each backend side effect checks it still owns them).
    Claim {
        node: u64,
        term: u64,
        kind: String,
    },
    /// The fleet's lease length (`cluster.lease_timeout` of the leader),
    /// used by every node, so the leader's wait after a fence covers the
    /// longest lease any node can hold.
    SetLease {
        ms: u64,
    },
    /// A query rule (see [`crate::rule`]); its id must be free.
    AddRule {
        rule: crate::rule::Rule,
    },
    DropRule {
        id: u32,
    },
}

/// Who runs the promotion workflows (see [`Op::Claim`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: u64,
    pub term: u64,
    pub kind: String,
}

/// A command with who proposed it, when, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub op: Op,
    pub by: u64,
    pub at_ms: u64,
    /// Evidence or reason, kept in the event log.
    pub why: String,
    /// Random id of this proposal: a proposal retried after a timeout (the
    /// first attempt may have committed) applies once; the retry gets the
    /// first one's response. 0: no id (entries from older versions).
    #[serde(default)]
    pub id: u64,
}

impl Command {
    pub fn new(op: Op, by: u64, why: impl Into<String>) -> Self {
        Command {
            op,
            by,
            at_ms: now_ms(),
            why: why.into(),
            id: rand::random::<u64>().max(1),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The outcome of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    pub epoch: u64,
    /// Log index the command was applied at.
    pub index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Fencing token: only ever grows.
    pub epoch: u64,
    pub primary: Option<String>,
    pub backends: BTreeMap<String, Backend>,
    pub seeded: bool,
    pub events: VecDeque<Event>,
    /// Wall-clock ms of the last fence (failover cooldown).
    pub last_fence_ms: Option<u64>,
    /// GTID position the current primary was promoted from.
    #[serde(default)]
    pub promoted_from: Option<String>,
    /// Who runs the promotion workflows now.
    #[serde(default)]
    pub owner: Option<Owner>,
    /// The fleet's lease length in ms (0: not set yet, each node uses its
    /// own `cluster.lease_timeout`), and the longest older one a lease may
    /// still run under (see `apply`).
    #[serde(default)]
    pub lease_ms: u64,
    #[serde(default)]
    pub prev_lease_ms: u64,
    /// Until when (the proposers' ms clock) a lease taken under an older
    /// length may still run: changes inside that window keep the longest.
    #[serde(default)]
    pub prev_lease_until_ms: u64,
    /// Query rules by id (evaluated in id order).
    #[serde(default)]
    pub rules: BTreeMap<u32, crate::rule::Rule>,
    /// The primary the last Fence or Freeze took away, until a Promote:
    /// what a workflow resumed by another owner must fence and catch up
    /// to (other fenced backends may be older).
    #[serde(default)]
    pub deposed: Option<String>,
    /// The server an owner last started to promote under this epoch
    /// (`Op::Promoting`), until a Promote.
    #[serde(default)]
    pub promoting: Option<String>,
}

impl Topology {
    /// Applies one committed command at log `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Response {
        let res = match (&cmd.op, &self.owner) {
            // Only the node that owns the workflows promotes: a leader
            // deposed mid-switchover whose "give the old primary back"
            // reaches the new leader must not undo the new owner's work.
            (Op::Promote { .. } | Op::Promoting { .. }, Some(o))
                if o.node != cmd.by && !concord_config::testhooks::on("no-workflow-owner") =>
            {
                Response {
                    ok: false,
                    message: format!(
                        "node {} does not own the workflows (node {} runs {} in term {})",
                        cmd.by, o.node, o.kind, o.term
                    ),
                    ..Default::default()
                }
            }
            (Op::SetLease { ms }, _) if *ms != 0 => {
                // A lease taken under the old length may run its full
                // length after the change; one taken under the length
                // before that too, if the change came within it (5 s,
                // then 2 s, then 1 s within 5 s: 5 s is still live).
                if self.lease_ms == 0 {
                    self.prev_lease_ms = *ms;
                } else {
                    self.prev_lease_ms = if cmd.at_ms < self.prev_lease_until_ms {
                        self.prev_lease_ms.max(self.lease_ms)
                    } else {
                        self.lease_ms
                    };
                    self.prev_lease_until_ms = self
                        .prev_lease_until_ms
                        .max(cmd.at_ms.saturating_add(self.lease_ms));
                }
                self.reduce(&cmd.op)
            }
            _ => self.reduce(&cmd.op),
        };
        let kind = op_name(&cmd.op);
        let mut detail = res.message.clone();
        if !cmd.why.is_empty() {
            detail = format!("{detail}; {}", cmd.why);
        }
        if res.ok || !matches!(cmd.op, Op::Seed { .. }) {
            self.events.push_back(Event {
                index,
                at_ms: cmd.at_ms,
                by: cmd.by,
                epoch: self.epoch,
                kind: if res.ok {
                    kind.to_string()
                } else {
                    format!("{kind}_refused")
                },
                detail,
            });
            while self.events.len() > MAX_EVENTS {
                self.events.pop_front();
            }
        }
        if let (true, Op::AddRule { rule }) = (res.ok, &cmd.op) {
            if let Some(r) = self.rules.get_mut(&rule.id) {
                r.index = index;
            }
        }
        if res.ok && matches!(cmd.op, Op::Fence { .. } | Op::Freeze { .. }) {
            self.last_fence_ms = Some(cmd.at_ms);
        }
        Response {
            epoch: self.epoch,
            index,
            ..res
        }
    }

    fn reduce(&mut self, op: &Op) -> Response {
        let ok = |m: String| Response {
            ok: true,
            message: m,
            ..Default::default()
        };
        let no = |m: String| Response {
            ok: false,
            message: m,
            ..Default::default()
        };
        match op {
            Op::Seed { backends } => {
                if self.seeded {
                    return no("already seeded".into());
                }
                for b in backends {
                    self.backends.insert(
                        b.name.clone(),
                        Backend {
                            name: b.name.clone(),
                            addr: b.addr.clone(),
                            role: Role::Replica,
                            state: BackendState::Active,
                            weight: b.weight,
                        },
                    );
                }
                self.seeded = true;
                ok(format!("seeded {} backends", backends.len()))
            }
            Op::Discover { primary } => {
                if self.epoch != 0 || self.primary.is_some() {
                    return no(format!(
                        "a primary was already chosen (epoch {})",
                        self.epoch
                    ));
                }
                let Some(b) = self.backends.get_mut(primary) else {
                    return no(format!("unknown backend '{primary}'"));
                };
                b.role = Role::Primary;
                self.primary = Some(primary.clone());
                self.epoch = 1;
                ok(format!("discovered primary '{primary}'"))
            }
            Op::AddBackend { name, addr, weight } => {
                if self.backends.contains_key(name) {
                    return no(format!("backend '{name}' already exists"));
                }
                if self.backends.values().any(|b| &b.addr == addr) {
                    return no(format!("address {addr} is already used by another backend"));
                }
                self.backends.insert(
                    name.clone(),
                    Backend {
                        name: name.clone(),
                        addr: addr.clone(),
                        role: Role::Replica,
                        state: BackendState::Active,
                        weight: *weight,
                    },
                );
                ok(format!("added backend '{name}' at {addr}"))
            }
            Op::RemoveBackend { name } => {
                if self.primary.as_deref() == Some(name) {
                    return no(format!("'{name}' is the primary; switch over first"));
                }
                if self.promoting.as_deref() == Some(name) {
                    self.promoting = None;
                }
                match self.backends.remove(name) {
                    Some(_) => ok(format!("removed backend '{name}'")),
                    None => no(format!("unknown backend '{name}'")),
                }
            }
            Op::SetWeight { name, weight } => match self.backends.get_mut(name) {
                Some(b) => {
                    b.weight = *weight;
                    ok(format!("backend '{name}' weight {weight}"))
                }
                None => no(format!("unknown backend '{name}'")),
            },
            Op::SetState { name, state } => match self.backends.get_mut(name) {
                Some(b) if b.state == BackendState::Fenced => no(format!(
                    "backend '{name}' is fenced; REJOIN BACKEND '{name}' makes it a replica first"
                )),
                // The primary cannot be drained or put in maintenance: writes
                // have nowhere else to go, so the drain would only time out.
                Some(_)
                    if self.primary.as_deref() == Some(name.as_str())
                        && *state != BackendState::Active =>
                {
                    no(format!(
                        "backend '{name}' is the primary; SWITCHOVER TO another backend first, then {} '{name}'",
                        if *state == BackendState::Draining { "DRAIN" } else { "MAINTENANCE" }
                    ))
                }
                Some(b) => {
                    b.state = *state;
                    ok(format!("backend '{name}' is {}", state.as_str()))
                }
                None => no(format!("unknown backend '{name}'")),
            },
            Op::Fence { expected_epoch } => {
                if *expected_epoch != self.epoch {
                    return no(format!(
                        "stale fence: expected epoch {expected_epoch}, current is {}",
                        self.epoch
                    ));
                }
                self.epoch += 1;
                let old = self.primary.take();
                if let Some(b) = old.as_ref().and_then(|n| self.backends.get_mut(n)) {
                    b.state = BackendState::Fenced;
                }
                if old.is_some() {
                    self.deposed.clone_from(&old);
                }
                ok(format!(
                    "fenced {}; epoch {}",
                    old.map(|n| format!("'{n}'"))
                        .unwrap_or_else(|| "no primary".into()),
                    self.epoch
                ))
            }
            Op::Freeze { expected_epoch } => {
                if *expected_epoch != self.epoch {
                    return no(format!(
                        "stale switchover: expected epoch {expected_epoch}, current is {}",
                        self.epoch
                    ));
                }
                self.epoch += 1;
                let old = self.primary.take();
                if old.is_some() {
                    self.deposed.clone_from(&old);
                }
                ok(format!(
                    "writes held for a switchover away from {}; epoch {}",
                    old.map(|n| format!("'{n}'"))
                        .unwrap_or_else(|| "no primary".into()),
                    self.epoch
                ))
            }
            Op::Promote {
                epoch,
                primary,
                from_pos,
                fence_deposed,
                also_fenced,
            } => {
                if let Err(why) = self.promotable(*epoch, primary) {
                    return no(why);
                }
                let Some(b) = self.backends.get_mut(primary) else {
                    return no(format!("unknown backend '{primary}'"));
                };
                b.role = Role::Primary;
                b.state = BackendState::Active;
                for (n, other) in self.backends.iter_mut() {
                    if n != primary && other.role == Role::Primary {
                        other.role = Role::Replica;
                    }
                }
                self.primary = Some(primary.clone());
                self.promoting = None;
                self.promoted_from = (!from_pos.is_empty()).then(|| from_pos.clone());
                if let Some(d) = self.deposed.take().filter(|d| d != primary) {
                    if let Some(b) = self.backends.get_mut(&d).filter(|_| *fence_deposed) {
                        b.state = BackendState::Fenced;
                    }
                }
                for n in also_fenced.iter().filter(|n| *n != primary) {
                    if let Some(b) = self.backends.get_mut(n) {
                        b.state = BackendState::Fenced;
                        b.role = Role::Replica;
                    }
                }
                ok(format!("promoted '{primary}' under epoch {epoch}"))
            }
            Op::Promoting { epoch, backend } => match self.promotable(*epoch, backend) {
                Ok(()) => {
                    self.promoting = Some(backend.clone());
                    ok(format!("promoting '{backend}' under epoch {epoch}"))
                }
                Err(why) => no(why),
            },
            Op::Rejoin { name } => match self.backends.get_mut(name) {
                Some(b) if b.state == BackendState::Fenced => {
                    b.state = BackendState::Active;
                    b.role = Role::Replica;
                    ok(format!("'{name}' rejoined as a replica"))
                }
                Some(_) => no(format!("backend '{name}' is not fenced")),
                None => no(format!("unknown backend '{name}'")),
            },
            Op::Note => ok(String::new()),
            Op::Claim { node, term, kind } => {
                self.owner = Some(Owner {
                    node: *node,
                    term: *term,
                    kind: kind.clone(),
                });
                ok(format!("node {node} (term {term}) runs the {kind} workflow"))
            }
            Op::SetLease { ms } => {
                if *ms == 0 {
                    return no("a lease of 0 ms".into());
                }
                self.lease_ms = *ms;
                ok(format!("the fleet's lease is {ms} ms"))
            }
            Op::AddRule { rule } => {
                if self.rules.contains_key(&rule.id) {
                    return no(format!("rule {} exists; DROP RULE {} first", rule.id, rule.id));
                }
                if self.rules.len() >= crate::rule::MAX_RULES {
                    return no(format!("at most {} rules", crate::rule::MAX_RULES));
                }
                if let Err(e) = rule.check() {
                    return no(e);
                }
                self.rules.insert(rule.id, rule.clone());
                ok(format!("rule {} added: {}", rule.id, rule.action.describe()))
            }
            Op::DropRule { id } => match self.rules.remove(id) {
                Some(_) => ok(format!("rule {id} dropped")),
                None => no(format!("no rule {id}")),
            },
        }
    }

    /// The longest lease a node may hold now (ms): the fleet's length and
    /// the longest older one that may still run (0 if never set).
    pub fn longest_lease_ms(&self) -> u64 {
        self.lease_ms.max(self.prev_lease_ms)
    }

    /// Why `name` cannot be promoted under `epoch` now, if it cannot (the
    /// rule a Promote and its Promoting record share).
    pub fn promotable(&self, epoch: u64, name: &str) -> Result<(), String> {
        if epoch != self.epoch {
            return Err(format!(
                "stale promotion for epoch {epoch}, current is {}",
                self.epoch
            ));
        }
        if let Some(p) = &self.primary {
            return Err(format!("'{p}' is already the primary of epoch {epoch}"));
        }
        match self.backends.get(name) {
            Some(b) if b.state == BackendState::Fenced => Err(format!("'{name}' is fenced")),
            Some(_) => Ok(()),
            None => Err(format!("unknown backend '{name}'")),
        }
    }

    pub fn primary_backend(&self) -> Option<&Backend> {
        self.primary.as_ref().and_then(|p| self.backends.get(p))
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Seed { .. } => "seed",
        Op::Discover { .. } => "discover",
        Op::AddBackend { .. } => "add_backend",
        Op::RemoveBackend { .. } => "remove_backend",
        Op::SetWeight { .. } => "set_weight",
        Op::SetState { .. } => "set_state",
        Op::Fence { .. } => "fence",
        Op::Freeze { .. } => "freeze",
        Op::Promote { .. } => "promote",
        Op::Promoting { .. } => "promoting",
        Op::Rejoin { .. } => "rejoin",
        Op::Note => "note",
        Op::Claim { .. } => "claim",
        Op::SetLease { .. } => "set_lease",
        Op::AddRule { .. } => "add_rule",
        Op::DropRule { .. } => "drop_rule",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: Op) -> Command {
        Command::new(op, 1, "")
    }

    fn seeded() -> Topology {
        let mut t = Topology::default();
        let seed = |n: &str, a: &str| SeedBackend {
            name: n.into(),
            addr: a.into(),
            weight: 100,
        };
        let r = t.apply(
            1,
            &cmd(Op::Seed {
                backends: vec![seed("a", "h:1"), seed("b", "h:2"), seed("c", "h:3")],
            }),
        );
        assert!(r.ok);
        assert!(
            t.apply(
                2,
                &cmd(Op::Discover {
                    primary: "a".into()
                })
            )
            .ok
        );
        t
    }

    #[test]
    fn every_lease_length_that_may_still_run_is_waited_for() {
        let mut t = seeded();
        let set = |ms, at_ms| Command {
            at_ms,
            ..Command::new(Op::SetLease { ms }, 1, "")
        };
        assert!(t.apply(3, &set(5000, 1_000)).ok);
        assert_eq!(t.longest_lease_ms(), 5000);
        // Lowered twice within the first length's window.
        assert!(t.apply(4, &set(2000, 1_100)).ok);
        assert!(t.apply(5, &set(1000, 1_200)).ok);
        assert_eq!(t.longest_lease_ms(), 5000);
        // Long after: only the last old length counts.
        assert!(t.apply(6, &set(1500, 60_000)).ok);
        assert_eq!(t.longest_lease_ms(), 1500);
    }

    #[test]
    fn only_the_owner_of_the_workflows_promotes() {
        let mut t = seeded();
        let claim = |node| {
            Command::new(
                Op::Claim {
                    node,
                    term: node,
                    kind: "switchover".into(),
                },
                node,
                "",
            )
        };
        assert!(t.apply(3, &claim(1)).ok);
        assert!(t.apply(4, &cmd(Op::Freeze { expected_epoch: 1 })).ok);
        // Node 2 takes the workflows over; node 1's late restore of "a".
        assert!(t.apply(5, &claim(2)).ok);
        let promote = |name: &str, by| {
            Command::new(
                Op::Promote {
                    epoch: 2,
                    primary: name.into(),
                    from_pos: String::new(),
                    fence_deposed: false,
                    also_fenced: Vec::new(),
                },
                by,
                "",
            )
        };
        let r = t.apply(6, &promote("a", 1));
        assert!(!r.ok, "{}", r.message);
        assert_eq!(t.primary, None);
        assert!(t.apply(7, &promote("b", 2)).ok);
        assert_eq!(t.primary.as_deref(), Some("b"));
    }

    #[test]
    fn the_server_being_promoted_is_recorded_until_the_promotion() {
        let mut t = seeded();
        let promoting = |epoch, name: &str| {
            cmd(Op::Promoting {
                epoch,
                backend: name.into(),
            })
        };
        // With a primary, or under another epoch: refused.
        assert!(!t.apply(3, &promoting(1, "b")).ok);
        assert!(t.apply(4, &cmd(Op::Fence { expected_epoch: 1 })).ok);
        assert!(!t.apply(5, &promoting(1, "b")).ok);
        assert!(!t.apply(6, &promoting(2, "gone")).ok);
        assert_eq!(t.promoting, None);
        assert!(t.apply(7, &promoting(2, "b")).ok);
        assert_eq!(t.promoting.as_deref(), Some("b"));
        // Another owner's record is refused like its Promote.
        let claim = Command::new(
            Op::Claim {
                node: 2,
                term: 2,
                kind: "resume".into(),
            },
            2,
            "",
        );
        assert!(t.apply(8, &claim).ok);
        assert!(!t.apply(9, &promoting(2, "c")).ok);
        assert_eq!(t.promoting.as_deref(), Some("b"));
        let promote = Command::new(
            Op::Promote {
                epoch: 2,
                primary: "b".into(),
                from_pos: String::new(),
                fence_deposed: false,
                also_fenced: Vec::new(),
            },
            2,
            "",
        );
        assert!(t.apply(10, &promote).ok);
        assert_eq!(t.promoting, None);
    }

    #[test]
    fn a_promotion_fences_the_strays_it_names_but_never_its_primary() {
        let mut t = seeded();
        assert!(t.apply(3, &cmd(Op::Fence { expected_epoch: 1 })).ok);
        let r = t.apply(
            4,
            &cmd(Op::Promote {
                epoch: 2,
                primary: "b".into(),
                from_pos: String::new(),
                fence_deposed: false,
                also_fenced: vec!["c".into(), "b".into(), "gone".into()],
            }),
        );
        assert!(r.ok, "{}", r.message);
        assert_eq!(t.primary.as_deref(), Some("b"));
        assert_eq!(t.backends["b"].state, BackendState::Active);
        assert_eq!(t.backends["c"].state, BackendState::Fenced);
        // A log entry written before the field existed reads as none.
        let old: Op = serde_json::from_str(
            r#"{"Promote":{"epoch":3,"primary":"c","from_pos":"","fence_deposed":false}}"#,
        )
        .unwrap();
        assert!(matches!(old, Op::Promote { also_fenced, .. } if also_fenced.is_empty()));
    }

    #[test]
    fn fence_then_promote_moves_the_epoch_forward_once() {
        let mut t = seeded();
        assert_eq!((t.epoch, t.primary.as_deref()), (1, Some("a")));
        let r = t.apply(3, &cmd(Op::Fence { expected_epoch: 1 }));
        assert!(r.ok);
        assert_eq!((t.epoch, t.primary.as_deref()), (2, None));
        assert_eq!(t.backends["a"].state, BackendState::Fenced);
        // A second decider with the old epoch is refused.
        assert!(!t.apply(4, &cmd(Op::Fence { expected_epoch: 1 })).ok);
        assert_eq!(t.epoch, 2);
        assert!(
            !t.apply(
                5,
                &cmd(Op::Promote {
                    epoch: 1,
                    primary: "b".into(),
                    from_pos: String::new(),
                    fence_deposed: false,
                    also_fenced: Vec::new(),
                })
            )
            .ok
        );
        assert!(
            !t.apply(
                6,
                &cmd(Op::Promote {
                    epoch: 2,
                    primary: "a".into(),
                    from_pos: String::new(),
                    fence_deposed: false,
                    also_fenced: Vec::new(),
                })
            )
            .ok,
            "fenced"
        );
        assert!(
            t.apply(
                7,
                &cmd(Op::Promote {
                    epoch: 2,
                    primary: "b".into(),
                    from_pos: String::new(),
                    fence_deposed: false,
                    also_fenced: Vec::new(),
                })
            )
            .ok
        );
        assert_eq!(t.primary.as_deref(), Some("b"));
        assert_eq!(t.backends["b"].role, Role::Primary);
        assert_eq!(t.backends["a"].role, Role::Replica);
        assert!(
            !t.apply(
                8,
                &cmd(Op::SetState {
                    name: "a".into(),
                    state: BackendState::Active
                })
            )
            .ok
        );
        assert!(t.apply(9, &cmd(Op::Rejoin { name: "a".into() })).ok);
        assert_eq!(t.backends["a"].state, BackendState::Active);
    }

    #[test]
    fn seed_and_discover_only_once() {
        let mut t = seeded();
        assert!(!t.apply(3, &cmd(Op::Seed { backends: vec![] })).ok);
        assert!(
            !t.apply(
                4,
                &cmd(Op::Discover {
                    primary: "b".into()
                })
            )
            .ok
        );
        assert_eq!(t.primary.as_deref(), Some("a"));
    }

    #[test]
    fn backend_admin_ops() {
        let mut t = seeded();
        assert!(
            t.apply(
                3,
                &cmd(Op::AddBackend {
                    name: "d".into(),
                    addr: "h:4".into(),
                    weight: 5
                })
            )
            .ok
        );
        assert!(
            !t.apply(
                4,
                &cmd(Op::AddBackend {
                    name: "e".into(),
                    addr: "h:4".into(),
                    weight: 5
                })
            )
            .ok
        );
        assert!(
            t.apply(
                5,
                &cmd(Op::SetWeight {
                    name: "d".into(),
                    weight: 7
                })
            )
            .ok
        );
        assert_eq!(t.backends["d"].weight, 7);
        assert!(
            !t.apply(6, &cmd(Op::RemoveBackend { name: "a".into() })).ok,
            "primary"
        );
        assert!(t.apply(7, &cmd(Op::RemoveBackend { name: "d".into() })).ok);
        for state in [BackendState::Draining, BackendState::Maintenance] {
            let r = t.apply(
                7,
                &cmd(Op::SetState {
                    name: "a".into(),
                    state,
                }),
            );
            assert!(!r.ok && r.message.contains("SWITCHOVER"), "{}", r.message);
        }
        assert!(
            t.apply(
                8,
                &cmd(Op::SetState {
                    name: "b".into(),
                    state: BackendState::Draining
                })
            )
            .ok
        );
        assert_eq!(t.backends["b"].state, BackendState::Draining);
    }

    #[test]
    fn event_log_is_bounded() {
        let mut t = seeded();
        for i in 0..(MAX_EVENTS as u64 + 50) {
            t.apply(10 + i, &cmd(Op::Note));
        }
        assert_eq!(t.events.len(), MAX_EVENTS);
        assert_eq!(
            t.events.back().map(|e| e.index),
            Some(10 + MAX_EVENTS as u64 + 49)
        );
    }
}
