//! Where a statement goes: a pure function of the statement's class, the
//! session's facts and the routing snapshot. Every decision carries a
//! reason, counted in metrics, so "why did this read go to the primary"
//! always has an answer.

use crate::classify::{flag, Class, Kind};
use crate::routing::Routing;
use concord_config::testhooks;
use concord_config::Fallback;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Writes, DDL, anything not known to be a plain read.
    Write,
    /// Inside a transaction (or autocommit=0).
    Transaction,
    /// FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE.
    Locking,
    /// GET_LOCK, LAST_INSERT_ID, NEXTVAL, FOUND_ROWS, ... or SELECT INTO.
    ConnectionBound,
    /// `/* concord:primary */`.
    Hint,
    /// Temp tables, LOCK TABLES, user variables assigned in queries.
    Pinned,
    /// Session-state statements run where the session's writes run.
    SessionState,
    /// A plain read on a replica within the lag bound.
    Read,
    /// A read with no replica within the bound: fallback to the primary.
    NoReplica,
    /// Read-your-writes: no replica has applied the session's last write.
    ReadYourWrites,
    /// `[routing] split_reads = false`.
    SplitOff,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Write,
        Reason::Transaction,
        Reason::Locking,
        Reason::ConnectionBound,
        Reason::Hint,
        Reason::Pinned,
        Reason::SessionState,
        Reason::Read,
        Reason::NoReplica,
        Reason::ReadYourWrites,
        Reason::SplitOff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::Transaction => "transaction",
            Reason::Locking => "locking_read",
            Reason::ConnectionBound => "connection_bound",
            Reason::Hint => "hint_primary",
            Reason::Pinned => "pinned_session",
            Reason::SessionState => "session_state",
            Reason::Read => "read",
            Reason::NoReplica => "no_replica_in_bound",
            Reason::ReadYourWrites => "read_your_writes",
            Reason::SplitOff => "split_reads_off",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Primary(Reason),
    /// Index into `Routing::replicas`.
    Replica(usize, Reason),
    /// No replica qualifies and `fallback = "error"`.
    Refuse(String),
}

/// What the router needs to know about the session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    /// Temp tables, LOCK TABLES, query-assigned user variables, ...
    pub pinned: bool,
    pub autocommit: bool,
    pub split_reads: bool,
    /// Lag bound for this statement (hint, user, or config).
    pub max_lag: Duration,
    pub fallback_error: bool,
}

impl Facts {
    pub fn fallback(f: Fallback) -> bool {
        f == Fallback::Error
    }
}

/// Routes a statement outside a transaction (the session keeps open
/// transactions on their backend itself).
pub fn route(class: &Class, facts: &Facts, routing: &Routing, need_gtid: Option<&str>) -> Route {
    match class.kind {
        Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use | Kind::SetTransaction => {
            return Route::Primary(Reason::SessionState)
        }
        Kind::Begin { read_only: true }
            if facts.autocommit
                && !facts.pinned
                && facts.split_reads
                && !class.hint_primary
                && !class.has(crate::classify::flag::MULTI) =>
        {
            // A read-only transaction may run on a replica as one unit.
            return read_target(facts, routing, need_gtid, Reason::Transaction);
        }
        Kind::Begin { .. } | Kind::Commit | Kind::Rollback => {
            return Route::Primary(Reason::Transaction)
        }
        Kind::Write | Kind::ConcordStatus | Kind::Kill => return Route::Primary(Reason::Write),
        Kind::Read => {}
    }
    if class.hint_primary {
        return Route::Primary(Reason::Hint);
    }
    if class.has(flag::LOCKING) {
        return Route::Primary(Reason::Locking);
    }
    if class.has(flag::CONN_FUNC | flag::INTO) {
        return Route::Primary(Reason::ConnectionBound);
    }
    if !class.replica_ok() {
        return Route::Primary(Reason::Write);
    }
    if !facts.autocommit {
        return Route::Primary(Reason::Transaction);
    }
    if facts.pinned {
        return Route::Primary(Reason::Pinned);
    }
    if !facts.split_reads && !class.rule_replica {
        return Route::Primary(Reason::SplitOff);
    }
    read_target(facts, routing, need_gtid, Reason::Read)
}

