//! concord's configuration as plain data.
//!
//! The TOML file is parsed into [`Config`] (serde, unknown keys rejected),
//! then [`Config::validate`] checks cross-field rules. Every error names the
//! key it is about, so an operator can fix the file without reading code.
//! Reload builds a fresh `Config` the same way and [`diff`] says what moved.

mod diff;
mod duration;
mod error;
mod schema;
mod size;
pub mod testhooks;
mod validate;

pub use diff::{diff, Change};
pub use duration::Duration;
pub use error::ConfigError;
pub use schema::*;
pub use size::ByteSize;

/// Checks a `host:port` backend address given at run time (admin port).
pub fn check_backend_addr(addr: &str) -> Result<(), String> {
    validate::check_addr("address", addr).map_err(|e| e.to_string())
}

use std::path::Path;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut cfg = Config::parse(&text)?;
        cfg.resolve_paths(path.parent());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text without validation (see [`Config::validate`]).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Fuzz entry (property tests and `fuzz/`): parse and validate
    /// arbitrary bytes; errors are fine, panics are not.
    pub fn fuzz_entry(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(cfg) = Config::from_toml(text) {
                let _ = crate::diff(&cfg, &cfg);
            }
        }
    }

    /// Parses and validates TOML text; relative paths stay as written.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg = Config::parse(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes relative file paths (data dir, TLS files) relative to the
    /// directory that holds the config file, not the process's cwd.
    fn resolve_paths(&mut self, base: Option<&Path>) {
        let Some(base) = base else { return };
        let fix = |p: &mut std::path::PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.node.data_dir);
        if let Some(tls) = self.listener.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        if let Some(tls) = self.cluster.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::Config;
    use proptest::prelude::*;

    /// Lines built from real section names, keys and value shapes, so the
    /// parser and the validator both get exercised, not just TOML syntax.
    fn config_like() -> impl Strategy<Value = String> {
        let sections = prop::sample::select(vec![
            "[node]",
            "[listener]",
            "[admin]",
            "[http]",
            "[cluster]",
            "[monitor]",
            "[routing]",
            "[failover]",
            "[pool]",
            "[log]",
            "[[users]]",
            "[[backends]]",
            "[[cluster.peers]]",
            "[listener.tls]",
            "[bogus]",
        ]);
        let keys = prop::sample::select(vec![
            "id",
            "data_dir",
            "addr",
            "name",
            "password",
            "role",
            "weight",
            "max_connections",
            "handshake_timeout",
            "idle_timeout",
            "max_allowed_packet",
            "lease_timeout",
            "interval",
            "max_replica_lag",
            "fallback",
            "read_your_writes",
            "secret",
            "level",
            "max_auth_failures_per_minute",
            "worker_threads",
            "runtime",
            "user",
            "cert",
            "key",
        ]);
        let values = prop::sample::select(vec![
            "1",
            "0",
            "-1",
            "18446744073709551616",
            "\"127.0.0.1:3306\"",
            "\"\"",
            "\"1s\"",
            "\"250ms\"",
            "\"64MiB\"",
            "\"10x\"",
            "true",
            "[1,2]",
            "{a=1}",
            "\"primary\"",
            "\"per-core\"",
            "\"\\u0000\"",
            "1e400",
            "\"99999999999999999999h\"",
        ]);
        proptest::collection::vec(
            prop_oneof![
                sections.prop_map(str::to_string),
                (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
            ],
            0..30,
        )
        .prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn config_parser_never_panics(text in config_like()) {
            Config::fuzz_entry(text.as_bytes());
        }

        #[test]
        fn config_parser_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            Config::fuzz_entry(&data);
        }
    }
}
