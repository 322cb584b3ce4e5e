//! Differential tests: the follower against hyper and h2 themselves.
//!
//! HTTP/1: streams of pipelined requests are generated from the pieces
//! that matter for framing (lengths, codings, chunk sizes and extensions,
//! trailers, both headers at once, upgrades), each request with a path of
//! its own. Each stream goes through hyper's server, built as pollgate
//! builds it, behind [`Inbound`], with a handler that refuses a request as
//! pollgate's does. The follower must have judged the same heads, in the
//! same order, as hyper handed to the handler (up to where it stopped), and
//! a request with both headers must be answered 400 with nothing after it
//! served.
//!
//! HTTP/2: a preface and SETTINGS, then one generated frame (every type, a
//! stray one, right and wrong lengths, stream 0 or not), whole. h2 alone
//! and h2 behind [`Inbound`] must end the connection the same way; a frame
//! the follower refuses by its header must be one h2 refuses with
//! GOAWAY(PROTOCOL_ERROR) once it has the payload (two rules of RFC 9113
//! h2 does not apply itself apart: a first frame that is not SETTINGS, a
//! PUSH_PROMISE from a client); and behind
//! [`Inbound`] that GOAWAY must come with the payload never sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::h2::{Head, HEADER};
use super::{h1, Inbound, Verdicts};
use crate::metrics::Metrics;
use crate::server::{builder, ConnSettings};

fn settings() -> ConnSettings {
    ConnSettings {
        name: "differential",
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_connections: 1,
    }
}

/// What hyper, behind [`Inbound`], did with `bytes`: the paths it handed the
/// handler, in order, each with whether it was refused; and the statuses
/// it answered with.
async fn hyper_behind_inbound(bytes: &[u8]) -> (Vec<(String, bool)>, Vec<u16>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let verdicts = Arc::new(Verdicts::default());
    let (record, judged) = (seen.clone(), verdicts.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let (record, judged) = (record.clone(), judged.clone());
        async move {
            let verdict = judged.next();
            let refused = verdict != super::Verdict::Serve;
            record.lock().push((req.uri().path().to_owned(), refused));
            if refused {
                return Ok::<_, Infallible>(super::super::framing::refusal(verdict));
            }
            let _ = req.into_body().collect().await;
            let mut resp = Response::new(crate::answer::empty());
            if judged.last_judged() {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(resp)
        }
    });
    let wrap = |io| Inbound::new(io, verdicts, Metrics::default());
    let out = crate::server::hyper_h1::serve(bytes, wrap, service).await;
    let statuses = crate::server::hyper_h1::statuses(&out);
    let seen = seen.lock().clone();
    (seen, statuses)
}

