//! Every default timeout, limit and size, in one place.
//!
//! The validated [`Config`](crate::config::Config) resolves each of these into
//! the value in force; the rest of the code reads the config, never this file,
//! so an operator's YAML is the only other source of a number.

use std::num::NonZeroUsize;
use std::time::Duration;

/// Public listener when the file names none. nginx and most app servers use
/// 8080 for "the HTTP port in front of the app".
pub const LISTEN: &str = "0.0.0.0:8080";

/// Webhook (publish/health/metrics) listener. Loopback: publishing is a
/// privilege of the app beside pollgate, never of the internet.
pub const WEBHOOK_LISTEN: &str = "127.0.0.1:8081";

/// Largest publish body. Messages are held in memory per channel, so a small
/// cap keeps one careless publisher from filling the buffer.
pub const WEBHOOK_MAX_BODY: u64 = 1024 * 1024;

/// Time allowed to open a TCP connection to an upstream. A healthy local app
/// accepts in microseconds; 5 s leaves room for a loaded one before 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time to an upstream's response head (nginx's proxy_read_timeout is 60 s;
/// legacy apps behind a sidecar are expected to answer well within 30 s).
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll hold when the client sends no `timeout`: under the 60 s idle timeout
/// of most load balancers, so a held poll is never cut by the path.
pub const POLL_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound on any poll hold, whatever the client asks for.
pub const POLL_MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages kept per channel for catch-up.
pub const BUFFER_MAX_SIZE: usize = 1000;

/// Age after which a buffered message is dropped (and a channel with no
/// waiters and no messages is freed).
pub const BUFFER_MAX_AGE: Duration = Duration::from_secs(300);

/// Time in-flight proxied requests get to finish after SIGTERM.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a complete request head (slow-loris guard).
/// Also: the longest idle keep-alive, and the time an HTTP/2 or TLS
/// connection has to produce its first request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `server.body_timeout`: the longest pause between two reads of a request
/// body (nginx's `client_body_timeout` is 60 s; a client that uploads
/// through a sidecar and stalls for 30 s has gone). The request is answered
/// 400 and counted as the client's fault.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// `server.write_timeout`: the longest a connection may take no answer
/// bytes while some are waiting for it (nginx's `send_timeout` is 60 s). It
/// is then closed and what it held is freed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of answers rendered for one HTTP/1 connection and not yet taken
/// by it (Envoy's per-connection buffer limit is 1 MiB). Past this, a
/// connection's next answers wait to be rendered until it drains;
/// `server.write_timeout` closes it if it never does. One answer can pass
/// it (an answer is never split across the wait), so the memory one
/// connection can pin is this plus one answer.
pub const CONNECTION_QUEUE_BYTES: usize = 1024 * 1024;

/// The same bound for each HTTP/2 stream (a client grants each stream its
/// own window, and one it never reads must not hold up the others): two
/// event-stream chunks. A stream past it gets nothing more rendered until
/// it drains; an event stream or GRIP stream that takes nothing for
/// `server.write_timeout` ends (`slow_client`), its connection open. What
/// one connection can pin is this, plus one answer and hyper's one chunk
/// in hand, per stream (`H2_MAX_STREAMS`).
pub const H2_STREAM_QUEUE_BYTES: usize = 128 * 1024;

/// HTTP/2: a PING after this long without a frame from the client (half
/// the head timeout)...
pub fn h2_ping_interval(header_timeout: Duration) -> Duration {
    header_timeout / 2
}

/// ...and the connection is closed when it is not answered within this
/// (hyper's default, stated here). Generous: a PING queues behind the DATA
/// already in flight, and a slow mobile client downloading a large answer
/// must not be cut off for it. A client that stops in the middle of a frame
/// is gone within `h2_ping_interval` + this.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 streams one connection may have open at once (hyper's default,
/// stated here): a browser uses far fewer.
pub const H2_MAX_STREAMS: u32 = 200;

/// HTTP/2: bytes hyper buffers per stream before it stops pulling the body.
/// Small, because the connection's own queue bound (`CONNECTION_QUEUE_BYTES`)
/// is what decides how much may wait; hyper's default is 400 KiB.
pub const H2_STREAM_SEND_BUFFER: usize = 64 * 1024;

