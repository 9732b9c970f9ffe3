//! Column definition (ColumnDefinition41) for result sets concord builds
//! itself: the admin port, `SHOW CONCORD STATUS`, the benchmark's mock server.

use crate::rd::Rd;
use crate::wr::Wr;
use crate::ProtoError;
use bytes::{BufMut, BytesMut};

/// Column types concord produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    /// `MYSQL_TYPE_VAR_STRING`, utf8mb4.
    Str,
    /// `MYSQL_TYPE_LONGLONG`.
    Int,
}

impl ColType {
    pub fn code(self) -> u8 {
        match self {
            ColType::Str => 0xfd,
            ColType::Int => 0x08,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColType,
}

impl Column {
    pub fn str(name: &str) -> Self {
        Column {
            name: name.into(),
            ty: ColType::Str,
        }
    }
    pub fn int(name: &str) -> Self {
        Column {
            name: name.into(),
            ty: ColType::Int,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_lenenc_bytes(b"def");
        out.put_lenenc_bytes(b"");
        out.put_lenenc_bytes(b"");
        out.put_lenenc_bytes(b"");
        out.put_lenenc_bytes(self.name.as_bytes());
        out.put_lenenc_bytes(self.name.as_bytes());
        out.put_u8(0x0c);
        match self.ty {
            ColType::Str => {
                out.put_u16_le(45); // utf8mb4_general_ci
                out.put_u32_le(1024 * 4);
            }
            ColType::Int => {
                out.put_u16_le(63); // binary
                out.put_u32_le(20);
            }
        }
        out.put_u8(self.ty.code());
        out.put_u16_le(0); // flags
        out.put_u8(0); // decimals
        out.put_u16_le(0);
    }
}

/// The parts of a column definition a client needs to decode values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: Vec<u8>,
    pub charset: u16,
    pub ty: u8,
    pub flags: u16,
}

impl ColumnInfo {
    pub fn decode(payload: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Rd::new(payload);
        for what in ["catalog", "schema", "table", "org_table"] {
            r.lenenc_bytes(what)?;
        }
        let name = r.lenenc_bytes("name")?.to_vec();
        r.lenenc_bytes("org_name")?;
        r.lenenc("fixed length")?;
        let charset = r.u16("charset")?;
        r.u32("column length")?;
        let ty = r.u8("type")?;
        let flags = r.u16("flags")?;
        Ok(ColumnInfo {
            name,
            charset,
            ty,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let mut b = BytesMut::new();
        Column::int("epoch").encode(&mut b);
        let c = ColumnInfo::decode(&b).unwrap();
        assert_eq!(c.name, b"epoch");
        assert_eq!(c.ty, 0x08);
    }
}
