//! The server side of the connection phase: greeting, optional TLS
//! upgrade, and client authentication against `[[users]]` with
//! mysql_native_password or caching_sha2_password (fast path always; full
//! auth over TLS for users configured with a native digest only).

use crate::error::SessionError;
use crate::net::ClientIo;
use crate::shared::Shared;
use crate::users::User;
use concord_protocol::auth;
use concord_protocol::codes;
use concord_protocol::consts::{cap, status, CACHING_SHA2, NATIVE_PASSWORD};
use concord_protocol::err::ErrPacket;
use concord_protocol::handshake::{sha2_more, AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use concord_protocol::{PacketStream, ProtoError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A client that proved who it is.
pub struct Authenticated {
    pub stream: PacketStream<ClientIo>,
    pub user: Arc<User>,
    pub caps: u32,
    pub collation: u8,
    pub database: Option<String>,
    pub attrs: Vec<u8>,
    /// Sequence id for the packet that completes the login.
    pub seq: u8,
}

/// The auth method concord checks a response with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Native,
    Sha2Fast,
    /// caching_sha2 full auth: the password in clear text over TLS.
    Sha2Full,
}

fn denied(user: &[u8], peer: &SocketAddr, with_password: bool) -> SessionError {
    SessionError::fatal(
        codes::ACCESS_DENIED,
        format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            String::from_utf8_lossy(user),
            peer.ip(),
            if with_password { "YES" } else { "NO" }
        ),
    )
}

/// The throttle (`listener.max_auth_failures_per_minute`) for one address:
/// `charge = false` only asks whether it is blocked (before the greeting);
/// `charge = true` counts a password check as a failure under the
/// throttle's lock before it runs (refunded on success), so checks running
/// at the same moment on other worker threads each see the others and
/// parallel connections get no more guesses than sequential ones.
/// `Some`: the address is blocked, with the refusal to send.
fn throttle(shared: &Shared, peer: SocketAddr, charge: bool) -> Option<ErrPacket> {
    let limit = shared.config.load().listener.max_auth_failures_per_minute;
    let (ip, now) = (peer.ip(), std::time::Instant::now());
    let wait = if charge {
        shared.auth_throttle.charge(ip, limit, now)
    } else {
        shared.auth_throttle.blocked(ip, limit, now)
    }?;
    crate::metrics::auth_throttled();
    Some(ErrPacket::new(
        codes::HOST_IS_BLOCKED,
        format!(
            "Host '{ip}' is blocked for {}s: more than {limit} failed logins in a minute (listener.max_auth_failures_per_minute)",
            wait.as_secs().max(1)
        ),
    ))
}

fn charge(shared: &Shared, peer: SocketAddr) -> Option<ErrPacket> {
    throttle(shared, peer, true)
}

/// Who may log in on a port, and how.
pub struct Gate<'a> {
    pub users: &'a crate::users::UserDb,
    pub require_tls: bool,
    /// Largest packet after login.
    pub max_packet: usize,
}

/// The whole connection phase for one client on any port: refuse a
/// throttled source address, run [`accept`] within
/// `listener.handshake_timeout`, send the error of a failed login and count
/// it against the address. `None`: the connection is done.
pub async fn login(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    conn_id: u32,
    gate: &Gate<'_>,
    port: &str,
) -> Option<Authenticated> {
    let timeout = shared.config.load().listener.handshake_timeout.get();
    if let Some(e) = throttle(shared, peer, false) {
        tracing::warn!(%peer, port, "refused: too many failed logins from this address");
        crate::net::refuse(tcp, &e).await;
        return None;
    }
    match tokio::time::timeout(timeout, accept(tcp, peer, shared, conn_id, gate)).await {
        Err(_) => {
            tracing::info!(session = conn_id, %peer, port, "handshake not finished within {timeout:?} (listener.handshake_timeout); closed");
            None
        }
        Ok(Err((stream, seq, e))) => {
            tracing::info!(session = conn_id, %peer, port, "login failed: {e}");
            if let Some(p) = e.to_packet() {
                if p.code == codes::ACCESS_DENIED.0 {
                    // Counted by the throttle where it was decided (`charge`).
                    crate::metrics::auth_failed();
                }
                if let Some(mut s) = stream {
                    let mut seq = seq;
                    let _ = s.send(&mut seq, &p.to_payload()).await;
                }
            }
            None
        }
        Ok(Ok(a)) => Some(a),
    }
}

