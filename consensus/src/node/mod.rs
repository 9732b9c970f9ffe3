//! A node's consensus handle: starts openraft on its own runtime thread
//! (so fsyncs and heartbeats never compete with the data path's tasks),
//! bootstraps the cluster, keeps the routing lease fresh, and offers
//! propose / membership / status to the rest of concord.

use crate::gate::WriteGate;
use crate::lease::Lease;
use crate::net::peer::{Network, PeerConn};
use crate::net::rpc::{MembershipOp, Reply, Request};
use crate::store::{Applied, LogStore, StateMachine};
use crate::topology::{Command, Response};
use crate::types::{NodeId, Raft};
use concord_config::Config;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod keeper;
mod rpc;

use keeper::{keep_lease, watch_core};

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("node.data_dir: cannot use {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node.data_dir: cannot open the Raft log: {0}")]
    Store(String),
    #[error("cluster.raft_addr: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("no Raft leader is reachable (no quorum?); retry later")]
    NoLeader,
    #[error("the leader did not answer: {0}")]
    Forward(String),
    #[error("timed out waiting for the cluster")]
    Timeout,
}

/// One node's view of itself, as shown by SHOW CLUSTER.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub addr: String,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    /// Raft commit index (saved by the log store; on followers it trails
    /// the leader's by up to a heartbeat).
    #[serde(default)]
    pub committed: u64,
    pub last_applied: u64,
    pub epoch: u64,
    pub primary: Option<String>,
    pub lease_valid: bool,
    pub lease_remaining_ms: u64,
    pub voters: Vec<NodeId>,
    pub members: BTreeMap<NodeId, String>,
    /// Why Raft stopped on this node, if it did.
    #[serde(default)]
    pub stopped: Option<String>,
}

/// Admin workflows that must run on the Raft leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Workflow {
    Switchover {
        to: String,
    },
    Failover,
    Rejoin {
        name: String,
    },
    /// Waits until no member holds a connection to a draining backend.
    Drain {
        name: String,
        timeout_ms: u64,
    },
}

