//! The scenarios. Each one gets a freshly started target (so memory
//! baselines are clean), prints its figures, and appends them as one JSON
//! line when `--json` is given.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::client::{self, Publisher, Shared};
use crate::target::{own_cpu_seconds, Cpu, Target};
use crate::{Result, RunArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct Sizes {
    /// (a) waiters held, and the channels they spread over.
    #[arg(long, default_value_t = 10_000)]
    pub a_waiters: usize,
    #[arg(long, default_value_t = 1_000)]
    pub a_channels: usize,
    /// (b) waiters on the one channel, and how many publishes.
    #[arg(long, default_value_t = 10_000)]
    pub b_waiters: usize,
    #[arg(long, default_value_t = 5)]
    pub b_reps: usize,
    /// (c) waiters, channels, messages per second, seconds.
    #[arg(long, default_value_t = 1_000)]
    pub c_waiters: usize,
    #[arg(long, default_value_t = 100)]
    pub c_channels: usize,
    #[arg(long, default_value_t = 2_000)]
    pub c_rate: u64,
    #[arg(long, default_value_t = 20)]
    pub c_duration: u64,
    /// (d) seconds of wrk per URL.
    #[arg(long, default_value_t = 10)]
    pub d_duration: u64,
    /// Waiter counts of the scaling table (19k is the per-process file limit here).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,19000")]
    pub scale: Vec<usize>,
    /// (e) Poll URLs of the instances the waiters spread over, one child
    /// process each (default: the target's poll URL alone); waiters per
    /// instance; publishes.
    #[arg(long, value_delimiter = ',')]
    pub e_poll_urls: Vec<String>,
    #[arg(long, default_value_t = 16_000)]
    pub e_waiters: usize,
    #[arg(long, default_value_t = 3)]
    pub e_reps: usize,
    /// New connections per second while the waiters connect.
    #[arg(long, default_value_t = 5_000)]
    pub connect_rate: u64,
}

/// Source addresses the waiters' connections are spread over, so that no
/// one address runs out of ephemeral ports.
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// Time for the last polls to reach the server and be held after the load
/// tool has sent them (it cannot see the server's side).
pub(crate) const SETTLE: Duration = Duration::from_millis(1500);

pub async fn run_all(args: RunArgs) -> Result<()> {
    let tag = format!("r{}x{}", std::process::id(), client::now_us() % 1_000_000);
    let mut report = Report::new(args.json.clone());
    for scenario in &args.scenarios {
        let target = Target::start(&args.target).await?;
        let name = target.name.clone();
        match scenario.as_str() {
            "a" => {
                let (w, c) = (args.sizes.a_waiters, args.sizes.a_channels);
                let fig = hold(&target, w, c, &args.sizes, &tag).await?;
                report.line(&name, "a", &fig);
            }
            "b" => {
                let fig = fan_out(
                    &target,
                    args.sizes.b_waiters,
                    args.sizes.b_reps,
                    &args.sizes,
                    &tag,
                )
                .await?;
                report.line(&name, "b", &fig);
            }
            "c" => {
                let fig = sustained(&target, &args.sizes, &tag).await?;
                report.line(&name, "c", &fig);
            }
            "d" => {
                let fig = proxied(&target, args.sizes.d_duration).await?;
                report.line(&name, "d", &fig);
            }
            "e" => {
                let fig = crate::spread::scale_out(&target, &args.sizes, &tag).await?;
                report.line(&name, "e", &fig);
            }
            "scale" => {
                drop(target);
                for &n in &args.sizes.scale {
                    let target = Target::start(&args.target).await?;
                    let mem = hold(&target, n, (n / 10).max(1), &args.sizes, &tag).await?;
                    drop(target);
                    let target = Target::start(&args.target).await?;
                    let fan = fan_out(&target, n, 3, &args.sizes, &tag).await?;
                    let mut fig = mem;
                    if let (Some(f), Some(m)) = (fan.as_object(), fig.as_object_mut()) {
                        m.extend(f.clone());
                    }
                    fig["waiters"] = json!(n);
                    report.line(&name, "scale", &fig);
                }
            }
            other => {
                return Err(format!("unknown scenario {other:?} (a, b, c, d, e, scale)").into())
            }
        }
    }
    Ok(())
}

/// Connects `n` waiters, waiter i on channel i % channels, at the connect rate.
async fn connect_waiters(
    target: &Target,
    n: usize,
    channels: usize,
    sizes: &Sizes,
    tag: &str,
) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let mut tick =
        tokio::time::interval(Duration::from_micros(1_000_000 / sizes.connect_rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        let url = target
            .poll_url
            .replace("{channel}", &format!("{tag}x{}", i % channels));
        let src = SOURCES[i % SOURCES.len()];
        if target.sse {
            tokio::spawn(client::streamer(i, src, url, shared.clone()));
        } else {
            tokio::spawn(client::waiter(i, src, url, target.cursor, shared.clone()));
        }
    }
    shared
}

/// (a) Memory per held poll.
async fn hold(
    target: &Target,
    n: usize,
    channels: usize,
    sizes: &Sizes,
    tag: &str,
) -> Result<serde_json::Value> {
    let before = target.rss_kib();
    let shared = connect_waiters(target, n, channels, sizes, &format!("{tag}a")).await;
    let held = shared.until_pending(n, Duration::from_secs(60)).await;
    tokio::time::sleep(SETTLE).await;
    let during = target.rss_kib();
    let errors = shared.errors.load(Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    Ok(json!({
        "waiters": n,
        "channels": channels,
        "all_held": held,
        "rss_before_kib": before,
        "rss_held_kib": during,
        "kib_per_poll": during.saturating_sub(before) as f64 / n.max(1) as f64,
        "errors": errors,
    }))
}

/// (b) One publish to `n` waiters on one channel, `reps` times.
async fn fan_out(
    target: &Target,
    n: usize,
    reps: usize,
    sizes: &Sizes,
    tag: &str,
) -> Result<serde_json::Value> {
    // One channel: connect_waiters names it "{tag}b{n}x0".
    let shared = connect_waiters(target, n, 1, sizes, &format!("{tag}b{n}")).await;
    let channel = format!("{tag}b{n}x0");
    let publisher = Publisher::new(target);
    let (mut latencies, mut completions, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut tool_cpu = Vec::new();
    for rep in 0..reps {
        if !shared.until_pending(n, Duration::from_secs(60)).await {
            return Err(format!(
                "fan-out: only {} of {n} waiters held",
                shared.pending.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(SETTLE).await;
        shared.receipts.lock().clear();
        let cpu0 = target.cpu();
        let tool0 = own_cpu_seconds();
        publisher.publish(&channel, rep as u64 + 1).await?;
        let complete = shared.until_receipts(n, Duration::from_secs(30)).await;
        let receipts = std::mem::take(&mut *shared.receipts.lock());
        // The re-polls are part of a rep's cost: wait for them too.
        shared.until_pending(n, Duration::from_secs(30)).await;
        cpu.push(target.cpu() - cpu0);
        tool_cpu.push(own_cpu_seconds() - tool0);
        let last = receipts.iter().map(|r| r.latency_us).max().unwrap_or(0);
        completions.push(last as f64 / 1e3);
        latencies.extend(receipts.iter().map(|r| r.latency_us));
        if !complete {
            eprintln!(
                "fan-out rep {rep}: {} of {n} waiters answered",
                receipts.len()
            );
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    latencies.sort_unstable();
    let totals: Vec<f64> = cpu.iter().map(|c: &Cpu| c.total()).collect();
    let users: Vec<f64> = cpu.iter().map(|c| c.user).collect();
    let kernels: Vec<f64> = cpu.iter().map(|c| c.kernel).collect();
    Ok(json!({
        "waiters": n,
        "reps": reps,
        "received": latencies.len(),
        "expected": n * reps,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": percentile(&latencies, 1.0),
        "completion_ms_mean": mean(&completions),
        "cpu_ms_per_rep": mean(&totals) * 1e3,
        "user_cpu_ms_per_rep": mean(&users) * 1e3,
        "cpu_us_per_delivery": mean(&totals) * 1e6 / n.max(1) as f64,
        "user_cpu_us_per_delivery": mean(&users) * 1e6 / n.max(1) as f64,
        "kernel_cpu_us_per_delivery": mean(&kernels) * 1e6 / n.max(1) as f64,
        "load_tool_cpu_ms_per_rep": mean(&tool_cpu) * 1e3,
        "errors": shared.errors.load(Ordering::Relaxed),
    }))
}

/// (c) Sustained publishing to many channels.
async fn sustained(target: &Target, sizes: &Sizes, tag: &str) -> Result<serde_json::Value> {
    let (n, channels) = (sizes.c_waiters, sizes.c_channels.max(1));
    let shared = connect_waiters(target, n, channels, sizes, &format!("{tag}c")).await;
    if !shared.until_pending(n, Duration::from_secs(60)).await {
        return Err("sustained: not every waiter is held".into());
    }
    tokio::time::sleep(SETTLE).await;
    let publisher = Arc::new(Publisher::new(target));
    let total = sizes.c_rate * sizes.c_duration;
    let cpu0 = target.cpu();
    let started = tokio::time::Instant::now();
    // Open loop: each publish is its own task on the schedule, so a slow
    // answer does not hold back the next; at most 256 in flight (past that
    // the schedule slips, and the achieved rate shows it).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / sizes.c_rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (publisher, failed) = (publisher.clone(), failed.clone());
        let channel = format!("{tag}cx{}", seq % channels as u64);
        tokio::spawn(async move {
            if publisher.publish(&channel, seq + 1).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    // All answered: every permit is back.
    let _ = in_flight.acquire_many(256).await;
    let publish_failed = failed.load(Ordering::Relaxed);
    let publish_secs = started.elapsed().as_secs_f64();
    // Every waiter of a channel should get each of its messages.
    let mut per_channel = vec![0usize; channels];
    for i in 0..n {
        per_channel[i % channels] += 1;
    }
    let expected: usize = (0..total).map(|s| per_channel[s as usize % channels]).sum();
    shared
        .until_receipts(expected, Duration::from_secs(5))
        .await;
    let cpu = target.cpu() - cpu0;
    shared.stop.store(true, Ordering::Relaxed);
    let receipts = std::mem::take(&mut *shared.receipts.lock());
    let mut unique: Vec<(usize, u64)> = receipts.iter().map(|r| (r.waiter, r.seq)).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut latencies: Vec<u64> = receipts.iter().map(|r| r.latency_us).collect();
    latencies.sort_unstable();
    Ok(json!({
        "waiters": n,
        "channels": channels,
        "rate": sizes.c_rate,
        "achieved_rate": total as f64 / publish_secs,
        "published": total - publish_failed,
        "publish_failed": publish_failed,
        "expected": expected,
        "delivered": unique.len(),
        "lost": expected.saturating_sub(unique.len()),
        "duplicates": receipts.len() - unique.len(),
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": percentile(&latencies, 1.0),
        "server_cpu_s": cpu.total(),
        "server_user_cpu_s": cpu.user,
        "server_kernel_cpu_s": cpu.kernel,
        "cpu_us_per_delivery": cpu.total() * 1e6 / unique.len().max(1) as f64,
        "user_cpu_us_per_delivery": cpu.user * 1e6 / unique.len().max(1) as f64,
        "kernel_cpu_us_per_delivery": cpu.kernel * 1e6 / unique.len().max(1) as f64,
        "errors": shared.errors.load(Ordering::Relaxed),
    }))
}

/// (d) Plain GETs through the proxy, and to the backend directly, with wrk:
/// at 64 and 512 connections, with the backend's 3-byte answer and with 10 KB
/// and 100 KB bodies. The server's CPU is read around each run through it.
/// The 64-connection empty run keeps the plain keys (`rps`, `p99_ms`,
/// `direct_rps`); every run is also `rps_c{conns}_b{bytes}` and so on.
async fn proxied(target: &Target, secs: u64) -> Result<serde_json::Value> {
    let (Some(proxy), Some(backend)) = (&target.proxy_url, &target.backend_url) else {
        return Err("scenario d needs --proxy-url and --backend-url".into());
    };
    let mut out = serde_json::Map::new();
    for conns in [64, 512] {
        for bytes in [0usize, 10_240, 102_400] {
            let path = if bytes == 0 {
                String::new()
            } else {
                format!("bytes/{bytes}")
            };
            let direct = wrk(&format!("{backend}{path}"), conns, secs).await?;
            let cpu0 = target.cpu();
            let through = wrk(&format!("{proxy}{path}"), conns, secs).await?;
            let cpu = target.cpu() - cpu0;
            let requests = (through.0 * secs as f64).max(1.0);
            let key = format!("c{conns}_b{bytes}");
            for (name, value) in [
                ("rps", through.0),
                ("p99_ms", through.1),
                // wrk counts failed answers in its rate: a proxy that fails
                // fast must not read as a fast proxy.
                ("errors", through.2),
                ("direct_rps", direct.0),
                ("direct_p99_ms", direct.1),
                ("cpu_us_per_request", cpu.total() * 1e6 / requests),
                ("user_cpu_us_per_request", cpu.user * 1e6 / requests),
            ] {
                out.insert(format!("{name}_{key}"), json!(value));
                if conns == 64 && bytes == 0 {
                    out.insert(name.to_owned(), json!(value));
                }
            }
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Requests/s, p99 (ms) and failures (non-2xx/3xx answers and socket
/// errors) of `wrk -t2 -c{conns} --latency`.
async fn wrk(url: &str, conns: usize, secs: u64) -> Result<(f64, f64, f64)> {
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .await
        .map_err(|e| format!("wrk: {e} (install it: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let rps: f64 = field("Requests/sec:")
        .ok_or("wrk printed no Requests/sec")?
        .parse()?;
    let p99 = field("99%").ok_or("wrk printed no 99% latency")?;
    let non_2xx: f64 = field("Non-2xx or 3xx responses:").map_or(Ok(0.0), |n| n.parse())?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket: f64 = field("Socket errors:").map_or(0.0, |t| {
        t.split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    });
    Ok((
        rps,
        wrk_ms(&p99).ok_or("cannot read wrk's latency")?,
        non_2xx + socket,
    ))
}

/// "7.62ms" / "812.00us" / "1.02s" -> milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

pub(crate) fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1e3
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Prints each figure and appends it to the JSON lines file.
struct Report {
    json: Option<std::path::PathBuf>,
}

impl Report {
    fn new(json: Option<std::path::PathBuf>) -> Report {
        Report { json }
    }

    fn line(&mut self, target: &str, scenario: &str, fig: &serde_json::Value) {
        println!("{target} {scenario}: {fig}");
        if let Some(path) = &self.json {
            let mut line = json!({ "target": target, "scenario": scenario });
            if let (Some(l), Some(f)) = (line.as_object_mut(), fig.as_object()) {
                l.extend(f.clone());
            }
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
}
