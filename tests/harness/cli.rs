//! Running the real `mariadb` command-line client.

use crate::bin;
use std::process::{Command, Output};

/// Runs `mariadb -h127.0.0.1 -P<port> -u<user> -p<pw> <args> -e <sql>`.
pub fn mariadb(port: u16, user: &str, password: &str, args: &[&str], sql: &str) -> Output {
    Command::new(bin::mariadb_client())
        .arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{password}"))
        .arg("--batch")
        .args(args)
        .arg("-e")
        .arg(sql)
        .output()
        .expect("run the mariadb client")
}

/// Like [`mariadb`], asserting success; returns stdout.
pub fn mariadb_ok(port: u16, user: &str, password: &str, args: &[&str], sql: &str) -> String {
    let out = mariadb(port, user, password, args, sql);
    assert!(
        out.status.success(),
        "mariadb {args:?} -e {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
