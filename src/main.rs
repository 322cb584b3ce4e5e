//! The `pollgate` binary: flags, logging, exit codes. Everything else is in
//! the library, which the integration tests drive through the same API.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pollgate::config::Config;
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

/// pollgate: a reverse proxy that adds HTTP long polling to an existing app.
///
/// Without a subcommand, runs the proxy with the config file.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Config file (YAML). Reloaded live when it changes or on SIGHUP.
    #[arg(
        long,
        short,
        global = true,
        env = "POLLGATE_CONFIG",
        default_value = "config/pollgate.yaml"
    )]
    config: PathBuf,

    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config file: list every error with its location (exit 1),
    /// or summarize the routes (exit 0).
    Check,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Exit codes: 0 ok, 1 runtime failure (or `check` found errors), 64 the
/// config given to `run` is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => {
            init_logging(cli.log_format);
            run(cli.config)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: ok\n{}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{errors}\npollgate not started: fix the config (pollgate check --config {})",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listeners = match pollgate::Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let reload = Arc::new(Notify::new());
        let options = pollgate::Options { config_path: Some(path), reload: Some(reload.clone()) };
        let running = match pollgate::start(config, listeners, options) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(public = %running.public_addr, webhook = %running.webhook_addr, "pollgate listening");
        tokio::spawn(pollgate::shutdown::watch_signals(running.shutdown.clone(), reload));
        match running.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "pollgate failed");
                ExitCode::FAILURE
            }
        }
    })
}
