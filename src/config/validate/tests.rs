//! The validator as a spec: what a file may say, and how each mistake is reported.

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
    assert_eq!(c.webhook.max_body as u64, defaults::WEBHOOK_MAX_BODY);
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
    let text = include_str!("../../../config/pollgate.yaml");
    let c = from_yaml(text).unwrap();
    assert_eq!(c.routes.iter().count(), 3);
}

#[test]
fn unknown_keys_are_errors_with_path_and_line() {
    let e = errors("listen: \"127.0.0.1:0\"\nroutes:\n  - { prefix: /, poll: {}, colour: red }\n");
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
        e[2].starts_with("routes[0].upstream (line 6)") && e[2].contains("unknown upstream \"ap\""),
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
        let text = include_str!("../../../config/pollgate.yaml");
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
    let e =
        errors("webhook: { listen: \"0.0.0.0:8081\" }\nroutes:\n  - { prefix: /p/, poll: {} }\n");
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
    let e = errors(
        "upstreams:\n  a: { url: \"http://h:1/base\" }\nroutes:\n  - { prefix: /, upstream: a }\n",
    );
    assert!(
        e.iter().any(|e| e.contains("must not have a path")),
        "{e:?}"
    );
}

#[test]
fn a_bad_list_item_hides_neither_its_neighbours_errors_nor_adds_false_ones() {
    let e = errors(
        "routes:\n  - 5\n  - { prefix: /a/, upstream: nope }\n  - { prefix: /b/, timeout: 30, upstream: app }\nupstreams:\n  app: 5\n",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e[0].starts_with("routes[0] (line 2)"), "{e:?}");
    assert!(
        e[1].starts_with("routes[1].upstream (line 3)")
            && e[1].contains("unknown upstream \"nope\""),
        "{e:?}"
    );
    assert!(e[2].starts_with("routes[2].timeout (line 4)"), "{e:?}");
    assert!(e[3].starts_with("upstreams.app (line 6)"), "{e:?}");
    // `app` is declared, if broken: routes[2] naming it is not reported again.
    assert!(
        !e.iter().any(|e| e.contains("unknown upstream \"app\"")),
        "{e:?}"
    );
}

#[test]
fn grip_routes_are_checked_key_by_key() {
    let head = "listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\" }\nupstreams:\n  app: { url: \"http://127.0.0.1:3000\" }\nroutes:\n";
    let c = from_yaml(&format!(
        "{head}  - {{ prefix: /, upstream: app, grip: {{ sig_key: k, sig_iss: me, default_timeout: 20s }} }}\n"
    ))
    .unwrap();
    let route = c.routes.iter().next().unwrap();
    let crate::routes::RouteAction::Proxy { grip: Some(g), .. } = &route.action else {
        panic!("not a GRIP route");
    };
    assert!(g.signer.is_some());
    assert_eq!(
        (g.default_timeout, g.min_timeout, g.stream_max),
        (
            std::time::Duration::from_secs(20),
            defaults::GRIP_MIN_TIMEOUT,
            defaults::GRIP_STREAM_MAX
        )
    );
    for (route, path, says) in [
        (
            "{ prefix: /p/, poll: {}, grip: {} }",
            "routes[0].grip",
            "upstream routes only",
        ),
        (
            "{ prefix: /, upstream: app, grip: { sig_key: a, sig_key_env: B } }",
            "routes[0].grip.sig_key",
            "not both",
        ),
        (
            "{ prefix: /, upstream: app, grip: { sig_key_env: POLLGATE_SURELY_UNSET_VAR } }",
            "routes[0].grip.sig_key_env",
            "not set",
        ),
        (
            "{ prefix: /, upstream: app, grip: { sig_iss: me } }",
            "routes[0].grip.sig_iss",
            "needs sig_key",
        ),
        (
            "{ prefix: /, upstream: app, grip: { min_timeout: 9s, default_timeout: 5s } }",
            "routes[0].grip.min_timeout",
            "default_timeout",
        ),
        (
            "{ prefix: /, upstream: app, grip: { hold: forever } }",
            "routes[0].grip",
            "hold",
        ),
    ] {
        let e = errors(&format!("{head}  - {route}\n"));
        assert!(
            e.iter().any(|e| e.contains(path) && e.contains(says)),
            "{route}: {e:?}"
        );
    }
}

#[test]
fn sse_durations_are_bounded_and_a_listed_cors_allows_last_event_id() {
    let e = errors(&format!(
        "{MINIMAL}poll: {{ sse_heartbeat: 1ms, sse_max_duration: 30d }}\n"
    ));
    assert!(e.iter().any(|e| e.contains("poll.sse_heartbeat")), "{e:?}");
    assert!(
        e.iter().any(|e| e.contains("poll.sse_max_duration")),
        "{e:?}"
    );
    let cors = |route: &str| {
        let c = from_yaml(&format!(
            "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nroutes:\n  - {route}\n"
        ))
        .unwrap();
        let route = c.routes.iter().next().unwrap().clone();
        match &route.action {
            crate::routes::RouteAction::Poll(p) => p.cors.clone().unwrap().allow_headers,
            other => panic!("{other:?}"),
        }
    };
    let listed =
        "{ prefix: /p/, poll: { cors: { allow_origins: [\"*\"], allow_headers: [X-A] } } }";
    assert_eq!(cors(listed), ["X-A", "Last-Event-ID"]);
    let echoed = "{ prefix: /p/, poll: { cors: { allow_origins: [\"*\"] } } }";
    assert!(cors(echoed).is_empty(), "echoes what the browser asks");
    let no_sse = "{ prefix: /p/, poll: { sse: false, cors: { allow_origins: [\"*\"], allow_headers: [X-A] } } }";
    assert_eq!(cors(no_sse), ["X-A"]);
}
