//! Upstream connection pools, one per upstream and serving thread, and
//! each upstream's requests in flight.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::pool::{self, Connector, Pool};
use crate::routes::Upstream;
use crate::tls::{self, Roots};

/// Connection pools per upstream, one per serving thread. Rebuilt on reload,
/// reusing the pools of every upstream whose settings did not change, so a
/// reload does not cost the app a wave of new connections.
///
/// Why one per thread: hyper runs each upstream connection as a task on the
/// runtime that opened it. With one shared pool, a request served on one
/// thread often rode a connection owned by another, and every such request
/// paid a cross-thread wakeup (strace at 2 threads: one eventfd `write` per
/// proxied request).
#[derive(Clone, Default)]
pub struct Clients {
    by_name: HashMap<String, Pools>,
}

/// One upstream's pools, and its requests in flight (over every thread).
#[derive(Clone)]
struct Pools {
    upstream: Arc<Upstream>,
    per_thread: Arc<[Pool]>,
    in_flight: Arc<Semaphore>,
}

impl Clients {
    /// `threads`: how many serving threads pick a pool (`server.threads`).
    pub fn build<'a>(
        upstreams: impl IntoIterator<Item = &'a Arc<Upstream>>,
        previous: Option<&Clients>,
        pool_idle: Duration,
        threads: NonZeroUsize,
    ) -> Clients {
        let threads = threads.get();
        let mut by_name = HashMap::new();
        for up in upstreams {
            if by_name.contains_key(&up.name) {
                continue;
            }
            let reused = previous
                .and_then(|p| p.by_name.get(&up.name))
                .filter(|old| *old.upstream == **up && old.per_thread.len() == threads)
                .cloned();
            let pools = reused.unwrap_or_else(|| Pools {
                upstream: up.clone(),
                per_thread: (0..threads)
                    .map(|_| new_pool(up, pool_idle, threads))
                    .collect(),
                in_flight: Arc::new(Semaphore::new(up.max_in_flight)),
            });
            by_name.insert(up.name.clone(), pools);
        }
        Clients { by_name }
    }

    /// The calling thread's pool for `upstream`, and its in-flight permits.
    pub(super) fn get(&self, upstream: &Upstream) -> Option<(&Pool, &Arc<Semaphore>)> {
        let pools = self.by_name.get(&upstream.name)?;
        let client = pools
            .per_thread
            .get(crate::threads::serving_slot(pools.per_thread.len()))?;
        Some((client, &pools.in_flight))
    }

    /// Closes every pool's connections that have been idle too long (the
    /// sweep's tick).
    pub fn evict_idle(&self, now: tokio::time::Instant) {
        for pools in self.by_name.values() {
            pools.per_thread.iter().for_each(|p| p.evict(now));
        }
    }
}

/// `threads`: idle connections are capped per thread's pool so that, over
/// all threads, an upstream keeps at most `max_in_flight` of them (the
/// descriptor reserve counts on it).
fn new_pool(up: &Upstream, pool_idle: Duration, threads: usize) -> Pool {
    let tls =
        (up.scheme == http::uri::Scheme::HTTPS).then(|| pool::tls_connector(upstream_tls(up)));
    let connector = Connector::new(
        up.scheme.clone(),
        up.authority.clone(),
        up.connect_timeout,
        tls,
    );
    Pool::new(
        connector,
        up.max_in_flight.div_ceil(threads.max(1)),
        pool_idle,
    )
}

/// Verification for an https upstream: its `ca` bundle, else the system's
/// roots. (For a plain http upstream this is built but never used.)
fn upstream_tls(up: &Upstream) -> rustls::ClientConfig {
    let roots = match &up.ca {
        Some(ca) => Roots::Bundle(ca),
        None if up.scheme == http::uri::Scheme::HTTPS => Roots::System,
        None => Roots::Empty,
    };
    let https = matches!(roots, Roots::System);
    let (config, loaded) = tls::client_config(roots);
    if https && loaded == 0 {
        tracing::warn!(upstream = %up.name, "no system root certificates found: set `ca:` for this upstream");
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::{Authority, Scheme};

    fn upstream() -> Arc<Upstream> {
        Arc::new(Upstream {
            name: "app".into(),
            scheme: Scheme::HTTP,
            authority: Authority::from_static("127.0.0.1:9"),
            connect_timeout: Duration::from_secs(1),
            max_in_flight: 8,
            ca_file: None,
            ca: None,
        })
    }

    /// Which of the upstream's pools `get` picks on the calling thread.
    fn picked(clients: &Clients, up: &Upstream) -> Option<usize> {
        let (chosen, _) = clients.get(up)?;
        let pools = &clients.by_name.get(&up.name)?.per_thread;
        pools.iter().position(|p| std::ptr::eq(p, chosen))
    }

    #[test]
    fn each_serving_thread_forwards_through_its_own_pool() {
        let up = upstream();
        let three = NonZeroUsize::new(3).unwrap();
        let clients = Clients::build([&up], None, Duration::from_secs(1), three);
        assert_eq!(clients.by_name["app"].per_thread.len(), 3);
        assert_eq!(
            picked(&clients, &up),
            Some(0),
            "outside the serving threads"
        );
        for n in 1..=4 {
            let (tx, rx) = std::sync::mpsc::channel();
            let (clients, up) = (clients.clone(), up.clone());
            let done = crate::threads::spawn_thread(n, move || async move {
                let _ = tx.send(picked(&clients, &up));
            })
            .unwrap();
            done.blocking_recv().unwrap();
            assert_eq!(rx.recv().unwrap(), Some(n % 3), "serving thread {n}");
        }
    }
}
