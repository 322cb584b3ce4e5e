//! (e) Scale-out: one channel's waiters spread over several instances of a
//! server (pollgate on one Redis, or Nchan with its Redis store), one
//! publish to all of them. A process can hold ~19,900 sockets here, so the
//! waiters of each instance are held by a child process of this tool (the
//! `hold` subcommand), on source addresses of its own; the parent publishes
//! and gathers every child's latencies.
//!
//! The child speaks lines. It prints `held HELD CPU ERRORS` once all its
//! waiters are held again, or after 30 s (120 s for the first connects):
//! how many are, its own CPU seconds and its waiters' errors since it
//! started. Then it reads a line from stdin: `go SEQ` (message SEQ went
//! out: once each waiter got it, or after 30 s, it prints `receipts
//! DUPLICATES LATE L1 L2 ...`, the extra copies of SEQ, the answers to an
//! earlier publish that came meanwhile, and one latency in µs per waiter
//! that got SEQ; then it goes back to holding) or end of input (it exits).

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::client::{self, Publisher, Shared};
use crate::scenarios::{mean, percentile, Sizes, SETTLE};
use crate::target::{own_cpu_seconds, Cpu, CursorKind, Target};
use crate::Result;

/// What a child needs: its waiters' URL (channel filled in), how many,
/// and the second octet of its source addresses (127.N.0.1 to 127.N.0.4).
#[derive(clap::Args, Debug, Clone)]
pub struct HoldArgs {
    #[arg(long)]
    poll_url: String,
    #[arg(long)]
    waiters: usize,
    #[arg(long, value_enum)]
    cursor: CursorKind,
    #[arg(long)]
    net: u8,
    #[arg(long, default_value_t = 5_000)]
    connect_rate: u64,
}

