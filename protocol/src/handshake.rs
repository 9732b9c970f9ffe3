//! Connection phase packets: the server greeting (HandshakeV10), the
//! client's HandshakeResponse41 (and its SSLRequest prefix), AuthSwitchRequest
//! and AuthMoreData.

use crate::consts::cap;
use crate::rd::Rd;
use crate::wr::Wr;
use crate::ProtoError;
use bytes::{BufMut, BytesMut};

type R<T> = Result<T, ProtoError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeV10 {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// Auth plugin data (the scramble), usually 20 bytes.
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    pub collation: u8,
    pub status: u16,
    pub auth_plugin: Vec<u8>,
}

impl HandshakeV10 {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(10);
        out.put_null_str(&self.server_version);
        out.put_u32_le(self.connection_id);
        let (part1, part2) = self.scramble.split_at(self.scramble.len().min(8));
        out.put_slice(part1);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.collation);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8((self.scramble.len() + 1) as u8);
        out.put_slice(&[0u8; 10]);
        out.put_slice(part2);
        // part 2 is at least 13 bytes including the trailing NUL
        for _ in part2.len()..12 {
            out.put_u8(0);
        }
        out.put_u8(0);
        if self.capabilities & cap::PLUGIN_AUTH != 0 {
            out.put_null_str(&self.auth_plugin);
        }
    }

    pub fn decode(payload: &[u8]) -> R<Self> {
        let mut r = Rd::new(payload);
        let proto = r.u8("protocol version")?;
        if proto != 10 {
            return Err(ProtoError::malformed(format!(
                "unsupported handshake protocol version {proto}"
            )));
        }
        let server_version = r.null_str("server version")?.to_vec();
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.take(8, "scramble")?.to_vec();
        r.skip(1, "filler")?;
        let mut capabilities = u32::from(r.u16("capabilities")?);
        let mut collation = 0;
        let mut status = 0;
        let mut auth_plugin = Vec::new();
        if !r.is_empty() {
            collation = r.u8("collation")?;
            status = r.u16("status")?;
            capabilities |= u32::from(r.u16("capabilities")?) << 16;
            let data_len = r.u8("auth data length")?;
            r.skip(10, "reserved")?;
            if capabilities & cap::SECURE_CONNECTION != 0 {
                let n = usize::from(data_len).saturating_sub(8).max(13);
                let part2 = r.take(n.min(r.remaining()), "scramble part 2")?;
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                scramble.extend_from_slice(part2);
            }
            if capabilities & cap::PLUGIN_AUTH != 0 {
                auth_plugin = r.null_str_or_rest().to_vec();
            }
        }
        Ok(HandshakeV10 {
            server_version,
            connection_id,
            scramble,
            capabilities,
            collation,
            status,
            auth_plugin,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub collation: u8,
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Raw connect attributes block (lenenc pairs), passed on untouched.
    pub attrs: Vec<u8>,
}

/// Length of an SSLRequest: caps, max packet, collation, 23 filler bytes.
pub const SSL_REQUEST_LEN: usize = 32;

impl HandshakeResponse {
    /// True when `payload` is only the SSLRequest prefix.
    pub fn is_ssl_request(payload: &[u8]) -> bool {
        payload.len() == SSL_REQUEST_LEN
            && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & cap::SSL != 0
    }

    pub fn decode(payload: &[u8]) -> R<Self> {
        let mut r = Rd::new(payload);
        let capabilities = r.u32("capabilities")?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(ProtoError::malformed(
                "client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 not set)",
            ));
        }
        let max_packet = r.u32("max packet")?;
        let collation = r.u8("collation")?;
        r.skip(23, "filler")?;
        let user = r.null_str("user name")?.to_vec();
        let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?.to_vec()
        } else if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = usize::from(r.u8("auth response length")?);
            r.take(n, "auth response")?.to_vec()
        } else {
            r.null_str("auth response")?.to_vec()
        };
        let mut resp = HandshakeResponse {
            capabilities,
            max_packet,
            collation,
            user,
            auth_response,
            ..Default::default()
        };
        if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            resp.database = Some(r.null_str_or_rest().to_vec());
        }
        if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            resp.auth_plugin = Some(r.null_str_or_rest().to_vec());
        }
        if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            resp.attrs = r.lenenc_bytes("connect attributes")?.to_vec();
        }
        Ok(resp)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_packet);
        out.put_u8(self.collation);
        out.put_slice(&[0u8; 23]);
        out.put_null_str(&self.user);
        if self.capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            out.put_lenenc_bytes(&self.auth_response);
        } else {
            out.put_u8(self.auth_response.len() as u8);
            out.put_slice(&self.auth_response);
        }
        if self.capabilities & cap::CONNECT_WITH_DB != 0 {
            out.put_null_str(self.database.as_deref().unwrap_or(b""));
        }
        if self.capabilities & cap::PLUGIN_AUTH != 0 {
            out.put_null_str(self.auth_plugin.as_deref().unwrap_or(b""));
        }
        if self.capabilities & cap::CONNECT_ATTRS != 0 {
            out.put_lenenc_bytes(&self.attrs);
        }
    }

    /// Encodes the SSLRequest prefix that precedes a TLS upgrade.
    pub fn encode_ssl_request(caps: u32, max_packet: u32, collation: u8, out: &mut BytesMut) {
        out.put_u32_le(caps | cap::SSL);
        out.put_u32_le(max_packet);
        out.put_u8(collation);
        out.put_slice(&[0u8; 23]);
    }
}

