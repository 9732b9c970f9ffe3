//! Entry points shared by the property tests (run in CI) and the cargo-fuzz
//! targets under `fuzz/` (run by hand): each takes arbitrary bytes and must
//! neither panic nor allocate more than the bytes justify.

use crate::handshake::{parse_attrs, AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::scan::{Expect, Scanner};
use crate::stream::PacketStream;

/// Largest logical packet the codec entry accepts; a length header above it
/// must be refused before any buffer grows to it.
pub const MAX_PACKET: usize = 1 << 20;

/// The packet codec: framing (split packets, sequence ids, length limits)
/// and every response decoder a relay runs over backend bytes.
pub fn codec(data: &[u8]) {
    let mut s = PacketStream::new(());
    s.max_packet = MAX_PACKET;
    s.rbuf.extend_from_slice(data);
    let kind = data.first().copied().unwrap_or(0);
    let expect = [
        Expect::ResultSets,
        Expect::Prepare,
        Expect::FieldList,
        Expect::Rows,
        Expect::Single,
        Expect::Cursor,
    ][usize::from(kind % 6)];
    let mut sc = Scanner::new(expect, kind & 0x80 != 0);
    loop {
        match s.try_take_packet() {
            Ok(Some(p)) => {
                // A partial packet never reserves more than was announced
                // (bounded by MAX_PACKET) plus what arrived.
                assert!(s.rbuf.capacity() <= bound(data));
                let _ = crate::ok::OkPacket::decode(&p.payload, u32::MAX);
                let _ = crate::ok::OkPacket::decode(&p.payload, 0).map(|o| o.state_changes());
                let _ = crate::err::ErrPacket::decode(&p.payload);
                let _ = crate::ok::terminator_status(&p.payload, true);
                let _ = crate::ok::ok_status(&p.payload);
                if !sc.is_done() && sc.packet(&p.payload, p.payload.len()).is_err() {
                    sc = Scanner::new(expect, false);
                }
            }
            Ok(None) | Err(_) => break,
        }
        assert!(s.rbuf.capacity() <= bound(data));
    }
}

/// What the read buffer may grow to for `data`: what arrived plus one
/// bounded reservation, with the allocator's doubling.
fn bound(data: &[u8]) -> usize {
    2 * (data.len() + crate::stream::INITIAL_BUF) + 2 * MAX_PACKET
}

/// The connection phase: every packet a client or server sends before
/// login completes.
pub fn handshake(data: &[u8]) {
    let _ = HandshakeResponse::decode(data);
    let _ = HandshakeV10::decode(data);
    let _ = AuthSwitchRequest::decode(data);
    let _ = parse_attrs(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Framed-looking input: packets with random (often lying) headers.
    fn framed() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            (
                any::<u32>(),
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..12,
        )
        .prop_map(|ps| {
            let mut out = Vec::new();
            for (len, seq, body) in ps {
                // Mostly honest lengths, sometimes huge or off by a little.
                let l = match len % 4 {
                    0 => len & 0xff_ffff,
                    1 => body.len() as u32 + (len % 3),
                    _ => body.len() as u32,
                };
                out.extend_from_slice(&l.to_le_bytes()[..3]);
                out.push(seq);
                out.extend_from_slice(&body);
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn codec_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            codec(&data);
        }

        #[test]
        fn codec_never_panics_on_framed(data in framed()) {
            codec(&data);
        }

        #[test]
        fn handshake_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            handshake(&data);
        }
    }

    #[test]
    fn a_huge_length_header_does_not_allocate_it() {
        // 16 MiB - 1 announced, 4 bytes sent: refused by the limit.
        codec(&[0xff, 0xff, 0xff, 0x00, 1, 2, 3, 4]);
    }
}
