//! Logging in to a backend as a client: read the greeting, answer with the
//! scramble for the server's plugin, follow auth switches and
//! caching_sha2's extra round.

use crate::error::BackendError;
use concord_protocol::auth;
use concord_protocol::consts::{cap, CACHING_SHA2, NATIVE_PASSWORD};
use concord_protocol::err::ErrPacket;
use concord_protocol::handshake::{sha2_more, AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use concord_protocol::ok::OkPacket;
use concord_protocol::{PacketStream, ProtoError};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a successful login tells us about the backend.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    pub server_version: Vec<u8>,
    pub thread_id: u32,
    pub caps: u32,
    pub status: u16,
}

pub struct Credentials<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub database: Option<&'a str>,
    pub collation: u8,
    /// Capability flags requested on top of `cap::BACKEND_BASE`.
    pub flavor: u32,
}

fn scramble_for(plugin: &[u8], password: &str, scramble: &[u8]) -> Result<Vec<u8>, BackendError> {
    match plugin {
        b"" | b"mysql_native_password" => Ok(auth::native_scramble(password.as_bytes(), scramble)),
        b"caching_sha2_password" => Ok(auth::sha2_scramble(password.as_bytes(), scramble)),
        other => Err(BackendError::Unsupported(format!(
            "backend asks for auth plugin '{}'; concord logs in with mysql_native_password or caching_sha2_password (give the backend account one of those)",
            String::from_utf8_lossy(other)
        ))),
    }
}

pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut PacketStream<S>,
    creds: &Credentials<'_>,
) -> Result<LoginInfo, BackendError> {
    let greeting = io.read_packet().await?;
    if greeting.first() == Some(0xff) {
        return Err(BackendError::Auth(ErrPacket::decode(&greeting.payload)?));
    }
    let hs = HandshakeV10::decode(&greeting.payload)?;
    if hs.capabilities & cap::PROTOCOL_41 == 0 {
        return Err(BackendError::Unsupported(
            "backend does not speak protocol 4.1".into(),
        ));
    }
    let mut caps = (cap::BACKEND_BASE | creds.flavor) & hs.capabilities;
    if creds.database.is_some() {
        caps |= cap::CONNECT_WITH_DB & hs.capabilities;
    }
    let mut plugin = if hs.auth_plugin.is_empty() {
        NATIVE_PASSWORD.as_bytes().to_vec()
    } else {
        hs.auth_plugin.clone()
    };
    let mut scramble = hs.scramble.clone();
    let resp = HandshakeResponse {
        capabilities: caps,
        max_packet: 1 << 30,
        collation: creds.collation,
        user: creds.user.as_bytes().to_vec(),
        auth_response: scramble_for(&plugin, creds.password, &scramble)?,
        database: creds.database.map(|d| d.as_bytes().to_vec()),
        auth_plugin: Some(plugin.clone()),
        attrs: connect_attrs(),
    };
    let mut payload = bytes::BytesMut::new();
    resp.encode(&mut payload);
    let mut seq = greeting.next_seq();
    io.send(&mut seq, &payload).await?;

    loop {
        let p = io.read_packet_seq(seq).await?;
        seq = p.next_seq();
        match p.first() {
            Some(0x00) => {
                let ok = OkPacket::decode(&p.payload, caps)?;
                return Ok(LoginInfo {
                    server_version: hs.server_version,
                    thread_id: hs.connection_id,
                    caps,
                    status: ok.status,
                });
            }
            Some(0xff) => return Err(BackendError::Auth(ErrPacket::decode(&p.payload)?)),
            Some(0xfe) => {
                let sw = AuthSwitchRequest::decode(&p.payload)?;
                plugin = sw.plugin;
                scramble = sw.data;
                let r = scramble_for(&plugin, creds.password, &scramble)?;
                io.send(&mut seq, &r).await?;
            }
            Some(0x01) if plugin == CACHING_SHA2.as_bytes() => match p.payload.get(1) {
                Some(&sha2_more::FAST_AUTH_OK) => continue,
                Some(&sha2_more::FULL_AUTH) => {
                    return Err(BackendError::Unsupported(
                        "backend wants caching_sha2_password full authentication, which needs TLS or RSA; \
                         concord does not send passwords in clear text: log in once with the mysql client to \
                         warm the server's cache, or use mysql_native_password for the backend account"
                            .into(),
                    ))
                }
                _ => {
                    return Err(BackendError::Protocol(ProtoError::malformed(
                        "unexpected caching_sha2_password message",
                    )))
                }
            },
            _ => {
                return Err(BackendError::Protocol(ProtoError::malformed(
                    "unexpected packet during backend login",
                )))
            }
        }
    }
}

fn connect_attrs() -> Vec<u8> {
    use concord_protocol::wr::Wr;
    let mut b = bytes::BytesMut::new();
    for (k, v) in [("_client_name", "concord"), ("program_name", "concord")] {
        b.put_lenenc_bytes(k.as_bytes());
        b.put_lenenc_bytes(v.as_bytes());
    }
    b.to_vec()
}
