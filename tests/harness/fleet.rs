//! A fleet of concord nodes on loopback with a relay in front of every
//! node's Raft listener, so any node can be cut off from the others in
//! both directions. Node i binds Raft on 127.0.0.(10+i) and connects to
//! peers from that IP, which is how the relays tell senders apart.

use crate::netns::Host;
use crate::{Concord, ConcordConfig, Relay};
use std::time::{Duration, Instant};

pub struct Fleet {
    pub nodes: Vec<Concord>,
    /// `relays[i]` carries all Raft traffic to `nodes[i]` (loopback
    /// fleets; empty when the nodes run in namespace hosts).
    pub relays: Vec<Relay>,
    /// `hosts[i]` is the namespace host of `nodes[i]` (empty on loopback).
    pub hosts: Vec<Host>,
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
        Self::start_all(cfgs, peers, relays, Vec::new(), tweak).await
    }

    /// Starts one node in each namespace host of `hosts`; Raft links are
    /// direct, and faults are packet drops on the hosts.
    pub async fn start_on(
        hosts: Vec<Host>,
        backends: Vec<(String, String, Option<String>)>,
        tweak: impl Fn(usize, &mut ConcordConfig),
    ) -> Fleet {
        let mut cfgs = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let mut c = ConcordConfig::new(backends.clone());
            c.node_id = i as u64 + 1;
            c.on_host(h);
            cfgs.push(c);
        }
        let peers: Vec<(u64, String)> = cfgs
            .iter()
            .map(|c| (c.node_id, format!("{}:{}", c.raft_ip, c.raft_port)))
            .collect();
        Self::start_all(cfgs, peers, Vec::new(), hosts, tweak).await
    }

    async fn start_all(
        cfgs: Vec<ConcordConfig>,
        peers: Vec<(u64, String)>,
        relays: Vec<Relay>,
        hosts: Vec<Host>,
        tweak: impl Fn(usize, &mut ConcordConfig),
    ) -> Fleet {
        let mut nodes = Vec::new();
        for (i, mut c) in cfgs.into_iter().enumerate() {
            c.peers = peers.clone();
            tweak(i, &mut c);
            nodes.push(Concord::start_unready(c).await);
        }
        for n in nodes.iter_mut() {
            n.wait_ready().await;
        }
        Fleet {
            nodes,
            relays,
            hosts,
        }
    }

    /// Cuts node `i` off from every other node, both directions.
    pub fn isolate(&self, i: usize) {
        if !self.hosts.is_empty() {
            for (j, h) in self.hosts.iter().enumerate() {
                if j != i {
                    self.hosts[i].cut(&h.ip);
                }
            }
            return;
        }
        self.relays[i].cut();
        for (j, r) in self.relays.iter().enumerate() {
            if j != i {
                r.block_from(&raft_ip(i));
            }
        }
    }

    /// Node `i`'s packets to the other nodes vanish; theirs still reach
    /// it (a one-way cut).
    pub fn mute(&self, i: usize) {
        for (j, h) in self.hosts.iter().enumerate() {
            if j != i {
                self.hosts[i].drop_to(&h.ip);
            }
        }
    }

    pub fn heal(&self, i: usize) {
        if !self.hosts.is_empty() {
            self.hosts[i].heal();
            return;
        }
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