pub async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    conn_id: u32,
    gate: &Gate<'_>,
) -> Result<Authenticated, (Option<PacketStream<ClientIo>>, u8, SessionError)> {
    let mut stream = PacketStream::new(ClientIo::plain(tcp));
    stream.max_packet = 1 << 16; // nothing in the connection phase is larger
    let tls = shared.tls.load_full();
    let scramble = auth::new_scramble();
    let mut offer = cap::SERVER_OFFER;
    if tls.is_some() {
        offer |= cap::SSL;
    }
    let greeting = HandshakeV10 {
        server_version: shared.server_version().to_vec(),
        connection_id: conn_id,
        scramble: scramble.to_vec(),
        capabilities: offer,
        collation: concord_protocol::consts::DEFAULT_COLLATION,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.as_bytes().to_vec(),
    };
    let mut buf = bytes::BytesMut::new();
    greeting.encode(&mut buf);
    let mut seq = 0u8;
    macro_rules! fail {
        ($s:expr, $e:expr) => {
            return Err((Some($s), seq, $e))
        };
    }
    if let Err(e) = stream.send(&mut seq, &buf).await {
        fail!(stream, SessionError::Client(e));
    }
    // Read exactly one packet: if it is an SSLRequest, the bytes after it
    // are the TLS ClientHello and must stay on the socket for rustls.
    let mut first = match read_one_exact(&mut stream, seq).await {
        Ok(p) => p,
        Err(e) => fail!(stream, SessionError::Client(e)),
    };
    seq = first.next_seq();
    if HandshakeResponse::is_ssl_request(&first.payload) {
        let Some(acceptor) = tls.as_ref().clone() else {
            fail!(
                stream,
                SessionError::Client(ProtoError::malformed("SSL requested but not offered"))
            );
        };
        if !stream.rbuf.is_empty() {
            fail!(
                stream,
                SessionError::Client(ProtoError::malformed("data after SSLRequest"))
            );
        }
        let crate::net::Transport::Plain(tcp) = stream.io.transport else {
            return Err((
                None,
                seq,
                SessionError::Client(ProtoError::malformed("TLS requested twice")),
            ));
        };
        let tls_stream = match acceptor.accept(tcp).await {
            Ok(s) => s,
            Err(e) => return Err((None, seq, SessionError::Client(ProtoError::Io(e)))),
        };
        stream = PacketStream {
            io: ClientIo::tls(tls_stream),
            rbuf: stream.rbuf,
            wbuf: stream.wbuf,
            max_packet: stream.max_packet,
        };
        first = match stream.read_packet_seq(seq).await {
            Ok(p) => p,
            Err(e) => fail!(stream, SessionError::Client(e)),
        };
        seq = first.next_seq();
    }
    let resp = match HandshakeResponse::decode(&first.payload) {
        Ok(r) => r,
        Err(e) => fail!(stream, SessionError::Client(e)),
    };
    let is_tls = stream.io.is_tls();
    if gate.require_tls && !is_tls {
        fail!(
            stream,
            SessionError::fatal(
                codes::SECURE_TRANSPORT_REQUIRED,
                "Connections using insecure transport are prohibited: concord requires TLS (listener.require_tls)",
            )
        );
    }
    let name = String::from_utf8_lossy(&resp.user).into_owned();
    let Some(user) = gate.users.get(&name).cloned() else {
        if let Some(e) = charge(shared, peer) {
            fail!(stream, SessionError::Fatal(e));
        }
        fail!(
            stream,
            denied(&resp.user, &peer, !resp.auth_response.is_empty())
        );
    };
    if user.require_tls && !is_tls {
        if let Some(e) = charge(shared, peer) {
            fail!(stream, SessionError::Fatal(e));
        }
        fail!(
            stream,
            SessionError::fatal(
                codes::ACCESS_DENIED,
                format!(
                    "Access denied for user '{name}'@'{}': this user must connect with TLS",
                    peer.ip()
                ),
            )
        );
    }

    let client_plugin = resp
        .auth_plugin
        .clone()
        .unwrap_or_else(|| NATIVE_PASSWORD.as_bytes().to_vec());
    // An empty first response (some clients send one when their plugin
    // differs from the greeting's) gets an auth switch, as MySQL does.
    let method = if resp.auth_response.is_empty() && !user.empty_password {
        None
    } else {
        choose(&user, &client_plugin, is_tls)
    };
    let mut response = resp.auth_response.clone();
    let mut scramble_used = scramble.to_vec();
    let mut method = match method {
        Some(m) => m,
        None => {
            // Switch the client to a plugin concord can check for this
            // user, keeping the client's own choice where possible.
            let (plugin, m) = match choose(&user, &client_plugin, is_tls) {
                Some(Method::Sha2Fast) | Some(Method::Sha2Full) => (CACHING_SHA2, Method::Sha2Fast),
                _ if user.native.is_some() => (NATIVE_PASSWORD, Method::Native),
                _ => (CACHING_SHA2, Method::Sha2Fast),
            };
            let fresh = auth::new_scramble();
            let mut data = fresh.to_vec();
            data.push(0);
            let mut b = bytes::BytesMut::new();
            AuthSwitchRequest {
                plugin: plugin.as_bytes().to_vec(),
                data,
            }
            .encode(&mut b);
            if let Err(e) = stream.send(&mut seq, &b).await {
                fail!(stream, SessionError::Client(e));
            }
            let p = match stream.read_packet_seq(seq).await {
                Ok(p) => p,
                Err(e) => fail!(stream, SessionError::Client(e)),
            };
            seq = p.next_seq();
            response = p.payload.to_vec();
            scramble_used = fresh.to_vec();
            m
        }
    };
    if method == Method::Sha2Fast && user.sha2.is_none() {
        method = Method::Sha2Full;
    }
    // Whether this attempt was charged to the throttle (refunded on success).
    let mut charged = false;
    if method != Method::Sha2Full {
        if let Some(e) = charge(shared, peer) {
            fail!(stream, SessionError::Fatal(e));
        }
        charged = true;
    }
    let ok = if user.empty_password {
        response.is_empty()
    } else {
        match method {
            Method::Native => user
                .native
                .is_some_and(|d| auth::native_verify(&d, &scramble_used, &response)),
            Method::Sha2Fast => {
                let good = user
                    .sha2
                    .is_some_and(|d| auth::sha2_verify(&d, &scramble_used, &response));
                if good {
                    if let Err(e) = stream
                        .send(&mut seq, &[0x01, sha2_more::FAST_AUTH_OK])
                        .await
                    {
                        fail!(stream, SessionError::Client(e));
                    }
                }
                good
            }
            Method::Sha2Full => {
                if !is_tls {
                    if let Some(e) = charge(shared, peer) {
                        fail!(stream, SessionError::Fatal(e));
                    }
                    fail!(
                        stream,
                        SessionError::fatal(
                            codes::ACCESS_DENIED,
                            format!(
                                "Access denied for user '{name}'@'{}': caching_sha2_password full authentication requires TLS (connect with --ssl)",
                                peer.ip()
                            ),
                        )
                    );
                }
                if let Err(e) = stream.send(&mut seq, &[0x01, sha2_more::FULL_AUTH]).await {
                    fail!(stream, SessionError::Client(e));
                }
                let p = match stream.read_packet_seq(seq).await {
                    Ok(p) => p,
                    Err(e) => fail!(stream, SessionError::Client(e)),
                };
                seq = p.next_seq();
                if let Some(e) = charge(shared, peer) {
                    fail!(stream, SessionError::Fatal(e));
                }
                charged = true;
                let pw = p.payload.strip_suffix(&[0]).unwrap_or(&p.payload);
                user.native
                    .is_some_and(|d| auth::constant_time_eq(&auth::native_digest(pw), &d))
            }
        }
    };
    if !ok {
        fail!(stream, denied(&resp.user, &peer, !response.is_empty()));
    }
    if charged {
        shared.auth_throttle.refund(peer.ip());
    }
    stream.max_packet = gate.max_packet;
    Ok(Authenticated {
        stream,
        user,
        caps: resp.capabilities & offer,
        collation: if resp.collation == 0 {
            concord_protocol::consts::DEFAULT_COLLATION
        } else {
            resp.collation
        },
        database: resp
            .database
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(&d).into_owned()),
        attrs: resp.attrs,
        seq,
    })
}

