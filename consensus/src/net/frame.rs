//! Peer framing (4-byte big-endian length + JSON) and the mutual
//! challenge-response that proves both ends know the cluster secret
//! before any Raft message is accepted.

use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame accepted from a peer (snapshot chunks are far smaller).
pub const MAX_FRAME: usize = 64 << 20;
/// Largest frame accepted before a peer has proved it knows the secret:
/// an unauthenticated connection cannot make the node allocate more.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;
/// A peer must finish the handshake within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("bad message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("peer failed authentication (wrong cluster.secret?)")]
    Auth,
    #[error("timed out")]
    Timeout,
}

pub async fn write_frame<T: Serialize>(s: &mut TcpStream, msg: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await?;
    Ok(())
}

pub async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> Result<T, FrameError> {
    read_frame_max(s, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes. The buffer grows with the bytes
/// that actually arrive, not with what the length header claims.
pub async fn read_frame_max<T: DeserializeOwned>(
    s: &mut TcpStream,
    max: usize,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(64 << 10));
    (&mut *s).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(serde_json::from_slice(&body)?)
}

#[derive(Serialize, Deserialize)]
struct Hello {
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Auth {
    node_id: u64,
    nonce: String,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct AuthOk {
    mac: String,
}

fn nonce() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    for p in parts {
        m.update(p);
        m.update(b"|");
    }
    m.finalize()
        .into_bytes()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Server side: returns the authenticated peer's node id.
pub async fn accept_handshake(s: &mut TcpStream, secret: &[u8]) -> Result<u64, FrameError> {
    let fut = async {
        let ns = nonce();
        write_frame(s, &Hello { nonce: ns.clone() }).await?;
        let a: Auth = read_frame_max(s, MAX_HANDSHAKE_FRAME).await?;
        let want = mac(
            secret,
            &[
                b"client",
                ns.as_bytes(),
                a.nonce.as_bytes(),
                &a.node_id.to_be_bytes(),
            ],
        );
        if !same(&want, &a.mac) {
            return Err(FrameError::Auth);
        }
        let reply = mac(secret, &[b"server", a.nonce.as_bytes(), ns.as_bytes()]);
        write_frame(s, &AuthOk { mac: reply }).await?;
        Ok(a.node_id)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| FrameError::Timeout)?
}

/// Client side: proves the secret and checks the server knows it too.
pub async fn connect_handshake(
    s: &mut TcpStream,
    secret: &[u8],
    node_id: u64,
) -> Result<(), FrameError> {
    let fut = async {
        let h: Hello = read_frame_max(s, MAX_HANDSHAKE_FRAME).await?;
        let nc = nonce();
        let m = mac(
            secret,
            &[
                b"client",
                h.nonce.as_bytes(),
                nc.as_bytes(),
                &node_id.to_be_bytes(),
            ],
        );
        write_frame(
            s,
            &Auth {
                node_id,
                nonce: nc.clone(),
                mac: m,
            },
        )
        .await?;
        let ok: AuthOk = read_frame_max(s, MAX_HANDSHAKE_FRAME)
            .await
            .map_err(|_| FrameError::Auth)?;
        let want = mac(secret, &[b"server", nc.as_bytes(), h.nonce.as_bytes()]);
        if !same(&want, &ok.mac) {
            return Err(FrameError::Auth);
        }
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| FrameError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(
        server_secret: &'static [u8],
        client_secret: &'static [u8],
    ) -> (Result<u64, FrameError>, Result<(), FrameError>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            accept_handshake(&mut s, server_secret).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let cr = connect_handshake(&mut c, client_secret, 7).await;
        drop(c);
        (srv.await.unwrap(), cr)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let (s, c) = pair(b"s3cret", b"s3cret").await;
        assert_eq!(s.unwrap(), 7);
        c.unwrap();
    }

    #[tokio::test]
    async fn an_unauthenticated_peer_cannot_announce_a_big_frame() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            accept_handshake(&mut s, b"s3cret").await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _: Hello = read_frame(&mut c).await.unwrap();
        c.write_all(&(60u32 << 20).to_be_bytes()).await.unwrap();
        assert!(matches!(srv.await.unwrap(), Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn wrong_secret_is_rejected() {
        let (s, c) = pair(b"s3cret", b"guess").await;
        assert!(matches!(s, Err(FrameError::Auth)));
        assert!(c.is_err());
    }
}
