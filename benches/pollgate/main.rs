//! pollgate's own benchmark: the four figures of the performance issue
//! (held-poll memory, fan-out, sustained rate, proxied GETs) plus a scaling
//! table, measured against a real pollgate binary started fresh for every
//! scenario, or against any other long-poll server described by flags (that
//! is how `benches/compare.sh` measures Nchan and Pushpin with the same code).
//!
//! `cargo bench --bench pollgate` runs everything with the default sizes;
//! `cargo bench --bench pollgate -- --help` lists the knobs.

mod client;
#[path = "../common/mod.rs"]
mod common;
mod scenarios;
mod spread;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use common::Result;

#[derive(Parser, Debug)]
#[command(about = "Long-poll benchmark: pollgate, or any server described by the target flags")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the trivial backend (and Pushpin's GRIP hold answers) until killed.
    Backend {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
    /// Hold waiters for scenario e's parent (a child process of this tool).
    Hold(spread::HoldArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenarios to run, in order: a (memory), b (fan-out), c (sustained),
    /// d (proxied GETs, needs wrk), e (one channel's
    /// waiters spread over --e-poll-urls), scale (a and b at each --scale size).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,scale")]
    scenarios: Vec<String>,
    #[command(flatten)]
    target: target::TargetArgs,
    #[command(flatten)]
    sizes: scenarios::Sizes,
    /// Also append every figure as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let (runtime, args) = common::runtime();
    let cli = Cli::parse_from(args);
    let outcome = runtime.block_on(async move {
        match cli.cmd {
            Some(Cmd::Backend { listen }) => target::serve_backend(listen).await,
            Some(Cmd::Hold(args)) => spread::hold(args).await,
            None => scenarios::run_all(cli.run).await,
        }
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