/// Reads one packet without reading past it (no read-ahead into the
/// buffer), so a TLS upgrade can follow on the raw socket.
async fn read_one_exact(
    stream: &mut PacketStream<ClientIo>,
    expected_seq: u8,
) -> Result<concord_protocol::Packet, ProtoError> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    stream
        .io
        .read_exact(&mut head)
        .await
        .map_err(eof_as_closed)?;
    let (len, seq) = concord_protocol::packet::header(&head).unwrap_or((0, 0));
    if seq != expected_seq {
        return Err(ProtoError::Sequence {
            expected: expected_seq,
            got: seq,
        });
    }
    if len > stream.max_packet {
        return Err(ProtoError::TooLarge {
            len,
            limit: stream.max_packet,
        });
    }
    let mut body = vec![0u8; len];
    stream
        .io
        .read_exact(&mut body)
        .await
        .map_err(eof_as_closed)?;
    Ok(concord_protocol::Packet {
        seq,
        last_seq: seq,
        payload: body.into(),
    })
}

fn eof_as_closed(e: std::io::Error) -> ProtoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtoError::Closed
    } else {
        ProtoError::Io(e)
    }
}

/// The method for the client's chosen plugin, if concord can check it.
fn choose(user: &User, plugin: &[u8], is_tls: bool) -> Option<Method> {
    match plugin {
        b"mysql_native_password" if user.native.is_some() => Some(Method::Native),
        b"caching_sha2_password" if user.sha2.is_some() => Some(Method::Sha2Fast),
        b"caching_sha2_password" if is_tls && user.native.is_some() => Some(Method::Sha2Full),
        _ => None,
    }
}