/// HTTP/2 streams a client may open and cancel within one second before its
/// connection is closed (the "rapid reset" attack, CVE-2023-44487). A page
/// that closes its polls cancels a handful; an attack cancels thousands.
pub const H2_MAX_RESETS_PER_SEC: u32 = 200;

/// HTTP/2 streams the client reset before hyper took them (h2's own guard
/// against rapid reset, stated here).
pub const H2_MAX_PENDING_RESETS: usize = 20;

/// Quiet period after a config-file change event before the file is read:
/// editors and `cp` write in several steps, and a half-written file must not
/// even be tried if a later event is coming.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// How often expired messages are trimmed and idle channels freed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Idle pooled upstream connections are closed after this (nginx keepalive_timeout).
pub const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(60);

/// Pooled connections a request tries that turn out closed before it is
/// sent, before it goes out on a new one.
pub const UPSTREAM_STALE_RETRIES: usize = 3;

/// An app that closes connections right after answering (a worker that
/// exits, a keep-alive timeout of zero): a close that follows an answer
/// arrives within this on any loaded host, so a pooled connection idle
/// this long whose close has not been seen is one the app keeps. A
/// connection the app closed sooner after its answer is counted as such.
pub const UPSTREAM_CLOSE_SETTLE: Duration = Duration::from_millis(100);

/// How long such a close is remembered, and an app's answer on a reused
/// connection (proof it keeps them): a request that cannot be sent twice
/// (a POST, any body) goes out on a pooled connection at once only while
/// the app is known to keep connections and has not closed one early
/// lately; otherwise only on one idle for `UPSTREAM_CLOSE_SETTLE`, or on
/// a new one, so that it is not lost to the app's close.
pub const UPSTREAM_CLOSE_MEMORY: Duration = Duration::from_secs(10);

/// A cursor later than the broker's clock by more than this was not handed
/// out by the history it is read against (a host clock stepped back, a
/// history restored, a Redis failover to a node whose clock is behind): it
/// is answered as a gap at once instead of passing over every message
/// stamped before it. Clocks of one broker never disagree by as much.
pub const CURSOR_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// Largest `max=` batch a poll may ask for.
pub const POLL_MAX_BATCH: usize = 1000;

/// `poll.max_batch_bytes`: a batch answer stops before the message that
/// would take it past this (but always carries one message). A few MiB: a
/// full default batch of small messages fits, and a client that asks for
/// `max=1000` of large ones gets them over several answers instead of one
/// that pins a gigabyte.
pub const POLL_MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Longest channel name, in bytes (all allowed characters are ASCII).
pub const CHANNEL_NAME_MAX: usize = 200;

/// Time a TLS client has to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `pollgate tail`: first and longest pause between failed polls.
pub const TAIL_BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const TAIL_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, usually) before
/// trying again, so the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the webhook listener serves at once. The app's publishers,
/// probes, scrapes and status pages need far fewer; the cap is part of the
/// descriptor reserve that keeps the webhook working through a public flood.
pub const WEBHOOK_MAX_CONNECTIONS: usize = 512;

/// Descriptors kept for what is neither a listener's connection nor an
/// upstream's: the listening sockets, Redis, the config watch, logs.
pub const FD_RESERVE_OTHER: usize = 64;

/// `server.max_connections` when the file sets none: the process's
/// open-file limit less a reserve for the webhook listener, every
/// upstream's connections (two per request in flight: one busy, one idle in
/// the pool) and the rest, but never below half the limit.
pub fn max_connections(fd_limit: usize, upstream_in_flight: usize) -> usize {
    let reserve = upstream_in_flight
        .saturating_mul(2)
        .saturating_add(WEBHOOK_MAX_CONNECTIONS + FD_RESERVE_OTHER);
    fd_limit
        .saturating_sub(reserve)
        .max(fd_limit / 2)
        .clamp(1, MAX_CAP)
}

/// The process's open-file limit (the soft one, which is what `accept`
/// runs into); 1024, the usual default, when it cannot be read.
pub fn fd_limit() -> usize {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .and_then(|(soft, _)| usize::try_from(soft).ok())
        .unwrap_or(1024)
}

