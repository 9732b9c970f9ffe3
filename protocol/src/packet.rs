//! Packet framing: a 3-byte little-endian payload length and a 1-byte
//! sequence id. Payloads of `MAX_PAYLOAD` bytes continue in the next packet.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest payload of one physical packet; a payload this long continues.
pub const MAX_PAYLOAD: usize = 0xff_ffff;
/// Header length.
pub const HEADER: usize = 4;

/// One logical packet (split packets already joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first physical packet.
    pub seq: u8,
    /// Sequence id of the last physical packet (differs for split packets).
    pub last_seq: u8,
    pub payload: Bytes,
}

impl Packet {
    pub fn first(&self) -> Option<u8> {
        self.payload.first().copied()
    }
    /// Sequence id the peer's next packet must carry.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }
}

/// Reads a header: (payload length, sequence id), if 4 bytes are there.
#[inline]
pub fn header(buf: &[u8]) -> Option<(usize, u8)> {
    if buf.len() < HEADER {
        return None;
    }
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    Some((len, buf[3]))
}

/// Appends `payload` framed as one or more packets starting at `*seq`;
/// `*seq` is left at the next sequence id.
pub fn put_packet(out: &mut BytesMut, seq: &mut u8, payload: &[u8]) {
    let mut chunks = payload.chunks(MAX_PAYLOAD);
    let mut last_len = 0;
    for chunk in chunks.by_ref() {
        put_header(out, chunk.len(), *seq);
        out.put_slice(chunk);
        *seq = seq.wrapping_add(1);
        last_len = chunk.len();
    }
    // A payload that is a multiple of MAX_PAYLOAD (or empty) ends with an
    // empty packet so the reader knows it is complete.
    if last_len == MAX_PAYLOAD || payload.is_empty() {
        put_header(out, 0, *seq);
        *seq = seq.wrapping_add(1);
    }
}

/// Builds a packet in place: `body` writes the payload straight into `out`,
/// the header is filled in afterwards (no intermediate buffer).
pub fn build(out: &mut BytesMut, seq: &mut u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_slice(&[0, 0, 0, 0]);
    body(out);
    let len = out.len() - start - HEADER;
    if len < MAX_PAYLOAD {
        out[start..start + 3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
        out[start + 3] = *seq;
        *seq = seq.wrapping_add(1);
    } else {
        // Rare: re-frame a payload that needs splitting.
        let payload = out.split_off(start + HEADER).freeze();
        out.truncate(start);
        put_packet(out, seq, &payload);
    }
}

fn put_header(out: &mut BytesMut, len: usize, seq: u8) {
    out.put_slice(&(len as u32).to_le_bytes()[..3]);
    out.put_u8(seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_large_payloads() {
        let payload = vec![7u8; MAX_PAYLOAD + 10];
        let mut out = BytesMut::new();
        let mut seq = 0;
        put_packet(&mut out, &mut seq, &payload);
        assert_eq!(seq, 2);
        assert_eq!(header(&out), Some((MAX_PAYLOAD, 0)));
        assert_eq!(header(&out[HEADER + MAX_PAYLOAD..]), Some((10, 1)));
    }

    #[test]
    fn exact_multiple_gets_empty_trailer() {
        let payload = vec![1u8; MAX_PAYLOAD];
        let mut out = BytesMut::new();
        let mut seq = 5;
        put_packet(&mut out, &mut seq, &payload);
        assert_eq!(seq, 7);
        assert_eq!(header(&out[HEADER + MAX_PAYLOAD..]), Some((0, 6)));
    }

    #[test]
    fn build_fills_header() {
        let mut out = BytesMut::new();
        let mut seq = 3;
        build(&mut out, &mut seq, |b| b.put_slice(b"hello"));
        assert_eq!(&out[..], b"\x05\x00\x00\x03hello");
        assert_eq!(seq, 4);
    }
}
