//! Raw YAML -> [`Config`]: every check, collected in one pass so an
//! operator fixes a file in one round instead of one error per restart.
//!
//! Two stages, both complete: the shape (`shape`: unknown keys, values that
//! do not parse), then the meaning (this file and `routes`: addresses,
//! references between keys, ranges). The meaning is checked on whatever the
//! shape stage could read, and keeps quiet about keys it had to drop.

mod poll;
mod routes;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use super::locate::Lines;
use super::raw::{RawBrokerKind, RawClientId, RawClientIdFrom, RawConfig, RawTls, RawWebhook};
use super::shape;
use super::{
    BrokerConfig, BufferConfig, ClientIdSource, Config, ConfigError, ServerConfig, ShutdownConfig,
    Token, WebhookConfig,
};
use crate::defaults;
use routes::Upstreams;

pub(super) fn from_yaml(text: &str) -> Result<Config, Vec<ConfigError>> {
    if text.trim().is_empty() {
        // An editor or `cp` caught mid-write: never run on "all defaults".
        return Err(vec![error("", None, "the file is empty")]);
    }
    // A syntax error leaves no tree to look further into: it is the one error.
    let tree: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        vec![error("", line, &e.to_string())]
    })?;
    let shaped = shape::read(tree);
    let mut errors: Vec<ConfigError> = shaped
        .faults
        .iter()
        .map(|f| error(&f.path, None, &f.message))
        .collect();
    if let Some(raw) = shaped.raw {
        let mut v = Validator {
            removed: shaped.removed.clone(),
            ..Validator::default()
        };
        let config = v.config(raw);
        if errors.is_empty() && v.errors.is_empty() {
            if let Some(mut config) = config {
                config.source_hash = hash(text);
                return Ok(config);
            }
        }
        // What the shape stage dropped reads as missing or default here:
        // an error about it would only repeat the one already reported.
        // Its paths are in what was left: put back the file's indices.
        errors.extend(
            v.errors
                .into_iter()
                .map(|mut e| {
                    e.path = shaped.shifts.original(&e.path);
                    e
                })
                .filter(|e| {
                    !shaped
                        .removed
                        .iter()
                        .any(|gone| shape::overlaps(&e.path, gone))
                }),
        );
    }
    let lines = Lines::of(text);
    for e in &mut errors {
        e.line = lines.line(&e.path);
    }
    // Stable: errors on one line keep the order they were found in.
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(errors)
}