/// An upgraded connection (a WebSocket spliced to the app) that carries no
/// byte either way for this long is closed (Envoy's stream idle timeout;
/// WebSocket apps ping far more often).
pub const UPGRADED_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Bytes each direction of an upgraded connection copies at once.
pub const UPGRADED_COPY_BYTES: usize = 8 * 1024;

/// The largest value a connection or request cap may take: a cap is a
/// semaphore's permits, and past this it is no cap at all.
pub const MAX_CAP: usize = 100_000_000;

/// `upstreams.NAME.max_in_flight`: requests one upstream may have in flight
/// (Envoy's circuit-breaker default for `max_requests` is 1,024). Beyond it
/// a request is answered 503 with `Retry-After` at once.
pub const UPSTREAM_MAX_IN_FLIGHT: usize = 1024;

/// Held polls one client may have at once: browsers open at most 6
/// connections per host, so a well-behaved page never needs more.
pub const LIMIT_MAX_PER_CLIENT: usize = 6;

/// Held polls from one client address, whatever `X-Client-ID` says. An
/// office of a few hundred people behind one NAT address, each with a tab
/// or two polling, fits; one host holding thousands does not.
pub const LIMIT_MAX_PER_ADDRESS: usize = 1000;

/// Held polls on one channel.
pub const LIMIT_MAX_PER_CHANNEL: usize = 10_000;

/// Held polls in the whole instance (each costs a socket and a little memory).
pub const LIMIT_MAX_TOTAL: usize = 100_000;

