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
    auth::scramble_for(plugin, password.as_bytes(), scramble).ok_or_else(|| {
        BackendError::Unsupported(format!(
            "backend asks for auth plugin '{}'; concord logs in with mysql_native_password or caching_sha2_password (give the backend account one of those)",
            String::from_utf8_lossy(plugin)
        ))
    })
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
                    // A cold cache (every MySQL restart): ask for the server's
                    // RSA key and send the password encrypted under it, never
                    // in clear text.
                    io.send(&mut seq, &[sha2_more::REQUEST_PUBLIC_KEY]).await?;
                    let k = io.read_packet_seq(seq).await?;
                    seq = k.next_seq();
                    let pem = match k.payload.split_first() {
                        Some((0x01, pem)) => pem,
                        Some((0xff, _)) => {
                            return Err(BackendError::Auth(ErrPacket::decode(&k.payload)?))
                        }
                        _ => {
                            return Err(BackendError::Protocol(ProtoError::malformed(
                                "expected the server's public key",
                            )))
                        }
                    };
                    let sealed = auth::sha2_rsa_encrypt(creds.password.as_bytes(), &scramble, pem)
                        .map_err(|e| {
                            BackendError::Unsupported(format!(
                                "caching_sha2_password full authentication: {e}"
                            ))
                        })?;
                    io.send(&mut seq, &sealed).await?;
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

/// Backend logins against a scripted server on an in-memory pipe: the
/// MySQL 8 flows MariaDB never sends (auth switch from caching_sha2,
/// caching_sha2 fast auth, full auth with the server's RSA key).
#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use concord_protocol::consts::cap;

    const PASSWORD: &str = "s3cret-pw";
    const SCRAMBLE: &[u8; 20] = b"abcdefghij0123456789";

    /// What the scripted server does after reading the client's response.
    #[derive(Clone, Copy, PartialEq)]
    enum Script {
        SwitchToNative,
        Sha2Fast,
        Sha2Full,
        Sha2FullThenDeny,
    }

    async fn server(io: tokio::io::DuplexStream, script: Script) -> Result<(), String> {
        let mut s = PacketStream::new(io);
        let mut seq = 0;
        let hs = HandshakeV10 {
            server_version: b"8.4.0-scripted".to_vec(),
            connection_id: 7,
            scramble: SCRAMBLE.to_vec(),
            capabilities: cap::BACKEND_BASE | cap::PLUGIN_AUTH | cap::SECURE_CONNECTION,
            collation: 255,
            status: 2,
            auth_plugin: CACHING_SHA2.as_bytes().to_vec(),
        };
        let mut b = BytesMut::new();
        hs.encode(&mut b);
        s.send(&mut seq, &b).await.map_err(|e| e.to_string())?;
        let p = s.read_packet_seq(seq).await.map_err(|e| e.to_string())?;
        seq = p.next_seq();
        let resp = HandshakeResponse::decode(&p.payload).map_err(|e| e.to_string())?;
        let sha2 = auth::sha2_digest(PASSWORD.as_bytes());
        match script {
            Script::SwitchToNative => {
                let fresh = b"ZYXWVUTSRQ9876543210";
                let mut data = fresh.to_vec();
                data.push(0);
                let mut b = BytesMut::new();
                AuthSwitchRequest {
                    plugin: NATIVE_PASSWORD.as_bytes().to_vec(),
                    data,
                }
                .encode(&mut b);
                s.send(&mut seq, &b).await.map_err(|e| e.to_string())?;
                let p = s.read_packet_seq(seq).await.map_err(|e| e.to_string())?;
                seq = p.next_seq();
                let d = auth::native_digest(PASSWORD.as_bytes());
                if !auth::native_verify(&d, fresh, &p.payload) {
                    return Err("bad native scramble after the switch".into());
                }
            }
            Script::Sha2Fast => {
                if !auth::sha2_verify(&sha2, SCRAMBLE, &resp.auth_response) {
                    return Err("bad caching_sha2 scramble".into());
                }
                s.send(&mut seq, &[0x01, sha2_more::FAST_AUTH_OK])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Script::Sha2Full | Script::Sha2FullThenDeny => {
                use rsa::pkcs8::DecodePrivateKey;
                s.send(&mut seq, &[0x01, sha2_more::FULL_AUTH])
                    .await
                    .map_err(|e| e.to_string())?;
                let p = s.read_packet_seq(seq).await.map_err(|e| e.to_string())?;
                seq = p.next_seq();
                if p.payload[..] != [sha2_more::REQUEST_PUBLIC_KEY] {
                    return Err(format!(
                        "expected a public key request, got {:?}",
                        p.payload
                    ));
                }
                let mut k = vec![0x01];
                k.extend_from_slice(include_bytes!("testdata/rsa-test-pub.pem"));
                s.send(&mut seq, &k).await.map_err(|e| e.to_string())?;
                let p = s.read_packet_seq(seq).await.map_err(|e| e.to_string())?;
                seq = p.next_seq();
                let key =
                    rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("testdata/rsa-test-key.pem"))
                        .map_err(|e| e.to_string())?;
                let mut clear = key
                    .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &p.payload)
                    .map_err(|e| e.to_string())?;
                for (i, b) in clear.iter_mut().enumerate() {
                    *b ^= SCRAMBLE[i % SCRAMBLE.len()];
                }
                if clear != [PASSWORD.as_bytes(), &[0]].concat() {
                    return Err("the decrypted password is wrong".into());
                }
                if script == Script::Sha2FullThenDeny {
                    let e = ErrPacket::new(concord_protocol::codes::ACCESS_DENIED, "denied");
                    s.send(&mut seq, &e.to_payload())
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(());
                }
            }
        }
        let mut b = BytesMut::new();
        OkPacket::default().encode(&mut b, resp.capabilities);
        s.send(&mut seq, &b).await.map_err(|e| e.to_string())
    }

    async fn login_with(script: Script) -> (Result<LoginInfo, BackendError>, Result<(), String>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(server(b, script));
        let mut c = PacketStream::new(a);
        let creds = Credentials {
            user: "app",
            password: PASSWORD,
            database: None,
            collation: 45,
            flavor: 0,
        };
        let r = login(&mut c, &creds).await;
        drop(c);
        (r, srv.await.unwrap_or_else(|e| Err(e.to_string())))
    }

    #[tokio::test]
    async fn mysql8_login_flows() {
        for script in [Script::SwitchToNative, Script::Sha2Fast, Script::Sha2Full] {
            let (r, srv) = login_with(script).await;
            assert_eq!(srv, Ok(()));
            let info = r.unwrap_or_else(|e| panic!("login failed: {e}"));
            assert_eq!(info.thread_id, 7);
        }
        let (r, srv) = login_with(Script::Sha2FullThenDeny).await;
        assert_eq!(srv, Ok(()));
        assert!(matches!(r, Err(BackendError::Auth(_))), "{r:?}");
    }
}
