//! The route table: which route serves a request. Pure and synchronous, so
//! the matching rules are unit-tested here without a socket.
//!
//! Rules (nginx `location` prefix semantics, plus Envoy-style method/host
//! guards): among routes whose `host` (if any) and `methods` (if any) accept
//! the request, the longest `prefix` wins; on a tie a route with a `host`
//! beats one without, then the earlier route in the file wins.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Method;

/// One upstream application pollgate forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The key under `upstreams:` in the config.
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    pub connect_timeout: Duration,
    /// Requests in flight at once; more are shed (503).
    pub max_in_flight: usize,
    /// `ca:` bundle for an https upstream (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    pub ca: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

/// What a matched route does with the request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to an upstream; `timeout` bounds the wait for its response head.
    Proxy {
        upstream: Arc<Upstream>,
        timeout: Duration,
        /// `grip:`: the app may answer with GRIP instructions.
        grip: Option<Arc<crate::grip::GripRoute>>,
    },
    /// Hold on the broker: the rest of the path after the prefix is the channel.
    Poll(PollRoute),
}

/// Settings of one poll route.
#[derive(Debug, Clone)]
pub struct PollRoute {
    pub cors: Option<Cors>,
    /// Overrides the top-level `client_id`.
    pub client_id: Option<crate::poll::ClientIdSource>,
    pub authorize: Option<Authorize>,
    /// `poll.sse`: a `GET` that accepts `text/event-stream` is answered
    /// with an event stream (else every request is a long poll).
    pub sse: bool,
}

/// Ask the app whether a client may poll a channel (nginx's auth_request).
#[derive(Debug, Clone)]
pub struct Authorize {
    pub upstream: Arc<Upstream>,
    /// Path the check is sent to, as `GET {path}?channel={channel}`.
    pub path: String,
    pub timeout: Duration,
    /// How long a 2xx for (client, credentials, channel) is remembered; 0 = never.
    pub cache: Duration,
}

/// CORS answer for a poll route (browsers on another origin poll through us).
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins, or a single `*`.
    pub allow_origins: Vec<String>,
    pub allow_headers: Vec<String>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

impl Cors {
    /// The value for `Access-Control-Allow-Origin`, if `origin` may read.
    pub fn allowed_origin<'a>(&'a self, origin: &'a str) -> Option<&'a str> {
        if self.allow_origins.iter().any(|o| o == origin) {
            Some(origin)
        } else if self.allow_origins.iter().any(|o| o == "*") {
            // With credentials the browser refuses `*`, so echo the origin.
            Some(if self.allow_credentials { origin } else { "*" })
        } else {
            None
        }
    }
}

/// One entry of `routes:`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `[host]prefix`: the route's name in logs and metrics labels.
    pub name: String,
    pub prefix: String,
    /// `None` accepts every method.
    pub methods: Option<Vec<Method>>,
    /// Lower-case host without port; `None` accepts every host.
    pub host: Option<String>,
    pub action: RouteAction,
}

impl Route {
    pub fn new(
        prefix: String,
        methods: Option<Vec<Method>>,
        host: Option<String>,
        action: RouteAction,
    ) -> Route {
        let name = match &host {
            Some(h) => format!("{h}{prefix}"),
            None => prefix.clone(),
        };
        Route {
            name,
            prefix,
            methods,
            host,
            action,
        }
    }

    fn accepts_host(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        }
    }

    fn accepts_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No prefix matches the path (for this host).
    NotFound,
    /// Routes match the path but none accepts the method; the `Allow` list.
    MethodNotAllowed(Vec<Method>),
}

