//! Real, unmodified clients through one concord node in front of one
//! MariaDB: the mariadb CLI (plain, TLS, caching_sha2), mysql_async (text
//! and binary protocol), PyMySQL and sysbench.

use harness::cli::{mariadb, mariadb_ok};
use harness::{Concord, ConcordConfig, MariaDb, PASSWORD};
use mysql_async::prelude::*;
use std::process::Command;

async fn setup() -> (MariaDb, Concord) {
    let db = MariaDb::start("primary", 1).await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    (db, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_plain_multi_statement_and_local_infile() {
    let (_db, node) = setup().await;
    let port = node.cfg.port;
    let out = mariadb_ok(
        port,
        "app",
        PASSWORD,
        &[],
        "SELECT 1 AS a; SELECT 'two' AS b, 3 AS c",
    );
    assert_eq!(out, "a\n1\nb\tc\ntwo\t3\n");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let rows: String = (1..=1000).map(|i| format!("{i},name{i}\n")).collect();
    std::fs::write(&file, rows).unwrap();
    let sql = format!(
        "CREATE TABLE test.infile (id INT PRIMARY KEY, name VARCHAR(20));
         LOAD DATA LOCAL INFILE '{}' INTO TABLE test.infile FIELDS TERMINATED BY ',';
         SELECT COUNT(*), SUM(id) FROM test.infile",
        file.display()
    );
    let out = mariadb_ok(port, "app", PASSWORD, &["--local-infile=1"], &sql);
    assert!(out.ends_with("1000\t500500\n"), "{out}");

    // Without --local-infile the client refuses; concord answers with a
    // clear error and the session stays usable.
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE test.infile FIELDS TERMINATED BY ','",
        file.display()
    );
    let out = mariadb(port, "app", PASSWORD, &["--local-infile=0"], &sql);
    assert!(!out.status.success());
    let after = mariadb_ok(
        port,
        "app",
        PASSWORD,
        &[],
        "SELECT COUNT(*) FROM test.infile",
    );
    assert!(after.contains("1000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_1045() {
    let (_db, node) = setup().await;
    let out = mariadb(node.cfg.port, "app", "nope", &[], "SELECT 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)"
        ),
        "{err}"
    );
    let e = mysql_async::Conn::new(node.opts_for("ghost", "x"))
        .await
        .unwrap_err();
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 1045);
            assert_eq!(s.state, "28000");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_caching_sha2() {
    let db = MariaDb::start("primary", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::certs::self_signed(dir.path());
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.listener_extra = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    // `legacy` has only a native digest: caching_sha2 needs full auth,
    // which concord does only over TLS.
    let native_digest: String = {
        use sha1::Digest as _;
        let d = sha1::Sha1::digest(sha1::Sha1::digest(PASSWORD.as_bytes()));
        d.iter().map(|b| format!("{b:02X}")).collect()
    };
    cfg.users.push_str(&format!(
        "\n[[users]]\nname = \"legacy\"\npassword_sha1 = \"*{native_digest}\"\nbackend_user = \"app\"\nbackend_password = \"{PASSWORD}\"\n"
    ));
    let node = Concord::start(cfg).await;
    let port = node.cfg.port;

    let out = mariadb_ok(port, "app", PASSWORD, &["--ssl"], "status");
    assert!(out.contains("Cipher in use"), "{out}");

    let out = mariadb_ok(
        port,
        "app",
        PASSWORD,
        &["--default-auth=caching_sha2_password"],
        "SELECT 'fast'",
    );
    assert!(out.contains("fast"));

    let out = mariadb_ok(
        port,
        "legacy",
        PASSWORD,
        &["--ssl", "--default-auth=caching_sha2_password"],
        "SELECT CURRENT_USER()",
    );
    assert!(out.contains("app@"), "{out}");
    // Without TLS concord will not take a clear-text password: it switches
    // the client to mysql_native_password, which it can check.
    let out = mariadb_ok(
        port,
        "legacy",
        PASSWORD,
        &["--skip-ssl", "--default-auth=caching_sha2_password"],
        "SELECT 'switched'",
    );
    assert!(out.contains("switched"));
    let out = mariadb(
        port,
        "legacy",
        "wrong",
        &["--ssl", "--default-auth=caching_sha2_password"],
        "SELECT 1",
    );
    assert!(!out.status.success());

    // ssl-mode=REQUIRED from a Rust driver.
    let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    let mut c = mysql_async::Conn::new(node.opts().ssl_opts(ssl))
        .await
        .unwrap();
    let v: Option<String> = c.query_first("SELECT 'over tls'").await.unwrap();
    assert_eq!(v.as_deref(), Some("over tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_text_binary_blobs_multi_results_procedures() {
    let (_db, node) = setup().await;
    let mut c = node.conn().await;
    c.query_drop("CREATE TABLE test.t (id INT PRIMARY KEY, b LONGBLOB, d DOUBLE, s VARCHAR(10))")
        .await
        .unwrap();

    // Binary protocol with NULLs and types.
    c.exec_drop(
        "INSERT INTO test.t VALUES (?, ?, ?, ?)",
        (1, Some(vec![1u8, 2, 3]), 1.5f64, None::<String>),
    )
    .await
    .unwrap();
    let row: Option<(i32, Vec<u8>, f64, Option<String>)> = c
        .exec_first("SELECT id, b, d, s FROM test.t WHERE id = ?", (1,))
        .await
        .unwrap();
    assert_eq!(row, Some((1, vec![1, 2, 3], 1.5, None)));

    // A BLOB over 16 MiB both ways: split packets client→server
    // (prepared), server→client (text and binary).
    let big: Vec<u8> = (0..(17 << 20)).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO test.t (id, b) VALUES (2, ?)", (big.clone(),))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = c
        .query_first("SELECT b FROM test.t WHERE id = 2")
        .await
        .unwrap();
    assert!(back.as_ref() == Some(&big), "text protocol blob mismatch");
    let back: Option<Vec<u8>> = c
        .exec_first("SELECT b FROM test.t WHERE id = ?", (2,))
        .await
        .unwrap();
    assert!(back.as_ref() == Some(&big), "binary protocol blob mismatch");
    // ... and a text-protocol statement over 16 MiB.
    let hex: String = big[..(9 << 20)]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.query_drop(format!("INSERT INTO test.t (id, b) VALUES (3, x'{hex}')"))
        .await
        .unwrap();
    let len: Option<i64> = c
        .query_first("SELECT LENGTH(b) FROM test.t WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(len, Some(9 << 20));

    // Several result sets from one multi-statement.
    let mut r = c
        .query_iter("SELECT 1; SELECT 'a', 'b'; UPDATE test.t SET d = 2 WHERE id = 1; SELECT 3")
        .await
        .unwrap();
    let first: Vec<i64> = r.collect().await.unwrap();
    let second: Vec<(String, String)> = r.collect().await.unwrap();
    let _third: Vec<mysql_async::Row> = r.collect().await.unwrap();
    let fourth: Vec<i64> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![("a".into(), "b".into())]);
    assert_eq!(fourth, vec![3]);

    // A stored procedure with OUT params and a result set.
    c.query_drop(
        "CREATE PROCEDURE test.p(IN x INT, OUT y INT, OUT z VARCHAR(10)) BEGIN SELECT x * 10 AS inner_rs; SET y = x + 1; SET z = 'out'; END",
    )
    .await
    .unwrap();
    let mut r = c.query_iter("CALL test.p(41, @y, @z)").await.unwrap();
    let inner: Vec<i64> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(inner, vec![410]);
    let out: Option<(i64, String)> = c.query_first("SELECT @y, @z").await.unwrap();
    assert_eq!(out, Some((42, "out".into())));
    // The same through the binary protocol (OUT params come back as a
    // result set flagged PS_OUT_PARAMS).
    let mut r = c.exec_iter("CALL test.p(?, @y2, @z2)", (1,)).await.unwrap();
    let inner: Vec<i64> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(inner, vec![10]);

    // COM_RESET_CONNECTION and COM_CHANGE_USER.
    c.query_drop("SET @v = 7").await.unwrap();
    c.reset().await.unwrap();
    let v: Option<Option<i64>> = c.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(None));
    c.change_user(mysql_async::ChangeUserOpts::default().with_db_name(Some("test".into())))
        .await
        .unwrap();
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("test"));
    c.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_survives_a_new_backend_connection() {
    state_after_backend_loss("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_survives_a_new_backend_connection_in_session_mode() {
    state_after_backend_loss("session").await;
}

/// A session's backend connections killed behind its back, in pool
/// `mode`: the state that moves comes along to a new connection.
async fn state_after_backend_loss(mode: &str) {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.extra = format!("[pool]\nmode = \"{mode}\"\n");
    let node = Concord::start(cfg).await;
    let kill_backend_conns = || async {
        let mut root = db.conn().await;
        let ids: Vec<u64> = root
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
            .await
            .unwrap();
        for id in ids {
            root.query_drop(format!("KILL {id}")).await.unwrap();
        }
    };
    let mut c = node.conn().await;
    c.query_drop("USE test").await.unwrap();
    c.query_drop("SET NAMES latin1").await.unwrap();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    c.query_drop("SET @marker = 'kept'").await.unwrap();
    // The statement after an assignment reads the value back: from then on
    // it no longer depends on the connection that assigned it.
    c.query_drop("SELECT 1").await.unwrap();
    // Kill concord's backend connection behind its back.
    kill_backend_conns().await;
    // The next statement fails cleanly (the connection is gone) ...
    let first = c.query_drop("SELECT 1").await;
    let row: (Option<String>, String, String, Option<String>) = match first {
        Err(_) => c
            .query_first("SELECT DATABASE(), @@character_set_client, @@sql_mode, @marker")
            .await
            .unwrap()
            .unwrap(),
        Ok(()) => c
            .query_first("SELECT DATABASE(), @@character_set_client, @@sql_mode, @marker")
            .await
            .unwrap()
            .unwrap(),
    };
    // ... and the one after runs on a fresh backend connection in the
    // same session state.
    assert_eq!(
        row,
        (
            Some("test".into()),
            "latin1".into(),
            "ANSI_QUOTES".into(),
            Some("kept".into())
        )
    );
    c.query_drop("SET @only_there = 'x'").await.unwrap();
    kill_backend_conns().await;
    if mode == "transaction" {
        // Read back when the statement's connection went back to the
        // pool: nothing lives only on a backend connection between
        // transactions.
        let first = c.query_drop("SELECT 1").await;
        let v: Option<Option<String>> = match first {
            Err(_) | Ok(()) => c.query_first("SELECT @only_there").await.unwrap(),
        };
        assert_eq!(v, Some(Some("x".into())));
        return;
    }
    // A value that lived only on the connection that died is gone with
    // it: the session ends with an error that says so, as a direct
    // connection would, never a silent NULL.
    let e = c.query_drop("SELECT @only_there").await.unwrap_err();
    assert!(
        e.to_string().contains("user variables"),
        "the error says what was lost: {e}"
    );
    assert!(c.query_drop("SELECT 1").await.is_err(), "the session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql() {
    let (_db, node) = setup().await;
    let script = format!(
        r#"
import pymysql
c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="{PASSWORD}", database="test", autocommit=True)
cur = c.cursor()
cur.execute("CREATE TABLE py (id INT PRIMARY KEY, v VARCHAR(20))")
cur.executemany("INSERT INTO py VALUES (%s, %s)", [(i, "v%d" % i) for i in range(100)])
cur.execute("SELECT COUNT(*), MAX(v) FROM py WHERE id >= %s", (10,))
print(cur.fetchone())
c.begin()
cur.execute("UPDATE py SET v = 'x' WHERE id = 1")
c.rollback()
cur.execute("SELECT v FROM py WHERE id = 1")
print(cur.fetchone())
c.ping()
c.close()
"#,
        port = node.cfg.port
    );
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(90, 'v99')\n('v1',)\n"
    );
}

fn sysbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("sysbench")
        .arg("oltp_read_write")
        .args([
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={PASSWORD}"),
            "--mysql-db=test",
            "--tables=4",
            "--table-size=10000",
        ])
        .args(args)
        .output()
        .expect("run sysbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_read_write_with_and_without_prepared_statements() {
    let (_db, node) = setup().await;
    let port = node.cfg.port;
    sysbench(port, &["prepare"]);
    for ps in ["auto", "disable"] {
        // Only InnoDB's own deadlock/lock-wait errors (1213, 1205) may be
        // retried by sysbench; any other error is fatal and fails the run.
        let out = sysbench(
            port,
            &[
                "--threads=16",
                "--time=10",
                &format!("--db-ps-mode={ps}"),
                "--mysql-ignore-errors=1213,1205",
                "run",
            ],
        );
        let count = |label: &str| {
            out.lines()
                .find_map(|l| l.split_once(label).map(|(_, rest)| rest))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no '{label}' in sysbench output:\n{out}"))
        };
        assert_eq!(count("reconnects:"), 0, "ps-mode {ps}:\n{out}");
        assert!(count("transactions:") > 100, "ps-mode {ps}:\n{out}");
        println!(
            "ps-mode {ps}: {} transactions, {} deadlocks retried",
            count("transactions:"),
            count("ignored errors:")
        );
    }
}
