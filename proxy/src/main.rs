//! `concord --config FILE` runs a node; `concord check-config FILE` validates.

use clap::{Parser, Subcommand};
use concord_config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "MySQL-protocol proxy fleet with Raft-agreed primaries and proxy-layer fencing"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Log format override: text or json.
    #[arg(long)]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file and exit (0 valid, 2 invalid).
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match (&cli.cmd, &cli.config) {
        (Some(Cmd::CheckConfig { file }), _) => {
            return match Config::load(file) {
                Ok(_) => {
                    eprintln!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(2)
                }
            };
        }
        (None, Some(p)) => p.clone(),
        (None, None) => {
            eprintln!("usage: concord --config FILE | concord check-config FILE");
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Some(f) = cli.log_format {
        config.log.format = f;
    }
    if let Err(e) = concord_proxy::logging::init(&config.log) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let hooks = concord_config::testhooks::active();
    if !hooks.is_empty() {
        tracing::warn!(
            "TEST-ONLY SWITCHES ACTIVE ({}): protections are removed on purpose; never run this process in production",
            hooks.join(",")
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.node.worker_threads > 0 {
        builder.worker_threads(config.node.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(concord_proxy::node::run(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("concord stopped: {e}");
            eprintln!("concord: {e}");
            ExitCode::FAILURE
        }
    }
}