/// `Retry-After` on a 429: a client retrying after a second finds a freed slot
/// as soon as any poll ends, and 1 s keeps a crowd from hammering.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Runtime worker threads: one per core this process may use (cgroup
/// quotas included), as nginx's `worker_processes auto`.
pub fn threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Pending connections the kernel queues per public socket.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Request header fields allowed per request (hyper's default, stated here).
pub const MAX_HEADERS: usize = 100;

/// Largest request head (431 beyond).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Bytes the lean HTTP/1 path reads per call (on the stack; a poll's head
/// fits in one read).
pub const LEAN_READ_CHUNK: usize = 2048;

/// An answer whose whole body is at most this is written by the lean HTTP/1
/// path together with its head, in one buffer and one system call (nearly
/// every poll answer); a larger one is written frame by frame.
pub const LEAN_COALESCE_BYTES: usize = 16 * 1024;

/// Largest frame an answer's body hands to a connection at once. Frames are
/// slices of the buffered messages (no copy); small pieces are joined up to
/// this. It also bounds what an HTTP/2 stream can hold beyond the
/// connection's send-queue accounting (hyper pulls a frame once the stream
/// has any window).
pub const ANSWER_FRAME_BYTES: usize = 16 * 1024;

/// Longest client id header value accepted.
pub const CLIENT_ID_MAX: usize = 128;

/// Header the client id is read from by default (existing clients send it).
pub const CLIENT_ID_HEADER: &str = "x-client-id";

/// Default `authorize.timeout`: an auth check is a quick lookup.
pub const AUTHORIZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most (client, channel) authorizations remembered at once; beyond it the
/// expired ones are dropped, then new ones are simply not cached.
pub const AUTHORIZE_CACHE_MAX: usize = 100_000;

/// Default CORS preflight cache time.
pub const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// Redis: time to open a connection, and to get any answer. A broker that
/// answers slower than this is treated as down (publishes get 503 at once
/// rather than hanging).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Redis: first and longest pause between reconnection attempts.
pub const REDIS_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const REDIS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Redis: messages fetched per history read, shared by every local waiter of
/// the channel (so a fan-out costs one read per instance, not per waiter).
pub const REDIS_READ_BATCH: usize = 100;

/// Redis: how long a channel's head read from Redis serves the next polls
/// that arrive without a cursor, while nothing newer is announced. A burst
/// of first polls on one channel costs a round trip per this, not one each
/// (and each round trip still refreshes the channel's meta key's TTL).
pub const REDIS_HEAD_REUSE: Duration = Duration::from_secs(1);

/// Redis broker defaults: a local Redis, database 0, keys under "pollgate:".
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const REDIS_KEY_PREFIX: &str = "pollgate:";

/// Status page: longest wait of one `/status` long poll, and channels listed.
pub const STATUS_MAX_WAIT: Duration = Duration::from_secs(30);
pub const STATUS_CHANNELS: usize = 50;

/// Status page charts: one sample every `STATUS_SAMPLE_EVERY`, the last
/// `STATUS_SAMPLES` kept (15 minutes) in a ring that never grows.
pub const STATUS_SAMPLE_EVERY: Duration = Duration::from_secs(2);
pub const STATUS_SAMPLES: usize = 450;

/// Redis: the whole (re)connection, command connection plus subscription.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis: most messages one history read returns (a `last_id` lookup or a
/// `max=1000` batch reads the most).
pub const REDIS_READ_MAX: usize = 10_000;

/// Redis: an idle channel's keys expire after `buffer.max_age` times this,
/// and never sooner than the minimum, so a returning client is told "gap"
/// rather than finding a fresh, empty history.
pub const REDIS_IDLE_TTL_FACTOR: u32 = 2;
pub const REDIS_IDLE_TTL_MIN: Duration = Duration::from_secs(60);

/// Memory: after this many held polls, connections or channels have been
/// freed since the last time, the allocator is asked to give free pages back
/// to the system (see `memory`), at most once per `MEMORY_TRIM_INTERVAL`.
pub const MEMORY_TRIM_AFTER_FREES: usize = 2_000;
/// ...or after the bytes of messages held have fallen by this much (a
/// publish-heavy peak: few objects, many bytes, freed as they expire).
pub const MEMORY_TRIM_AFTER_BYTES: usize = 16 * 1024 * 1024;
pub const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Shards of every concurrent map (channels, limit counts): more than the
/// cores, so two publishes rarely meet on one lock.
pub const MAP_SHARDS: usize = 64;

/// Log lines waiting for the writer thread before more are dropped (see
/// `logging`): about 1 MiB of typical lines, a fraction of a second of a
/// busy instance's access log.
pub const LOG_QUEUE_LINES: usize = 4_096;

/// The writer thread's stderr buffer: lines are written in batches of up to this.
pub const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// GRIP (`grip:` routes): `Grip-Timeout` when the app gives none, and the
/// least it may ask for; Pushpin's values, so apps written for it behave the
/// same. Both are capped by `poll.max_timeout`.
pub const GRIP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(55);
pub const GRIP_MIN_TIMEOUT: Duration = Duration::from_secs(5);

/// GRIP: `iss` of the `Grip-Sig` token when the route names none.
pub const GRIP_SIG_ISS: &str = "pollgate";

/// GRIP: how long a `Grip-Sig` token is valid after it is made.
pub const GRIP_SIG_TTL: Duration = Duration::from_secs(3600);

/// GRIP: longest a stream hold stays open (`grip.stream_max`); the client
/// reconnects and the app answers it again, as after any ended stream.
pub const GRIP_STREAM_MAX: Duration = Duration::from_secs(3600);

/// GRIP: `Grip-Keep-Alive` timeout when the header names none (Pushpin's),
/// and the most data one keep-alive may carry.
pub const GRIP_KEEP_ALIVE: Duration = Duration::from_secs(55);
pub const GRIP_KEEP_ALIVE_MAX_BYTES: usize = 64 * 1024;

/// GRIP: the longest an item `id` may be (dedup keeps ids in memory).
pub const GRIP_ID_MAX: usize = 256;

/// GRIP: the longest `grip.stream_max` a config may set.
pub const GRIP_STREAM_MAX_LIMIT: Duration = Duration::from_secs(7 * 86_400);

/// GRIP: a request on a `grip:` route is kept (up to this many body bytes)
/// so that it can be sent to the app again (`prev-id` catch-up, `hint`);
/// a larger body is refused with 413: uploads belong on a route without `grip`.
pub const GRIP_REQUEST_BODY_MAX: usize = 1024 * 1024;

/// GRIP: largest instruction answer (headers' body, or the
/// `application/grip-instruct` JSON) read from the app.
pub const GRIP_INSTRUCT_BODY_MAX: usize = 1024 * 1024;

/// GRIP: a `prev-id` is looked for among the channel's newest this many
/// items first, then in the whole buffer.
pub const GRIP_PREV_ID_WINDOW: usize = 16;

/// GRIP: channels one hold may name.
pub const GRIP_MAX_CHANNELS: usize = 32;

/// GRIP: times one client request is sent to the app again (catch-up after
/// a `prev-id` mismatch, or an item with `action: hint`) before the hold
/// simply starts from where it is.
pub const GRIP_MAX_RETRIES: usize = 2;

/// GRIP: published items remembered by (channel, `id`) to drop duplicates
/// (Pushpin's `id_cache_ttl`), and at most this many at once.
pub const GRIP_ID_TTL: Duration = Duration::from_secs(60);
pub const GRIP_ID_CACHE_MAX: usize = 100_000;

/// GRIP: stream items waiting for a slow client before the stream stops
/// reading the broker (the write deadline then closes a client that never reads).
pub const GRIP_STREAM_QUEUE: usize = 16;

/// `poll.sse_heartbeat`: an event stream with nothing sent for this long
/// gets a comment line, so proxies and load balancers that cut idle
/// connections (nginx's `proxy_read_timeout` is 60 s, AWS ALB's idle
/// timeout 60 s) keep it. The JavaScript client also reads a stream with
/// nothing in its first interval as one a proxy buffers.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// `poll.sse_max_duration`: a stream then ends cleanly and the client
/// reconnects with its `Last-Event-ID` (to whichever instance the load
/// balancer picks: streams rebalance). Each stream ends somewhere in the
/// last tenth of it, so streams opened together do not reconnect together.
pub const SSE_MAX_DURATION: Duration = Duration::from_secs(600);

/// `retry:` sent at the start of every event stream: how long `EventSource`
/// waits before reconnecting after a stream ends (browsers default to ~3 s).
pub const SSE_RETRY: Duration = Duration::from_secs(2);

/// Each stream's `retry:` is `SSE_RETRY` plus up to this much, so clients
/// whose streams ended together (shutdown) come back apart.
pub const SSE_RETRY_SPREAD: Duration = Duration::from_secs(1);

/// Each stream ends up to `poll.sse_max_duration / SSE_END_SPREAD` early,
/// so streams opened together end (and reconnect) apart.
pub const SSE_END_SPREAD: u32 = 10;

/// Messages an event stream reads from the buffer at once (catching up
/// after a reconnect): sent as one chunk, within `poll.max_batch_bytes`.
pub const SSE_READ_BATCH: usize = 100;

/// `poll.sse_heartbeat` may not be shorter: each beat is a write per
/// stream, and a tiny interval would be a busy loop.
pub const SSE_HEARTBEAT_MIN: Duration = Duration::from_millis(100);

/// `poll.sse_max_duration` may not be shorter: a stream that ends at once
/// only makes its client reconnect.
pub const SSE_MAX_DURATION_MIN: Duration = Duration::from_secs(1);

/// Neither SSE duration may be longer (a week, as `grip.stream_max`).
pub const SSE_DURATION_LIMIT: Duration = GRIP_STREAM_MAX_LIMIT;

/// The most an event stream hands the connection at once (a chunk of
/// events, at least one whole event): on HTTP/2, at most this per stream
/// waits in pollgate for a window, and the connection's send queue bounds
/// the sum. Catching up runs in chunks of this size.
pub const SSE_CHUNK_BYTES: usize = 64 * 1024;

/// The same on HTTP/2, where hyper keeps the chunk it took from a stream
/// left without window for as long as the connection lives (and a client
/// can leave 200 such streams): at most this, or one event.
pub const SSE_CHUNK_BYTES_H2: usize = 16 * 1024;

/// Chunks an HTTP/2 event stream's task may have waiting for the
/// connection; a chunk that cannot join them within `server.write_timeout`
/// ends the stream as a slow client's.
pub const SSE_QUEUE: usize = 2;
