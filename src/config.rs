//! The validated configuration: what pollgate runs with.
//!
//! A [`Config`] is immutable once built; hot reload builds a new one and
//! swaps it in whole (see `reload`). Building never binds sockets or opens
//! connections, so `pollgate check` and reload validation are side-effect free.

mod locate;
mod raw;
pub mod reload;
mod schema;
mod shape;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::routes::RouteTable;

pub use schema::json_schema;

// Each module owns the settings it runs with; this module only builds them
// from the file (so the dependency points one way: config -> the modules).
pub use crate::broker::{BrokerConfig, BufferConfig};
pub use crate::poll::{ClientIdSource, Limits, PollConfig};
pub use crate::server::ServerConfig;
pub use crate::shutdown::ShutdownConfig;
pub use crate::webhook::{Token, WebhookConfig};

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
                RouteAction::Proxy {
                    upstream,
                    timeout,
                    grip,
                } => format!(
                    "proxy -> {} ({}://{}, timeout {}){}",
                    upstream.name,
                    upstream.scheme,
                    upstream.authority,
                    humantime::format_duration(*timeout),
                    match grip {
                        Some(g) if g.signer.is_some() => ", GRIP (signed)",
                        Some(_) => ", GRIP",
                        None => "",
                    }
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
