//! Locating binaries: the workspace's own (built on demand with the same
//! cargo profile as the tests) and the system's MariaDB tools.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>` of the running test binary.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.to_path_buf())
        .expect("target dir")
}

/// Path of a workspace binary, built once per test process.
/// `CONCORD_BIN=/path/to/concord` runs the tests against another build of
/// concord (an older commit's, to watch a test fail without its fix).
pub fn workspace_bin(name: &str) -> PathBuf {
    if name == "concord" {
        if let Some(p) = std::env::var_os("CONCORD_BIN") {
            return PathBuf::from(p);
        }
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = target_profile_dir()
            .file_name()
            .is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        // Run cargo with the user's environment, minus what cargo set for
        // this test process: build scripts fingerprint some variables, and
        // a different set would force rebuilds that flip-flop with the
        // user's next `cargo build`.
        for (k, _) in std::env::vars() {
            if k == "CARGO"
                || k == "LD_LIBRARY_PATH"
                || k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_CRATE_")
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
                || k == "RUST_RECURSION_COUNT"
            {
                cmd.env_remove(k);
            }
        }
        // The same command scripts/test.sh and scripts/demo.sh run, so the
        // feature set (and thus the artifacts) match and nothing rebuilds.
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--examples"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("run cargo build for the concord binaries");
        assert!(st.success(), "building the concord binaries failed");
    });
    let p = target_profile_dir().join(name);
    assert!(
        p.exists(),
        "{} not found; run cargo build --workspace",
        p.display()
    );
    p
}

/// A system binary, looked up in PATH and the usual sbin dirs.
pub fn system_bin(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for d in dirs {
        for n in names {
            let p = d.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

pub fn mariadbd() -> PathBuf {
    system_bin(&["mariadbd", "mysqld"])
        .expect("mariadbd not found: install mariadb-server (scripts/test.sh and .ci/run do this)")
}

pub fn mariadb_client() -> PathBuf {
    system_bin(&["mariadb", "mysql"]).expect("mariadb client not found: install mariadb-client")
}

pub fn install_db() -> PathBuf {
    system_bin(&["mariadb-install-db", "mysql_install_db"]).expect("mariadb-install-db not found")
}

/// True when running as root (mariadbd then needs --user=root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Makes a child die with the process that started it, so a killed or
/// timed-out test run leaves no servers behind.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A helper process (a mock server, a bench agent) that dies with its
/// test, panicking or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