fn read_target(facts: &Facts, routing: &Routing, need_gtid: Option<&str>, reason: Reason) -> Route {
    match pick_replica(routing, facts.max_lag, need_gtid) {
        Some(i) => Route::Replica(i, reason),
        // A replica in bound may still reach the position (the session
        // waits on it); with fallback = "error" the read never falls to
        // the primary, so it is refused if none is in bound.
        None if need_gtid.is_some()
            && (!facts.fallback_error
                || testhooks::on("causal-reads-ignore-fallback")
                || least_lagged(routing, facts.max_lag).is_some()) =>
        {
            Route::Primary(Reason::ReadYourWrites)
        }
        None if facts.fallback_error => Route::Refuse(format!(
            "no replica is within the lag bound of {:?} and routing.fallback = \"error\"",
            facts.max_lag
        )),
        None => Route::Primary(Reason::NoReplica),
    }
}

/// A replica within `max_lag` (and, for read-your-writes, known to have
/// applied `need_gtid`), chosen at random in proportion to
/// `weight / (outstanding + 1)`: idle replicas share reads by weight,
/// busy ones get fewer (weighted least-outstanding).
pub fn pick_replica(
    routing: &Routing,
    max_lag: Duration,
    need_gtid: Option<&str>,
) -> Option<usize> {
    // Two passes over the replicas, nothing allocated: the total effective
    // weight, then the pick. Any number of replicas takes part.
    let eff = |r: &crate::routing::Replica| -> Option<u64> {
        let h = &r.health;
        if !h.within(max_lag) {
            return None;
        }
        if let Some(g) = need_gtid {
            if !concord_health::gtid::covers(&h.gtid, g) {
                return None;
            }
        }
        let out = u64::from(r.pool.outstanding.load(Ordering::Relaxed)) + 1;
        // Scaled so that weights compare without floats.
        Some((u64::from(r.weight) * 1024 / out).max(1))
    };
    let mut effs = [0u64; 32];
    let mut total = 0u64;
    let mut last = None;
    for (i, r) in routing.replicas.iter().enumerate() {
        if let Some(e) = eff(r) {
            // Outstanding counts move under us: remember what was summed
            // for the first 32, recompute for the rest.
            if let Some(slot) = effs.get_mut(i) {
                *slot = e;
            }
            total += e;
            last = Some(i);
        }
    }
    let last = last?;
    let mut x = rand::random_range(0..total);
    for (i, r) in routing.replicas.iter().enumerate() {
        let e = match effs.get(i) {
            Some(&e) => e,
            None => eff(r).unwrap_or(0),
        };
        if e == 0 {
            continue;
        }
        if x < e {
            return Some(i);
        }
        x -= e;
    }
    Some(last)
}

/// The replica within `max_lag` with the least lag (ties: the first): the
/// one most likely to reach a position soon, for a bounded wait.
pub fn least_lagged(routing: &Routing, max_lag: Duration) -> Option<usize> {
    routing
        .replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.health.within(max_lag))
        .min_by_key(|(_, r)| r.health.route_lag_ms)
        .map(|(i, _)| i)
}

/// The replica a read-your-writes read waits on: among those within
/// `max_lag` whose lag is at most the least plus the larger of itself and
/// 50 ms (probes measure lag in steps), but no more than half the `wait`
/// more (one further behind would rarely catch up within it), picked like
/// a read ([`pick_replica`]). The least lagged alone would take every
/// session's wait while two replicas differ by a millisecond.
pub fn soonest(routing: &Routing, max_lag: Duration, wait: Duration) -> Option<usize> {
    let first = least_lagged(routing, max_lag)?;
    let least = routing.replicas[first].health.route_lag_ms.unwrap_or(0);
    let half = u64::try_from((wait / 2).as_millis()).unwrap_or(u64::MAX);
    let slack = least.max(SOONEST_SLACK_MS).min(half);
    let near = Duration::from_millis(least.saturating_add(slack));
    pick_replica(routing, near.min(max_lag), None).or(Some(first))
}

