//! A minimal client on concord's own codec, for commands real drivers
//! rarely send (COM_FIELD_LIST, cursors, COM_STMT_SEND_LONG_DATA, ...) and
//! for feeding concord deliberately broken bytes.

use concord_protocol::auth;
use concord_protocol::consts::cap;
use concord_protocol::err::ErrPacket;
use concord_protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use concord_protocol::scan::{Expect, Scanner, Step};
use concord_protocol::{Packet, PacketStream};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub struct RawClient {
    pub s: PacketStream<TcpStream>,
    pub caps: u32,
    /// The connection id from the greeting.
    pub connection_id: u32,
    /// The greeting's server version string.
    pub server_version: Vec<u8>,
    scramble: Vec<u8>,
}

pub const CLIENT_CAPS: u32 = cap::LONG_PASSWORD
    | cap::LONG_FLAG
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::MULTI_STATEMENTS
    | cap::CONNECT_WITH_DB;

impl RawClient {
    /// Connects and logs in with mysql_native_password.
    pub async fn connect(port: u16, user: &str, password: &str, extra_caps: u32) -> RawClient {
        Self::connect_db(port, user, password, extra_caps, Some("test")).await
    }

    /// Like [`RawClient::connect`], choosing the database (or none).
    pub async fn connect_db(
        port: u16,
        user: &str,
        password: &str,
        extra_caps: u32,
        db: Option<&str>,
    ) -> RawClient {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut s = PacketStream::new(tcp);
        s.max_packet = 1 << 30;
        let g = s.read_packet().await.unwrap();
        let hs = HandshakeV10::decode(&g.payload).unwrap();
        let mut caps = (CLIENT_CAPS | extra_caps) & hs.capabilities;
        if db.is_none() {
            caps &= !cap::CONNECT_WITH_DB;
        }
        let resp = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 30,
            collation: 45,
            user: user.as_bytes().to_vec(),
            auth_response: auth::native_scramble(password.as_bytes(), &hs.scramble),
            database: db.map(|d| d.as_bytes().to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attrs: vec![],
        };
        let mut b = bytes::BytesMut::new();
        resp.encode(&mut b);
        let mut seq = 1;
        s.send(&mut seq, &b).await.unwrap();
        loop {
            let p = s.read_packet().await.unwrap();
            match p.first() {
                Some(0x00) => break,
                Some(0xfe) => {
                    let sw = AuthSwitchRequest::decode(&p.payload).unwrap();
                    let mut seq = p.next_seq();
                    let r = auth::native_scramble(password.as_bytes(), &sw.data);
                    s.send(&mut seq, &r).await.unwrap();
                }
                _ => panic!("login failed: {:?}", String::from_utf8_lossy(&p.payload)),
            }
        }
        RawClient {
            s,
            caps,
            connection_id: hs.connection_id,
            server_version: hs.server_version,
            scramble: hs.scramble,
        }
    }

    /// COM_CHANGE_USER with mysql_native_password, following an auth
    /// switch if the server asks for one; returns the final OK or ERR.
    pub async fn change_user(&mut self, user: &str, password: &str, db: Option<&str>) -> Vec<u8> {
        let mut p = vec![0x11];
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let auth = auth::native_scramble(password.as_bytes(), &self.scramble);
        p.push(auth.len() as u8);
        p.extend_from_slice(&auth);
        p.extend_from_slice(db.unwrap_or("").as_bytes());
        p.push(0);
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let mut seq = 0;
        if self.s.send(&mut seq, &p).await.is_err() {
            return b"<closed>".to_vec();
        }
        loop {
            let Ok(r) = self.s.read_packet().await else {
                return b"<closed>".to_vec();
            };
            match r.first() {
                Some(0xfe) => {
                    let Ok(sw) = AuthSwitchRequest::decode(&r.payload) else {
                        return r.payload.to_vec();
                    };
                    let mut seq = r.next_seq();
                    let a = auth::native_scramble(password.as_bytes(), &sw.data);
                    if self.s.send(&mut seq, &a).await.is_err() {
                        return b"<closed>".to_vec();
                    }
                }
                // caching_sha2 "fast auth ok" before the OK.
                Some(0x01) => continue,
                _ => return r.payload.to_vec(),
            }
        }
    }

    /// Sends one command and returns every packet of its response.
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Vec<Packet> {
        let mut seq = 0;
        self.s.send(&mut seq, payload).await.unwrap();
        self.read_response(expect).await
    }

    pub async fn read_response(&mut self, expect: Expect) -> Vec<Packet> {
        let mut sc = Scanner::new(expect, self.caps & cap::DEPRECATE_EOF != 0);
        let mut out = Vec::new();
        loop {
            let p = self.s.read_packet().await.unwrap();
            let len = p.payload.len().min(concord_protocol::MAX_PAYLOAD - 1);
            let step = sc.packet(&p.payload, len).unwrap();
            out.push(p);
            match step {
                Step::More => {}
                Step::Done => return out,
                Step::LocalInfile => panic!("unexpected LOCAL INFILE"),
            }
        }
    }

    /// Sends a command that has no response.
    pub async fn send(&mut self, payload: &[u8]) {
        let mut seq = 0;
        self.s.send(&mut seq, payload).await.unwrap();
    }
}

/// Reads until the peer closes; returns what arrived (bounded wait).
pub async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// The ERR packet in a byte stream (after the greeting, if any).
pub fn find_err(bytes: &[u8]) -> Option<ErrPacket> {
    let mut rest = bytes;
    while let Some((len, _)) = concord_protocol::packet::header(rest) {
        let body = rest.get(4..4 + len)?;
        if body.first() == Some(&0xff) {
            return ErrPacket::decode(body).ok();
        }
        rest = &rest[4 + len..];
    }
    None
}
