//! Upstreams and routes: the part of the file that says where each
//! request goes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Scheme, Uri};
use http::Method;

use super::super::raw::{RawAuthorize, RawCors, RawGrip, RawRoute, RawUpstream};
use super::Validator;
use crate::defaults;
use crate::grip::{GripRoute, Signer};
use crate::routes::{Authorize, Cors, PollRoute, Route, RouteAction, RouteTable, Upstream};

/// Upstreams by name; `None` for one the file declares but that has an
/// error of its own (already reported), so that routes naming it are not
/// reported again.
pub(super) type Upstreams = BTreeMap<String, Option<Arc<Upstream>>>;

impl Validator {
    pub(super) fn upstreams(&mut self, raw: &BTreeMap<String, RawUpstream>) -> Upstreams {
        let mut out = BTreeMap::new();
        for (name, up) in raw {
            out.insert(name.clone(), self.upstream(name, up).map(Arc::new));
        }
        // An upstream the shape stage took out is declared all the same:
        // routes naming it are not reported again.
        for gone in &self.removed {
            if let Some(name) = gone.strip_prefix("upstreams.").filter(|n| !n.contains('.')) {
                out.entry(name.to_owned()).or_insert(None);
            }
        }
        out
    }

    fn upstream(&mut self, name: &str, up: &RawUpstream) -> Option<Upstream> {
        let path = format!("upstreams.{name}");
        let connect_timeout = up
            .connect_timeout
            .map_or(defaults::CONNECT_TIMEOUT, |d| d.0);
        self.positive(&format!("{path}.connect_timeout"), connect_timeout);
        let max_in_flight = up.max_in_flight.unwrap_or(defaults::UPSTREAM_MAX_IN_FLIGHT);
        if !(1..=defaults::MAX_CAP).contains(&max_in_flight) {
            self.fail(
                &format!("{path}.max_in_flight"),
                format!("must be from 1 to {}", defaults::MAX_CAP),
            );
        }
        let url = self.required(
            &format!("{path}.url"),
            &up.url,
            "the app's address, like \"http://127.0.0.1:3000\"",
        )?;
        let (scheme, authority) = self.upstream_url(&format!("{path}.url"), url)?;
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
        Some(Upstream {
            name: name.to_owned(),
            scheme,
            authority,
            connect_timeout,
            max_in_flight: max_in_flight.clamp(1, defaults::MAX_CAP),
            ca_file,
            ca,
        })
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

    pub(super) fn routes(&mut self, raw: &[RawRoute], upstreams: &Upstreams) -> RouteTable {
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
            let prefix = self
                .required(
                    &format!("{path}.prefix"),
                    &r.prefix,
                    "the path prefix, like /api/",
                )
                .cloned();
            if let Some(prefix) = prefix.as_ref().filter(|p| !p.starts_with('/')) {
                self.fail(
                    &format!("{path}.prefix"),
                    format!("{prefix:?} must start with /"),
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
            if !seen.insert((prefix.clone(), host.clone(), method_key)) {
                self.fail(
                    &format!("{path}.prefix"),
                    format!(
                        "{:?} is already routed (same host and methods) by an earlier route",
                        prefix.as_deref().unwrap_or_default()
                    ),
                );
            }
            let action = self.action(&path, r, upstreams);
            let (Some(prefix), Some(action)) = (prefix, action) else {
                continue;
            };
            routes.push(Route::new(prefix, methods, host, action));
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

    fn action(&mut self, path: &str, r: &RawRoute, upstreams: &Upstreams) -> Option<RouteAction> {
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
                self.positive(&format!("{path}.timeout"), timeout);
                // Declared but broken: its own error says why.
                let grip = r
                    .grip
                    .as_ref()
                    .and_then(|g| self.grip(&format!("{path}.grip"), g))
                    .map(Arc::new);
                let upstream = upstream.clone()?;
                Some(RouteAction::Proxy {
                    upstream,
                    timeout,
                    grip,
                })
            }
            (None, Some(poll)) => {
                if r.timeout.is_some() {
                    self.fail(&format!("{path}.timeout"), "applies to upstream routes only; poll holds are set by poll.default_timeout / poll.max_timeout");
                }
                if r.grip.is_some() {
                    self.fail(&format!("{path}.grip"), "applies to upstream routes only: GRIP holds are asked for by the app's answers");
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
                let sse = poll.sse.unwrap_or(true);
                let cors = cors.map(|mut c: Cors| {
                    // A cross-origin `EventSource` reconnects with
                    // `Last-Event-ID`, which a preflight must allow (a
                    // listed `allow_headers` would refuse it unnamed).
                    let listed = c
                        .allow_headers
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case("last-event-id"));
                    if sse && !c.allow_headers.is_empty() && !listed {
                        c.allow_headers.push("Last-Event-ID".to_owned());
                    }
                    c
                });
                Some(RouteAction::Poll(PollRoute {
                    cors,
                    client_id,
                    authorize,
                    sse,
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

    fn grip(&mut self, path: &str, raw: &RawGrip) -> Option<GripRoute> {
        let key = match (&raw.sig_key, &raw.sig_key_env) {
            (Some(_), Some(_)) => {
                self.fail(
                    &format!("{path}.sig_key"),
                    "set either sig_key or sig_key_env, not both",
                );
                return None;
            }
            (Some(key), None) if key.is_empty() => {
                self.fail(&format!("{path}.sig_key"), "is empty");
                return None;
            }
            (Some(key), None) => Some(key.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => Some(key),
                _ => {
                    self.fail(
                        &format!("{path}.sig_key_env"),
                        format!("environment variable {var:?} is not set (or empty)"),
                    );
                    return None;
                }
            },
            (None, None) => None,
        };
        if raw.sig_iss.is_some() && key.is_none() {
            self.fail(
                &format!("{path}.sig_iss"),
                "names the issuer of Grip-Sig, which needs sig_key or sig_key_env",
            );
        }
        let signer = key.map(|key| {
            let iss = raw.sig_iss.clone();
            Signer::new(
                key.as_bytes(),
                iss.unwrap_or_else(|| defaults::GRIP_SIG_ISS.to_owned()),
            )
        });
        let default_timeout = raw
            .default_timeout
            .map_or(defaults::GRIP_DEFAULT_TIMEOUT, |d| d.0);
        let min_timeout = raw.min_timeout.map_or(defaults::GRIP_MIN_TIMEOUT, |d| d.0);
        let stream_max = raw.stream_max.map_or(defaults::GRIP_STREAM_MAX, |d| d.0);
        self.positive(&format!("{path}.default_timeout"), default_timeout);
        self.positive(&format!("{path}.min_timeout"), min_timeout);
        self.positive(&format!("{path}.stream_max"), stream_max);
        if stream_max > defaults::GRIP_STREAM_MAX_LIMIT {
            self.fail(
                &format!("{path}.stream_max"),
                format!(
                    "must be at most {}",
                    humantime::format_duration(defaults::GRIP_STREAM_MAX_LIMIT)
                ),
            );
        }
        if min_timeout > default_timeout {
            self.fail(
                &format!("{path}.min_timeout"),
                "must not be above default_timeout",
            );
        }
        Some(GripRoute {
            signer,
            default_timeout,
            min_timeout,
            stream_max,
        })
    }

    fn authorize(
        &mut self,
        path: &str,
        raw: &RawAuthorize,
        upstreams: &Upstreams,
    ) -> Option<Authorize> {
        let name = self.required(
            &format!("{path}.upstream"),
            &raw.upstream,
            "the upstream to ask",
        );
        let check = self.required(
            &format!("{path}.path"),
            &raw.path,
            "the path to ask, like /auth/poll",
        );
        let upstream = match name.map(|n| (n, upstreams.get(n))) {
            Some((_, Some(known))) => known.clone(),
            Some((name, None)) => {
                self.fail(
                    &format!("{path}.upstream"),
                    format!("unknown upstream {name:?}"),
                );
                None
            }
            None => None,
        };
        let check = check?;
        if !check.starts_with('/') || check.contains('?') {
            self.fail(
                &format!("{path}.path"),
                format!("{check:?} must start with / and have no query"),
            );
            return None;
        }
        let timeout = raw.timeout.map_or(defaults::AUTHORIZE_TIMEOUT, |d| d.0);
        self.positive(&format!("{path}.timeout"), timeout);
        Some(Authorize {
            upstream: upstream?,
            path: check.clone(),
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
