//! Other drivers, differentially: each script in `tests/drivers/` runs
//! against MariaDB directly and then through concord, and must print the
//! same lines (one per step: its result, or an error's code and SQLSTATE).
//! Node.js mysql2 and mariadb (pipelined PREPARE + EXECUTE, batches), PHP
//! mysqli and PDO (mysqlnd: long data, cursors, change user), MariaDB
//! Connector/J (server-side statements, batches, query timeouts; its
//! compression and bulk settings fall back to the plain protocol, since
//! concord offers neither). `scripts/driver-deps.sh` installs them.

use harness::{Concord, ConcordConfig, MariaDb, PASSWORD};
use std::path::Path;
use std::process::Command;

/// The same script's lines, direct then through concord, its tables
/// dropped in between.
async fn both(run: impl Fn(u16) -> String) -> (String, String) {
    let db = MariaDb::start("primary", 1).await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    let direct = run(db.port);
    let tables: Vec<String> = db
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'test' AND table_name LIKE 'drv%'")
        .await;
    for t in tables {
        db.exec(&format!("DROP TABLE test.{t}")).await;
    }
    let proxied = run(node.cfg.port);
    (direct, proxied)
}

/// `program` under coreutils' `timeout`: a driver that hangs on a
/// regression fails the test instead of hanging the suite.
fn timed(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["300", program]);
    c
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn same(what: &str, (direct, proxied): (String, String)) {
    println!("{what}, direct:\n{direct}");
    assert!(direct.lines().count() > 10, "{what} ran: {direct}");
    assert!(
        !direct.contains("FATAL"),
        "{what} could not connect: {direct}"
    );
    for (d, p) in direct.lines().zip(proxied.lines()) {
        assert_eq!(p, d, "{what}: through concord, then direct");
    }
    assert_eq!(proxied.lines().count(), direct.lines().count(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mysql2_and_mariadb() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/drivers/node/node_modules");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/node.js");
    let r = both(|port| {
        output(
            timed("node")
                .env("NODE_PATH", &modules)
                .arg(&script)
                .arg(port.to_string())
                .arg(PASSWORD),
        )
    })
    .await;
    same("node", r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_mysqli_and_pdo() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/php.php");
    let r = both(|port| {
        output(
            timed("php")
                .arg(&script)
                .arg(port.to_string())
                .arg(PASSWORD),
        )
    })
    .await;
    same("php", r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_connector_j() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let classes = root.join("target/drivers/java");
    std::fs::create_dir_all(&classes).unwrap();
    output(
        timed("javac")
            .arg("-d")
            .arg(&classes)
            .arg(root.join("tests/drivers/Drivers.java")),
    );
    let cp = format!(
        "{}:/usr/share/java/mariadb-java-client.jar",
        classes.display()
    );
    let r = both(|port| {
        output(
            timed("java")
                .arg("-cp")
                .arg(&cp)
                .arg("Drivers")
                .arg(port.to_string())
                .arg(PASSWORD),
        )
    })
    .await;
    same("Connector/J", r);
}
