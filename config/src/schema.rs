//! The config schema. Every section but `[listener]`, `[[users]]` and
//! `[[backends]]` has working defaults, so a minimal file is short.

use crate::{ByteSize, Duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    pub listener: ListenerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub users: Vec<UserConfig>,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub failover: FailoverConfig,
    #[serde(default)]
    pub digests: DigestsConfig,
}

/// Query digests: per statement shape, user, schema and role, counts and
/// times in a table of fixed size (see `proxy/src/digest.rs`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DigestsConfig {
    /// Record statements (follows RELOAD CONFIG).
    pub enabled: bool,
    /// The table's memory, a hard cap: it holds as many rows as fit
    /// (taken at start and at RESET CONCORD DIGESTS).
    pub max_memory: ByteSize,
    /// Bytes of a fingerprint's text kept for display (the digest hash
    /// covers all of it).
    pub max_text: u32,
    /// `/metrics` carries this many digests, the top by total time (0:
    /// none). Rendered at each scrape from the table, so the series are
    /// bounded by this number, never by how many shapes ever ran.
    pub prometheus_top: u32,
}

impl Default for DigestsConfig {
    fn default() -> Self {
        DigestsConfig {
            enabled: true,
            max_memory: ByteSize::mib(8),
            max_text: 1024,
            prometheus_top: 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's Raft id; unique in the fleet, never reused.
    pub id: u64,
    /// Raft log, vote and snapshots live here.
    pub data_dir: PathBuf,
    /// Threads serving client sessions (0: one per CPU core). Raft has
    /// its own thread besides.
    pub worker_threads: usize,
    /// "work-stealing" (one tokio runtime for all sessions) or "per-core"
    /// (one single-threaded runtime per thread, each with its own
    /// SO_REUSEPORT listener: no cross-thread wake-ups).
    pub runtime: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            data_dir: PathBuf::from("concord-data"),
            worker_threads: 0,
            runtime: "work-stealing".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where this node listens for Raft peers. Outgoing peer connections
    /// use this address's IP as their source.
    pub raft_addr: String,
    /// The address peers reach this node at, when it differs from
    /// `raft_addr` (NAT, proxies). Default: `raft_addr`.
    pub advertise_addr: Option<String>,
    /// Node id -> Raft address of every initial member (this node included).
    /// Empty: a one-node cluster.
    pub peers: BTreeMap<u64, String>,
    /// Shared secret peers prove knowledge of before any Raft traffic.
    pub secret: String,
    /// This node joins an existing fleet (`ADD NODE` on a member) and
    /// never bootstraps a cluster of its own.
    pub join: bool,
    /// A node routes writes only while a quorum confirmed its state within this.
    pub lease_timeout: Duration,
    /// Raft heartbeat period.
    pub heartbeat_interval: Duration,
    /// Raft election timeout (lower bound; the upper is 2x).
    pub election_timeout: Duration,
    /// Log entries kept after a snapshot (older ones are purged).
    pub snapshot_every: u64,
    /// Optional TLS for the peer transport.
    pub tls: Option<TlsConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            raft_addr: "127.0.0.1:7001".into(),
            advertise_addr: None,
            peers: BTreeMap::new(),
            join: false,
            secret: String::new(),
            lease_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(600),
            snapshot_every: 1000,
            tls: None,
        }
    }
}

impl Config {
    /// How this node connects to backend `name` (its `connect_addr`, or the
    /// agreed address).
    pub fn connect_addr<'a>(&'a self, name: &str, agreed: &'a str) -> &'a str {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.connect_addr.as_deref())
            .unwrap_or(agreed)
    }
}

