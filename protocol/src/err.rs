//! ERR packet: `0xff`, code, `#` + SQLSTATE, message.

use crate::codes::Code;
use crate::rd::{text, Rd};
use crate::ProtoError;
use bytes::{BufMut, BytesMut};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ErrPacket {
            code: code.0,
            state: *code.1,
            message: message.into(),
        }
    }

    /// Decodes a payload that starts with 0xff (PROTOCOL_41 form).
    pub fn decode(payload: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Rd::new(payload);
        if r.u8("err header")? != 0xff {
            return Err(ProtoError::malformed("not an ERR packet"));
        }
        let code = r.u16("err code")?;
        let mut state = *b"HY000";
        if r.peek() == Some(b'#') {
            r.skip(1, "err marker")?;
            state.copy_from_slice(r.take(5, "sqlstate")?);
        }
        Ok(ErrPacket {
            code,
            state,
            message: text(r.rest()),
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0xff);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.state);
        out.put_slice(self.message.as_bytes());
    }

    pub fn to_payload(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(9 + self.message.len());
        self.encode(&mut b);
        b
    }

    pub fn sqlstate(&self) -> &str {
        std::str::from_utf8(&self.state).unwrap_or("HY000")
    }
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            self.sqlstate(),
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    #[test]
    fn round_trip() {
        let e = ErrPacket::new(
            codes::ACCESS_DENIED,
            "Access denied for user 'x'@'h' (using password: YES)",
        );
        let b = e.to_payload();
        assert_eq!(ErrPacket::decode(&b).unwrap(), e);
        assert!(ErrPacket::decode(&[0xff]).is_err());
    }
}
