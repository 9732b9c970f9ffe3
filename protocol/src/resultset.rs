//! Whole text-protocol result sets and OK/ERR replies that concord answers
//! itself, framed and ready to flush.

use crate::column::Column;
use crate::consts::{cap, status};
use crate::err::ErrPacket;
use crate::ok::{encode_eof, OkPacket};
use crate::packet::build;
use crate::wr::Wr;
use bytes::{BufMut, BytesMut};

/// A cell: `None` is SQL NULL.
pub type Cell = Option<String>;

/// Appends a complete result set (column count, definitions, rows,
/// terminator) starting at sequence id `*seq`.
pub fn write_resultset(
    out: &mut BytesMut,
    seq: &mut u8,
    caps: u32,
    status_flags: u16,
    columns: &[Column],
    rows: &[Vec<Cell>],
) {
    build(out, seq, |b| b.put_lenenc(columns.len() as u64));
    for c in columns {
        build(out, seq, |b| c.encode(b));
    }
    let deprecate_eof = caps & cap::DEPRECATE_EOF != 0;
    if !deprecate_eof {
        build(out, seq, |b| encode_eof(b, 0, status_flags));
    }
    for row in rows {
        build(out, seq, |b| {
            for cell in row {
                match cell {
                    None => b.put_u8(0xfb),
                    Some(v) => b.put_lenenc_bytes(v.as_bytes()),
                }
            }
        });
    }
    write_terminator(out, seq, caps, status_flags);
}

/// The packet that ends a result set: EOF, or OK with a 0xfe header.
pub fn write_terminator(out: &mut BytesMut, seq: &mut u8, caps: u32, status_flags: u16) {
    if caps & cap::DEPRECATE_EOF != 0 {
        let ok = OkPacket {
            header: 0xfe,
            status: status_flags,
            ..Default::default()
        };
        build(out, seq, |b| ok.encode(b, caps));
    } else {
        build(out, seq, |b| encode_eof(b, 0, status_flags));
    }
}

/// Appends an OK packet.
pub fn write_ok(out: &mut BytesMut, seq: &mut u8, caps: u32, affected: u64, info: &str) {
    let ok = OkPacket {
        header: 0,
        affected_rows: affected,
        status: status::AUTOCOMMIT,
        info: info.as_bytes().to_vec(),
        ..Default::default()
    };
    build(out, seq, |b| ok.encode(b, caps));
}

/// Appends an ERR packet.
pub fn write_err(out: &mut BytesMut, seq: &mut u8, err: &ErrPacket) {
    build(out, seq, |b| err.encode(b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::header;

    #[test]
    fn resultset_packet_count() {
        let mut out = BytesMut::new();
        let mut seq = 1;
        let cols = [Column::str("a"), Column::int("b")];
        let rows = vec![vec![Some("x".into()), None]];
        write_resultset(&mut out, &mut seq, 0, status::AUTOCOMMIT, &cols, &rows);
        // count, 2 defs, eof, 1 row, eof
        assert_eq!(seq, 7);
        assert_eq!(header(&out).unwrap(), (1, 1));
    }
}