impl ClusterConfig {
    /// The address other nodes use for this one.
    pub fn advertise(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.raft_addr)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Client-facing MySQL protocol address.
    pub addr: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Refuse clients that do not upgrade to TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// A client must finish the handshake and auth within this.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// A session idle for longer is closed (0 = never).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Largest packet payload accepted from a client.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: ByteSize,
    /// Global cap on client connections; beyond it clients get error 1040.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Version string shown to clients; "auto" copies the primary's.
    #[serde(default = "default_server_version")]
    pub server_version: String,
    /// Failed logins allowed per source IP per minute before throttling.
    #[serde(default = "default_auth_failures")]
    pub max_auth_failures_per_minute: u32,
    /// On SIGTERM, sessions inside a transaction get this long to finish.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// A statement running longer is killed on its server (`KILL QUERY`
    /// through a side connection) and the client gets error 1969 naming
    /// this key; "0s" = no limit. Per user in `[[users]]`, per statement
    /// with `/* concord:timeout=2s */`.
    #[serde(default)]
    pub statement_timeout: Duration,
    /// A transaction open longer (idle or busy) is rolled back: a
    /// statement running at the deadline is killed on its server, the
    /// transaction's server connection is closed, and the client's next
    /// statement gets error 1969 naming this key until it sends ROLLBACK;
    /// "0s" = no limit. Per user in `[[users]]`.
    #[serde(default)]
    pub transaction_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_max_allowed_packet() -> ByteSize {
    ByteSize::mib(64)
}
fn default_max_connections() -> u32 {
    20000
}
fn default_server_version() -> String {
    "auto".into()
}
fn default_auth_failures() -> u32 {
    30
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin port (MySQL protocol); loopback by default. Empty disables it.
    pub addr: String,
    pub user: String,
    pub password: String,
}

/// Accepted only while `admin.addr` is loopback (see validation).
pub const DEFAULT_ADMIN_PASSWORD: &str = "admin";

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: "127.0.0.1:6033".into(),
            user: "admin".into(),
            password: DEFAULT_ADMIN_PASSWORD.into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `/metrics`, `/healthz`, `/readyz`, `/api/v1/...`; empty disables it.
    pub addr: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "concord_proxy=debug,info".
    pub level: String,
    /// "text" or "json".
    pub format: String,
    /// Statements slower than this are logged (target `concord::slow`,
    /// at most 10 lines a second per node); "0s" turns it off.
    pub slow_threshold: Duration,
    /// Put the statement's text with its literal values in slow-log lines
    /// (off: only the fingerprint, which carries none).
    pub slow_with_values: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            slow_threshold: Duration::from_secs(1),
            slow_with_values: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Cleartext password; serves both client auth plugins and backend login.
    #[serde(default)]
    pub password: Option<String>,
    /// `mysql_native_password` digest as in `mysql.user` (`*` + hex SHA1(SHA1(pw))).
    #[serde(default)]
    pub password_sha1: Option<String>,
    /// `caching_sha2_password` fast-auth digest: hex SHA256(SHA256(pw)).
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// Account concord logs in to backends with (default: same name).
    #[serde(default)]
    pub backend_user: Option<String>,
    /// Password for `backend_user` (default: `password`).
    #[serde(default)]
    pub backend_password: Option<String>,
    /// Per-user cap on client connections (0 = only the global cap).
    #[serde(default)]
    pub max_connections: u32,
    /// This user must connect over TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Overrides `[routing] max_replica_lag` for this user.
    #[serde(default)]
    pub max_replica_lag: Option<Duration>,
    /// Overrides `[routing] read_your_writes` for this user.
    #[serde(default)]
    pub read_your_writes: Option<ReadYourWrites>,
    /// May `KILL [QUERY]` other users' sessions (like MySQL's
    /// CONNECTION_ADMIN); without it a user kills only its own.
    #[serde(default)]
    pub connection_admin: bool,
    /// This user's `listener.statement_timeout` ("0s": none).
    #[serde(default)]
    pub statement_timeout: Option<Duration>,
    /// This user's `listener.transaction_timeout` ("0s": none).
    #[serde(default)]
    pub transaction_timeout: Option<Duration>,
}

