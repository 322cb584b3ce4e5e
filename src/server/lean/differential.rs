//! Differential test: the lean parser against hyper itself.
//!
//! Request heads are generated from the pieces that matter for framing
//! (methods, target forms, versions, duplicate and conflicting lengths,
//! transfer codings, connection tokens, obs-fold, bare CR and LF, bad
//! names), each followed by a pipelined second request. Every head goes
//! through `parse` and through hyper's server, built exactly as pollgate
//! builds it, on an in-memory connection. Whenever the lean path would
//! serve a head, hyper must have accepted the same request (method, target,
//! version, headers), with no body, answered it, and then served the second
//! request if and only if the lean path keeps the connection. Whatever the
//! lean path does not serve it hands to hyper, so those agree by
//! construction; the test checks that both kinds are well represented.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{parse, Parsed};

const SECOND: &[u8] = b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n";

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body_len: usize,
}

/// What hyper did with `bytes`: the requests it handed to the service, and
/// the statuses it answered with, in order.
async fn hyper_on(bytes: &[u8]) -> (Vec<Seen>, Vec<u16>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body_len = body
                .collect()
                .await
                .map_or(usize::MAX, |b| b.to_bytes().len());
            record.lock().push(Seen {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
                body_len,
            });
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    });
    let out = crate::server::hyper_h1::serve(bytes, |io| io, service).await;
    let statuses = crate::server::hyper_h1::statuses(&out);
    let seen = seen.lock().clone();
    (seen, statuses)
}

fn heads() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        16 => Just("GET"),
        2 => Just("HEAD"),
        1 => Just("POST"),
        1 => Just("get"),
        1 => Just("OPTIONS"),
    ];
    let target = prop_oneof![
        16 => Just("/p/x"),
        3 => Just("/p/x?since=1.5&timeout=0"),
        1 => Just("http://h/p/x"),
        1 => Just("*"),
        1 => Just("p/x"),
        1 => Just("//p/x"),
        1 => Just("/p/%ZZ"),
        1 => Just("/p/x y"),
        1 => Just("/p/\u{e9}"),
    ];
    let version = prop_oneof![
        16 => Just("HTTP/1.1"),
        3 => Just("HTTP/1.0"),
        1 => Just("HTTP/2.0"),
        1 => Just("HTTP/1.2"),
        1 => Just("http/1.1"),
    ];
    let header = prop_oneof![
        30 => Just("Host: a"),
        1 => Just("Host: b:8080"),
        6 => Just("Content-Length: 0"),
        1 => Just("content-length: 0"),
        1 => Just("Content-Length: 40"),
        1 => Just("Content-Length: 00"),
        1 => Just("Content-Length: +0"),
        1 => Just("Content-Length: 0, 0"),
        1 => Just("Transfer-Encoding: chunked"),
        1 => Just("Transfer-Encoding: gzip"),
        1 => Just("Transfer-Encoding: gzip, chunked"),
        6 => Just("Connection: close"),
        6 => Just("Connection: keep-alive"),
        1 => Just("Connection: Keep-Alive, close"),
        1 => Just("Connection: upgrade"),
        1 => Just("Upgrade: websocket"),
        1 => Just("Expect: 100-continue"),
        1 => Just("X-Fold: a\r\n b"),
        1 => Just("X-Cr: a\rb"),
        1 => Just("Bad Name: x"),
        1 => Just(":x: y"),
        1 => Just("X-Obs: caf\u{e9}"),
        1 => Just("X-Empty:"),
        1 => Just("X-Sp : a"),
        30 => Just("Accept: */*"),
    ];
    let eol = prop_oneof![12 => Just("\r\n"), 1 => Just("\n")];
    // A few headers, or about as many as both parsers take (100).
    let headers = prop_oneof![
        12 => proptest::collection::vec((header, eol.clone()), 0..5),
        1 => (97usize..104).prop_map(|n| vec![("X-Many: yes", "\r\n"); n]),
    ];
    (method, target, version, headers, eol.clone(), eol).prop_map(
        |(method, target, version, headers, line_end, last)| {
            let mut head = format!("{method} {target} {version}{line_end}");
            for (h, end) in headers {
                head.push_str(h);
                head.push_str(end);
            }
            head.push_str(last);
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(SECOND);
            bytes
        },
    )
}

#[test]
fn the_lean_parser_serves_only_what_hyper_serves_the_same_way() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = Mutex::new((0usize, 0usize));
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&heads(), |bytes| {
        let (seen, statuses) = runtime.block_on(hyper_on(&bytes));
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        match parse(&bytes) {
            Parsed::Head(lean) => {
                counts.lock().0 += 1;
                let first = seen.first();
                prop_assert!(
                    first.is_some(),
                    "hyper refused what lean serves: {shown:?} {statuses:?}"
                );
                let first = first.unwrap();
                prop_assert_eq!(&first.method, lean.req.method(), "{:?}", shown);
                prop_assert_eq!(&first.uri, lean.req.uri(), "{:?}", shown);
                prop_assert_eq!(first.version, lean.req.version(), "{:?}", shown);
                prop_assert_eq!(&first.headers, lean.req.headers(), "{:?}", shown);
                prop_assert_eq!(first.body_len, 0, "{:?}", shown);
                prop_assert_eq!(statuses.first(), Some(&200), "{:?}", shown);
                let served_second = seen.iter().any(|s| s.uri.path() == "/second");
                prop_assert_eq!(
                    served_second,
                    lean.keep_alive,
                    "keep-alive differs: {:?}",
                    shown
                );
            }
            Parsed::NotLean => counts.lock().1 += 1,
            // Every generated head is complete; httparse only says partial
            // for one it cannot finish, which hyper then waits on too.
            Parsed::Partial => {}
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (served, handed) = *counts.lock();
    assert!(
        served > 200,
        "the generator must reach the lean path: {served}"
    );
    assert!(handed > 200, "and what it hands over: {handed}");
}
