//! OK packet (`0x00`, or `0xfe` when it ends a result set under
//! DEPRECATE_EOF) and the old EOF packet.

use crate::consts::{cap, status};
use crate::rd::Rd;
use crate::wr::Wr;
use crate::ProtoError;
use bytes::{BufMut, BytesMut};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OkPacket {
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: Vec<u8>,
    /// Raw session-state-change block (SESSION_TRACK), if present.
    pub session_state: Vec<u8>,
}

/// One entry of the session state change block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// `SESSION_TRACK_SYSTEM_VARIABLES`: name, value.
    SystemVariable(Vec<u8>, Vec<u8>),
    /// `SESSION_TRACK_SCHEMA`.
    Schema(Vec<u8>),
    /// `SESSION_TRACK_STATE_CHANGE`.
    StateChanged(bool),
    /// `SESSION_TRACK_GTIDS`: the GTID text.
    Gtids(Vec<u8>),
    /// Characteristics / transaction state and unknown kinds.
    Other(u8),
}

impl OkPacket {
    pub fn decode(payload: &[u8], caps: u32) -> Result<Self, ProtoError> {
        let mut r = Rd::new(payload);
        let header = r.u8("ok header")?;
        if header != 0x00 && header != 0xfe {
            return Err(ProtoError::malformed("not an OK packet"));
        }
        let affected_rows = r.lenenc("affected rows")?;
        let last_insert_id = r.lenenc("last insert id")?;
        let status = r.u16("status flags")?;
        let warnings = r.u16("warnings")?;
        let mut ok = OkPacket {
            header,
            affected_rows,
            last_insert_id,
            status,
            warnings,
            ..Default::default()
        };
        if caps & cap::SESSION_TRACK != 0 {
            if !r.is_empty() {
                ok.info = r.lenenc_bytes("info")?.to_vec();
            }
            if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state = r.lenenc_bytes("session state")?.to_vec();
            }
        } else {
            ok.info = r.rest().to_vec();
        }
        Ok(ok)
    }

    pub fn encode(&self, out: &mut BytesMut, caps: u32) {
        out.put_u8(self.header);
        out.put_lenenc(self.affected_rows);
        out.put_lenenc(self.last_insert_id);
        out.put_u16_le(self.status);
        out.put_u16_le(self.warnings);
        if caps & cap::SESSION_TRACK != 0 {
            if !self.info.is_empty() || self.status & status::SESSION_STATE_CHANGED != 0 {
                out.put_lenenc_bytes(&self.info);
            }
            if self.status & status::SESSION_STATE_CHANGED != 0 {
                out.put_lenenc_bytes(&self.session_state);
            }
        } else {
            out.put_slice(&self.info);
        }
    }

    /// Parses the session state block into its entries.
    pub fn state_changes(&self) -> Result<Vec<StateChange>, ProtoError> {
        let mut out = Vec::new();
        let mut r = Rd::new(&self.session_state);
        while !r.is_empty() {
            let kind = r.u8("state change type")?;
            let data = r.lenenc_bytes("state change data")?;
            let mut d = Rd::new(data);
            out.push(match kind {
                0 => {
                    let name = d.lenenc_bytes("variable name")?.to_vec();
                    let value = d.lenenc_bytes("variable value")?.to_vec();
                    StateChange::SystemVariable(name, value)
                }
                1 => StateChange::Schema(d.lenenc_bytes("schema")?.to_vec()),
                // Servers send the one byte '1' itself (not the length-
                // prefixed string the protocol documentation shows).
                2 => StateChange::StateChanged(data == b"1" || data == b"\x011"),
                3 => {
                    // encoding specification byte, then the GTID text
                    d.u8("gtid spec")?;
                    StateChange::Gtids(d.lenenc_bytes("gtids")?.to_vec())
                }
                k => StateChange::Other(k),
            });
        }
        Ok(out)
    }
}

/// An OK packet written for a client with SESSION_TRACK, rewritten for a
/// client without it, byte for byte as the server would have sent it to
/// that client: the session-state block dropped, its status flag cleared,
/// the info string kept only when it is not empty. `None` when the packet
/// carries no state block (it is then the same in both formats).
pub fn without_session_state(payload: &[u8]) -> Option<BytesMut> {
    let status = ok_status(payload)?;
    if status & status::SESSION_STATE_CHANGED == 0 {
        return None;
    }
    let ok = OkPacket::decode(payload, cap::SESSION_TRACK).ok()?;
    let mut out = BytesMut::with_capacity(payload.len());
    out.put_u8(ok.header);
    out.put_lenenc(ok.affected_rows);
    out.put_lenenc(ok.last_insert_id);
    out.put_u16_le(ok.status & !status::SESSION_STATE_CHANGED);
    out.put_u16_le(ok.warnings);
    if !ok.info.is_empty() {
        out.put_lenenc_bytes(&ok.info);
    }
    Some(out)
}

