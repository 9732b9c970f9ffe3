//! What a node does for requests: forwarding proposals, membership
//! changes, reports and workflows to the leader (retrying across leader
//! changes), and answering them when it is the leader.

use super::*;

impl Inner {
    pub fn status(&self) -> Status {
        let m = self.raft.metrics();
        let m = m.borrow();
        let applied = self.applied.borrow().clone();
        Status {
            id: self.id,
            addr: self.addr.clone(),
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed: self.committed.load(std::sync::atomic::Ordering::Relaxed),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            epoch: applied.topology.epoch,
            primary: applied.topology.primary.clone(),
            lease_valid: self.lease.valid(),
            lease_remaining_ms: self.lease.remaining().map_or(0, |d| d.as_millis() as u64),
            voters: applied.voters.clone(),
            members: applied.members.clone(),
            stopped: self.stopped.get().cloned(),
        }
    }

    pub(super) fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let l = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
        Some((l, addr))
    }

    /// Waits (bounded) for a known leader.
    pub(super) async fn wait_leader(
        &self,
        within: Duration,
    ) -> Result<(NodeId, String), ConsensusError> {
        let deadline = Instant::now() + within;
        let mut m = self.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, m.changed()).await.is_err() {
                return Err(ConsensusError::NoLeader);
            }
        }
    }

    pub(super) async fn call(
        &self,
        target: NodeId,
        addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, ConsensusError> {
        let mut conn = {
            let mut peers = self.peers.lock().await;
            peers
                .remove(&target)
                .unwrap_or_else(|| PeerConn::new(addr, self.id, self.secret.clone(), self.local_ip))
        };
        let r = conn.call(req, timeout).await;
        self.peers.lock().await.insert(target, conn);
        r.map_err(|e| ConsensusError::Forward(e.to_string()))
    }

    /// Proposes on the leader, or forwards to it.
    pub async fn propose(&self, cmd: Command) -> Result<Response, ConsensusError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (leader, addr) = self
                .wait_leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let r = if leader == self.id {
                self.write_local(cmd.clone()).await
            } else {
                match self
                    .call(
                        leader,
                        &addr,
                        &Request::Write(cmd.clone()),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(Reply::Write(r)) => r.map_err(ConsensusError::Forward),
                    Ok(_) => Err(ConsensusError::Forward("unexpected reply".into())),
                    Err(e) => Err(e),
                }
            };
            match r {
                Err(e) if Instant::now() < deadline && retryable(&e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    pub async fn write_local(&self, cmd: Command) -> Result<Response, ConsensusError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                ConsensusError::Forward(format!("not the leader (leader: {:?})", f.leader_id)),
            ),
            Err(e) => Err(ConsensusError::Raft(e.to_string())),
        }
    }

    pub async fn read_index_local(&self) -> Result<u64, ConsensusError> {
        match self.raft.ensure_linearizable().await {
            Ok(Some(l)) => Ok(l.index),
            Ok(None) => Ok(0),
            Err(e) => Err(ConsensusError::Raft(e.to_string())),
        }
    }

    pub(super) async fn membership(&self, op: MembershipOp) -> Result<String, ConsensusError> {
        let (leader, addr) = self.wait_leader(Duration::from_secs(5)).await?;
        if leader == self.id {
            return self.membership_local(op).await;
        }
        match self
            .call(
                leader,
                &addr,
                &Request::Membership(op),
                Duration::from_secs(30),
            )
            .await?
        {
            Reply::Membership(r) => r.map_err(ConsensusError::Forward),
            _ => Err(ConsensusError::Forward("unexpected reply".into())),
        }
    }

    pub async fn membership_local(&self, op: MembershipOp) -> Result<String, ConsensusError> {
        let raft_err = |e: &dyn std::fmt::Display| ConsensusError::Raft(e.to_string());
        match op {
            MembershipOp::Add { id, addr } => {
                self.raft
                    .add_learner(id, BasicNode::new(&addr), true)
                    .await
                    .map_err(|e| raft_err(&e))?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| raft_err(&e))?;
                Ok(format!("node {id} ({addr}) joined as a voter"))
            }
            MembershipOp::Remove { id } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| raft_err(&e))?;
                Ok(format!("node {id} removed"))
            }
        }
    }

    pub fn report(&self, v: serde_json::Value) -> Result<(), String> {
        let Some(from) = v.get("node").and_then(|n| n.as_u64()) else {
            return Err("report without a node id".into());
        };
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(from, (Instant::now(), v));
        Ok(())
    }

    pub(super) async fn send_report(&self, v: serde_json::Value) -> Result<(), ConsensusError> {
        let (leader, addr) = self.leader().ok_or(ConsensusError::NoLeader)?;
        if leader == self.id {
            return self.report(v).map_err(ConsensusError::Forward);
        }
        match self
            .call(leader, &addr, &Request::Report(v), Duration::from_secs(1))
            .await?
        {
            Reply::Report(r) => r.map_err(ConsensusError::Forward),
            _ => Err(ConsensusError::Forward("unexpected reply".into())),
        }
    }

    pub(super) async fn cluster_status(&self) -> Vec<Result<Status, (NodeId, String)>> {
        let members = self.applied.borrow().members.clone();
        let mut out = Vec::new();
        for (id, addr) in members {
            if id == self.id {
                out.push(Ok(self.status()));
                continue;
            }
            match self
                .call(id, &addr, &Request::Status, Duration::from_millis(500))
                .await
            {
                Ok(Reply::Status(s)) => out.push(Ok(*s)),
                Ok(_) => out.push(Err((id, addr))),
                Err(_) => out.push(Err((id, addr))),
            }
        }
        out
    }

    pub async fn app_local(&self, v: serde_json::Value) -> Result<serde_json::Value, String> {
        match self.app.get() {
            Some(h) => h(v).await,
            None => Err("this node does not answer proxy requests".into()),
        }
    }

    pub async fn workflow_local(&self, w: Workflow) -> Result<String, String> {
        let is_leader = self.raft.metrics().borrow().current_leader == Some(self.id);
        if !is_leader {
            return Err("this node is not the Raft leader any more; retry".into());
        }
        match self.workflow.get() {
            Some(h) => h(w).await,
            None => Err("this node cannot run workflows".into()),
        }
    }

    pub(super) async fn workflow(&self, w: Workflow) -> Result<String, String> {
        let (leader, addr) = self
            .wait_leader(Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        if leader == self.id {
            return self.workflow_local(w).await;
        }
        match self
            .call_fresh(&addr, &Request::Workflow(w), Duration::from_secs(120))
            .await
        {
            Ok(Reply::Workflow(r)) => r,
            Ok(_) => Err("unexpected reply from the leader".into()),
            Err(e) => Err(format!("the leader (node {leader}) did not answer: {e}")),
        }
    }

    pub async fn wait_applied_local(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<u64, ConsensusError> {
        let started = Instant::now();
        let applied = self
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(|m| m.last_applied.map_or(0, |l| l.index))
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        // Fenced (no primary): confirm only once every statement routed
        // under the old epoch has been answered (see `gate`).
        if self.applied.borrow().topology.primary.is_none() {
            let left = timeout.saturating_sub(started.elapsed());
            // Half the time for them to end by themselves; then they are
            // killed, and the other half for their answers.
            if !self.gate.drained(left / 2).await {
                self.gate.stop_older();
            }
            let left = timeout.saturating_sub(started.elapsed());
            if !self.gate.drained(left).await {
                return Err(ConsensusError::Raft(format!(
                    "{} statements routed under an older epoch still in flight after {timeout:?}",
                    self.gate.inflight()
                )));
            }
        }
        Ok(applied)
    }

    pub(super) async fn wait_all_applied(&self, index: u64, timeout: Duration) -> Vec<NodeId> {
        let members = self.applied.borrow().members.clone();
        let mut waits = Vec::new();
        for (id, addr) in members {
            let me = self.id;
            waits.push(async move {
                let ok = if id == me {
                    self.wait_applied_local(index, timeout).await.is_ok()
                } else {
                    let req = Request::WaitApplied {
                        index,
                        timeout_ms: timeout.as_millis() as u64,
                    };
                    matches!(
                        self.call_fresh(&addr, &req, timeout + Duration::from_millis(200))
                            .await,
                        Ok(Reply::WaitApplied(Ok(_)))
                    )
                };
                (id, ok)
            });
        }
        let mut missing: Vec<NodeId> = futures::future::join_all(waits)
            .await
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(id, _)| id)
            .collect();
        // A node removed within a lease's length may still hold a lease
        // from a confirmation that started before its removal, and is no
        // longer asked: it counts as one that did not confirm.
        if !concord_config::testhooks::on("forget-removed-nodes") {
            let applied = self.applied.borrow().clone();
            missing.extend(
                applied
                    .removed
                    .iter()
                    // Within a lease (and the wait) of now: the wait left
                    // may be shorter than a lease already.
                    .filter(|(_, at)| at.elapsed() < self.lease.timeout() * 2 + timeout)
                    .map(|(id, _)| *id),
            );
        }
        missing
    }

    /// A one-off call on its own connection (for fan-outs that must not
    /// queue behind each other on the shared per-peer connection).
    pub(super) async fn call_fresh(
        &self,
        addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, ConsensusError> {
        let mut conn = PeerConn::new(addr, self.id, self.secret.clone(), self.local_ip);
        conn.call(req, timeout)
            .await
            .map_err(|e| ConsensusError::Forward(e.to_string()))
    }
}

fn retryable(e: &ConsensusError) -> bool {
    matches!(e, ConsensusError::Forward(_) | ConsensusError::NoLeader)
}
