//! The client listener: accept, enforce the global connection cap, spawn a
//! session task per connection.

use crate::shared::Shared;
use concord_protocol::codes;
use concord_protocol::err::ErrPacket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Accept-queue length asked of the kernel (capped by `net.core.somaxconn`):
/// a burst of connects larger than tokio's default of 1024 would otherwise
/// have SYNs dropped and clients waiting for retransmits.
const BACKLOG: i32 = 4096;

/// A listening socket; with `reuse_port`, one of several (one per session
/// thread) sharing the address.
pub fn bind_listener(addr: &str, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let sa = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} did not resolve"),
        )
    })?;
    let s = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Decrements the live-connection count however the session ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.sessions.count.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn serve_clients(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if shared.shutting_down.load(Ordering::Acquire) {
            drop(tcp);
            continue;
        }
        let max = shared.config.load().listener.max_connections;
        let n = shared.sessions.count.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(shared.clone());
        if n >= max {
            let err = ErrPacket::new(
                codes::CON_COUNT_ERROR,
                format!("Too many connections: this concord node allows {max} (listener.max_connections)"),
            );
            // Written here at once (a small packet into an empty socket
            // buffer), so a flood of refusals holds no descriptors in
            // queued tasks; only a socket that cannot take it now waits.
            if let Some((tcp, rest)) = crate::net::refuse_now(tcp, &err) {
                tokio::spawn(async move {
                    let _slot = slot;
                    crate::net::refuse_rest(tcp, &rest).await;
                });
            }
            continue;
        }
        // Only for sockets that are served.
        crate::net::tune(&tcp);
        let shared = shared.clone();
        tokio::spawn(crate::alloc_track::Tracked::new(async move {
            let _slot = slot;
            crate::session::run(shared, tcp, peer).await;
        }));
    }
}