/// An OK packet written for a client with SESSION_TRACK, with a
/// `SESSION_TRACK_GTIDS` entry (text encoding) carrying `gtids` added to
/// its state block, as MySQL reports a session's own GTID under
/// `session_track_gtids = OWN_GTID`. `None` when the packet carries no
/// state block or has a GTID entry already.
pub fn with_gtids(payload: &[u8], gtids: &[u8]) -> Option<BytesMut> {
    let mut ok = OkPacket::decode(payload, cap::SESSION_TRACK).ok()?;
    if ok.status & status::SESSION_STATE_CHANGED == 0
        || ok
            .state_changes()
            .ok()?
            .iter()
            .any(|c| matches!(c, StateChange::Gtids(_)))
    {
        return None;
    }
    let mut data = BytesMut::with_capacity(gtids.len() + 10);
    data.put_u8(0); // encoding specification: text
    data.put_lenenc_bytes(gtids);
    let mut entry = BytesMut::with_capacity(data.len() + 10);
    entry.put_u8(3); // SESSION_TRACK_GTIDS
    entry.put_lenenc_bytes(&data);
    ok.session_state.extend_from_slice(&entry);
    let mut out = BytesMut::with_capacity(payload.len() + entry.len() + 2);
    ok.encode(&mut out, cap::SESSION_TRACK);
    Some(out)
}

/// Status flags of an OK (`0x00`/`0xfe` with OK layout) or EOF packet.
/// EOF is `0xfe, warnings u16, status u16` and shorter than 9 bytes.
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Option<u16> {
    if !deprecate_eof && payload.first() == Some(&0xfe) && payload.len() < 9 {
        return payload.get(3..5).map(|s| u16::from_le_bytes([s[0], s[1]]));
    }
    ok_status(payload)
}

