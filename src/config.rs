//! The validated configuration: what pollgate runs with.
//!
//! A [`Config`] is immutable once built; hot reload builds a new one and
//! swaps it in whole (see `reload`). Building never binds sockets or opens
//! connections, so `pollgate check` and reload validation are side-effect free.

mod locate;
mod raw;
pub mod reload;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use crate::routes::RouteTable;

/// Everything pollgate needs to serve, resolved and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener (clients, browsers).
    pub listen: SocketAddr,
    pub webhook: WebhookConfig,
    pub routes: RouteTable,
    pub poll: PollConfig,
    pub buffer: BufferConfig,
    pub broker: BrokerConfig,
    pub shutdown: ShutdownConfig,
    pub server: ServerConfig,
    pub limits: Limits,
    /// How a poll's client is identified (per-route override in the route).
    pub client_id: ClientIdSource,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS on the public listener, certificates loaded and checked.
    pub tls: Option<crate::tls::CertStore>,
    /// Hash of the file's text, to tell which config an instance runs.
    pub source_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    /// Largest publish body, in bytes.
    pub max_body: u64,
    /// Bearer token every webhook request but /healthz must carry.
    pub token: Option<Token>,
}

/// A secret. Its `Debug` never shows it, so it cannot leak into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Token {
        Token(secret)
    }

    /// Constant-time comparison against what a client sent.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(offered).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Caps on held polls, checked before a poll is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_per_client: usize,
    pub max_per_channel: usize,
    pub max_total: usize,
}

/// Where a poll's client id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdSource {
    /// The client address (after `trusted_proxies`), ignoring any header.
    Addr,
    /// This header when present, else the client address.
    Header(http::HeaderName),
}

/// Poll hold durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    pub default_timeout: Duration,
    /// Invariant: `default_timeout <= max_timeout`.
    pub max_timeout: Duration,
}

/// Per-channel history kept for catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// At least 1.
    pub max_size: usize,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    /// Channels live in this process.
    Memory,
    /// Channels and history live in Redis, shared by every instance.
    Redis(crate::broker::RedisSettings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    pub drain_timeout: Duration,
}

/// Connection-level settings of both listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub header_timeout: Duration,
    /// Serving threads (at least one by construction).
    pub threads: NonZeroUsize,
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[2].upstream`; empty for the whole document.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one file, in document order where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about, when read from disk.
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates YAML text. `source_name` labels the errors.
    ///
    /// # Errors
    /// Every shape error serde finds first (it stops at one), else every
    /// semantic error in one pass.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        validate::from_yaml(text).map_err(|errors| ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        })
    }

    /// Reads and validates a file.
    ///
    /// # Errors
    /// An unreadable file, or any error of [`Config::from_yaml`].
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source_name: name.clone(),
            errors: vec![ConfigError {
                path: String::new(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::from_yaml(&text, &name)
    }

    /// Settings that only take effect on restart and differ from `other`.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != other.listen {
            changed.push("listen");
        }
        if self.webhook.listen != other.webhook.listen {
            changed.push("webhook.listen");
        }
        if self.broker != other.broker {
            changed.push("broker");
        }
        if self.server != other.server {
            changed.push("server");
        }
        if self.tls.is_some() != other.tls.is_some() {
            changed.push("tls (turning it on or off)");
        }
        changed
    }

    /// Files whose change should reload this config: certificates and CA bundles.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = self.tls.iter().flat_map(|t| t.files()).collect();
        for route in self.routes.iter() {
            if let crate::routes::RouteAction::Proxy { upstream, .. } = &route.action {
                files.extend(upstream.ca_file.iter().cloned());
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// One screen describing the routes, for `pollgate check`.
    pub fn summary(&self) -> String {
        use crate::routes::RouteAction;
        let mut out = format!(
            "listen {}  (webhook {})\nroutes (longest prefix wins):\n",
            self.listen, self.webhook.listen
        );
        for route in self.routes.iter() {
            let methods = route.methods.as_ref().map(|m| {
                let names: Vec<&str> = m.iter().map(|m| m.as_str()).collect();
                format!(" [{}]", names.join(","))
            });
            let target = match &route.action {
                RouteAction::Proxy { upstream, timeout } => format!(
                    "proxy -> {} ({}://{}, timeout {})",
                    upstream.name,
                    upstream.scheme,
                    upstream.authority,
                    humantime::format_duration(*timeout)
                ),
                RouteAction::Poll(_) => format!(
                    "long poll (default {}, max {})",
                    humantime::format_duration(self.poll.default_timeout),
                    humantime::format_duration(self.poll.max_timeout)
                ),
            };
            out.push_str(&format!(
                "  {:<24} {}{}\n",
                route.name,
                target,
                methods.unwrap_or_default()
            ));
        }
        out
    }
}