/// Runs a workflow on this node (registered by the proxy).
pub type WorkflowHandler = Arc<
    dyn Fn(
            Workflow,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Answers [`Consensus::call_app`] requests from other nodes (registered
/// by the proxy: the consensus layer knows nothing of sessions).
pub type AppHandler = Arc<
    dyn Fn(
            serde_json::Value,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>,
        > + Send
        + Sync,
>;

/// Shared by the handle, the peer server and background tasks.
pub struct Inner {
    pub id: NodeId,
    pub addr: String,
    local_ip: Option<std::net::IpAddr>,
    pub raft: Raft,
    pub secret: Arc<[u8]>,
    pub lease: Arc<Lease>,
    pub gate: Arc<WriteGate>,
    applied: watch::Receiver<Arc<Applied>>,
    peers: tokio::sync::Mutex<HashMap<NodeId, PeerConn>>,
    /// Reports from other nodes (the leader aggregates them).
    reports: Mutex<HashMap<NodeId, (Instant, serde_json::Value)>>,
    workflow: std::sync::OnceLock<WorkflowHandler>,
    app: std::sync::OnceLock<AppHandler>,
    /// Set once if the Raft core stopped for good (a storage error).
    stopped: std::sync::OnceLock<String>,
    /// Commit index as last saved by the log store.
    committed: Arc<std::sync::atomic::AtomicU64>,
}

/// The handle the rest of concord holds. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
    rt: Arc<RtGuard>,
}

/// Owns the consensus runtime; shut down without blocking when dropped.
struct RtGuard(Option<tokio::runtime::Runtime>);

impl Drop for RtGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl RtGuard {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

fn raft_config(c: &Config) -> Result<openraft::Config, ConsensusError> {
    let hb = c.cluster.heartbeat_interval.as_millis();
    let el = c.cluster.election_timeout.as_millis();
    openraft::Config {
        cluster_name: "concord".into(),
        heartbeat_interval: hb,
        election_timeout_min: el,
        election_timeout_max: el * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.cluster.snapshot_every),
        max_in_snapshot_log_to_keep: c.cluster.snapshot_every / 2,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ConsensusError::Raft(format!("cluster: {e}")))
}

impl Consensus {
    /// Opens the durable state under `node.data_dir`, starts Raft and the
    /// peer listener, and bootstraps a new cluster if this node is the
    /// lowest id of `cluster.peers` (or alone).
    pub async fn start(cfg: &Config) -> Result<Consensus, ConsensusError> {
        let dir = cfg.node.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| ConsensusError::DataDir {
            path: dir.clone(),
            source: e,
        })?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| ConsensusError::DataDir {
                path: dir.clone(),
                source: e,
            })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("concord-raft")
            .enable_all()
            .build()
            .map_err(|e| ConsensusError::Raft(format!("cannot start the Raft runtime: {e}")))?;
        let guard = Arc::new(RtGuard(Some(rt)));
        let handle = guard.handle().ok_or(ConsensusError::Timeout)?;
        let cfg = cfg.clone();
        let inner = handle
            .spawn(async move { start_inner(cfg, dir).await })
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))??;
        Ok(Consensus { inner, rt: guard })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The applied state, updated after every apply.
    pub fn applied(&self) -> watch::Receiver<Arc<Applied>> {
        self.inner.applied.clone()
    }

    pub fn lease(&self) -> Arc<Lease> {
        self.inner.lease.clone()
    }

    /// Why Raft stopped on this node for good, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.inner.stopped.get().cloned()
    }

    /// The write gate every statement sent to a primary passes.
    pub fn gate(&self) -> Arc<WriteGate> {
        self.inner.gate.clone()
    }

    /// The Raft term this node is in.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// Confirms with a quorum that this node is still the leader and has
    /// applied everything committed before the call (a read index).
    pub async fn confirm_leader(&self, timeout: Duration) -> Result<(), ConsensusError> {
        let raft = self.inner.raft.clone();
        match self
            .on_rt(async move { tokio::time::timeout(timeout, raft.ensure_linearizable()).await })
            .await?
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConsensusError::Raft(e.to_string())),
            Err(_) => Err(ConsensusError::Timeout),
        }
    }

    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.inner.id) && m.state == ServerState::Leader
    }

    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Reports from peers newer than `max_age` (leader side).
    pub fn reports(&self, max_age: Duration) -> HashMap<NodeId, serde_json::Value> {
        let now = Instant::now();
        self.inner
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) <= max_age)
            .map(|(id, (_, v))| (*id, v.clone()))
            .collect()
    }

    async fn on_rt<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, ConsensusError> {
        let h = self.rt.handle().ok_or(ConsensusError::Timeout)?;
        h.spawn(f)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))
    }

    /// Commits a command through the leader (forwarding if needed) and
    /// returns its result once applied.
    pub async fn propose(&self, cmd: Command) -> Result<Response, ConsensusError> {
        let inner = self.inner.clone();
        self.on_rt(async move { inner.propose(cmd).await }).await?
    }

    /// Sends this node's view of the backends to the leader.
    pub async fn report(&self, v: serde_json::Value) -> Result<(), ConsensusError> {
        let inner = self.inner.clone();
        self.on_rt(async move { inner.send_report(v).await })
            .await?
    }

    /// Adds a node as a voter (joint consensus via openraft).
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<String, ConsensusError> {
        let inner = self.inner.clone();
        self.on_rt(async move { inner.membership(MembershipOp::Add { id, addr }).await })
            .await?
    }

    pub async fn remove_node(&self, id: NodeId) -> Result<String, ConsensusError> {
        let inner = self.inner.clone();
        self.on_rt(async move { inner.membership(MembershipOp::Remove { id }).await })
            .await?
    }

    /// Every member's status; unreachable members are marked so.
    pub async fn cluster_status(&self) -> Vec<Result<Status, (NodeId, String)>> {
        let inner = self.inner.clone();
        self.on_rt(async move { inner.cluster_status().await })
            .await
            .unwrap_or_default()
    }

    /// Registers how this node runs workflows when it is the leader.
    pub fn set_workflow_handler(&self, h: WorkflowHandler) {
        let _ = self.inner.workflow.set(h);
    }

    /// Registers how this node answers requests for its proxy.
    pub fn set_app_handler(&self, h: AppHandler) {
        let _ = self.inner.app.set(h);
    }

    /// Sends a request to the proxy of member `node` (over the
    /// authenticated peer transport) and returns its answer.
    pub async fn call_app(
        &self,
        node: NodeId,
        v: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let inner = self.inner.clone();
        match self
            .on_rt(async move {
                let Some(addr) = inner.applied.borrow().members.get(&node).cloned() else {
                    return Err(format!("node {node} is not a member of the fleet"));
                };
                match inner.call(node, &addr, &Request::App(v), timeout).await {
                    Ok(Reply::App(r)) => r,
                    Ok(_) => Err(format!("node {node} sent an unexpected reply")),
                    Err(e) => Err(format!("node {node} did not answer: {e}")),
                }
            })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs a workflow on the leader (here, or forwarded) and returns its
    /// outcome.
    pub async fn run_workflow(&self, w: Workflow) -> Result<String, String> {
        let inner = self.inner.clone();
        match self.on_rt(async move { inner.workflow(w).await }).await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until every member has applied log `index`; returns the
    /// members that did not confirm within `timeout`.
    pub async fn wait_all_applied(&self, index: u64, timeout: Duration) -> Vec<NodeId> {
        let inner = self.inner.clone();
        let me = self.inner.id;
        // No answer is no confirmation: the caller then waits out the leases.
        self.on_rt(async move { inner.wait_all_applied(index, timeout).await })
            .await
            .unwrap_or_else(|_| vec![me])
    }

    pub async fn shutdown(&self) {
        let raft = self.inner.raft.clone();
        let _ = self.on_rt(async move { raft.shutdown().await }).await;
    }
}

async fn start_inner(cfg: Config, dir: PathBuf) -> Result<Arc<Inner>, ConsensusError> {
    let id = cfg.node.id;
    let log = LogStore::open(&dir).map_err(|e| ConsensusError::Store(e.to_string()))?;
    let committed = log.committed();
    let (sm, applied) = StateMachine::open(&dir).map_err(|e| ConsensusError::DataDir {
        path: dir.join("snapshot.json"),
        source: e,
    })?;
    let gate = sm.gate();
    let secret: Arc<[u8]> = Arc::from(cfg.cluster.secret.as_bytes());
    let local_ip = cfg
        .cluster
        .raft_addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let network = Network {
        self_id: id,
        secret: secret.clone(),
        local_ip,
    };
    let rcfg = Arc::new(raft_config(&cfg)?);
    let raft = Raft::new(id, rcfg, network, log, sm)
        .await
        .map_err(|e| ConsensusError::Raft(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(&cfg.cluster.raft_addr)
        .await
        .map_err(|e| ConsensusError::Bind {
            addr: cfg.cluster.raft_addr.clone(),
            source: e,
        })?;
    let inner = Arc::new(Inner {
        id,
        addr: cfg.cluster.advertise().to_string(),
        local_ip,
        raft: raft.clone(),
        secret,
        lease: Arc::new(Lease::new(cfg.cluster.lease_timeout.get())),
        gate,
        applied,
        peers: tokio::sync::Mutex::new(HashMap::new()),
        reports: Mutex::new(HashMap::new()),
        workflow: std::sync::OnceLock::new(),
        app: std::sync::OnceLock::new(),
        stopped: std::sync::OnceLock::new(),
        committed,
    });
    tokio::spawn(crate::net::server::serve(listener, inner.clone()));

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| ConsensusError::Raft(e.to_string()))?;
    if !initialized && cfg.cluster.join {
        tracing::info!(
            node = id,
            "waiting to be added to a fleet (ADD NODE {id} ADDRESS '{}' on a member)",
            cfg.cluster.advertise()
        );
    } else if !initialized {
        let members: BTreeMap<NodeId, BasicNode> = if cfg.cluster.peers.is_empty() {
            BTreeMap::from([(id, BasicNode::new(cfg.cluster.advertise()))])
        } else {
            cfg.cluster
                .peers
                .iter()
                .map(|(k, v)| (*k, BasicNode::new(v)))
                .collect()
        };
        // One node bootstraps; the others learn the membership from it.
        let bootstrapper = members.keys().next().copied() == Some(id);
        if bootstrapper {
            tracing::info!(node = id, members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new Raft cluster");
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!("raft initialize: {e}");
            }
        } else {
            tracing::info!(
                node = id,
                "waiting to be contacted by the bootstrapping node"
            );
        }
    } else {
        tracing::info!(
            node = id,
            "restarting from the Raft state in {}",
            dir.display()
        );
    }
    tokio::spawn(keep_lease(inner.clone()));
    tokio::spawn(watch_core(inner.clone()));
    Ok(inner)
}