impl UserConfig {
    /// The account and password used on backends for this user.
    pub fn backend_credentials(&self) -> (&str, &str) {
        let user = self.backend_user.as_deref().unwrap_or(&self.name);
        let pass = self
            .backend_password
            .as_deref()
            .or(self.password.as_deref())
            .unwrap_or("");
        (user, pass)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Optional hint; the fleet discovers roles itself at first bootstrap.
    #[serde(default)]
    pub role: Option<Role>,
    /// How this node reaches the backend when it differs from `addr`
    /// (a local endpoint, a tunnel). `addr` stays the address replicas
    /// replicate from and the fleet agrees on.
    #[serde(default)]
    pub connect_addr: Option<String>,
}

fn default_weight() -> u32 {
    100
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// When a session gives its backend connections back: at the end of
    /// each transaction (or statement outside one), or when it ends.
    pub mode: PoolMode,
    /// Warm idle connections kept per (backend, user, protocol flags).
    pub min_idle: u32,
    /// Cap on connections from this node to one backend.
    pub max_per_backend: u32,
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are closed.
    pub max_idle_time: Duration,
    /// Connections older than this are closed when next given back or
    /// taken, or by the upkeep while idle (0: never), so server-side
    /// memory and settings changes do not outlive it.
    pub max_lifetime: Duration,
    /// How long a session waits for a connection when the cap is reached.
    pub acquire_timeout: Duration,
    /// Prepared statements kept open per backend connection (LRU beyond).
    pub max_prepared_per_connection: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            min_idle: 2,
            max_per_backend: 500,
            connect_timeout: Duration::from_secs(2),
            max_idle_time: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            acquire_timeout: Duration::from_secs(5),
            max_prepared_per_connection: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub user: String,
    pub password: String,
    /// Probe period per backend.
    pub interval: Duration,
    /// A probe that takes longer failed.
    pub timeout: Duration,
    /// How often this node writes its heartbeat row on the primary.
    pub heartbeat_interval: Duration,
    /// Schema.table of the heartbeat rows (created if missing).
    pub heartbeat_table: String,
    /// Consecutive failed probes (from both vantage points) before "dead".
    pub failure_threshold: u32,
    /// Lag samples a replica must be under the bound to be readable again
    /// after it went over (hysteresis).
    pub recover_after: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            user: "concord_monitor".into(),
            password: String::new(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_table: "concord.heartbeat".into(),
            failure_threshold: 4,
            recover_after: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Primary,
    Error,
}

/// How long a session keeps a backend connection.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// From its first use until the session ends.
    Session,
    /// For one transaction, or one statement outside a transaction; the
    /// session's state moves with it (see `proxy::session::state`), and
    /// only state that cannot move keeps it on one connection.
    Transaction,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    Off,
    Session,
    /// Every read sees every write acknowledged through any node before
    /// it arrived (the primary's position, read after the read arrived).
    Fleet,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Reads go only to replicas at most this far behind.
    pub max_replica_lag: Duration,
    /// What a read does when no replica qualifies.
    pub fallback: Fallback,
    pub read_your_writes: ReadYourWrites,
    /// How long a read may wait for a replica to apply the session's last write.
    pub read_your_writes_wait: Duration,
    /// Send reads to replicas at all (false: everything to the primary).
    pub split_reads: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            max_replica_lag: Duration::from_secs(1),
            fallback: Fallback::Primary,
            read_your_writes: ReadYourWrites::Session,
            read_your_writes_wait: Duration::from_millis(50),
            split_reads: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Automatic failover on a dead primary.
    pub automatic: bool,
    /// No second automatic failover within this.
    pub cooldown: Duration,
    /// Writes wait at most this long for a primary during a failover.
    pub write_buffer_timeout: Duration,
    /// Cap on writes held per node while no primary is routable.
    pub write_buffer_max: u32,
    /// Cap on bytes of writes held per node.
    pub write_buffer_bytes: ByteSize,
    /// Bound on waiting for the chosen replica to apply its relay log.
    pub catchup_timeout: Duration,
    /// Extra wait past the lease timeout before promoting (clock drift margin).
    pub lease_drift: Duration,
    /// Account a former primary replicates with after a switchover or
    /// REJOIN (it has no replication settings of its own).
    pub replication_user: String,
    pub replication_password: String,
    /// Dead-man switch on the primary: an event there sets `read_only=1`
    /// once no heartbeat has arrived for `self_fence_after`, so a primary
    /// cut off from every node fences itself against clients that bypass
    /// concord; failovers of an unreachable primary wait for it.
    pub self_fence: bool,
    pub self_fence_after: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            automatic: true,
            cooldown: Duration::from_secs(60),
            write_buffer_timeout: Duration::from_secs(10),
            write_buffer_max: 10000,
            write_buffer_bytes: ByteSize::mib(64),
            catchup_timeout: Duration::from_secs(10),
            lease_drift: Duration::from_millis(200),
            replication_user: String::new(),
            replication_password: String::new(),
            self_fence: false,
            self_fence_after: Duration::from_secs(5),
        }
    }
}
