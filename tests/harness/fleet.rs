//! A fleet of concord nodes on loopback with a relay in front of every
//! node's Raft listener, so any node can be cut off from the others in
//! both directions. Node i binds Raft on 127.0.0.(10+i) and connects to
//! peers from that IP, which is how the relays tell senders apart.

use crate::{Concord, ConcordConfig, Relay};
use std::time::{Duration, Instant};

pub struct Fleet {
    pub nodes: Vec<Concord>,
    /// `relays[i]` carries all Raft traffic to `nodes[i]`.
    pub relays: Vec<Relay>,
}

pub fn raft_ip(i: usize) -> String {
    format!("127.0.0.{}", 11 + i)
}

impl Fleet {
    /// Starts `n` nodes in front of `backends`; `tweak` adjusts each
    /// node's config (index, config) before start.
    pub async fn start(
        n: usize,
        backends: Vec<(String, String, Option<String>)>,
        tweak: impl Fn(usize, &mut ConcordConfig),
    ) -> Fleet {
        let mut cfgs = Vec::new();
        let mut relays = Vec::new();
        for i in 0..n {
            let mut c = ConcordConfig::new(backends.clone());
            c.node_id = i as u64 + 1;
            c.raft_ip = raft_ip(i);
            let relay = Relay::start(&format!("{}:{}", c.raft_ip, c.raft_port)).await;
            c.advertise = Some(relay.addr());
            relays.push(relay);
            cfgs.push(c);
        }
        let peers: Vec<(u64, String)> = cfgs
            .iter()
            .map(|c| (c.node_id, c.advertise.clone().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        for (i, mut c) in cfgs.into_iter().enumerate() {
            c.peers = peers.clone();
            tweak(i, &mut c);
            nodes.push(Concord::start_unready(c).await);
        }
        for n in nodes.iter_mut() {
            n.wait_ready().await;
        }
        Fleet { nodes, relays }
    }

    /// Cuts node `i` off from every other node, both directions.
    pub fn isolate(&self, i: usize) {
        self.relays[i].cut();
        for (j, r) in self.relays.iter().enumerate() {
            if j != i {
                r.block_from(&raft_ip(i));
            }
        }
    }

    pub fn heal(&self, i: usize) {
        self.relays[i].heal();
        for (j, r) in self.relays.iter().enumerate() {
            if j != i {
                r.unblock_from(&raft_ip(i));
            }
        }
    }

    /// Index of the node every reachable node agrees is the leader.
    pub async fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for n in &self.nodes {
                if let Some((200, body)) = n.http_get("/api/v1/cluster").await {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if let Some(l) = v.get("leader").and_then(|l| l.as_u64()) {
                        seen.push(l);
                    }
                }
            }
            if let Some(&l) = seen.first() {
                let alive = self
                    .nodes
                    .iter()
                    .any(|n| n.cfg.node_id == l && n.pid().is_some());
                if seen.iter().all(|x| *x == l) && alive {
                    return self.nodes.iter().position(|n| n.cfg.node_id == l).unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?} (seen {seen:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
