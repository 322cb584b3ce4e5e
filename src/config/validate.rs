//! Raw YAML -> [`Config`]: every semantic check, collected in one pass so an
//! operator fixes a file in one round instead of one error per restart.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Scheme, Uri};
use http::Method;

use super::locate::Lines;
use super::raw::{
    RawAuthorize, RawBrokerKind, RawClientId, RawClientIdFrom, RawConfig, RawCors, RawRoute,
    RawTls, RawUpstream, RawWebhook,
};
use super::{
    BrokerConfig, BufferConfig, ClientIdSource, Config, ConfigError, Limits, PollConfig,
    ServerConfig, ShutdownConfig, Token, WebhookConfig,
};
use crate::defaults;
use crate::routes::{Authorize, Cors, PollRoute, Route, RouteAction, RouteTable, Upstream};

pub(super) fn from_yaml(text: &str) -> Result<Config, Vec<ConfigError>> {
    if text.trim().is_empty() {
        // An editor or `cp` caught mid-write: never run on "all defaults".
        return Err(vec![error("", None, "the file is empty")]);
    }
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        vec![error("", line, &e.to_string())]
    })?;
    let mut v = Validator::default();
    let config = v.config(raw);
    if v.errors.is_empty() {
        if let Some(mut config) = config {
            config.source_hash = hash(text);
            return Ok(config);
        }
    }
    let lines = Lines::of(text);
    let mut errors = v.errors;
    for e in &mut errors {
        e.line = lines.line(&e.path);
    }
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

        let raw_poll = raw.poll.unwrap_or_default();
        let poll = PollConfig {
            default_timeout: raw_poll
                .default_timeout
                .map_or(defaults::POLL_DEFAULT_TIMEOUT, |d| d.0),
            max_timeout: raw_poll
                .max_timeout
                .map_or(defaults::POLL_MAX_TIMEOUT, |d| d.0),
        };
        if poll.default_timeout > poll.max_timeout {
            self.fail(
                "poll.default_timeout",
                format!(
                    "is longer than poll.max_timeout ({})",
                    humantime::format_duration(poll.max_timeout)
                ),
            );
        }

        let raw_buffer = raw.buffer.unwrap_or_default();
        let buffer = BufferConfig {
            max_size: raw_buffer.max_size.unwrap_or(defaults::BUFFER_MAX_SIZE),
            max_age: raw_buffer.max_age.map_or(defaults::BUFFER_MAX_AGE, |d| d.0),
        };
        if buffer.max_size == 0 {
            self.fail("buffer.max_size", "must be at least 1");
        }
        if buffer.max_age.is_zero() {
            self.fail("buffer.max_age", "must be longer than 0s");
        }

        let broker = self.broker(raw.broker.unwrap_or_default());
        let shutdown = ShutdownConfig {
            drain_timeout: raw
                .shutdown
                .and_then(|s| s.drain_timeout)
                .map_or(defaults::SHUTDOWN_DRAIN_TIMEOUT, |d| d.0),
        };
        let raw_server = raw.server.unwrap_or_default();
        let header_timeout = raw_server
            .header_timeout
            .map_or(defaults::HEADER_TIMEOUT, |d| d.0);
        if header_timeout.is_zero() {
            self.fail("server.header_timeout", "must be longer than 0s");
        }
        let threads = match raw_server.threads.map(NonZeroUsize::new) {
            None => defaults::threads(),
            Some(Some(n)) => n,
            Some(None) => {
                self.fail("server.threads", "must be 1 or more");
                NonZeroUsize::MIN
            }
        };

        let raw_limits = raw.limits.unwrap_or_default();
        let limits = Limits {
            max_per_client: raw_limits
                .max_per_client
                .unwrap_or(defaults::LIMIT_MAX_PER_CLIENT),
            max_per_channel: raw_limits
                .max_per_channel
                .unwrap_or(defaults::LIMIT_MAX_PER_CHANNEL),
            max_total: raw_limits.max_total.unwrap_or(defaults::LIMIT_MAX_TOTAL),
        };
        for (key, value) in [
            ("limits.max_per_client", limits.max_per_client),
            ("limits.max_per_channel", limits.max_per_channel),
            ("limits.max_total", limits.max_total),
        ] {
            if value == 0 {
                self.fail(key, "must be at least 1");
            }
        }
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
            server: ServerConfig {
                header_timeout,
                threads,
            },
            limits,
            client_id,
            trusted_proxies,
            tls,
            source_hash: String::new(),
        })
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

    fn upstreams(
        &mut self,
        raw: &BTreeMap<String, RawUpstream>,
    ) -> BTreeMap<String, Arc<Upstream>> {
        let mut out = BTreeMap::new();
        for (name, up) in raw {
            let path = format!("upstreams.{name}");
            let connect_timeout = up
                .connect_timeout
                .map_or(defaults::CONNECT_TIMEOUT, |d| d.0);
            if connect_timeout.is_zero() {
                self.fail(&format!("{path}.connect_timeout"), "must be longer than 0s");
            }
            let Some((scheme, authority)) = self.upstream_url(&format!("{path}.url"), &up.url)
            else {
                continue;
            };
            let ca_file = up.ca.as_ref().map(std::path::PathBuf::from);
            let ca = match &ca_file {
                Some(file) if scheme == Scheme::HTTPS => match crate::tls::load_roots(file) {
                    Ok(roots) => Some(roots),
                    Err(e) => {
                        self.fail(&format!("{path}.ca"), e.to_string());
                        None
                    }
                },
                Some(_) => {
                    self.fail(&format!("{path}.ca"), "applies to https:// upstreams only");
                    None
                }
                None => None,
            };
            out.insert(
                name.clone(),
                Arc::new(Upstream {
                    name: name.clone(),
                    scheme,
                    authority,
                    connect_timeout,
                    ca_file,
                    ca,
                }),
            );
        }
        out
    }

    fn upstream_url(&mut self, path: &str, url: &str) -> Option<(Scheme, http::uri::Authority)> {
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => {
                self.fail(path, format!("{url:?} is not a URL: {e}"));
                return None;
            }
        };
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            self.fail(
                path,
                format!("{url:?} needs a scheme and host, like \"http://127.0.0.1:3000\""),
            );
            return None;
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            self.fail(
                path,
                format!("scheme {scheme:?} is not supported: use http:// or https://"),
            );
            return None;
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            self.fail(
                path,
                "must not have a path or query: requests keep their own path (put path rules in routes)",
            );
            return None;
        }
        Some((scheme.clone(), authority.clone()))
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        upstreams: &BTreeMap<String, Arc<Upstream>>,
    ) -> RouteTable {
        if raw.is_empty() {
            self.fail(
                "routes",
                "at least one route is required, e.g. `- { prefix: /api/poll/, poll: {} }`",
            );
        }
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let path = format!("routes[{i}]");
            if !r.prefix.starts_with('/') {
                self.fail(
                    &format!("{path}.prefix"),
                    format!("{:?} must start with /", r.prefix),
                );
            }
            let methods = r.methods.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, m)| self.method(&format!("{path}.methods[{j}]"), m))
                    .collect::<Vec<_>>()
            });
            if methods.as_ref().is_some_and(|m| m.is_empty()) {
                self.fail(
                    &format!("{path}.methods"),
                    "an empty list matches nothing: remove the key to accept every method",
                );
            }
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            let mut method_key: Vec<String> =
                methods.iter().flatten().map(|m| m.to_string()).collect();
            method_key.sort();
            if !seen.insert((r.prefix.clone(), host.clone(), method_key)) {
                self.fail(
                    &format!("{path}.prefix"),
                    format!(
                        "{:?} is already routed (same host and methods) by an earlier route",
                        r.prefix
                    ),
                );
            }
            let Some(action) = self.action(&path, r, upstreams) else {
                continue;
            };
            routes.push(Route::new(r.prefix.clone(), methods, host, action));
        }
        RouteTable::new(routes)
    }

    fn method(&mut self, path: &str, name: &str) -> Option<Method> {
        let upper = name.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                self.fail(path, format!("{name:?} is not an HTTP method"));
                None
            }
        }
    }

    fn action(
        &mut self,
        path: &str,
        r: &RawRoute,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
    ) -> Option<RouteAction> {
        match (&r.upstream, &r.poll) {
            (Some(name), None) => {
                let Some(upstream) = upstreams.get(name) else {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    self.fail(
                        &format!("{path}.upstream"),
                        format!(
                            "unknown upstream {name:?} (defined: {})",
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    return None;
                };
                let timeout = r.timeout.map_or(defaults::ROUTE_TIMEOUT, |d| d.0);
                if timeout.is_zero() {
                    self.fail(&format!("{path}.timeout"), "must be longer than 0s");
                }
                Some(RouteAction::Proxy {
                    upstream: upstream.clone(),
                    timeout,
                })
            }
            (None, Some(poll)) => {
                if r.timeout.is_some() {
                    self.fail(&format!("{path}.timeout"), "applies to upstream routes only; poll holds are set by poll.default_timeout / poll.max_timeout");
                }
                let cors = poll
                    .cors
                    .as_ref()
                    .map(|c| self.cors(&format!("{path}.poll.cors"), c));
                let client_id = poll
                    .client_id
                    .as_ref()
                    .and_then(|c| self.client_id(&format!("{path}.poll.client_id"), c));
                let authorize = poll
                    .authorize
                    .as_ref()
                    .and_then(|a| self.authorize(&format!("{path}.poll.authorize"), a, upstreams));
                Some(RouteAction::Poll(PollRoute {
                    cors,
                    client_id,
                    authorize,
                }))
            }
            (Some(_), Some(_)) => {
                self.fail(
                    path,
                    "has both `upstream` and `poll`: a route either forwards or holds",
                );
                None
            }
            (None, None) => {
                self.fail(
                    path,
                    "needs `upstream: NAME` (forward) or `poll: {}` (long poll)",
                );
                None
            }
        }
    }

    fn tls(&mut self, raw: &RawTls) -> Option<crate::tls::CertStore> {
        let default = self.cert_pair("tls", &raw.cert, &raw.key);
        let mut by_host = std::collections::HashMap::new();
        for (i, sni) in raw.sni.iter().flatten().enumerate() {
            let path = format!("tls.sni[{i}]");
            if sni.hosts.is_empty() {
                self.fail(&format!("{path}.hosts"), "list at least one host name");
            }
            if let Some(pair) = self.cert_pair(&path, &sni.cert, &sni.key) {
                for host in &sni.hosts {
                    by_host.insert(host.to_ascii_lowercase(), pair.clone());
                }
            }
        }
        Some(crate::tls::CertStore {
            default: default?,
            by_host,
        })
    }

    fn cert_pair(&mut self, path: &str, cert: &str, key: &str) -> Option<crate::tls::LoadedPair> {
        use crate::tls::TlsError;
        match crate::tls::load_pair(std::path::Path::new(cert), std::path::Path::new(key)) {
            Ok(pair) => Some(pair),
            Err(e) => {
                let at = match &e {
                    TlsError::BadKey { .. } | TlsError::Mismatch { .. } => "key",
                    TlsError::Read { path: p, .. } if p.as_os_str() == key => "key",
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
        match (&raw.from, &raw.header) {
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

    fn authorize(
        &mut self,
        path: &str,
        raw: &RawAuthorize,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
    ) -> Option<Authorize> {
        let Some(upstream) = upstreams.get(&raw.upstream) else {
            self.fail(
                &format!("{path}.upstream"),
                format!("unknown upstream {:?}", raw.upstream),
            );
            return None;
        };
        if !raw.path.starts_with('/') || raw.path.contains('?') {
            self.fail(
                &format!("{path}.path"),
                format!("{:?} must start with / and have no query", raw.path),
            );
            return None;
        }
        let timeout = raw.timeout.map_or(defaults::AUTHORIZE_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            self.fail(&format!("{path}.timeout"), "must be longer than 0s");
        }
        Some(Authorize {
            upstream: upstream.clone(),
            path: raw.path.clone(),
            timeout,
            cache: raw.cache.map_or(Duration::ZERO, |d| d.0),
        })
    }

    fn cors(&mut self, path: &str, raw: &RawCors) -> Cors {
        if raw.allow_origins.is_empty() {
            self.fail(
                &format!("{path}.allow_origins"),
                "list at least one origin, like \"https://app.example\"",
            );
        }
        for (i, origin) in raw.allow_origins.iter().enumerate() {
            let ok = origin == "*"
                || origin.parse::<Uri>().is_ok_and(|u| {
                    u.scheme().is_some() && u.authority().is_some() && matches!(u.path(), "" | "/")
                });
            if !ok {
                self.fail(
                    &format!("{path}.allow_origins[{i}]"),
                    format!("{origin:?} is not an origin: write scheme://host[:port] or \"*\""),
                );
            }
        }
        Cors {
            allow_origins: raw
                .allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            allow_headers: raw.allow_headers.clone().unwrap_or_default(),
            max_age: raw.max_age.map_or(defaults::CORS_MAX_AGE, |d| d.0),
            allow_credentials: raw.allow_credentials.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        from_yaml(yaml)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const MINIMAL: &str = "listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\" }\nroutes:\n  - { prefix: /api/poll/, poll: {} }\n";

    #[test]
    fn a_minimal_file_takes_every_default() {
        let c = from_yaml(MINIMAL).unwrap();
        assert_eq!(c.poll.default_timeout, defaults::POLL_DEFAULT_TIMEOUT);
        assert_eq!(c.poll.max_timeout, defaults::POLL_MAX_TIMEOUT);
        assert_eq!(c.buffer.max_size, defaults::BUFFER_MAX_SIZE);
        assert_eq!(c.webhook.max_body, defaults::WEBHOOK_MAX_BODY);
        assert_eq!(c.shutdown.drain_timeout, defaults::SHUTDOWN_DRAIN_TIMEOUT);
        assert_eq!(c.broker, BrokerConfig::Memory);
        assert_eq!(c.server.threads, defaults::threads());
    }

    #[test]
    fn threads_are_counted_from_one() {
        let c = from_yaml(&format!("{MINIMAL}server: {{ threads: 3 }}\n")).unwrap();
        assert_eq!(c.server.threads.get(), 3);
        let e = errors(&format!("{MINIMAL}server: {{ threads: 0 }}\n"));
        assert!(
            e[0].contains("server.threads") && e[0].contains("1 or more"),
            "{e:?}"
        );
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../../config/pollgate.yaml");
        let c = from_yaml(text).unwrap();
        assert_eq!(c.routes.iter().count(), 3);
    }

    #[test]
    fn unknown_keys_are_errors_with_path_and_line() {
        let e =
            errors("listen: \"127.0.0.1:0\"\nroutes:\n  - { prefix: /, poll: {}, colour: red }\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("routes[0]") && e[0].contains("colour") && e[0].contains("line 3"),
            "{e:?}"
        );
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let e = errors("routes:\n  - { prefix: /, upstream: app, timeout: 30 }\n");
        assert!(
            e[0].contains("routes[0].timeout") && e[0].contains("add a unit"),
            "{e:?}"
        );
    }

    #[test]
    fn every_semantic_error_is_reported_at_once_with_its_line() {
        let yaml = "listen: nowhere\nupstreams:\n  app: { url: \"ftp://x\" }\n  ok: { url: \"http://127.0.0.1:1\" }\nroutes:\n  - { prefix: /api/, upstream: ap }\n  - { prefix: api, upstream: ok }\n  - { prefix: /x/ }\n";
        let e = errors(yaml);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e[0].starts_with("listen (line 1)"), "{e:?}");
        assert!(e[1].starts_with("upstreams.app.url (line 3)") && e[1].contains("not supported"));
        assert!(
            e[2].starts_with("routes[0].upstream (line 6)")
                && e[2].contains("unknown upstream \"ap\""),
            "{e:?}"
        );
        assert!(e[3].starts_with("routes[1].prefix (line 7)"), "{e:?}");
        assert!(
            e[4].starts_with("routes[2] (line 8)") && e[4].contains("needs `upstream"),
            "{e:?}"
        );
    }

    #[test]
    fn empty_and_truncated_files_are_invalid() {
        assert_eq!(errors("")[0], "the file is empty");
        assert_eq!(errors("  \n")[0], "the file is empty");
        assert!(!errors("listen: \"127.0.0.1:0\"\n").is_empty(), "no routes");
        assert!(!errors("routes:\n  - { prefix: /api/, upstr").is_empty());
    }

    #[test]
    fn default_timeout_may_not_exceed_max() {
        let e = errors(&format!(
            "{MINIMAL}poll: {{ default_timeout: 90s, max_timeout: 60s }}\n"
        ));
        assert!(e[0].starts_with("poll.default_timeout"), "{e:?}");
    }

    proptest::proptest! {
        /// Fuzz: any text is a config or a list of errors, never a panic.
        #[test]
        fn any_text_is_valid_or_reported(text in ".{0,400}") {
            let _ = from_yaml(&text);
        }

        /// Fuzz: the shipped file cut at any point, or with one byte
        /// changed, is valid or reported (a half-written file is the
        /// common case on reload).
        #[test]
        fn damaged_shipped_configs_are_reported(cut in 0usize..3000, pos in 0usize..3000, byte in 0u8..128) {
            let text = include_str!("../../config/pollgate.yaml");
            let cut = cut.min(text.len());
            let _ = from_yaml(text.get(..cut).unwrap_or(text));
            let mut bytes = text.as_bytes().to_vec();
            let pos = pos.min(bytes.len() - 1);
            bytes[pos] = byte;
            if let Ok(t) = String::from_utf8(bytes) {
                let _ = from_yaml(&t);
            }
        }
    }

    #[test]
    fn a_non_loopback_webhook_needs_a_token() {
        let e = errors(
            "webhook: { listen: \"0.0.0.0:8081\" }\nroutes:\n  - { prefix: /p/, poll: {} }\n",
        );
        assert!(
            e[0].starts_with("webhook.listen") && e[0].contains("webhook.token"),
            "{e:?}"
        );
        let ok = from_yaml("webhook: { listen: \"0.0.0.0:8081\", token: \"0123456789abcdefXYZ\" }\nroutes:\n  - { prefix: /p/, poll: {} }\n");
        let c = ok.unwrap();
        assert!(
            !format!("{c:?}").contains("0123456789abcdefXYZ"),
            "the token never shows in Debug"
        );
        let e = errors("webhook: { token: short }\nroutes:\n  - { prefix: /p/, poll: {} }\n");
        assert!(
            e[0].contains("at least 16") && !e[0].contains("short"),
            "{e:?}"
        );
    }

    #[test]
    fn limits_client_id_and_trusted_proxies_are_checked() {
        let e = errors(&format!("{MINIMAL}limits: {{ max_per_client: 0 }}\nclient_id: {{ from: addr, header: x }}\ntrusted_proxies: [\"10.0.0.0/8\", \"nope\"]\n"));
        assert_eq!(e.len(), 3, "{e:?}");
        let c = from_yaml(&format!("{MINIMAL}trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.1\"]\nclient_id: {{ from: header, header: X-User }}\n")).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(
            c.client_id,
            ClientIdSource::Header(http::HeaderName::from_static("x-user"))
        );
    }

    #[test]
    fn upstream_urls_must_be_plain_origins() {
        let e = errors("upstreams:\n  a: { url: \"http://h:1/base\" }\nroutes:\n  - { prefix: /, upstream: a }\n");
        assert!(
            e.iter().any(|e| e.contains("must not have a path")),
            "{e:?}"
        );
    }
}
