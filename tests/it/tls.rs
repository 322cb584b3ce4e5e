//! TLS termination with certificates generated at test time.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::certs::{Ca, Leaf};
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

struct Site {
    ca: Ca,
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            ca: Ca::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A config whose default certificate is `default` and whose SNI entry
    /// serves `api.example.com` from `api`.
    fn yaml(&self, default: &Leaf, api: &Leaf, upstream: Option<SocketAddr>) -> String {
        let (cert, key) = default.write(self.dir.path(), "default");
        let (api_cert, api_key) = api.write(self.dir.path(), "api");
        let base = yaml(upstream, "");
        format!(
            "{base}tls:\n  cert: {}\n  key: {}\n  sni: [{{ hosts: [\"api.example.com\"], cert: {}, key: {} }}]\nlimits: {{ max_per_client: 100 }}\n",
            cert.display(),
            key.display(),
            api_cert.display(),
            api_key.display()
        )
    }
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn h1_get(stream: TlsStream<TcpStream>, path: &str) -> (u16, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_over_http1_reaches_the_upstream_with_proto_https() {
    let site = Site::new();
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&site.yaml(
        &site.ca.leaf(&["localhost"]),
        &site.ca.leaf(&["api.example.com"]),
        Some(up.addr),
    ))
    .await;
    let stream = site
        .ca
        .connect(pg.public, "localhost", &[b"http/1.1"])
        .await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = h1_get(stream, "/api/secure?x=1").await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["query"], "x=1");
}

#[tokio::test]
async fn many_polls_share_one_http2_connection_and_get_the_publish() {
    let site = Site::new();
    let pg = Pollgate::start(&site.yaml(
        &site.ca.leaf(&["localhost"]),
        &site.ca.leaf(&["api.example.com"]),
        None,
    ))
    .await;
    let stream = site
        .ca
        .connect(pg.public, "localhost", &[b"h2", b"http/1.1"])
        .await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let polls: Vec<_> = (0..20)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move {
                let uri = format!("https://localhost/api/poll/h2c{}?timeout=30", i % 2);
                let resp = send
                    .send_request(Request::get(uri).body(Full::<Bytes>::default()).unwrap())
                    .await
                    .unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            })
        })
        .collect();
    pg.held(20).await;
    pg.publish("h2c0", serde_json::json!({"n": 0})).await;
    pg.publish("h2c1", serde_json::json!({"n": 1})).await;
    for (i, p) in polls.into_iter().enumerate() {
        let body = p.await.unwrap();
        assert_eq!(body["data"]["n"], (i % 2) as i64);
    }
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let site = Site::new();
    let default = site.ca.leaf(&["localhost"]);
    let api = site.ca.leaf(&["api.example.com"]);
    let pg = Pollgate::start(&site.yaml(&default, &api, None)).await;
    let s = site.ca.connect(pg.public, "api.example.com", &[]).await;
    assert_eq!(presented(&s), api.der);
    let s = site.ca.connect(pg.public, "localhost", &[]).await;
    assert_eq!(presented(&s), default.der);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_handshakes() {
    let site = Site::new();
    let first = site.ca.leaf(&["localhost"]);
    let mut pg =
        Pollgate::start(&site.yaml(&first, &site.ca.leaf(&["api.example.com"]), None)).await;
    let open = site
        .ca
        .connect(pg.public, "localhost", &[b"http/1.1"])
        .await;
    assert_eq!(presented(&open), first.der);

    // certbot-style renewal: new files written over the old ones.
    let renewed = site.ca.leaf(&["localhost"]);
    let before = *pg.reloads.borrow_and_update();
    renewed.write(site.dir.path(), "default");
    let changed = pg.reloads.wait_for(|s| s.ok > before.ok);
    tokio::time::timeout(Duration::from_secs(5), changed)
        .await
        .expect("no reload within 5 s")
        .unwrap();
    let fresh = site.ca.connect(pg.public, "localhost", &[]).await;
    assert_eq!(presented(&fresh), renewed.der);
    // The connection opened before the renewal is untouched.
    let (status, _) = h1_get(open, "/api/poll/x?timeout=0").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_bad_renewal_is_rejected_and_the_old_certificate_stays() {
    let site = Site::new();
    let first = site.ca.leaf(&["localhost"]);
    let mut pg =
        Pollgate::start(&site.yaml(&first, &site.ca.leaf(&["api.example.com"]), None)).await;
    let before = *pg.reloads.borrow_and_update();
    // A key that does not belong to the certificate.
    let other = site.ca.leaf(&["localhost"]);
    std::fs::write(site.dir.path().join("default.key"), &other.key_pem).unwrap();
    let changed = pg.reloads.wait_for(|s| s.failed > before.failed);
    tokio::time::timeout(Duration::from_secs(5), changed)
        .await
        .expect("no reload attempt")
        .unwrap();
    let s = site.ca.connect(pg.public, "localhost", &[]).await;
    assert_eq!(presented(&s), first.der);
}

#[test]
fn bad_files_are_reported_by_check() {
    let site = Site::new();
    let good = site.ca.leaf(&["localhost"]);
    let (cert, key) = good.write(site.dir.path(), "good");
    let other = site.ca.leaf(&["localhost"]);
    let (_, other_key) = other.write(site.dir.path(), "other");
    let (expired_cert, expired_key) = site
        .ca
        .expired_leaf(&["localhost"])
        .write(site.dir.path(), "expired");
    let garbage = site.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\nxx\n").unwrap();
    let missing = site.dir.path().join("missing.pem");
    let cases = [
        (missing.clone(), key.clone(), "cannot read"),
        (garbage.clone(), key.clone(), "no PEM certificate"),
        (cert.clone(), garbage.clone(), "not a PEM private key"),
        (cert.clone(), other_key.clone(), "does not match"),
        (expired_cert.clone(), expired_key.clone(), "expired"),
    ];
    for (c, k, expect) in cases {
        let path = site.dir.path().join("pollgate.yaml");
        std::fs::write(
            &path,
            format!(
                "{}tls: {{ cert: {}, key: {} }}\n",
                yaml(None, ""),
                c.display(),
                k.display()
            ),
        )
        .unwrap();
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1), "{expect}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect) && err.contains("tls."),
            "{expect}: {err}"
        );
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_its_ca() {
    let site = Site::new();
    let leaf = site.ca.leaf(&["localhost"]);
    let up = crate::support::upstream::Upstream::start_tls("secure", &leaf).await;
    let ca_file = site.dir.path().join("ca.pem");
    std::fs::write(&ca_file, site.ca.pem()).unwrap();
    let config = format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nupstreams:\n  app: {{ url: \"https://localhost:{}\", ca: {} }}\nroutes:\n  - {{ prefix: /, upstream: app }}\n",
        up.addr.port(),
        ca_file.display()
    );
    let pg = Pollgate::start(&config).await;
    let reply = get(&pg.url("/over-tls")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["upstream"], "secure");

    // The same upstream with another CA is refused (502), not trusted blindly.
    let stranger = Ca::new();
    std::fs::write(&ca_file, stranger.pem()).unwrap();
    let pg = Pollgate::start(&config).await;
    assert_eq!(get(&pg.url("/over-tls")).await.status, 502);
}