/// A length-encoded integer at the start of `b` and its size; `None` when
/// cut short or not an integer (0xfb, 0xff). The scans below run on every
/// response: plain options, no error values built and dropped.
fn lenenc_at(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let size = match first {
        0..=0xfa => return Some((u64::from(first), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..=size)?;
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(bytes);
    Some((u64::from_le_bytes(v), 1 + size))
}

/// Where the status flags of an OK-layout packet start.
pub fn status_offset(payload: &[u8]) -> Option<usize> {
    let (_, a) = lenenc_at(payload.get(1..)?)?;
    let (_, b) = lenenc_at(payload.get(1 + a..)?)?;
    let at = 1 + a + b;
    (payload.len() >= at + 2).then_some(at)
}

/// Affected rows and last insert id of an OK packet (header 0x00).
pub fn ok_counts(payload: &[u8]) -> Option<(u64, u64)> {
    if *payload.first()? != 0 {
        return None;
    }
    let (rows, a) = lenenc_at(payload.get(1..)?)?;
    let (id, _) = lenenc_at(payload.get(1 + a..)?)?;
    Some((rows, id))
}

/// Status flags of an OK-layout packet without decoding the rest.
pub fn ok_status(payload: &[u8]) -> Option<u16> {
    let at = status_offset(payload)?;
    Some(u16::from_le_bytes([payload[at], payload[at + 1]]))
}

/// Encodes an EOF packet (pre-DEPRECATE_EOF clients).
pub fn encode_eof(out: &mut BytesMut, warnings: u16, status: u16) {
    out.put_u8(0xfe);
    out.put_u16_le(warnings);
    out.put_u16_le(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option-only scans agree with the general reader on any bytes.
    #[test]
    fn quick_scans_agree_with_the_reader() {
        let reference = |p: &[u8]| {
            let mut r = Rd::new(p);
            let h = r.u8("h").ok()?;
            let a = r.lenenc("a").ok()?;
            let b = r.lenenc("b").ok()?;
            let at = p.len() - r.remaining();
            let s = r.u16("s").ok();
            Some((h, a, b, at, s))
        };
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let len = (next() % 14) as usize;
            let p: Vec<u8> = (0..len)
                .map(|i| match next() % 4 {
                    // Length prefixes where they matter most.
                    0 if i == 1 || i == 2 => [0xfb, 0xfc, 0xfd, 0xfe, 0xff][(next() % 5) as usize],
                    _ => next() as u8,
                })
                .collect();
            let want = reference(&p);
            assert_eq!(ok_status(&p), want.and_then(|w| w.4), "ok_status {p:02x?}");
            assert_eq!(
                status_offset(&p),
                want.and_then(|w| (p.len() >= w.3 + 2).then_some(w.3)),
                "status_offset {p:02x?}"
            );
            assert_eq!(
                ok_counts(&p),
                want.filter(|w| w.0 == 0).map(|w| (w.1, w.2)),
                "ok_counts {p:02x?}"
            );
        }
    }

    #[test]
    fn a_gtid_entry_is_added_once_beside_the_others() {
        let mut state = BytesMut::new();
        let mut var = BytesMut::new();
        var.put_lenenc_bytes(b"last_gtid");
        var.put_lenenc_bytes(b"0-1-7");
        state.put_u8(0);
        state.put_lenenc_bytes(&var);
        let ok = OkPacket {
            affected_rows: 1,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            session_state: state.to_vec(),
            ..Default::default()
        };
        let mut b = BytesMut::new();
        ok.encode(&mut b, cap::SESSION_TRACK);
        let with = with_gtids(&b, b"0-1-7").expect("added");
        let back = OkPacket::decode(&with, cap::SESSION_TRACK).unwrap();
        assert_eq!(back.affected_rows, 1);
        assert_eq!(
            back.state_changes().unwrap(),
            vec![
                StateChange::SystemVariable(b"last_gtid".to_vec(), b"0-1-7".to_vec()),
                StateChange::Gtids(b"0-1-7".to_vec()),
            ]
        );
        assert!(with_gtids(&with, b"0-1-8").is_none(), "one GTID entry");
        let mut plain = BytesMut::new();
        OkPacket::default().encode(&mut plain, cap::SESSION_TRACK);
        assert!(with_gtids(&plain, b"0-1-7").is_none(), "no state block");
    }

    #[test]
    fn ok_round_trip_with_session_track() {
        let ok = OkPacket {
            header: 0,
            affected_rows: 3,
            last_insert_id: 70000,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            warnings: 1,
            info: b"Rows matched: 3".to_vec(),
            session_state: vec![3, 8, 0, 6, b'0', b'-', b'1', b'-', b'4', b'2'],
        };
        let mut b = BytesMut::new();
        ok.encode(&mut b, cap::SESSION_TRACK);
        let back = OkPacket::decode(&b, cap::SESSION_TRACK).unwrap();
        assert_eq!(back, ok);
        assert_eq!(
            back.state_changes().unwrap(),
            vec![StateChange::Gtids(b"0-1-42".to_vec())]
        );
        assert_eq!(ok_status(&b), Some(ok.status));
    }

    #[test]
    fn state_changes_as_servers_send_them() {
        // Bytes a MariaDB 10.11 server sent for `USE d` and `SET NAMES x`.
        let ok = OkPacket {
            status: status::SESSION_STATE_CHANGED,
            session_state: b"\x01\x02\x01d\x02\x011\x00\x1c\x14character_set_client\x06latin1"
                .to_vec(),
            ..Default::default()
        };
        // (the system variable entry carries a lenenc name and value)
        assert_eq!(
            ok.state_changes().unwrap(),
            vec![
                StateChange::Schema(b"d".to_vec()),
                StateChange::StateChanged(true),
                StateChange::SystemVariable(b"character_set_client".to_vec(), b"latin1".to_vec()),
            ]
        );
    }

    #[test]
    fn state_block_is_stripped_for_clients_without_session_track() {
        let tracked = OkPacket {
            header: 0,
            affected_rows: 1,
            last_insert_id: 7,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            warnings: 2,
            info: Vec::new(),
            session_state: vec![2, 2, 1, b'1'],
        };
        let mut b = BytesMut::new();
        tracked.encode(&mut b, cap::SESSION_TRACK);
        let plain = without_session_state(&b).unwrap();
        let mut want = BytesMut::new();
        OkPacket {
            status: status::AUTOCOMMIT,
            session_state: Vec::new(),
            ..tracked.clone()
        }
        .encode(&mut want, 0);
        assert_eq!(plain, want);
        // With an info message it stays, length-prefixed as servers send it.
        let with_info = OkPacket {
            info: b"Rows matched: 1".to_vec(),
            ..tracked
        };
        let mut b = BytesMut::new();
        with_info.encode(&mut b, cap::SESSION_TRACK);
        let plain = without_session_state(&b).unwrap();
        assert_eq!(plain[plain.len() - 16], 15);
        assert!(plain.ends_with(b"Rows matched: 1"));
        // No state block: nothing to rewrite.
        let mut b = BytesMut::new();
        OkPacket::default().encode(&mut b, cap::SESSION_TRACK);
        assert!(without_session_state(&b).is_none());
    }

    #[test]
    fn eof_status() {
        let mut b = BytesMut::new();
        encode_eof(&mut b, 0, status::MORE_RESULTS_EXISTS);
        assert_eq!(
            terminator_status(&b, false),
            Some(status::MORE_RESULTS_EXISTS)
        );
    }
}