/// All routes, in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route for a request. `host` is the request's host without port.
    pub fn find(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
    ) -> Result<&Arc<Route>, NoRoute> {
        let mut best: Option<&Arc<Route>> = None;
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        for route in &self.routes {
            if !path.starts_with(route.prefix.as_str()) || !route.accepts_host(host) {
                continue;
            }
            path_matched = true;
            if !route.accepts_method(method) {
                allowed.extend(route.methods.iter().flatten().cloned());
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    route.prefix.len() > b.prefix.len()
                        || (route.prefix.len() == b.prefix.len()
                            && route.host.is_some()
                            && b.host.is_none())
                }
            };
            if better {
                best = Some(route);
            }
        }
        match best {
            Some(route) => Ok(route),
            None if path_matched => {
                allowed.dedup();
                Err(NoRoute::MethodNotAllowed(allowed))
            }
            None => Err(NoRoute::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> Arc<Upstream> {
        Arc::new(Upstream {
            name: name.into(),
            scheme: Scheme::HTTP,
            authority: Authority::from_static("127.0.0.1:1"),
            connect_timeout: Duration::from_secs(1),
            max_in_flight: 8,
            ca_file: None,
            ca: None,
        })
    }

    fn proxy(prefix: &str, up: &str) -> Route {
        let action = RouteAction::Proxy {
            upstream: upstream(up),
            timeout: Duration::from_secs(1),
            grip: None,
        };
        Route::new(prefix.into(), None, None, action)
    }

    fn target(table: &RouteTable, method: Method, host: Option<&str>, path: &str) -> String {
        match table.find(&method, host, path) {
            Ok(route) => match &route.action {
                RouteAction::Proxy { upstream, .. } => upstream.name.clone(),
                RouteAction::Poll(_) => "poll".into(),
            },
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_file_order() {
        let table = RouteTable::new(vec![
            proxy("/", "root"),
            proxy("/api/", "api"),
            Route::new(
                "/api/poll/".into(),
                None,
                None,
                RouteAction::Poll(PollRoute {
                    cors: None,
                    client_id: None,
                    authorize: None,
                    sse: true,
                }),
            ),
        ]);
        assert_eq!(target(&table, Method::GET, None, "/api/poll/news"), "poll");
        assert_eq!(target(&table, Method::GET, None, "/api/users"), "api");
        assert_eq!(target(&table, Method::GET, None, "/api"), "root");
        assert_eq!(target(&table, Method::GET, None, "/index.html"), "root");
    }

    #[test]
    fn no_prefix_is_not_found() {
        let table = RouteTable::new(vec![proxy("/api/", "api")]);
        assert_eq!(target(&table, Method::GET, None, "/other"), "NotFound");
    }

    #[test]
    fn methods_guard_a_route_and_fall_through_to_a_shorter_one() {
        let mut writes = proxy("/api/", "writes");
        writes.methods = Some(vec![Method::POST, Method::PUT]);
        let table = RouteTable::new(vec![writes.clone(), proxy("/", "root")]);
        assert_eq!(target(&table, Method::POST, None, "/api/x"), "writes");
        assert_eq!(target(&table, Method::GET, None, "/api/x"), "root");

        let only = RouteTable::new(vec![writes]);
        assert_eq!(
            only.find(&Method::GET, None, "/api/x").unwrap_err(),
            NoRoute::MethodNotAllowed(vec![Method::POST, Method::PUT])
        );
    }

    #[test]
    fn a_host_route_beats_a_hostless_one_of_equal_prefix() {
        let mut admin = proxy("/", "admin");
        admin.host = Some("admin.example".into());
        let table = RouteTable::new(vec![proxy("/", "root"), admin]);
        assert_eq!(
            target(&table, Method::GET, Some("ADMIN.example"), "/"),
            "admin"
        );
        assert_eq!(
            target(&table, Method::GET, Some("www.example"), "/"),
            "root"
        );
        assert_eq!(target(&table, Method::GET, None, "/"), "root");
    }

    #[test]
    fn cors_matches_exact_origins_or_star() {
        let mut cors = Cors {
            allow_origins: vec!["https://app.example".into()],
            allow_headers: vec![],
            max_age: Duration::from_secs(60),
            allow_credentials: false,
        };
        assert_eq!(
            cors.allowed_origin("https://app.example"),
            Some("https://app.example")
        );
        assert_eq!(cors.allowed_origin("https://evil.example"), None);
        cors.allow_origins.push("*".into());
        assert_eq!(cors.allowed_origin("https://evil.example"), Some("*"));
    }
}