/// Re-authenticates for COM_CHANGE_USER: always through an auth switch with
/// a fresh scramble.
pub async fn change_user(
    stream: &mut PacketStream<ClientIo>,
    shared: &Shared,
    peer: &SocketAddr,
    user_name: &[u8],
    seq: &mut u8,
) -> Result<Arc<User>, SessionError> {
    let users = shared.users.load();
    let name = String::from_utf8_lossy(user_name).into_owned();
    let user = users.get(&name).cloned();
    let (plugin, native) = match &user {
        Some(u) if u.native.is_none() => (CACHING_SHA2, false),
        _ => (NATIVE_PASSWORD, true),
    };
    let fresh = auth::new_scramble();
    let mut data = fresh.to_vec();
    data.push(0);
    let mut b = bytes::BytesMut::new();
    AuthSwitchRequest {
        plugin: plugin.as_bytes().to_vec(),
        data,
    }
    .encode(&mut b);
    stream.send(seq, &b).await.map_err(SessionError::Client)?;
    let p = stream
        .read_packet_seq(*seq)
        .await
        .map_err(SessionError::Client)?;
    *seq = p.next_seq();
    if let Some(e) = charge(shared, *peer) {
        return Err(SessionError::Fatal(e));
    }
    let refuse = |with_password: bool| {
        crate::metrics::auth_failed();
        denied(user_name, peer, with_password)
    };
    let Some(user) = user else {
        return Err(refuse(!p.payload.is_empty()));
    };
    if user.require_tls && !stream.io.is_tls() {
        return Err(denied(user_name, peer, true));
    }
    let good = if user.empty_password {
        p.payload.is_empty()
    } else if native {
        user.native
            .is_some_and(|d| auth::native_verify(&d, &fresh, &p.payload))
    } else {
        user.sha2
            .is_some_and(|d| auth::sha2_verify(&d, &fresh, &p.payload))
    };
    if !good {
        return Err(refuse(!p.payload.is_empty()));
    }
    shared.auth_throttle.refund(peer.ip());
    if !native {
        stream
            .send(seq, &[0x01, sha2_more::FAST_AUTH_OK])
            .await
            .map_err(SessionError::Client)?;
    }
    Ok(user)
}
