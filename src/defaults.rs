//! Every default timeout, limit and size, in one place.
//!
//! The validated [`Config`](crate::config::Config) resolves each of these into
//! the value in force; the rest of the code reads the config, never this file,
//! so an operator's YAML is the only other source of a number.

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
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Quiet period after a config-file change event before the file is read:
/// editors and `cp` write in several steps, and a half-written file must not
/// even be tried if a later event is coming.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// How often expired messages are trimmed and idle channels freed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Idle pooled upstream connections are closed after this (nginx keepalive_timeout).
pub const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(60);

/// Largest `max=` batch a poll may ask for.
pub const POLL_MAX_BATCH: usize = 1000;

/// Longest channel name, in bytes (all allowed characters are ASCII).
pub const CHANNEL_NAME_MAX: usize = 200;

/// Pause after a failed accept (out of file descriptors, usually) before
/// trying again, so the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
