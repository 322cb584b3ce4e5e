//! Hot reload: the config file is watched and swapped atomically.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::*;

fn two_upstreams(a: std::net::SocketAddr, b: std::net::SocketAddr, target: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nupstreams:\n  a: {{ url: \"http://{a}\" }}\n  b: {{ url: \"http://{b}\" }}\nroutes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n  - {{ prefix: /api/, upstream: {target} }}\n"
    )
}

#[tokio::test]
async fn a_route_moved_to_another_upstream_applies_live() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut pg = Pollgate::start(&two_upstreams(a.addr, b.addr, "a")).await;
    assert_eq!(get(&pg.url("/api/x")).await.json()["upstream"], "a");
    // A held poll started under the old config must survive the swap.
    let held = tokio::spawn({
        let url = pg.url("/api/poll/r?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    let stats = pg.rewrite(&two_upstreams(a.addr, b.addr, "b")).await;
    assert_eq!((stats.ok, stats.failed, stats.generation), (1, 0, 1));
    assert_eq!(get(&pg.url("/api/x")).await.json()["upstream"], "b");
    pg.publish("r", serde_json::json!({"after": "reload"}))
        .await;
    assert_eq!(held.await.unwrap().json()["data"]["after"], "reload");
}

#[tokio::test]
async fn an_invalid_file_is_rejected_and_the_old_config_stays() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut pg = Pollgate::start(&two_upstreams(a.addr, b.addr, "a")).await;
    for bad in [
        two_upstreams(a.addr, b.addr, "nope"),
        String::new(),
        "routes:\n  - { prefix: /api/, upstr".to_owned(),
        "listen: [".to_owned(),
    ] {
        let stats = pg.rewrite(&bad).await;
        assert_eq!(stats.ok, 0);
        assert_eq!(
            get(&pg.url("/api/x")).await.json()["upstream"],
            "a",
            "still on the old config"
        );
    }
    assert_eq!(pg.reloads.borrow().failed, 4);
}

#[tokio::test]
async fn requests_never_fail_while_the_file_is_rewritten_twenty_times() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut pg = Pollgate::start(&two_upstreams(a.addr, b.addr, "a")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let url = pg.url("/api/load");
            tokio::spawn(async move {
                // One keep-alive client per loop: connections survive the reloads too.
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get(&url).body(Default::default()).unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for i in 0..20 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        let stats = pg.rewrite(&two_upstreams(a.addr, b.addr, target)).await;
        assert_eq!(stats.failed, 0);
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "the loops ran: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(pg.reloads.borrow().ok, 20);
}
