//! Structured logs via `tracing`: text by default, JSON with `[log] format`.

use concord_config::LogConfig;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides `[log] level`.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.level),
    }
    .map_err(|e| format!("invalid config: log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let res = match cfg.format.as_str() {
        "json" => builder.json().flatten_event(true).try_init(),
        _ => builder.with_ansi(false).try_init(),
    };
    res.map_err(|e| format!("cannot install logger: {e}"))
}