/// One request of a generated stream: its head's framing and its body.
fn request() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT")];
    let version = prop_oneof![8 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let chunk_ext = prop_oneof![4 => Just(""), 1 => Just(";a=b"), 1 => Just(";x")];
    let size_form = prop_oneof![4 => Just("{:x}"), 1 => Just("{:X}"), 1 => Just("0{:x}")];
    let chunks = proptest::collection::vec((0usize..40, chunk_ext, size_form), 0..4);
    let trailer = prop_oneof![4 => Just(""), 1 => Just("X-T: 1\r\n")];
    let framing = prop_oneof![
        4 => Just("none"),
        4 => Just("length"),
        4 => Just("chunked"),
        2 => Just("both"),
        1 => Just("both-reversed"),
        1 => Just("gzip"),
        1 => Just("length-twice"),
        1 => Just("upgrade"),
    ];
    (method, version, framing, chunks, trailer, 0usize..30).prop_map(
        |(method, version, framing, chunks, trailer, len)| {
            let mut chunked = Vec::new();
            for (n, ext, form) in &chunks {
                let size = match *form {
                    "{:X}" => format!("{n:X}"),
                    "0{:x}" => format!("0{n:x}"),
                    _ => format!("{n:x}"),
                };
                if *n == 0 {
                    continue;
                }
                chunked.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                chunked.extend(std::iter::repeat_n(b'c', *n));
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
            let plain = vec![b'p'; len];
            let (headers, body, both) = match framing {
                "length" => (format!("Content-Length: {len}\r\n"), plain, false),
                "chunked" => ("Transfer-Encoding: chunked\r\n".to_owned(), chunked, false),
                "both" => (
                    format!("Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n"),
                    chunked,
                    true,
                ),
                "both-reversed" => (
                    format!("Transfer-Encoding: chunked\r\nContent-Length: {len}\r\n"),
                    chunked,
                    true,
                ),
                "gzip" => ("Transfer-Encoding: gzip\r\n".to_owned(), plain, false),
                "length-twice" => (
                    format!("Content-Length: {len}\r\nContent-Length: {len}\r\n"),
                    plain,
                    false,
                ),
                "upgrade" => (
                    "Upgrade: x\r\nConnection: upgrade\r\n".to_owned(),
                    vec![],
                    false,
                ),
                _ => (String::new(), vec![], false),
            };
            let head = format!("{method} PATH {version}\r\nHost: a\r\n{headers}\r\n");
            (head, body, both)
        },
    )
}

#[test]
fn the_http1_follower_judges_the_heads_hyper_reads_in_the_same_order() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = Mutex::new((0usize, 0usize, 0usize));
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let streams = proptest::collection::vec(request(), 1..5);
    let result = runner.run(&streams, |requests| {
        let mut bytes = Vec::new();
        for (i, (head, body, _)) in requests.iter().enumerate() {
            bytes.extend_from_slice(head.replace("PATH", &format!("/r{i}")).as_bytes());
            bytes.extend_from_slice(body);
        }
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let (served, statuses) = runtime.block_on(hyper_behind_inbound(&bytes));
        // The follower alone, on the same bytes in small pieces.
        let verdicts = Verdicts::default();
        let mut follower = h1::Follower::default();
        for piece in bytes.chunks(7) {
            follower.follow(piece, &verdicts);
        }
        let judged: Vec<bool> = verdicts.inner.lock().queue.iter().copied().collect();
        // Every request hyper served was judged, in order, as the handler
        // saw it; none was served that the follower did not judge (where
        // it stopped, the last answer it judged closed the connection).
        for (i, (path, refused)) in served.iter().enumerate() {
            prop_assert_eq!(path, &format!("/r{i}"), "{:?}", shown);
            match judged.get(i) {
                Some(verdict) => prop_assert_eq!(refused, verdict, "{:?}", shown),
                None => prop_assert!(*refused, "served unjudged: {:?} {:?}", shown, served),
            }
        }
        // Both headers, reached by the follower: nothing after it served,
        // and it answered 400 when hyper got to it (an HTTP/1.0 request
        // before it may have closed the connection first).
        let first_both = requests.iter().position(|(_, _, both)| *both);
        if let Some(i) = first_both.filter(|i| *i < judged.len()) {
            prop_assert!(served.len() <= i + 1, "{:?} {:?}", shown, served);
            if served.len() == i + 1 {
                prop_assert_eq!(statuses.last(), Some(&400), "{:?}", shown);
                counts.lock().1 += 1;
            }
        }
        let mut c = counts.lock();
        c.0 += judged.len();
        c.2 += usize::from(served.len() > 1 && judged.len() == served.len());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (judged, refused, pipelined) = *counts.lock();
    assert!(judged > 600, "heads judged: {judged}");
    assert!(refused > 40, "refusals reached: {refused}");
    assert!(
        pipelined > 100,
        "pipelined streams followed whole: {pipelined}"
    );
}

/// The server's frames: type and, for GOAWAY, its error code.
fn goaway_code(out: &[u8]) -> Option<u32> {
    let mut at = 0;
    while let Some(raw) = out.get(at..at + HEADER) {
        let mut b = [0; HEADER];
        b.copy_from_slice(raw);
        let head = Head::parse(&b);
        let payload = out.get(at + HEADER..at + HEADER + head.length)?;
        if head.kind == 0x7 {
            return payload
                .get(4..8)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        }
        at += HEADER + head.length;
    }
    None
}

const PROTOCOL_ERROR: u32 = 0x1;

/// h2 (as pollgate builds it), behind [`Inbound`] or not, on `bytes`; with
/// `eof`, the client then closes its side. What it answered: the GOAWAY's
/// code, if one came within the wait.
async fn h2_on(bytes: &[u8], inbound: bool, eof: bool) -> Option<u32> {
    let service = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let (client, server) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(async move {
        let builder = builder(settings());
        if inbound {
            let io = Inbound::new(server, Arc::default(), Metrics::default());
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        } else {
            let _ = builder
                .serve_connection(TokioIo::new(server), service)
                .await;
        }
    });
    let (mut from, mut to) = tokio::io::split(client);
    to.write_all(bytes).await.unwrap();
    if eof {
        to.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    // Until a GOAWAY, the close, or three quiet seconds (h2 waits for more).
    loop {
        match tokio::time::timeout(Duration::from_secs(3), from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if goaway_code(&out).is_some() {
            break;
        }
    }
    serving.abort();
    drop(to);
    goaway_code(&out)
}

fn frame() -> impl Strategy<Value = (u8, u8, u32, usize)> {
    let kind = prop_oneof![(0u8..=9), Just(0x20)];
    let flags = prop_oneof![Just(0u8), Just(0x1), Just(0x4), Just(0x5)];
    let stream = prop_oneof![Just(0u32), Just(1), Just(2), Just(3)];
    let length = prop_oneof![(0usize..=12), Just(16), Just(36)];
    (kind, flags, stream, length)
}

#[test]
fn an_http2_frame_refused_by_its_header_is_one_h2_refuses_and_goaway_comes_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = Mutex::new(0usize);
    let mut runner = TestRunner::new(Config {
        cases: 250,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (frame(), proptest::bool::weighted(0.15));
    let result = runner.run(&cases, |((kind, flags, stream, length), first)| {
        let mut bytes = super::PREFACE.to_vec();
        if !first {
            bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        }
        let header = {
            let l = length.to_be_bytes();
            let s = stream.to_be_bytes();
            [l[5], l[6], l[7], kind, flags, s[0], s[1], s[2], s[3]]
        };
        bytes.extend_from_slice(&header);
        let head_only = bytes.len();
        bytes.extend(std::iter::repeat_n(0, length));
        let why = Head::parse(&header).refused(first);
        let alone = runtime.block_on(h2_on(&bytes, false, true));
        let behind = runtime.block_on(h2_on(&bytes, true, true));
        let shown = format!("{:?} first={first} -> {why:?}", Head::parse(&header));
        match why {
            Some(_) => {
                *refused.lock() += 1;
                prop_assert_eq!(behind, Some(PROTOCOL_ERROR), "{}", shown);
                // h2 refuses it too, once the payload is there; but for the
                // two rules of RFC 9113 it does not apply itself: the first
                // frame is SETTINGS (§3.4), a client never pushes (§8.4).
                if !first && kind != 0x5 {
                    prop_assert_eq!(alone, Some(PROTOCOL_ERROR), "{}", shown);
                }
                // And behind the follower, without ever seeing it.
                let cut = runtime.block_on(h2_on(&bytes[..head_only], true, false));
                prop_assert_eq!(cut, Some(PROTOCOL_ERROR), "{}", shown);
            }
            None => prop_assert_eq!(behind, alone, "{}", shown),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(*refused.lock() > 40, "refused frames: {}", refused.lock());
}
