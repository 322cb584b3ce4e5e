//! Followers and the publisher, and the accounting that says whether any
//! acknowledged message was lost.
//!
//! A follower holds one keep-alive connection and polls one channel in
//! batch form (`max=100`), from `since=0` (everything the channel holds:
//! followers start before the publisher) and then with the `since` cursor
//! of its last answer, recording every message's sequence number and every
//! `"gap": true`. The publisher numbers each channel's messages 1, 2, 3…
//! and records which publishes were acknowledged (a 200) and when. At the
//! end, a message is *lost* for a follower when it was acknowledged, was
//! never received, and no gap excuses it: a gap excuses only what lies
//! between the messages around it and was acknowledged before the gap was
//! reported. (Owing every message from the first is what makes this exact:
//! counting from a follower's first message instead would blame pollgate
//! for a message whose publish overtook an earlier one's before the
//! follower's first poll arrived.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What a follower saw, in order.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    Message {
        seq: u64,
        latency_us: u64,
        at_us: u64,
    },
    Gap {
        at_us: u64,
    },
}

/// What one follower saw, readable while it runs.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// Everything the followers and the publisher share.
#[derive(Default)]
pub struct Book {
    /// Per follower: its channel and what it saw (shared, so a follower
    /// stopped in the middle of a held poll has recorded all it got).
    pub followers: Mutex<Vec<(usize, Log)>>,
    /// Per channel: the sequence numbers acknowledged, and when.
    pub acked: Mutex<HashMap<usize, BTreeMap<u64, u64>>>,
    pub refused: AtomicUsize,
    /// Beats the publisher skipped because `PUBLISHES_IN_FLIGHT` were out.
    pub behind: AtomicUsize,
    /// Polls that ended in anything but an answer (a reset, a 5xx).
    pub dropped: AtomicUsize,
    /// Polls outstanding now.
    pub pending: AtomicUsize,
    /// The publisher stops starting publishes.
    pub stop_publishing: AtomicBool,
    /// Publishes started and not yet answered.
    pub publishing: AtomicUsize,
    pub stop: AtomicBool,
}

impl Book {
    /// Whether every follower has what was acknowledged on its channel.
    pub fn caught_up(&self) -> bool {
        let acked = self.acked.lock();
        self.followers.lock().iter().all(|(channel, seen)| {
            let want = acked
                .get(channel)
                .and_then(|a| a.keys().next_back().copied());
            let got = seen.lock().iter().rev().find_map(|s| match s {
                Seen::Message { seq, .. } => Some(*seq),
                Seen::Gap { .. } => None,
            });
            want.is_none_or(|w| got.is_some_and(|g| g >= w))
        })
    }
}

/// Follows `channel` from source address `src` until `book.stop`.
pub async fn follower(channel: usize, src: Ipv4Addr, addr: SocketAddr, book: Arc<Book>) {
    // From the channel's oldest message: every acknowledged one is owed.
    let mut since = String::from("0");
    let seen: Log = Arc::default();
    book.followers.lock().push((channel, seen.clone()));
    'connect: while !book.stop.load(Ordering::Relaxed) {
        let Ok(mut sender) = connect(src, addr).await else {
            book.dropped.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !book.stop.load(Ordering::Relaxed) {
            if sender.ready().await.is_err() {
                continue 'connect;
            }
            let target = format!("/api/poll/c{channel}?timeout=20&max=100&since={since}");
            let req = Request::get(target)
                .header("host", "chaos")
                .body(Empty::new())
                .unwrap_or_default();
            book.pending.fetch_add(1, Ordering::AcqRel);
            let answer = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body()
                        .collect()
                        .await
                        .map(|b| (status, b.to_bytes()))
                }
                Err(e) => Err(e),
            };
            book.pending.fetch_sub(1, Ordering::AcqRel);
            let arrived = now_us();
            match answer {
                Ok((status, body)) if status.is_success() => {
                    read_answer(&body, arrived, &mut seen.lock(), &mut since);
                }
                _ if book.stop.load(Ordering::Relaxed) => break 'connect,
                _ => {
                    book.dropped.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
            }
        }
    }
}

/// Records one answer's messages and gap, and moves the cursor.
fn read_answer(body: &Bytes, arrived: u64, seen: &mut Vec<Seen>, since: &mut String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if v["gap"] == true {
        seen.push(Seen::Gap { at_us: arrived });
    }
    if let Some(messages) = v["messages"].as_array() {
        for m in messages {
            if let (Some(seq), Some(ts)) = (m["seq"].as_u64(), m["ts"].as_u64()) {
                seen.push(Seen::Message {
                    seq,
                    latency_us: arrived.saturating_sub(ts),
                    at_us: arrived,
                });
            }
        }
    }
    // The top-level timestamp is the last in the body; kept as text, exact.
    let text = String::from_utf8_lossy(body);
    if let Some(at) = text.rfind("\"timestamp\":") {
        let rest = &text[at + 12..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if len > 0 {
            *since = rest[..len].to_owned();
        }
    }
}

async fn connect(
    src: Ipv4Addr,
    addr: SocketAddr,
) -> crate::Result<http1::SendRequest<Empty<Bytes>>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr)).await??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Publishes in flight at once: an app publishes from a bounded pool, and
/// a publisher that fell behind skips a beat rather than bursting.
const PUBLISHES_IN_FLIGHT: usize = 64;

