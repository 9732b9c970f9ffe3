//! Commands drivers rarely send, through concord with a raw client on
//! concord's codec: COM_FIELD_LIST, COM_STATISTICS, COM_SET_OPTION,
//! cursors with COM_STMT_FETCH, COM_STMT_SEND_LONG_DATA, COM_STMT_RESET,
//! COM_STMT_CLOSE, COM_INIT_DB, COM_PING and unknown commands.

use concord_protocol::consts::{cap, com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::terminator_status;
use concord_protocol::scan::Expect;
use harness::raw::RawClient;
use harness::{Concord, ConcordConfig, MariaDb, PASSWORD};

async fn setup() -> (MariaDb, Concord) {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.f (id INT PRIMARY KEY, name VARCHAR(10), amount DECIMAL(10,2))")
        .await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    (db, node)
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![com::QUERY];
    p.extend_from_slice(sql.as_bytes());
    p
}

fn err_code(p: &concord_protocol::Packet) -> Option<u16> {
    (p.first() == Some(0xff)).then(|| ErrPacket::decode(&p.payload).unwrap().code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_list_statistics_ping_init_db() {
    let (db, node) = setup().await;
    for deprecate in [0, cap::DEPRECATE_EOF] {
        let mut direct = RawClient::connect(db.port, "app", PASSWORD, deprecate).await;
        let mut proxied = RawClient::connect(node.cfg.port, "app", PASSWORD, deprecate).await;
        let mut fl = vec![com::FIELD_LIST];
        fl.extend_from_slice(b"f\0");
        let a = direct.command(&fl, Expect::FieldList).await;
        let b = proxied.command(&fl, Expect::FieldList).await;
        assert_eq!(a.len(), 4, "3 columns + EOF");
        assert_eq!(
            a.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
            b.iter().map(|p| p.payload.clone()).collect::<Vec<_>>()
        );

        let s = proxied.command(&[com::STATISTICS], Expect::Single).await;
        assert!(String::from_utf8_lossy(&s[0].payload).starts_with("Uptime:"));
        let p = proxied.command(&[com::PING], Expect::Single).await;
        assert_eq!(p[0].first(), Some(0x00));
        let mut bad = vec![com::INIT_DB];
        bad.extend_from_slice(b"no_such_db");
        assert_eq!(
            err_code(&proxied.command(&bad, Expect::Single).await[0]),
            Some(1049)
        );
        let mut good = vec![com::INIT_DB];
        good.extend_from_slice(b"mysql");
        assert_eq!(
            proxied.command(&good, Expect::Single).await[0].first(),
            Some(0x00)
        );
        let r = proxied
            .command(&query("SELECT DATABASE()"), Expect::ResultSets)
            .await;
        assert!(r.iter().any(|p| p.payload.ends_with(b"mysql")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_option_toggles_multi_statements() {
    let (_db, node) = setup().await;
    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    // MYSQL_OPTION_MULTI_STATEMENTS_OFF
    let r = c.command(&[com::SET_OPTION, 1, 0], Expect::Single).await;
    assert_ne!(r[0].first(), Some(0xff));
    let r = c
        .command(&query("SELECT 1; SELECT 2"), Expect::ResultSets)
        .await;
    assert_eq!(
        err_code(&r[0]),
        Some(1064),
        "multi-statements must be refused when off"
    );
    let r = c.command(&[com::SET_OPTION, 0, 0], Expect::Single).await;
    assert_ne!(r[0].first(), Some(0xff));
    let r = c
        .command(&query("SELECT 1; SELECT 2"), Expect::ResultSets)
        .await;
    assert!(r.iter().all(|p| p.first() != Some(0xff)));
    let r = c.command(&[com::SET_OPTION, 9, 0], Expect::Single).await;
    assert_eq!(err_code(&r[0]), Some(1047));
}

fn execute(stmt: u32, flags: u8, params: &[(u8, Option<&[u8]>)]) -> Vec<u8> {
    let mut p = vec![com::STMT_EXECUTE];
    p.extend_from_slice(&stmt.to_le_bytes());
    p.push(flags);
    p.extend_from_slice(&1u32.to_le_bytes());
    if !params.is_empty() {
        p.extend(std::iter::repeat_n(0u8, params.len().div_ceil(8)));
        p.push(1);
        for (ty, _) in params {
            p.extend_from_slice(&[*ty, 0]);
        }
        for (_, v) in params {
            if let Some(v) = v {
                p.push(v.len() as u8);
                p.extend_from_slice(v);
            }
        }
    }
    p
}

fn prepare_id(r: &[concord_protocol::Packet]) -> u32 {
    assert_eq!(
        r[0].first(),
        Some(0),
        "prepare failed: {:?}",
        String::from_utf8_lossy(&r[0].payload)
    );
    u32::from_le_bytes(r[0].payload[1..5].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_long_data_reset_close() {
    let (_db, node) = setup().await;
    for deprecate in [0, cap::DEPRECATE_EOF] {
        let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, deprecate).await;
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(b"SELECT seq FROM seq_1_to_10");
        let id = prepare_id(&c.command(&prep, Expect::Prepare).await);
        // CURSOR_TYPE_READ_ONLY: metadata now, rows by COM_STMT_FETCH.
        let r = c.command(&execute(id, 1, &[]), Expect::Cursor).await;
        let last = r.last().unwrap();
        let st = terminator_status(&last.payload, deprecate != 0).unwrap();
        assert!(st & status::CURSOR_EXISTS != 0, "cursor not opened");
        let mut rows = 0;
        loop {
            let mut f = vec![com::STMT_FETCH];
            f.extend_from_slice(&id.to_le_bytes());
            f.extend_from_slice(&4u32.to_le_bytes());
            let r = c.command(&f, Expect::Rows).await;
            rows += r.len() - 1;
            let st = terminator_status(&r.last().unwrap().payload, deprecate != 0).unwrap();
            if st & status::LAST_ROW_SENT != 0 {
                break;
            }
        }
        assert_eq!(rows, 10);

        // COM_STMT_SEND_LONG_DATA in two chunks, then execute.
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(b"SELECT CONCAT(?, '!')");
        let id2 = prepare_id(&c.command(&prep, Expect::Prepare).await);
        for chunk in [&b"long "[..], b"data"] {
            let mut l = vec![com::STMT_SEND_LONG_DATA];
            l.extend_from_slice(&id2.to_le_bytes());
            l.extend_from_slice(&0u16.to_le_bytes());
            l.extend_from_slice(chunk);
            c.send(&l).await;
        }
        let r = c
            .command(&execute(id2, 0, &[(0xfc, None)]), Expect::ResultSets)
            .await;
        assert!(
            r.iter()
                .any(|p| p.payload.windows(10).any(|w| w == b"long data!")),
            "long data lost"
        );

        let mut reset = vec![com::STMT_RESET];
        reset.extend_from_slice(&id2.to_le_bytes());
        assert_eq!(c.command(&reset, Expect::Single).await[0].first(), Some(0));

        let mut close = vec![com::STMT_CLOSE];
        close.extend_from_slice(&id.to_le_bytes());
        c.send(&close).await;
        let r = c.command(&execute(id, 0, &[]), Expect::ResultSets).await;
        assert_eq!(
            err_code(&r[0]),
            Some(1243),
            "closed statement must be unknown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_get_an_error_and_the_session_continues() {
    let (_db, node) = setup().await;
    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    for cmd in [com::BINLOG_DUMP, com::SHUTDOWN, 0x40] {
        let r = c.command(&[cmd, 0, 0, 0, 0], Expect::Single).await;
        assert_eq!(err_code(&r[0]), Some(1047));
    }
    let r = c.command(&query("SELECT 1"), Expect::ResultSets).await;
    assert!(r.iter().all(|p| p.first() != Some(0xff)));
}

/// A statement with an open cursor is not the one closed to keep a
/// connection within `pool.max_prepared_per_connection`: its client reads
/// on. Two allowed; S1's cursor is open when S3 is prepared. Test-only
/// `evict-busy-statements`: S1 is closed and its FETCH fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_with_an_open_cursor_is_not_evicted() {
    for (hooks, evicted) in [("", false), ("evict-busy-statements", true)] {
        let db = MariaDb::start("primary", 1).await;
        let mut cfg = ConcordConfig::single(&db.addr());
        cfg.extra = "[pool]\nmax_prepared_per_connection = 2\n".into();
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
        let prepare = |sql: &str| {
            let mut p = vec![com::STMT_PREPARE];
            p.extend_from_slice(sql.as_bytes());
            p
        };
        let fetch = |id: u32| {
            let mut f = vec![com::STMT_FETCH];
            f.extend_from_slice(&id.to_le_bytes());
            f.extend_from_slice(&4u32.to_le_bytes());
            f
        };
        let s1 = prepare_id(
            &c.command(&prepare("SELECT seq FROM seq_1_to_10"), Expect::Prepare)
                .await,
        );
        let r = c.command(&execute(s1, 1, &[]), Expect::Cursor).await;
        assert!(r.iter().all(|p| p.first() != Some(0xff)));
        let r = c.command(&fetch(s1), Expect::Rows).await;
        assert_eq!(r.len(), 5, "4 rows and the terminator");
        prepare_id(&c.command(&prepare("SELECT 2"), Expect::Prepare).await);
        prepare_id(&c.command(&prepare("SELECT 3"), Expect::Prepare).await);
        let r = c.command(&fetch(s1), Expect::Rows).await;
        assert_eq!(
            err_code(&r[0]).is_some(),
            evicted,
            "hooks {hooks:?}: {:?}",
            String::from_utf8_lossy(&r[0].payload)
        );
    }
}

/// MariaDB's statement id 0xFFFFFFFF names the statement the connection
/// prepared last, so a client pipelines COM_STMT_PREPARE and the commands
/// that use it without waiting for the id (MariaDB Connector/J 3, the
/// Node.js `mariadb` connector). Each step sends its commands back to back
/// and reads the answers after; through concord they must be the server's
/// own, byte for byte (but the prepared ids, concord's own). A failed
/// prepare and a closed statement leave no last statement. Test-only
/// `no-last-statement-id`: the execute is refused with 1243.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_statement_id_names_the_statement_just_prepared() {
    const LAST: u32 = u32::MAX;
    let prepare = |sql: &str| {
        let mut p = vec![com::STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        p
    };
    let with_id = |code: u8, id: u32, rest: &[u8]| {
        let mut p = vec![code];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(rest);
        p
    };
    let abc: &[u8] = b"abc";
    // (commands sent back to back, the answer each expects)
    let steps: Vec<Vec<(Vec<u8>, Option<Expect>)>> = vec![
        vec![
            (prepare("SELECT CONCAT(?, '!')"), Some(Expect::Prepare)),
            (
                execute(LAST, 0, &[(0xfd, Some(abc))]),
                Some(Expect::ResultSets),
            ),
        ],
        vec![
            (prepare("SELECT CONCAT(?, '?')"), Some(Expect::Prepare)),
            (with_id(com::STMT_SEND_LONG_DATA, LAST, b"\0\0long"), None),
            (execute(LAST, 0, &[(0xfc, None)]), Some(Expect::ResultSets)),
            (with_id(com::STMT_RESET, LAST, b""), Some(Expect::Single)),
        ],
        vec![
            (prepare("SELEKT 1"), Some(Expect::Prepare)),
            (execute(LAST, 0, &[]), Some(Expect::ResultSets)),
        ],
        vec![
            (prepare("SELECT 2"), Some(Expect::Prepare)),
            (with_id(com::STMT_CLOSE, LAST, b""), None),
            (execute(LAST, 0, &[]), Some(Expect::ResultSets)),
        ],
    ];
    let db = MariaDb::start("primary", 1).await;
    let mut answers = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("no-last-statement-id", false)] {
        let mut cfg = ConcordConfig::single(&db.addr());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let port = if direct { db.port } else { node.cfg.port };
        let mut c = RawClient::connect(port, "app", PASSWORD, 0).await;
        let mut got = Vec::new();
        for step in &steps {
            for (p, _) in step {
                c.send(p).await;
            }
            for (p, expect) in step {
                let Some(expect) = *expect else { continue };
                let mut r: Vec<Vec<u8>> = c
                    .read_response(expect)
                    .await
                    .into_iter()
                    .map(|p| p.payload.to_vec())
                    .collect();
                if p[0] == com::STMT_PREPARE && r[0].first() == Some(&0) {
                    r[0][1..5].fill(0);
                }
                got.push(r);
            }
        }
        answers.push(got);
    }
    assert_eq!(answers[1], answers[0], "through concord, then direct");
    assert_ne!(
        answers[2], answers[0],
        "without the last statement id, the answers were the server's"
    );
    let errs = |a: &[Vec<Vec<u8>>]| {
        a.iter()
            .filter(|r| r[0].first() == Some(&0xff))
            .map(|r| ErrPacket::decode(&r[0]).unwrap().code)
            .collect::<Vec<_>>()
    };
    assert_eq!(errs(&answers[0]), [1064, 1243, 1243], "the server's own");
}

/// COM_RESET_CONNECTION answered by concord (no connection held) carries
/// the status of a fresh session, as the server's does: autocommit on, no
/// sql_mode bits of before. Test-only `reset-keeps-status`: the status
/// of the last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_answers_with_a_fresh_sessions_status() {
    let db = MariaDb::start("primary", 1).await;
    let mut seen = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("reset-keeps-status", false)] {
        let mut cfg = ConcordConfig::single(&db.addr());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let port = if direct { db.port } else { node.cfg.port };
        let mut c = RawClient::connect(port, "app", PASSWORD, 0).await;
        for sql in [
            "SET autocommit = 0, sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
            "SELECT 1",
            "COMMIT",
        ] {
            let r = c.command(&query(sql), Expect::ResultSets).await;
            assert!(r.iter().all(|p| p.first() != Some(0xff)), "{sql}");
        }
        let r = c.command(&[com::RESET_CONNECTION], Expect::Single).await;
        let ok = concord_protocol::ok::OkPacket::decode(&r[0].payload, c.caps).unwrap();
        seen.push(ok.status & (status::AUTOCOMMIT | status::NO_BACKSLASH_ESCAPES));
    }
    assert_eq!(seen[0], status::AUTOCOMMIT, "the server's own");
    assert_eq!(seen[1], seen[0], "through concord");
    assert_ne!(seen[2], seen[0], "with the last answer's status");
}
