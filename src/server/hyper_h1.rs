//! Tests' view of hyper's HTTP/1 server as pollgate builds it: bytes in,
//! bytes out (the differential tests of the lean parser and of the
//! inbound follower both drive it).

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use super::{builder, ConnSettings};

/// Writes `bytes` to hyper's server (on the far end of an in-memory
/// connection, wrapped by `wrap`) serving `service`, then closes the
/// writing side; returns all it answered, until it closed.
pub(super) async fn serve<S, B, I>(
    bytes: &[u8],
    wrap: impl FnOnce(DuplexStream) -> I,
    service: S,
) -> Vec<u8>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = ConnSettings {
        name: "differential",
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_connections: 1,
    };
    let (client, server) = tokio::io::duplex(1 << 16);
    let io = wrap(server);
    let serving = tokio::spawn(async move {
        let mut builder = builder(settings);
        // The client below closes its side once it has written: half-close
        // lets hyper serve what it has read, as it would on an open
        // connection, instead of dropping a pipelined request at EOF.
        builder.http1().half_close(true);
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await;
    });
    let (mut from, mut to) = tokio::io::split(client);
    to.write_all(bytes).await.unwrap();
    to.shutdown().await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), from.read_to_end(&mut out));
    read.await.expect("hyper answers and closes").unwrap();
    serving.abort();
    out
}

/// The statuses of the answers in `out`, in order.
pub(super) fn statuses(out: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(out)
        .split("HTTP/1.")
        .skip(1)
        .filter_map(|rest| rest.get(2..5)?.parse().ok())
        .collect()
}
