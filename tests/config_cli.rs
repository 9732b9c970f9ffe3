//! `concord check-config` and `concord --config` on good and bad files:
//! exit code 2 and a message naming the key.

use std::process::Command;

fn concord() -> Command {
    Command::new(harness::bin::workspace_bin("concord"))
}

const GOOD: &str = r#"
[listener]
addr = "127.0.0.1:3307"
[[users]]
name = "app"
password = "pw"
[[backends]]
name = "db1"
addr = "127.0.0.1:3306"
"#;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, text).unwrap();
    let out = concord().arg("check-config").arg(&f).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valid_file_passes() {
    let (code, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn invalid_files_name_the_key_and_exit_2() {
    let cases = [
        (
            GOOD.replace("127.0.0.1:3306", "db-without-port"),
            "backends[0].addr",
        ),
        (GOOD.replace("password = \"pw\"", ""), "users[0].password"),
        (
            format!("{GOOD}\n[monitor]\ninterval = \"often\"\n"),
            "interval",
        ),
        (
            format!("{GOOD}\n[routing]\nfalback = \"primary\"\n"),
            "falback",
        ),
        (
            format!("{GOOD}\n[routing]\nfallback = \"somewhere\"\n"),
            "fallback",
        ),
        (
            format!("{GOOD}\n[cluster]\npeers = {{ 2 = \"127.0.0.1:7002\" }}\n"),
            "cluster.peers",
        ),
        (
            GOOD.replace(
                "[listener]",
                "[listener]\ntls = { cert = \"/nonexistent.pem\", key = \"/nonexistent.key\" }",
            ),
            "listener.tls.cert",
        ),
        ("this is not toml".to_string(), "invalid config"),
    ];
    for (text, key) in cases {
        let (code, err) = check(&text);
        assert_eq!(code, 2, "expected exit 2 for {key}: {err}");
        assert!(err.contains(key), "error for {key} does not name it: {err}");
    }
}

#[test]
fn run_with_bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        GOOD.replace("[[users]]\nname = \"app\"\npassword = \"pw\"\n", ""),
    )
    .unwrap();
    let out = concord().arg("--config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("users"));
    let out = concord()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn listener_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let text = GOOD.replace("127.0.0.1:3307", &format!("127.0.0.1:{port}"))
        + &format!(
            "[node]\ndata_dir = \"{}\"\n[admin]\naddr = \"\"\n[http]\naddr = \"\"\n",
            dir.path().join("d").display()
        );
    std::fs::write(&f, text).unwrap();
    let out = concord().arg("--config").arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener.addr"), "{err}");
}