/// The child: holds the waiters and reports as described above.
pub async fn hold(args: HoldArgs) -> Result<()> {
    let shared = Arc::new(Shared::default());
    let mut tick =
        tokio::time::interval(Duration::from_micros(1_000_000 / args.connect_rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..args.waiters {
        tick.tick().await;
        let src = Ipv4Addr::new(127, args.net, 0, 1 + (i % 4) as u8);
        let url = args.poll_url.clone();
        tokio::spawn(client::waiter(i, src, url, args.cursor, shared.clone()));
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut within = Duration::from_secs(120); // the first connects
    loop {
        shared.until_pending(args.waiters, within).await;
        within = Duration::from_secs(30);
        let line = format!(
            "held {} {} {}\n",
            shared.pending.load(Ordering::Relaxed).min(args.waiters),
            own_cpu_seconds(),
            shared.errors.load(Ordering::Relaxed)
        );
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
        let Some(seq) = stdin
            .next_line()
            .await?
            .and_then(|l| l.strip_prefix("go ")?.parse::<u64>().ok())
        else {
            break;
        };
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        // Only this publish's receipts, one per waiter: a late answer to an
        // earlier one is not this one's latency, and a copy is not a delivery.
        let mut first = vec![None; args.waiters];
        let (mut got, mut duplicates, mut late) = (0, 0, 0);
        while got < args.waiters && tokio::time::Instant::now() < end {
            for r in std::mem::take(&mut *shared.receipts.lock()) {
                if r.seq != seq {
                    late += 1;
                    continue;
                }
                match first.get_mut(r.waiter) {
                    Some(slot @ None) => {
                        *slot = Some(r.latency_us);
                        got += 1;
                    }
                    _ => duplicates += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut line = format!("receipts {duplicates} {late}");
        for latency in first.iter().flatten() {
            line.push(' ');
            line.push_str(&latency.to_string());
        }
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
    }
    shared.stop.store(true, Ordering::Relaxed);
    Ok(())
}

/// What a child said in a `held` line.
#[derive(Clone, Copy, Default)]
struct Held {
    waiters: usize,
    cpu: f64,
    errors: u64,
}

/// One child process and its two pipes.
struct Holder {
    waiters: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    fn spawn(
        poll_url: &str,
        waiters: usize,
        cursor: CursorKind,
        net: u8,
        rate: u64,
    ) -> Result<Holder> {
        let cursor = match cursor {
            CursorKind::Pollgate => "pollgate",
            CursorKind::Nchan => "nchan",
            CursorKind::Grip => "grip",
            CursorKind::None => "none",
        };
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["hold", "--poll-url", poll_url, "--cursor", cursor])
            .args(["--waiters", &waiters.to_string(), "--net", &net.to_string()])
            .args(["--connect-rate", &rate.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        Ok(Holder {
            waiters,
            child,
            stdin,
            stdout,
        })
    }

    async fn expect(&mut self, word: &str) -> Result<String> {
        match self.stdout.next_line().await? {
            Some(line) if line.starts_with(word) => Ok(line[word.len()..].to_owned()),
            Some(line) => Err(format!("a holder said {line:?}, not {word}").into()),
            None => Err(format!(
                "a holder exited before {word}: {:?}",
                self.child.wait().await?
            )
            .into()),
        }
    }

    /// Waits for `held`, and keeps what it says.
    async fn held(&mut self) -> Result<Held> {
        let line = self.expect("held").await?;
        let mut f = line.split_whitespace();
        let mut next = || f.next().ok_or("a short held line");
        let held = Held {
            waiters: next()?.parse()?,
            cpu: next()?.parse()?,
            errors: next()?.parse()?,
        };
        if held.waiters < self.waiters {
            eprintln!(
                "scale-out: only {} of {} waiters held on one instance",
                held.waiters, self.waiters
            );
        }
        Ok(held)
    }

    async fn say(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("holder's stdin is closed")?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }
}

/// (e) `n` waiters on each of `poll_urls` (one instance each), all on one
/// channel; `reps` publishes to the target's publish URL.
pub async fn scale_out(target: &Target, sizes: &Sizes, tag: &str) -> Result<serde_json::Value> {
    let urls = if sizes.e_poll_urls.is_empty() {
        vec![target.poll_url.clone()]
    } else {
        sizes.e_poll_urls.clone()
    };
    let (n, reps) = (sizes.e_waiters, sizes.e_reps);
    let channel = format!("{tag}e{n}");
    let mut holders = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let url = url.replace("{channel}", &channel);
        // 127.1.x.x, 127.2.x.x...: apart from the other scenarios' 127.0.0.x.
        let net = u8::try_from(i + 1).map_err(|_| "at most 255 instances")?;
        holders.push(Holder::spawn(
            &url,
            n,
            target.cursor,
            net,
            sizes.connect_rate,
        )?);
    }
    let mut start = Vec::new();
    for h in &mut holders {
        start.push(h.held().await?);
    }
    let mut now = start.clone();
    let publisher = Publisher::new(target);
    let (mut latencies, mut completions, mut cpu) = (Vec::new(), Vec::new(), Vec::<Cpu>::new());
    let (mut tool_cpu, mut duplicates, mut late, mut not_back) = (Vec::new(), 0u64, 0u64, 0);
    for rep in 0..reps {
        tokio::time::sleep(SETTLE).await;
        let cpu0 = target.cpu();
        let seq = rep as u64 + 1;
        publisher.publish(&channel, seq).await?;
        for h in &mut holders {
            h.say(&format!("go {seq}\n")).await?;
        }
        let mut last = 0;
        for h in &mut holders {
            let line = h.expect("receipts").await?;
            let mut fields = line.split_whitespace();
            let mut next = || fields.next().ok_or("a short receipts line");
            duplicates += next()?.parse::<u64>()?;
            late += next()?.parse::<u64>()?;
            let got: Vec<u64> = fields.filter_map(|t| t.parse().ok()).collect();
            if got.len() < n {
                eprintln!(
                    "scale-out rep {rep}: {} of {n} waiters answered on one instance",
                    got.len()
                );
            }
            last = last.max(got.iter().copied().max().unwrap_or(0));
            latencies.extend(got);
        }
        // The re-polls are part of a rep's cost: wait for them too. The
        // holders' CPU is taken over the same span, held to held.
        let mut tool = 0.0;
        for (h, before) in holders.iter_mut().zip(now.iter_mut()) {
            let after = h.held().await?;
            tool += after.cpu - before.cpu;
            not_back += n.saturating_sub(after.waiters);
            *before = after;
        }
        cpu.push(target.cpu() - cpu0);
        tool_cpu.push(tool);
        completions.push(last as f64 / 1e3);
    }
    let errors: u64 = now
        .iter()
        .zip(&start)
        .map(|(a, b)| a.errors - b.errors)
        .sum();
    let errors_connecting: u64 = start.iter().map(|h| h.errors).sum();
    let not_held_at_start: usize = start.iter().map(|h| n.saturating_sub(h.waiters)).sum();
    for mut h in holders {
        drop(h.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), h.child.wait()).await;
    }
    latencies.sort_unstable();
    let total = n * urls.len();
    let totals: Vec<f64> = cpu.iter().map(|c| c.total()).collect();
    let users: Vec<f64> = cpu.iter().map(|c| c.user).collect();
    Ok(json!({
        "instances": urls.len(),
        "waiters_per_instance": n,
        "waiters": total,
        "reps": reps,
        "received": latencies.len(),
        "expected": total * reps,
        "lost": (total * reps).saturating_sub(latencies.len()),
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": percentile(&latencies, 1.0),
        "completion_ms_mean": mean(&completions),
        "cpu_ms_per_rep": mean(&totals) * 1e3,
        "cpu_us_per_delivery": mean(&totals) * 1e6 / total.max(1) as f64,
        "user_cpu_us_per_delivery": mean(&users) * 1e6 / total.max(1) as f64,
        // The holders' CPU, summed over the child processes: on a shared box
        // it is CPU the servers did not get.
        "load_tool_cpu_ms_per_rep": mean(&tool_cpu) * 1e3,
        "duplicates": duplicates,
        "late_answers": late,
        "errors": errors,
        "errors_connecting": errors_connecting,
        "waiters_not_held_at_start": not_held_at_start,
        // Summed over reps: waiters that had not polled again 30 s after one.
        "waiters_not_back_after_a_rep": not_back,
    }))
}
