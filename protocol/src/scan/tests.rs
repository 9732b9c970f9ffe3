use super::*;
use crate::column::Column;
use crate::consts::cap;
use crate::ok::{encode_eof, OkPacket};
use crate::packet::{build, header, HEADER};
use crate::resultset::write_resultset;
use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

/// Feeds a framed byte stream packet by packet; returns the steps.
fn run(sc: &mut Scanner, mut bytes: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some((len, _)) = header(bytes) {
        let body = &bytes[HEADER..HEADER + len];
        steps.push(sc.packet(body, len).unwrap());
        bytes = &bytes[HEADER + len..];
    }
    steps
}

fn ok(status: u16) -> BytesMut {
    let mut b = BytesMut::new();
    OkPacket {
        status,
        ..Default::default()
    }
    .encode(&mut b, 0);
    b
}

#[test]
fn single_ok() {
    let mut out = BytesMut::new();
    let mut seq = 1;
    build(&mut out, &mut seq, |b| b.put_slice(&ok(status::IN_TRANS)));
    let mut sc = Scanner::new(Expect::ResultSets, false);
    assert_eq!(run(&mut sc, &out), vec![Step::Done]);
    assert_eq!(sc.status, status::IN_TRANS);
    assert!(sc.last_was_ok);
}

#[test]
fn resultset_both_eof_modes() {
    for caps in [0, cap::DEPRECATE_EOF] {
        let mut out = BytesMut::new();
        let mut seq = 1;
        let rows = vec![vec![Some("1".to_string())], vec![None]];
        write_resultset(
            &mut out,
            &mut seq,
            caps,
            status::AUTOCOMMIT,
            &[Column::int("a")],
            &rows,
        );
        let mut sc = Scanner::new(Expect::ResultSets, caps != 0);
        let steps = run(&mut sc, &out);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
        assert_eq!(sc.status, status::AUTOCOMMIT);
        assert_eq!(sc.result_sets, 1);
    }
}

#[test]
fn multi_results_continue_until_last() {
    let mut out = BytesMut::new();
    let mut seq = 1;
    let more = status::AUTOCOMMIT | status::MORE_RESULTS_EXISTS;
    write_resultset(
        &mut out,
        &mut seq,
        0,
        more,
        &[Column::int("a")],
        &[vec![Some("1".into())]],
    );
    build(&mut out, &mut seq, |b| b.put_slice(&ok(more)));
    build(&mut out, &mut seq, |b| b.put_slice(&ok(status::AUTOCOMMIT)));
    let mut sc = Scanner::new(Expect::ResultSets, false);
    let steps = run(&mut sc, &out);
    assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
    assert_eq!(steps.last(), Some(&Step::Done));
}

#[test]
fn error_mid_result_ends_response() {
    let mut out = BytesMut::new();
    let mut seq = 1;
    build(&mut out, &mut seq, |b| b.put_u8(1));
    build(&mut out, &mut seq, |b| Column::int("a").encode(b));
    build(&mut out, &mut seq, |b| encode_eof(b, 0, 0));
    build(&mut out, &mut seq, |b| b.put_slice(b"\x011"));
    build(&mut out, &mut seq, |b| {
        b.put_slice(b"\xff\x14\x05#HY000boom")
    });
    let mut sc = Scanner::new(Expect::ResultSets, false);
    assert_eq!(run(&mut sc, &out).last(), Some(&Step::Done));
    assert_eq!(sc.error, Some(0x0514));
}

#[test]
fn cursor_execute_stops_after_metadata() {
    let mut out = BytesMut::new();
    let mut seq = 1;
    build(&mut out, &mut seq, |b| b.put_u8(1));
    build(&mut out, &mut seq, |b| Column::int("a").encode(b));
    build(&mut out, &mut seq, |b| {
        encode_eof(b, 0, status::CURSOR_EXISTS)
    });
    let mut sc = Scanner::new(Expect::Cursor, false);
    assert_eq!(run(&mut sc, &out).last(), Some(&Step::Done));
    // Elsewhere (a CALL whose procedure opened a cursor) rows follow.
    let mut sc = Scanner::new(Expect::ResultSets, false);
    assert_eq!(run(&mut sc, &out).last(), Some(&Step::More));
}

#[test]
fn prepare_with_params_and_columns() {
    for deprecate in [false, true] {
        let mut out = BytesMut::new();
        let mut seq = 1;
        build(&mut out, &mut seq, |b| {
            b.put_u8(0);
            b.put_u32_le(7);
            b.put_u16_le(2); // columns
            b.put_u16_le(1); // params
            b.put_u8(0);
            b.put_u16_le(0);
        });
        build(&mut out, &mut seq, |b| Column::int("?").encode(b));
        if !deprecate {
            build(&mut out, &mut seq, |b| encode_eof(b, 0, 0));
        }
        build(&mut out, &mut seq, |b| Column::int("a").encode(b));
        build(&mut out, &mut seq, |b| Column::int("b").encode(b));
        if !deprecate {
            build(&mut out, &mut seq, |b| encode_eof(b, 0, 0));
        }
        let mut sc = Scanner::new(Expect::Prepare, deprecate);
        let steps = run(&mut sc, &out);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
        assert_eq!(
            sc.prepare,
            Some(PrepareOk {
                statement_id: 7,
                columns: 2,
                params: 1
            })
        );
    }
}

#[test]
fn local_infile_then_ok() {
    let mut sc = Scanner::new(Expect::ResultSets, false);
    assert_eq!(sc.packet(b"\xfbfile.csv", 9).unwrap(), Step::LocalInfile);
    sc.after_local_infile();
    let o = ok(status::AUTOCOMMIT);
    assert_eq!(sc.packet(&o, o.len()).unwrap(), Step::Done);
}

#[test]
fn split_rows_are_skipped_as_one() {
    // A row whose first column is 16 MiB long: first byte 0xfe but its
    // packet is MAX_PAYLOAD long, so it is a row, and its tail is skipped.
    let mut sc = Scanner::new(Expect::Rows, true);
    assert_eq!(sc.packet(&[0xfe, 0, 0], MAX_PAYLOAD).unwrap(), Step::More);
    assert_eq!(sc.packet(&[0xfe], 100).unwrap(), Step::More);
    let mut t = BytesMut::new();
    OkPacket {
        header: 0xfe,
        ..Default::default()
    }
    .encode(&mut t, 0);
    assert_eq!(sc.packet(&t, t.len()).unwrap(), Step::Done);
}

proptest! {
    #[test]
    fn never_panics(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
                    deprecate in any::<bool>(), kind in 0u8..5) {
        let expect = [Expect::ResultSets, Expect::Prepare, Expect::FieldList, Expect::Rows, Expect::Single][kind as usize];
        let mut sc = Scanner::new(expect, deprecate);
        for p in &packets {
            if sc.packet(p, p.len()).is_err() || sc.is_done() {
                break;
            }
        }
    }
}
