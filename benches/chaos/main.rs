//! The chaos suite: pollgate under load while everything that can go wrong
//! does, and the proof that nothing acknowledged was lost.
//!
//! `cargo bench --bench chaos` runs the full suite (a few minutes);
//! `-- --short` the form CI runs (under two minutes); `-- --readme
//! README.md` writes the figures into the README between the chaos markers.
//! Exits 1 when a message was lost or repeated, a held poll was dropped,
//! the webhook stopped answering, or pollgate died.
//!
//! 1. Memory broker: followers held on their channels and a steady publish
//!    rate, while the config is rewritten (some rewrites invalid), slow-loris
//!    clients, clients that never read their answer, a connection flood past
//!    the connection cap, and garbage requests hit both listeners.
//! 2. Redis broker (a redis-server of the suite's own): followers and
//!    publishes while Redis is killed with `kill -9` and restarted empty,
//!    and the config is rewritten.

mod attack;
#[path = "../common/mod.rs"]
mod common;
mod follow;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};

use follow::{Book, Tally};
use server::{Pollgate, Redis};

pub use common::Result;

#[derive(Parser, Debug)]
#[command(about = "pollgate under load while Redis dies, configs change and clients misbehave")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The short form (CI): fewer clients, shorter windows.
    #[arg(long)]
    short: bool,
    /// Write the figures into this README, between `<!-- chaos:begin -->`
    /// and `<!-- chaos:end -->`.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Phases to run: memory, redis, peaks.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis,peaks")]
    phases: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One kind of hostile client (run by the suite in a process of its own).
    Attack(attack::AttackArgs),
}

/// How big each phase is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    followers: usize,
    channels: usize,
    rate: u64,
    chaos: Duration,
    after: Duration,
    slowloris: usize,
    noread: usize,
    flood: usize,
    garbage: usize,
    rewrites: usize,
    invalid: usize,
    redis_followers: usize,
    redis_channels: usize,
    redis_rate: u64,
    /// After-a-peak phase: connections flooded then closed, and channels
    /// that each get one message and then expire.
    peak_connections: usize,
    peak_channels: usize,
}

const FULL: Sizes = Sizes {
    followers: 10_000,
    channels: 1_000,
    rate: 2_000,
    chaos: Duration::from_secs(30),
    after: Duration::from_secs(10),
    slowloris: 2_000,
    noread: 2_000,
    flood: 8_000,
    garbage: 10_000,
    rewrites: 50,
    invalid: 5,
    redis_followers: 1_000,
    redis_channels: 100,
    redis_rate: 500,
    peak_connections: 15_000,
    peak_channels: 200_000,
};

const SHORT: Sizes = Sizes {
    followers: 1_000,
    channels: 100,
    rate: 500,
    chaos: Duration::from_secs(15),
    after: Duration::from_secs(5),
    slowloris: 200,
    noread: 200,
    flood: 2_000,
    garbage: 1_000,
    rewrites: 10,
    invalid: 2,
    redis_followers: 300,
    redis_channels: 30,
    redis_rate: 200,
    peak_connections: 3_000,
    peak_channels: 20_000,
};

/// One phase's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    name: &'static str,
    followers: usize,
    rate: u64,
    tally: Tally,
    rss_held_kib: u64,
    rss_peak_kib: u64,
    rss_final_kib: u64,
    health_failures: usize,
    behind: usize,
    /// Gaps one follower may be told of: its history lost on purpose.
    gaps_allowed: usize,
    reloads_ok: f64,
    reloads_failed: f64,
    rewrites: (usize, usize),
    metrics: Vec<(String, f64)>,
    alive: bool,
}

impl Figures {
    fn failed(&self) -> Vec<String> {
        let t = &self.tally;
        let mut out = Vec::new();
        // A gap is owed only to a lost history: none on the memory broker,
        // one per follower when Redis restarts empty.
        let gaps_beyond = t.max_gaps.saturating_sub(self.gaps_allowed);
        for (what, n) in [
            ("acknowledged messages lost", t.lost),
            ("duplicates", t.duplicates),
            ("held polls dropped", t.dropped),
            ("webhook health checks failed", self.health_failures),
            ("followers that received nothing", t.silent),
            (
                "gaps beyond a lost history's one (the most any follower got)",
                gaps_beyond,
            ),
        ] {
            if n > 0 {
                out.push(format!("{}: {n} {what}", self.name));
            }
        }
        for loss in &t.lost_detail {
            out.push(format!("{}: {loss}", self.name));
        }
        if !self.alive {
            out.push(format!("{}: pollgate died", self.name));
        }
        if t.delivered == 0 {
            out.push(format!("{}: nothing was delivered", self.name));
        }
        out
    }
}