/// Publishes `rate` messages a second round-robin over `channels` until
/// `book.stop`, each numbered per channel and stamped with the time.
pub async fn publisher(webhook: SocketAddr, channels: usize, rate: u64, book: Arc<Book>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let next: Arc<Vec<AtomicU64>> = Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(PUBLISHES_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0usize;
    while !book.stop_publishing.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            book.behind.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let channel = n % channels;
        n += 1;
        let seq = next[channel].fetch_add(1, Ordering::Relaxed) + 1;
        let (client, book) = (client.clone(), book.clone());
        book.publishing.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let _permit = permit;
            let body = format!("{{\"seq\":{seq},\"ts\":{}}}", now_us());
            let req = Request::post(format!("http://{webhook}/publish/c{channel}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default();
            let ok = match client.request(req).await {
                Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                let at = now_us();
                book.acked
                    .lock()
                    .entry(channel)
                    .or_default()
                    .insert(seq, at);
            } else {
                book.refused.fetch_add(1, Ordering::Relaxed);
            }
            book.publishing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The run's verdict on delivery.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub acked: usize,
    pub refused: usize,
    pub delivered: usize,
    pub lost: usize,
    /// The first losses, each with what its follower saw around it.
    pub lost_detail: Vec<String>,
    pub duplicates: usize,
    pub gaps: usize,
    /// The most gaps one follower was told of.
    pub max_gaps: usize,
    /// Followers that received nothing at all.
    pub silent: usize,
    pub dropped: usize,
    /// p99 delivery latency (ms) of messages that arrived in each window.
    pub p99_during_ms: f64,
    pub p99_after_ms: f64,
}

/// Counts what every follower missed. `during` is the chaos window (µs
/// since the epoch); receipts after it are "after".
pub fn tally(book: &Book, during: (u64, u64)) -> Tally {
    let acked = book.acked.lock();
    let followers = book.followers.lock();
    let mut t = Tally {
        acked: acked.values().map(BTreeMap::len).sum(),
        refused: book.refused.load(Ordering::Relaxed),
        dropped: book.dropped.load(Ordering::Relaxed),
        ..Tally::default()
    };
    let (mut during_ms, mut after_ms) = (Vec::new(), Vec::new());
    for (channel, seen) in followers.iter() {
        let seen = seen.lock();
        let mut got = BTreeSet::new();
        // Each gap covers what lies between the messages around it, and was
        // acknowledged before the gap was reported: (after, before, at).
        let mut covered: Vec<(u64, u64, u64)> = Vec::new();
        let mut last = 0u64;
        let mut open_gap: Option<u64> = None;
        let mut gaps = 0;
        for s in seen.iter() {
            match *s {
                Seen::Gap { at_us } => {
                    gaps += 1;
                    open_gap = Some(open_gap.map_or(at_us, |at| at.max(at_us)));
                }
                Seen::Message {
                    seq,
                    latency_us,
                    at_us,
                } => {
                    if let Some(at) = open_gap.take() {
                        covered.push((last, seq, at));
                    }
                    if !got.insert(seq) {
                        t.duplicates += 1;
                    }
                    t.delivered += 1;
                    last = last.max(seq);
                    let ms = latency_us as f64 / 1000.0;
                    if at_us <= during.1 {
                        if at_us >= during.0 {
                            during_ms.push(ms);
                        }
                    } else {
                        after_ms.push(ms);
                    }
                }
            }
        }
        if let Some(at) = open_gap {
            covered.push((last, u64::MAX, at));
        }
        t.gaps += gaps;
        t.max_gaps = t.max_gaps.max(gaps);
        if got.is_empty() {
            t.silent += 1;
            continue;
        }
        for (&seq, &acked_at) in acked.get(channel).into_iter().flatten() {
            let missed = !got.contains(&seq);
            let excused = covered
                .iter()
                .any(|&(after, before, gap_at)| after < seq && seq < before && acked_at < gap_at);
            if missed && !excused {
                t.lost += 1;
                if t.lost_detail.len() < LOST_DETAILS {
                    let acks = acked.get(channel).into_iter().flatten();
                    t.lost_detail
                        .push(describe_loss(*channel, seq, acked_at, &seen, acks));
                }
            }
        }
    }
    t.p99_during_ms = p99(&mut during_ms);
    t.p99_after_ms = p99(&mut after_ms);
    t
}

/// Losses described in full when a run fails.
const LOST_DETAILS: usize = 10;

/// One loss and what its follower saw around it, times in ms relative to
/// the loss's acknowledgement.
fn describe_loss<'a>(
    channel: usize,
    seq: u64,
    acked_at: u64,
    seen: &[Seen],
    acks: impl Iterator<Item = (&'a u64, &'a u64)>,
) -> String {
    let rel = |at: u64| (at as i64 - acked_at as i64) as f64 / 1000.0;
    let around: Vec<String> = seen
        .iter()
        .filter_map(|s| match *s {
            Seen::Message { seq: q, at_us, .. } if q + 3 >= seq && q <= seq + 3 => {
                Some(format!("#{q}@{:+.1}ms", rel(at_us)))
            }
            Seen::Gap { at_us } if rel(at_us).abs() < 5000.0 => {
                Some(format!("gap@{:+.1}ms", rel(at_us)))
            }
            _ => None,
        })
        .collect();
    let first = seen.iter().find_map(|s| match *s {
        Seen::Message { seq, at_us, .. } => Some(format!("#{seq}@{:+.1}ms", rel(at_us))),
        Seen::Gap { .. } => None,
    });
    let acks: Vec<String> = acks
        .filter(|(&q, _)| q + 3 >= seq && q <= seq + 3)
        .map(|(q, &at)| format!("#{q}@{:+.1}ms", rel(at)))
        .collect();
    format!(
        "channel c{channel} message #{seq}: follower's first {}, it got {}; acked {}",
        first.unwrap_or_default(),
        around.join(" "),
        acks.join(" ")
    )
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}
