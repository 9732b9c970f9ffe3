//! Incoming peer connections: authenticate, then answer requests one at a
//! time per connection.

use super::frame::{accept_handshake, read_frame, write_frame, FrameError};
use super::rpc::{Reply, Request};
use crate::node::Inner;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("raft accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &inner).await {
                match e {
                    FrameError::Auth => {
                        tracing::warn!(%peer, "rejected a Raft peer: it does not know cluster.secret")
                    }
                    FrameError::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    other => tracing::debug!(%peer, "raft peer connection ended: {other}"),
                }
            }
        });
    }
}

async fn connection(mut s: TcpStream, inner: &Arc<Inner>) -> Result<(), FrameError> {
    let _ = s.set_nodelay(true);
    let peer_id = accept_handshake(&mut s, &inner.secret).await?;
    tracing::debug!(peer = peer_id, "raft peer authenticated");
    loop {
        let req: Request = read_frame(&mut s).await?;
        let reply = dispatch(inner, req).await;
        write_frame(&mut s, &reply).await?;
    }
}

async fn dispatch(inner: &Arc<Inner>, req: Request) -> Reply {
    match req {
        Request::Append(r) => Reply::Append(inner.raft.append_entries(r).await),
        Request::Vote(r) => Reply::Vote(inner.raft.vote(r).await),
        Request::Snapshot(r) => Reply::Snapshot(inner.raft.install_snapshot(r).await),
        Request::Write(cmd) => {
            Reply::Write(inner.write_local(cmd).await.map_err(|e| e.to_string()))
        }
        Request::ReadIndex => {
            Reply::ReadIndex(inner.read_index_local().await.map_err(|e| e.to_string()))
        }
        Request::Membership(op) => {
            Reply::Membership(inner.membership_local(op).await.map_err(|e| e.to_string()))
        }
        Request::Status => Reply::Status(Box::new(inner.status())),
        Request::Report(v) => Reply::Report(inner.report(v)),
        Request::Workflow(w) => Reply::Workflow(inner.workflow_local(w).await),
        Request::App(v) => Reply::App(inner.app_local(v).await),
        Request::WaitApplied { index, timeout_ms } => Reply::WaitApplied(
            inner
                .wait_applied_local(index, std::time::Duration::from_millis(timeout_ms))
                .await
                .map_err(|e| e.to_string()),
        ),
    }
}
