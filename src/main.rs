//! The `pollgate` binary: flags, logging, exit codes. Everything else is in
//! the library, which the integration tests drive through the same API.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use pollgate::config::Config;
use pollgate::logging::Format as LogFormat;
use tokio::sync::Notify;

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
    /// Publish a JSON object to a channel; prints the message id and timestamp.
    Publish {
        /// The webhook listener of a running pollgate.
        #[arg(
            long,
            env = "POLLGATE_WEBHOOK",
            default_value = "http://127.0.0.1:8081"
        )]
        webhook: String,
        /// Bearer token, when the webhook requires one.
        #[arg(long, env = "POLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Channel name.
        channel: String,
        /// The JSON object, or `-` (the default) to read it from stdin.
        #[arg(default_value = "-")]
        json: String,
    },
    /// Exit 0 when URL answers 200 (a container probe for /readyz or /healthz).
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:8081/readyz")]
        url: String,
    },
    /// Print a shell completion script, e.g.
    /// `pollgate completions bash > /etc/bash_completion.d/pollgate`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `pollgate man > pollgate.1`.
    Man,
    /// Print the config file's JSON Schema, for editors and CI checks, e.g.
    /// `pollgate schema > pollgate.schema.json`.
    Schema,
    /// Follow a channel: print each message as a JSON line, across reconnects.
    Tail {
        /// The poll route's base URL of a running pollgate.
        #[arg(long, default_value = "http://127.0.0.1:8080/api/poll/")]
        url: String,
        /// Start after this timestamp (`0` = from the oldest buffered).
        #[arg(long)]
        since: Option<String>,
        /// Channel name.
        channel: String,
    },
}

/// Exit codes: 0 ok, 1 runtime failure (or `check` found errors), 64 the
/// config given to `run` is invalid.
const EXIT_CONFIG: u8 = 64;

// jemalloc: glibc's malloc was an eighth of the CPU in a fan-out profile;
// why this one, and how freed memory goes back after a peak: `memory`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Publish {
            webhook,
            token,
            channel,
            json,
        } => publish(&webhook, token.as_deref(), &channel, json),
        Command::Tail {
            url,
            since,
            channel,
        } => tail(&url, &channel, since),
        Command::Probe { url } => probe(&url),
        // Both from the flags' own definitions: they cannot drift from them.
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pollgate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pollgate man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema => {
            // Pretty, with a final newline, so the file in config/ diffs well.
            match serde_json::to_string_pretty(&pollgate::config::json_schema()) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pollgate schema: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => {
            pollgate::logging::init(cli.log_format);
            let code = run(cli.config);
            // The last lines ("stopped", an error) are queued: write them out.
            pollgate::logging::finish();
            code
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

fn client_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn publish(webhook: &str, token: Option<&str>, channel: &str, json: String) -> ExitCode {
    let json = if json == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            eprintln!("error: cannot read stdin: {e}");
            return ExitCode::FAILURE;
        }
        text
    } else {
        json
    };
    let Some(rt) = client_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(pollgate::client::publish(webhook, token, channel, json)) {
        Ok((id, ts)) => {
            println!("{id} {ts}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(pollgate::client::probe(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tail(url: &str, channel: &str, since: Option<String>) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(pollgate::client::tail(
        url,
        channel,
        since,
        std::io::stdout(),
    ));
    ExitCode::SUCCESS
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
    // Thread per core: this thread serves one public socket, the webhook and
    // the background work; `server.threads - 1` more threads serve a public
    // socket each (see `app::start`). No work moves between threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
        let signals = match pollgate::shutdown::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
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
        tokio::spawn(signals.watch(running.shutdown.clone(), reload));
        match running.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "pollgate failed");
                ExitCode::FAILURE
            }
        }
    })
}
