//! Outgoing peer connections: one authenticated TCP connection per peer,
//! re-established on error, and openraft's network traits on top.

use super::frame::{connect_handshake, read_frame, write_frame, FrameError};
use super::rpc::{Reply, Request};
use crate::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A lazily (re)connected, authenticated connection to one peer.
pub struct PeerConn {
    addr: String,
    self_id: NodeId,
    secret: Arc<[u8]>,
    /// Source IP for outgoing connections (the node's Raft IP).
    local_ip: Option<std::net::IpAddr>,
    conn: Option<TcpStream>,
}

/// Connects from `local_ip` (if set) so peers and firewalls see the
/// node's Raft address as the source.
async fn dial(addr: &str, local_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local_ip else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let sock = if target.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if ip.is_ipv4() == target.is_ipv4() {
            sock.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        match sock.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} did not resolve"),
        )
    }))
}

impl PeerConn {
    pub fn new(
        addr: &str,
        self_id: NodeId,
        secret: Arc<[u8]>,
        local_ip: Option<std::net::IpAddr>,
    ) -> Self {
        PeerConn {
            addr: addr.to_string(),
            self_id,
            secret,
            local_ip,
            conn: None,
        }
    }

    /// One request/response round trip, bounded by `timeout`.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> Result<Reply, FrameError> {
        let fut = async {
            if self.conn.is_none() {
                let mut s = dial(&self.addr, self.local_ip).await?;
                let _ = s.set_nodelay(true);
                connect_handshake(&mut s, &self.secret, self.self_id).await?;
                self.conn = Some(s);
            }
            let Some(s) = self.conn.as_mut() else {
                return Err(FrameError::Timeout);
            };
            write_frame(s, req).await?;
            read_frame::<Reply>(s).await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(FrameError::Timeout)
            }
        }
    }
}

/// Creates openraft network clients.
pub struct Network {
    pub self_id: NodeId,
    pub secret: Arc<[u8]>,
    pub local_ip: Option<std::net::IpAddr>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            conn: PeerConn::new(&node.addr, self.self_id, self.secret.clone(), self.local_ip),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    conn: PeerConn,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from peer")]
struct Unexpected;

fn net_err<E: std::error::Error>(e: FrameError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        FrameError::Io(_) | FrameError::Timeout | FrameError::Auth => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .conn
            .call(&Request::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::Append(Ok(r))) => Ok(r),
            Ok(Reply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(RPCError::Network(NetworkError::new(&Unexpected))),
            Err(e) => Err(net_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .conn
            .call(&Request::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::Snapshot(Ok(r))) => Ok(r),
            Ok(Reply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(RPCError::Network(NetworkError::new(&Unexpected))),
            Err(e) => Err(net_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.conn.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(RPCError::Network(NetworkError::new(&Unexpected))),
            Err(e) => Err(net_err(e)),
        }
    }
}