fn main() {
    let (runtime, args) = common::runtime();
    let cli = Cli::parse_from(args);
    let result = runtime.block_on(async move {
        match cli.cmd {
            Some(Cmd::Attack(a)) => attack::run(a).await.map(|()| true),
            None => {
                let sizes = if cli.short { SHORT } else { FULL };
                suite(sizes, cli.short, &cli.phases, cli.readme).await
            }
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    }
}

async fn suite(
    sizes: Sizes,
    short: bool,
    phases: &[String],
    readme: Option<PathBuf>,
) -> Result<bool> {
    let started = tokio::time::Instant::now();
    let wants = |p: &str| phases.iter().any(|w| w == p);
    let mut figures = Vec::new();
    if wants("memory") {
        figures.push(memory_phase(sizes).await?);
    }
    if wants("redis") {
        figures.push(redis_phase(sizes).await?);
    }
    let peaks = if wants("peaks") {
        Some(peak_phase(sizes).await?)
    } else {
        None
    };
    let all: Vec<&Figures> = figures.iter().collect();
    let mut table = report(&all, short, started.elapsed());
    if let Some(peaks) = &peaks {
        table.push_str(&peaks.table());
    }
    println!("{table}");
    if let Some(path) = readme {
        write_readme(&path, &table)?;
    }
    let failures: Vec<String> = figures.iter().flat_map(|f| f.failed()).collect();
    for f in &failures {
        eprintln!("chaos FAILED: {f}");
    }
    Ok(failures.is_empty())
}

/// Starts `n` followers over `channels`, waits until all are held.
async fn followers(
    pg: &Pollgate,
    n: usize,
    channels: usize,
    book: &Arc<Book>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let src = Ipv4Addr::new(127, 0, 0, 1 + (i / 10_000) as u8);
            tokio::spawn(follow::follower(i % channels, src, pg.public, book.clone()))
        })
        .collect();
    let held = async {
        while book.pending.load(Ordering::Acquire) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), held)
        .await
        .map_err(|_| "the followers were not all held within 120 s")?;
    Ok(tasks)
}

