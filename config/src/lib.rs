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