/// A stable hash of the text (SipHash with fixed keys), as 16 hex digits.
fn hash(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn default_client_id() -> ClientIdSource {
    ClientIdSource::Header(http::HeaderName::from_static(defaults::CLIENT_ID_HEADER))
}

fn error(path: &str, line: Option<usize>, message: &str) -> ConfigError {
    ConfigError {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// What the shape stage took out (paths as the file has them).
    removed: Vec<String>,
}

impl Validator {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(error(path, None, &message.into()));
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.addr("listen", raw.listen.as_deref(), defaults::LISTEN);
        let raw_webhook = raw.webhook.unwrap_or_default();
        let webhook_listen = self.addr(
            "webhook.listen",
            raw_webhook.listen.as_deref(),
            defaults::WEBHOOK_LISTEN,
        );
        let max_body = raw_webhook
            .max_body
            .map_or(defaults::WEBHOOK_MAX_BODY, |b| b.0);
        // Cannot fail on a 64-bit target; a 32-bit one caps at what it can address.
        let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        if max_body == 0 {
            self.fail("webhook.max_body", "must be more than 0 bytes");
        }
        let token = self.token(&raw_webhook);
        if let Some(addr) = webhook_listen {
            if !addr.ip().is_loopback() && token.is_none() {
                self.fail(
                    "webhook.listen",
                    format!("{addr} is reachable from other hosts: set webhook.token (or token_env) so only your app can publish"),
                );
            }
        }

        let upstreams = self.upstreams(&raw.upstreams);
        let routes = self.routes(&raw.routes, &upstreams);

        let poll = self.poll(raw.poll.unwrap_or_default());

        let raw_buffer = raw.buffer.unwrap_or_default();
        let buffer = BufferConfig {
            max_size: raw_buffer.max_size.unwrap_or(defaults::BUFFER_MAX_SIZE),
            max_age: raw_buffer.max_age.map_or(defaults::BUFFER_MAX_AGE, |d| d.0),
        };
        if buffer.max_size == 0 {
            self.fail("buffer.max_size", "must be at least 1");
        }
        self.positive("buffer.max_age", buffer.max_age);

        let broker = self.broker(raw.broker.unwrap_or_default());
        let shutdown = ShutdownConfig {
            drain_timeout: raw
                .shutdown
                .and_then(|s| s.drain_timeout)
                .map_or(defaults::SHUTDOWN_DRAIN_TIMEOUT, |d| d.0),
        };
        let server = self.server(raw.server.unwrap_or_default(), &upstreams);
        let limits = self.limits(raw.limits.unwrap_or_default());
        let client_id = match &raw.client_id {
            Some(c) => self.client_id("client_id", c),
            None => Some(default_client_id()),
        }
        .unwrap_or_else(default_client_id);
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| self.cidr(&format!("trusted_proxies[{i}]"), p))
            .collect();

        let tls = raw.tls.as_ref().and_then(|t| self.tls(t));

        Some(Config {
            listen: listen?,
            webhook: WebhookConfig {
                listen: webhook_listen?,
                max_body,
                token,
            },
            routes,
            poll,
            buffer,
            broker,
            shutdown,
            server,
            limits,
            client_id,
            trusted_proxies,
            tls,
            source_hash: String::new(),
        })
    }

    /// A duration that must not be zero.
    fn positive(&mut self, path: &str, value: std::time::Duration) {
        if value.is_zero() {
            self.fail(path, "must be longer than 0s");
        }
    }

    fn server(&mut self, raw: super::raw::RawServer, upstreams: &Upstreams) -> ServerConfig {
        let or = |d: Option<super::units::Duration>, default| d.map_or(default, |d| d.0);
        let server = ServerConfig {
            header_timeout: or(raw.header_timeout, defaults::HEADER_TIMEOUT),
            body_timeout: or(raw.body_timeout, defaults::BODY_TIMEOUT),
            write_timeout: or(raw.write_timeout, defaults::WRITE_TIMEOUT),
            max_connections: raw.max_connections.unwrap_or_else(|| {
                let in_flight = upstreams.values().flatten().map(|u| u.max_in_flight).sum();
                defaults::max_connections(defaults::fd_limit(), in_flight)
            }),
            threads: match raw.threads.map(NonZeroUsize::new) {
                None => defaults::threads(),
                Some(Some(n)) => n,
                Some(None) => {
                    self.fail("server.threads", "must be 1 or more");
                    NonZeroUsize::MIN
                }
            },
        };
        self.positive("server.header_timeout", server.header_timeout);
        self.positive("server.body_timeout", server.body_timeout);
        self.positive("server.write_timeout", server.write_timeout);
        if !(1..=defaults::MAX_CAP).contains(&server.max_connections) {
            self.fail(
                "server.max_connections",
                format!("must be from 1 to {}", defaults::MAX_CAP),
            );
        }
        server
    }

    fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> Option<SocketAddr> {
        let text = value.unwrap_or(default);
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(
                    path,
                    format!("{text:?} is not an address: write IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\""),
                );
                None
            }
        }
    }

    /// A key the file must set; reported as missing when it does not.
    fn required<'a, T>(&mut self, path: &str, value: &'a Option<T>, hint: &str) -> Option<&'a T> {
        if value.is_none() {
            self.fail(path, format!("missing: {hint}"));
        }
        value.as_ref()
    }

    fn tls(&mut self, raw: &RawTls) -> Option<crate::tls::CertStore> {
        let default = self.cert_pair("tls", &raw.cert, &raw.key);
        let mut by_host = std::collections::HashMap::new();
        for (i, sni) in raw.sni.iter().flatten().enumerate() {
            let path = format!("tls.sni[{i}]");
            let hosts = self.required(
                &format!("{path}.hosts"),
                &sni.hosts,
                "the host names this certificate serves",
            );
            if hosts.is_some_and(Vec::is_empty) {
                self.fail(&format!("{path}.hosts"), "list at least one host name");
            }
            if let Some(pair) = self.cert_pair(&path, &sni.cert, &sni.key) {
                for host in hosts.into_iter().flatten() {
                    by_host.insert(host.to_ascii_lowercase(), pair.clone());
                }
            }
        }
        Some(crate::tls::CertStore {
            default: default?,
            by_host,
        })
    }

    fn cert_pair(
        &mut self,
        path: &str,
        cert: &Option<String>,
        key: &Option<String>,
    ) -> Option<crate::tls::LoadedPair> {
        use crate::tls::TlsError;
        let cert = self.required(
            &format!("{path}.cert"),
            cert,
            "a PEM certificate chain file",
        );
        let key = self.required(&format!("{path}.key"), key, "a PEM private key file");
        let (cert, key) = (cert?, key?);
        match crate::tls::load_pair(std::path::Path::new(cert), std::path::Path::new(key)) {
            Ok(pair) => Some(pair),
            Err(e) => {
                let at = match &e {
                    TlsError::BadKey { .. } | TlsError::Mismatch { .. } => "key",
                    TlsError::Read { path: p, .. } if p.as_os_str() == key.as_str() => "key",
                    _ => "cert",
                };
                self.fail(&format!("{path}.{at}"), e.to_string());
                None
            }
        }
    }

    fn broker(&mut self, raw: super::raw::RawBroker) -> BrokerConfig {
        match raw.kind {
            None | Some(RawBrokerKind::Memory) => {
                if raw.url.is_some() || raw.key_prefix.is_some() || raw.cluster.is_some() {
                    self.fail("broker.kind", "url and key_prefix apply to `kind: redis`");
                }
                BrokerConfig::Memory
            }
            Some(RawBrokerKind::Redis) => {
                let url = raw.url.unwrap_or_else(|| defaults::REDIS_URL.to_owned());
                if let Err(e) = redis::Client::open(url.as_str()) {
                    self.fail(
                        "broker.url",
                        format!("not a Redis URL (redis://, rediss://): {e}"),
                    );
                }
                let key_prefix = raw
                    .key_prefix
                    .unwrap_or_else(|| defaults::REDIS_KEY_PREFIX.to_owned());
                if key_prefix.contains(['{', '}']) {
                    self.fail(
                        "broker.key_prefix",
                        "must not contain { or } (pollgate adds the cluster hash tag)",
                    );
                }
                BrokerConfig::Redis(crate::broker::RedisSettings {
                    url,
                    key_prefix,
                    cluster: raw.cluster.unwrap_or(false),
                })
            }
        }
    }

    fn token(&mut self, raw: &RawWebhook) -> Option<Token> {
        let secret = match (&raw.token, &raw.token_env) {
            (Some(_), Some(_)) => {
                self.fail("webhook.token", "set either token or token_env, not both");
                return None;
            }
            (Some(t), None) => t.clone(),
            (None, Some(var)) => match std::env::var(var) {
                Ok(t) => t,
                Err(_) => {
                    self.fail(
                        "webhook.token_env",
                        format!("environment variable {var:?} is not set"),
                    );
                    return None;
                }
            },
            (None, None) => return None,
        };
        // Never echo the secret: the error names the key only.
        if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            self.fail(
                "webhook.token",
                "must be at least 16 printable characters (no spaces)",
            );
            return None;
        }
        Some(Token::new(secret))
    }

    fn client_id(&mut self, path: &str, raw: &RawClientId) -> Option<ClientIdSource> {
        let from = self.required(&format!("{path}.from"), &raw.from, "`header` or `addr`")?;
        match (from, &raw.header) {
            (RawClientIdFrom::Addr, None) => Some(ClientIdSource::Addr),
            (RawClientIdFrom::Addr, Some(_)) => {
                self.fail(&format!("{path}.header"), "applies to `from: header` only");
                None
            }
            (RawClientIdFrom::Header, name) => {
                let name = name.as_deref().unwrap_or(defaults::CLIENT_ID_HEADER);
                match http::HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) => Some(ClientIdSource::Header(h)),
                    Err(_) => {
                        self.fail(
                            &format!("{path}.header"),
                            format!("{name:?} is not a header name"),
                        );
                        None
                    }
                }
            }
        }
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<ipnet::IpNet> {
        // A bare address means exactly that host.
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => Some(net),
            Err(_) => {
                self.fail(
                    path,
                    format!("{text:?} is not an address or CIDR block, like \"10.0.0.0/8\""),
                );
                None
            }
        }
    }
}