/// `0xfe` + plugin name + plugin data: the server asks for another method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: Vec<u8>,
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0xfe);
        out.put_null_str(&self.plugin);
        out.put_slice(&self.data);
    }

    pub fn decode(payload: &[u8]) -> R<Self> {
        let mut r = Rd::new(payload);
        if r.u8("auth switch header")? != 0xfe {
            return Err(ProtoError::malformed("not an auth switch request"));
        }
        let plugin = r.null_str_or_rest().to_vec();
        let data = r.rest();
        let data = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
        Ok(AuthSwitchRequest { plugin, data })
    }
}

/// caching_sha2_password's AuthMoreData bytes after `0x01`.
pub mod sha2_more {
    pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
    pub const FAST_AUTH_OK: u8 = 0x03;
    pub const FULL_AUTH: u8 = 0x04;
}

/// Reads a connect-attributes block into key/value pairs (for SHOW SESSIONS).
pub fn parse_attrs(block: &[u8]) -> R<Vec<(String, String)>> {
    let mut r = Rd::new(block);
    let mut out = Vec::new();
    while !r.is_empty() {
        let k = crate::rd::text(r.lenenc_bytes("attribute name")?);
        let v = crate::rd::text(r.lenenc_bytes("attribute value")?);
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> HandshakeV10 {
        HandshakeV10 {
            server_version: b"5.5.5-10.11.6-MariaDB".to_vec(),
            connection_id: 42,
            scramble: (1..=20).collect(),
            capabilities: cap::SERVER_OFFER,
            collation: 45,
            status: 2,
            auth_plugin: b"mysql_native_password".to_vec(),
        }
    }

    #[test]
    fn greeting_round_trip() {
        let g = greeting();
        let mut b = BytesMut::new();
        g.encode(&mut b);
        assert_eq!(HandshakeV10::decode(&b).unwrap(), g);
    }

    #[test]
    fn response_round_trip() {
        let r = HandshakeResponse {
            capabilities: cap::BACKEND_BASE | cap::CONNECT_WITH_DB,
            max_packet: 1 << 24,
            collation: 45,
            user: b"app".to_vec(),
            auth_response: vec![1; 20],
            database: Some(b"test".to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attrs: vec![3, b'a', b'b', b'c', 1, b'x'],
        };
        let mut b = BytesMut::new();
        r.encode(&mut b);
        let back = HandshakeResponse::decode(&b).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            parse_attrs(&back.attrs).unwrap(),
            vec![("abc".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn ssl_request_is_recognised() {
        let mut b = BytesMut::new();
        HandshakeResponse::encode_ssl_request(cap::PROTOCOL_41, 1 << 24, 45, &mut b);
        assert!(HandshakeResponse::is_ssl_request(&b));
    }
}