/// Samples pollgate's RSS every 200 ms; the peak so far.
fn rss_sampler(pid: u32, peak: Arc<AtomicU64>, stop: Arc<Book>) {
    tokio::spawn(async move {
        while !stop.stop.load(Ordering::Relaxed) {
            let now = server::proc_status_kib(pid, "VmRSS:").unwrap_or(0);
            peak.fetch_max(now, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Asks the webhook's `/healthz` every 250 ms (2 s to answer); counts
/// failures. On a thread and runtime of its own, as an orchestrator's probe
/// is: the load tool's busy runtime must not make pollgate look slow.
fn prober(webhook: SocketAddr, failures: Arc<AtomicUsize>, book: Arc<Book>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(probe(webhook, failures, book));
    });
}

async fn probe(webhook: SocketAddr, failures: Arc<AtomicUsize>, book: Arc<Book>) {
    {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
        while !book.stop.load(Ordering::Relaxed) {
            let uri: http::Uri = match format!("http://{webhook}/healthz").parse() {
                Ok(u) => u,
                Err(_) => return,
            };
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await,
                Ok(Ok(resp)) if resp.status() == 200
            );
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs `chaos attack …` in a process of its own.
fn attack(
    kind: &str,
    addrs: &[SocketAddr],
    count: usize,
    secs: u64,
    src: u8,
) -> Result<tokio::process::Child> {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .args(["attack", kind, "--addr", &addrs.join(",")])
        .args(["--count", &count.to_string(), "--secs", &secs.to_string()])
        .args(["--src", &src.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

async fn publish_big(webhook: SocketAddr) -> Result<()> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    for i in 0..4 {
        let body = format!("{{\"i\":{i},\"blob\":\"{}\"}}", "b".repeat(1_000_000));
        let req = http::Request::post(format!("http://{webhook}/publish/big"))
            .body(Full::new(bytes::Bytes::from(body)))?;
        let resp = client.request(req).await?;
        resp.into_body().collect().await?;
    }
    Ok(())
}

async fn scrape(webhook: SocketAddr) -> Vec<(String, f64)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let Ok(uri) = format!("http://{webhook}/metrics").parse::<http::Uri>() else {
        return Vec::new();
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await else {
        return Vec::new();
    };
    let Ok(body) = resp.into_body().collect().await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&body.to_bytes())
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn metric(all: &[(String, f64)], key: &str) -> f64 {
    all.iter().find(|(k, _)| k == key).map_or(0.0, |(_, v)| *v)
}

/// What the two phases share: followers held, publishing, the chaos window,
/// a quiet window after it, the tally.
struct Run {
    pg: Pollgate,
    book: Arc<Book>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    peak: Arc<AtomicU64>,
    health: Arc<AtomicUsize>,
    rss_held_kib: u64,
    chaos_start: u64,
}

impl Run {
    /// Rewrites the running config `s.rewrites` times over the chaos
    /// phase, `s.invalid` of them invalid; yields (valid, invalid) written.
    fn rewrite_config(&self, yaml: &str, s: Sizes) -> tokio::task::JoinHandle<(usize, usize)> {
        tokio::spawn(server::rewrite_config(
            self.pg.config.clone(),
            yaml.to_owned(),
            s.rewrites,
            s.invalid,
            s.chaos / (s.rewrites as u32 + 1),
        ))
    }

    async fn start(yaml: &str, followers_n: usize, channels: usize, rate: u64) -> Result<Run> {
        let pg = Pollgate::start(yaml)?;
        publish_big(pg.webhook).await?;
        let book = Arc::new(Book::default());
        let tasks = followers(&pg, followers_n, channels, &book).await?;
        tokio::spawn(follow::publisher(pg.webhook, channels, rate, book.clone()));
        let peak = Arc::new(AtomicU64::new(0));
        rss_sampler(pg.pid(), peak.clone(), book.clone());
        let health = Arc::new(AtomicUsize::new(0));
        prober(pg.webhook, health.clone(), book.clone());
        // Warm up: every follower has had some messages.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_held_kib = pg.rss_kib();
        Ok(Run {
            pg,
            book,
            tasks,
            peak,
            health,
            rss_held_kib,
            chaos_start: follow::now_us(),
        })
    }

    /// Stops the publisher, lets its last publishes land and the followers
    /// take them (10 s at most), then stops the followers.
    async fn wind_down(&self) {
        self.book.stop_publishing.store(true, Ordering::Relaxed);
        let settled = async {
            while self.book.publishing.load(Ordering::Acquire) > 0 || !self.book.caught_up() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
        self.book.stop.store(true, Ordering::Relaxed);
    }

    async fn finish(
        mut self,
        name: &'static str,
        sizes: (usize, u64),
        after: Duration,
        rewrites: (usize, usize),
    ) -> Figures {
        let chaos_end = follow::now_us();
        // Quiet: publishing goes on, nothing else happens.
        tokio::time::sleep(after).await;
        let rss_final_kib = self.pg.rss_kib();
        let metrics = scrape(self.pg.webhook).await;
        // The last publishes get to their followers, then everything stops.
        self.wind_down().await;
        for t in &self.tasks {
            t.abort();
        }
        let tally = follow::tally(&self.book, (self.chaos_start, chaos_end));
        let alive = self.pg.alive();
        let keep = [
            "pollgate_client_errors_total{kind=\"no_request\"}",
            "pollgate_client_errors_total{kind=\"write_timeout\"}",
            "pollgate_connection_cap_reached_total{listener=\"public\"}",
            "pollgate_memory_trims_total",
            "pollgate_broker_errors_total",
        ];
        Figures {
            name,
            gaps_allowed: usize::from(name == "Redis broker"),
            followers: sizes.0,
            rate: sizes.1,
            tally,
            rss_held_kib: self.rss_held_kib,
            rss_peak_kib: self.peak.load(Ordering::Relaxed),
            rss_final_kib,
            health_failures: self.health.load(Ordering::Relaxed),
            behind: self.book.behind.load(Ordering::Relaxed),
            reloads_ok: metric(&metrics, "pollgate_config_reloads_total{result=\"ok\"}"),
            reloads_failed: metric(&metrics, "pollgate_config_reloads_total{result=\"failed\"}"),
            rewrites,
            metrics: keep
                .iter()
                .map(|k| ((*k).to_owned(), metric(&metrics, k)))
                .collect(),
            alive,
        }
    }
}

async fn memory_phase(s: Sizes) -> Result<Figures> {
    eprintln!(
        "chaos: memory broker, {} followers, {} msg/s",
        s.followers, s.rate
    );
    let yaml = server::config("broker: { kind: memory }", 25);
    let run = Run::start(&yaml, s.followers, s.channels, s.rate).await?;
    let secs = s.chaos.as_secs();
    let public = [run.pg.public];
    let both = [run.pg.public, run.pg.webhook];
    let children = vec![
        attack("slowloris", &public, s.slowloris, secs, 2)?,
        attack("noread", &public, s.noread, secs, 3)?,
        attack("flood", &public, s.flood, secs, 10)?,
        attack("garbage", &both, s.garbage, secs, 4)?,
    ];
    let rewrites = run.rewrite_config(&yaml, s);
    tokio::time::sleep(s.chaos).await;
    for child in children {
        // Each attacker stops by itself after `secs`; one that hangs is
        // killed (on drop) rather than holding the run.
        match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
            Ok(Ok(out)) => eprintln!("chaos: {}", String::from_utf8_lossy(&out.stdout).trim()),
            _ => eprintln!("chaos: an attacker did not finish; killed"),
        }
    }
    let rewrites = rewrites.await.unwrap_or_default();
    Ok(run
        .finish("memory broker", (s.followers, s.rate), s.after, rewrites)
        .await)
}

async fn redis_phase(s: Sizes) -> Result<Figures> {
    eprintln!(
        "chaos: redis broker, {} followers, {} msg/s",
        s.redis_followers, s.redis_rate
    );
    let mut redis = Redis::start()?;
    let yaml = server::config(
        &format!(
            "broker: {{ kind: redis, url: \"{}\", key_prefix: \"chaos:\" }}",
            redis.url()
        ),
        25,
    );
    let run = Run::start(&yaml, s.redis_followers, s.redis_channels, s.redis_rate).await?;
    let rewrites = run.rewrite_config(&yaml, s);
    tokio::time::sleep(s.chaos / 3).await;
    eprintln!("chaos: kill -9 redis");
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart()?;
    eprintln!("chaos: redis restarted (empty)");
    tokio::time::sleep(s.chaos * 2 / 3).await;
    let rewrites = rewrites.await.unwrap_or_default();
    Ok(run
        .finish(
            "Redis broker",
            (s.redis_followers, s.redis_rate),
            s.after,
            rewrites,
        )
        .await)
}

/// RSS before, at and after a peak, for each kind of peak.
struct Peaks {
    rows: Vec<(String, u64, u64, u64)>,
    trims: f64,
}

impl Peaks {
    fn table(&self) -> String {
        let mut out = String::from(
            "\nMemory after a peak (memory broker, `buffer.max_age: 2s`), RSS base / peak / after:\n\n| peak | base | peak | after |\n|---|---|---|---|\n",
        );
        for (what, base, peak, after) in &self.rows {
            let mib = |k: &u64| *k as f64 / 1024.0;
            out.push_str(&format!(
                "| {what} | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
                mib(base),
                mib(peak),
                mib(after)
            ));
        }
        out.push_str(&format!(
            "\n(`pollgate_memory_trims_total` at the end: {})\n",
            self.trims
        ));
        out
    }
}

/// Waits until `series` satisfies `ok` (scraping every 100 ms, 60 s at most).
async fn until_metric(webhook: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> Result<()> {
    let wait = async {
        while !ok(metric(&scrape(webhook).await, series)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| format!("{series} never got there").into())
}

async fn peak_phase(s: Sizes) -> Result<Peaks> {
    eprintln!(
        "chaos: memory after a peak: {} connections, {} channels",
        s.peak_connections, s.peak_channels
    );
    let yaml =
        server::config("broker: { kind: memory }", 25).replace("max_age: 300s", "max_age: 2s");
    let pg = Pollgate::start(&yaml)?;
    let mut rows = Vec::new();
    let trims = "pollgate_memory_trims_total";

    // A flood of connections that then go away.
    let base = pg.rss_kib();
    let peak = Arc::new(AtomicU64::new(0));
    let book = Arc::new(Book::default());
    rss_sampler(pg.pid(), peak.clone(), book.clone());
    let mut flood = attack("flood", &[pg.public], s.peak_connections, 5, 20)?;
    let _ = flood.wait().await;
    until_metric(
        pg.webhook,
        "pollgate_connections{listener=\"public\"}",
        |n| n == 0.0,
    )
    .await?;
    until_metric(pg.webhook, trims, |n| n >= 1.0).await?;
    rows.push((
        format!("{} connections, then closed", s.peak_connections),
        base,
        peak.load(Ordering::Relaxed),
        pg.rss_kib(),
    ));

    // Short-lived channels: one message each, expired after 2 s.
    let base = pg.rss_kib();
    peak.store(0, Ordering::Relaxed);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    for batch in 0..s.peak_channels.div_ceil(1000) {
        let items: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    "{{\"channel\":\"short{}\",\"data\":{{\"n\":{i}}}}}",
                    batch * 1000 + i
                )
            })
            .collect();
        let body = format!("{{\"items\":[{}]}}", items.join(","));
        let req = http::Request::post(format!("http://{}/publish", pg.webhook))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))?;
        client.request(req).await?.into_body().collect().await?;
    }
    peak.fetch_max(pg.rss_kib(), Ordering::Relaxed);
    let before = metric(&scrape(pg.webhook).await, trims);
    until_metric(pg.webhook, "pollgate_channels", |n| n == 0.0).await?;
    until_metric(pg.webhook, trims, |n| n > before).await?;
    rows.push((
        format!("{} channels, then expired", s.peak_channels),
        base,
        peak.load(Ordering::Relaxed),
        pg.rss_kib(),
    ));
    book.stop.store(true, Ordering::Relaxed);
    Ok(Peaks {
        rows,
        trims: metric(&scrape(pg.webhook).await, trims),
    })
}

fn report(phases: &[&Figures], short: bool, took: Duration) -> String {
    let mut out = format!(
        "`cargo bench --bench chaos{}` ({}, {:.0} s):\n\n",
        if short { " -- --short" } else { "" },
        chrono_date(),
        took.as_secs_f64()
    );
    out.push_str("| | ");
    out.push_str(
        &phases
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(phases.len()));
    out.push('\n');
    let row = |label: &str, f: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = phases.iter().map(|p| f(p)).collect();
        format!("| {label} | {} |\n", cells.join(" | "))
    };
    out.push_str(&row("followers, publish rate", &|f| {
        format!("{} held, {} msg/s", f.followers, f.rate)
    }));
    out.push_str(&row(
        "publishes acknowledged / refused / skipped (publisher behind)",
        &|f| format!("{} / {} / {}", f.tally.acked, f.tally.refused, f.behind),
    ));
    out.push_str(&row("messages delivered", &|f| {
        f.tally.delivered.to_string()
    }));
    out.push_str(&row("**acknowledged messages lost**", &|f| {
        format!("**{}**", f.tally.lost)
    }));
    out.push_str(&row("duplicates", &|f| f.tally.duplicates.to_string()));
    out.push_str(&row("gaps reported (`\"gap\": true`)", &|f| {
        f.tally.gaps.to_string()
    }));
    out.push_str(&row(
        "most gaps one follower got; followers that got nothing",
        &|f| format!("{}; {}", f.tally.max_gaps, f.tally.silent),
    ));
    out.push_str(&row("held polls dropped", &|f| f.tally.dropped.to_string()));
    out.push_str(&row("webhook `/healthz` failures (every 250 ms)", &|f| {
        f.health_failures.to_string()
    }));
    out.push_str(&row(
        "config rewrites (valid / invalid) → reloads ok / failed",
        &|f| {
            format!(
                "{} / {} → {} / {}",
                f.rewrites.0, f.rewrites.1, f.reloads_ok, f.reloads_failed
            )
        },
    ));
    out.push_str(&row("RSS with followers held / peak / at the end", &|f| {
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            f.rss_held_kib as f64 / 1024.0,
            f.rss_peak_kib as f64 / 1024.0,
            f.rss_final_kib as f64 / 1024.0
        )
    }));
    out.push_str(&row("p99 delivery latency during / after", &|f| {
        format!(
            "{:.1} / {:.1} ms",
            f.tally.p99_during_ms, f.tally.p99_after_ms
        )
    }));
    for (i, key) in [
        "client_errors{no_request}",
        "client_errors{write_timeout}",
        "connection_cap_reached",
        "memory_trims",
        "broker_errors",
    ]
    .iter()
    .enumerate()
    {
        out.push_str(&row(key, &|f| {
            f.metrics.get(i).map_or(0.0, |m| m.1).to_string()
        }));
    }
    out.push_str(&row("pollgate alive at the end", &|f| {
        if f.alive {
            "yes".into()
        } else {
            "**no**".into()
        }
    }));
    out
}

/// Today's date (UTC), from the system clock.
fn chrono_date() -> String {
    let days = follow::now_us() / 86_400_000_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn write_readme(path: &PathBuf, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (begin, end) = ("<!-- chaos:begin -->", "<!-- chaos:end -->");
    let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
        return Err(format!("{} has no {begin} … {end} section", path.display()).into());
    };
    let updated = format!("{}{begin}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(path, updated)?;
    Ok(())
}
