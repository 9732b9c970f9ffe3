//! Test hosts as Linux network namespaces on one bridge, and faults made
//! by dropping packets with nftables inside a host: real partitions that
//! TCP sees as silence (retransmits, timeouts), not as clean closes the
//! way a userspace relay's cut is. Needs root, `ip` (iproute2) and `nft`
//! (nftables); `scripts/deps.sh` installs them.
//!
//! The test process stays in the root namespace and reaches every host
//! through the bridge (gateway `.1`); faults never match that address
//! unless asked to, so the checker can always read the servers.
//!
//! The kernel of the CI machines has no `sch_netem`, so delay cannot be
//! injected here; random loss is an nftables rule (`numgen random`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// One bridge and the hosts on it. Dropping it deletes them all.
pub struct Net {
    bridge: String,
    /// `10.a.b`: hosts are `.10`, `.11`, ...; the root namespace is `.1`.
    prefix: String,
    tag: String,
    hosts: Vec<String>,
}

/// One host: a namespace with `eth0` on the bridge and an nftables table
/// `inet cf` whose `input`/`output` chains hold the faults.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: String,
    gateway: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("network namespace setup failed (root, iproute2 and nftables are needed; scripts/deps.sh installs them): {e}");
    }
}

fn pid_alive(pid: &str) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces and bridges left by test processes that died
/// without cleaning up (names carry the creating pid).
fn sweep_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(pid) = name.strip_prefix("cc").and_then(|r| r.split('x').next()) {
                if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !pid_alive(pid) {
                    let _ = run(&["ip", "netns", "del", name]);
                }
            }
        }
    }
    if let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            if let Some(pid) = name.strip_prefix("cb").and_then(|r| r.split('x').next()) {
                if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !pid_alive(pid) {
                    let _ = run(&["ip", "link", "del", name]);
                }
            }
        }
    }
}

impl Net {
    /// A new bridge with its own /24. Panics with the reason when this
    /// machine cannot make namespaces (the tests that need them must not
    /// pass by skipping).
    pub fn new() -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}x{k}");
        // A /24 no route of this machine uses yet (another test process's
        // bridge, or the host's own networks).
        let routes = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut h = pid.wrapping_mul(31).wrapping_add(k);
        let prefix = loop {
            let p = format!("10.{}.{}", 100 + h % 100, (h / 100) % 250);
            if !routes.contains(&format!("{p}.0/24")) {
                break p;
            }
            h = h.wrapping_add(7919);
        };
        let bridge = format!("cb{tag}");
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let net = Net {
            bridge,
            prefix,
            tag,
            hosts: Vec::new(),
        };
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}.1/24", net.prefix),
            "dev",
            &net.bridge,
        ]);
        must(&["ip", "link", "set", &net.bridge, "up"]);
        net
    }

    /// Adds host number `n` (0..) at `prefix.(10+n)`.
    pub fn host(&mut self, n: usize) -> Host {
        let ns = format!("cc{}h{n}", self.tag);
        let outer = format!("cv{}h{n}", self.tag);
        let inner = format!("ci{}h{n}", self.tag);
        let ip = format!("{}.{}", self.prefix, 10 + n);
        must(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        must(&[
            "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        must(&["ip", "link", "set", &inner, "netns", &ns]);
        must(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "link", "set", &outer, "master", &self.bridge, "up"]);
        let host = Host {
            ns,
            ip,
            gateway: format!("{}.1", self.prefix),
        };
        host.nft(
            "table inet cf {\n chain input { type filter hook input priority 0; policy accept; }\n chain output { type filter hook output priority 0; policy accept; }\n}\n",
        );
        host
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

impl Host {
    /// `program` to be run inside this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    fn nft(&self, script: &str) {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (install nftables)");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {}: {}\n{script}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Packets from `ip` to this host vanish (one way).
    pub fn drop_from(&self, ip: &str) {
        self.nft(&format!("add rule inet cf input ip saddr {ip} drop\n"));
    }

    /// Packets from this host to `ip` vanish (one way).
    pub fn drop_to(&self, ip: &str) {
        self.nft(&format!("add rule inet cf output ip daddr {ip} drop\n"));
    }

    /// Both directions between this host and `ip`.
    pub fn cut(&self, ip: &str) {
        self.drop_from(ip);
        self.drop_to(ip);
    }

    /// Every packet to or from any other host vanishes; the test
    /// process (the gateway) still gets through.
    pub fn black_hole(&self) {
        let g = &self.gateway;
        self.nft(&format!(
            "add rule inet cf input ip saddr != {g} drop\nadd rule inet cf output ip daddr != {g} drop\n"
        ));
    }

    /// `pct` percent of packets to and from other hosts vanish, at random.
    pub fn loss(&self, pct: u32) {
        let g = &self.gateway;
        self.nft(&format!(
            "add rule inet cf input ip saddr != {g} numgen random mod 100 < {pct} drop\nadd rule inet cf output ip daddr != {g} numgen random mod 100 < {pct} drop\n"
        ));
    }

    /// Removes every fault on this host.
    pub fn heal(&self) {
        self.nft("flush chain inet cf input\nflush chain inet cf output\n");
    }
}