/// See [`soonest`].
const SOONEST_SLACK_MS: u64 = 50;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendPool, PoolSettings};
    use crate::classify::classify;
    use crate::routing::Replica;
    use concord_health::BackendHealth;

    /// The metrics index routing-reason counters by `reason as usize`.
    #[test]
    fn all_reasons_are_listed_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    fn settings() -> PoolSettings {
        PoolSettings {
            min_idle: 0,
            max: 1,
            connect_timeout: Duration::from_secs(1),
            max_idle_time: Duration::from_secs(1),
            max_lifetime: Duration::ZERO,
            acquire_timeout: Duration::from_secs(1),
        }
    }

    fn replica(name: &str, lag: Option<u64>, weight: u32, gtid: &str) -> Replica {
        Replica {
            pool: BackendPool::new(name, "127.0.0.1:1", settings()),
            weight,
            health: BackendHealth {
                reachable: true,
                replicating: true,
                readable: lag.is_some(),
                lag_ms: lag,
                route_lag_ms: lag,
                gtid: gtid.into(),
                ..Default::default()
            },
        }
    }

    fn routing(replicas: Vec<Replica>) -> Routing {
        let mut r = Routing::empty();
        r.replicas = replicas;
        r
    }

    fn facts() -> Facts {
        Facts {
            pinned: false,
            autocommit: true,
            split_reads: true,
            max_lag: Duration::from_secs(1),
            fallback_error: false,
        }
    }

    #[test]
    fn reads_go_to_replicas_within_the_bound() {
        let r = routing(vec![
            replica("a", Some(2000), 100, ""),
            replica("b", Some(100), 100, ""),
        ]);
        assert_eq!(
            route(&classify(b"SELECT 1"), &facts(), &r, None),
            Route::Replica(1, Reason::Read)
        );
        let mut f = facts();
        f.max_lag = Duration::from_millis(50);
        assert_eq!(
            route(&classify(b"SELECT 1"), &f, &r, None),
            Route::Primary(Reason::NoReplica)
        );
        f.fallback_error = true;
        assert!(matches!(
            route(&classify(b"SELECT 1"), &f, &r, None),
            Route::Refuse(_)
        ));
    }

    #[test]
    fn the_least_lagged_replica_inside_the_bound_is_waited_on() {
        let r = routing(vec![
            replica("a", Some(800), 100, ""),
            replica("b", None, 100, ""),
            replica("c", Some(30), 1, ""),
            replica("d", Some(3000), 100, ""),
        ]);
        assert_eq!(least_lagged(&r, Duration::from_secs(1)), Some(2));
        assert_eq!(least_lagged(&r, Duration::from_millis(10)), None);
    }

    /// Waits spread over the replicas about as current as the least
    /// lagged one, never onto one far behind.
    #[test]
    fn read_your_writes_waits_spread_over_replicas_nearly_as_current() {
        let r = routing(vec![
            replica("a", Some(12), 100, ""),
            replica("b", Some(10), 100, ""),
            replica("c", Some(2000), 100, ""),
            replica("d", Some(55), 100, ""),
        ]);
        let count = |wait| {
            let mut n = [0; 4];
            for _ in 0..3000 {
                n[soonest(&r, Duration::from_secs(5), wait).unwrap()] += 1;
            }
            n
        };
        let n = count(Duration::from_secs(1));
        assert!(n[0] > 600 && n[1] > 600 && n[3] > 600, "{n:?}");
        assert_eq!(n[2], 0, "{n:?}");
        // A 50 ms wait: only those within 25 ms of the least.
        let n = count(Duration::from_millis(50));
        assert!(n[0] > 1000 && n[1] > 1000 && n[3] == 0, "{n:?}");
        // As it was: every wait on the one least lagged.
        assert_eq!(least_lagged(&r, Duration::from_secs(5)), Some(1));
        // Inside a tighter bound only.
        let one = Duration::from_secs(1);
        assert_eq!(soonest(&r, Duration::from_millis(11), one), Some(1));
    }

    #[test]
    fn fallback_error_refuses_a_position_read_only_without_a_replica_in_bound() {
        let r = routing(vec![replica("a", Some(200), 100, "0-1-5")]);
        let mut f = facts();
        f.fallback_error = true;
        // In bound but behind: the session waits on it (then maybe refuses).
        assert_eq!(
            route(&classify(b"SELECT 1"), &f, &r, Some("0-1-9")),
            Route::Primary(Reason::ReadYourWrites)
        );
        f.max_lag = Duration::from_millis(100);
        assert!(matches!(
            route(&classify(b"SELECT 1"), &f, &r, Some("0-1-9")),
            Route::Refuse(_)
        ));
        f.fallback_error = false;
        assert_eq!(
            route(&classify(b"SELECT 1"), &f, &r, Some("0-1-9")),
            Route::Primary(Reason::ReadYourWrites)
        );
    }

    #[test]
    fn a_looser_bound_admits_a_lagging_replica() {
        // 2 s behind: out of the default 1 s bound, inside a 5 s one (a
        // user's max_replica_lag or a /* concord:max_lag=5s */ hint).
        let r = routing(vec![replica("a", Some(2000), 100, "")]);
        assert_eq!(
            route(&classify(b"SELECT 1"), &facts(), &r, None),
            Route::Primary(Reason::NoReplica)
        );
        let mut f = facts();
        f.max_lag = Duration::from_secs(5);
        assert_eq!(
            route(&classify(b"SELECT 1"), &f, &r, None),
            Route::Replica(0, Reason::Read)
        );
    }

    #[test]
    fn broken_replication_is_never_readable() {
        let r = routing(vec![replica("a", None, 100, "")]);
        assert_eq!(
            route(&classify(b"SELECT 1"), &facts(), &r, None),
            Route::Primary(Reason::NoReplica)
        );
    }

    #[test]
    fn writes_locks_and_session_facts_go_to_the_primary() {
        let r = routing(vec![replica("a", Some(1), 100, "")]);
        let f = facts();
        assert_eq!(
            route(&classify(b"UPDATE t SET a=1"), &f, &r, None),
            Route::Primary(Reason::Write)
        );
        assert_eq!(
            route(&classify(b"SELECT * FROM t FOR UPDATE"), &f, &r, None),
            Route::Primary(Reason::Locking)
        );
        assert_eq!(
            route(&classify(b"SELECT LAST_INSERT_ID()"), &f, &r, None),
            Route::Primary(Reason::ConnectionBound)
        );
        assert_eq!(
            route(&classify(b"/* concord:primary */ SELECT 1"), &f, &r, None),
            Route::Primary(Reason::Hint)
        );
        let mut p = f;
        p.pinned = true;
        assert_eq!(
            route(&classify(b"SELECT 1"), &p, &r, None),
            Route::Primary(Reason::Pinned)
        );
        let mut ac = f;
        ac.autocommit = false;
        assert_eq!(
            route(&classify(b"SELECT 1"), &ac, &r, None),
            Route::Primary(Reason::Transaction)
        );
        assert_eq!(
            route(&classify(b"START TRANSACTION READ ONLY"), &f, &r, None),
            Route::Replica(0, Reason::Transaction)
        );
        assert_eq!(
            route(&classify(b"BEGIN"), &f, &r, None),
            Route::Primary(Reason::Transaction)
        );
    }

    #[test]
    fn read_your_writes_needs_the_gtid() {
        let r = routing(vec![
            replica("a", Some(1), 100, "0-1-5"),
            replica("b", Some(1), 100, "0-1-9"),
        ]);
        let c = classify(b"SELECT 1");
        assert_eq!(
            route(&c, &facts(), &r, Some("0-1-7")),
            Route::Replica(1, Reason::Read)
        );
        assert_eq!(
            route(&c, &facts(), &r, Some("0-1-10")),
            Route::Primary(Reason::ReadYourWrites)
        );
    }

    #[test]
    fn every_replica_takes_reads_past_the_sixteenth() {
        let r = routing(
            (0..40)
                .map(|i| replica(&format!("r{i}"), Some(1), 100, ""))
                .collect(),
        );
        let mut seen = [0u32; 40];
        for _ in 0..20_000 {
            seen[pick_replica(&r, Duration::from_secs(1), None).unwrap()] += 1;
        }
        assert!(seen.iter().all(|n| *n > 200), "{seen:?}");
    }

    #[test]
    fn weights_shape_the_spread() {
        let r = routing(vec![
            replica("a", Some(1), 100, ""),
            replica("b", Some(1), 300, ""),
        ]);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[pick_replica(&r, Duration::from_secs(1), None).unwrap()] += 1;
        }
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((2.5..3.5).contains(&ratio), "{counts:?}");
        // A busy replica gets fewer new reads.
        r.replicas[1].pool.outstanding.store(9, Ordering::Relaxed);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[pick_replica(&r, Duration::from_secs(1), None).unwrap()] += 1;
        }
        assert!(counts[0] > counts[1], "{counts:?}");
    }
}
