//! The hostile clients, each run in a process of its own (`chaos attack
//! KIND …`): one process can hold at most ~19,900 sockets here, and the
//! followers need theirs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct AttackArgs {
    /// slowloris, noread, flood or garbage.
    pub kind: String,
    /// Where to (garbage: several, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub addr: Vec<SocketAddr>,
    /// Connections held at once (garbage: requests in all).
    #[arg(long)]
    pub count: usize,
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Last octet of the first 127.0.0.x source address; each 10,000
    /// connections take the next one.
    #[arg(long, default_value_t = 2)]
    pub src: u8,
}

/// Runs the attack and prints what it did as one JSON line.
pub async fn run(args: AttackArgs) -> crate::Result<()> {
    let until = Instant::now() + Duration::from_secs(args.secs);
    let done = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let targets = args.addr.clone();
    let Some(&addr) = targets.first() else {
        return Err("--addr is needed".into());
    };
    match args.kind.as_str() {
        "garbage" => {
            // `count` requests, 100 at a time, within the attack's window.
            let per = args.count.div_ceil(100);
            for i in 0..100usize {
                let (targets, done) = (targets.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    for j in 0..per {
                        if Instant::now() >= until {
                            return;
                        }
                        let to = targets[(i + j) % targets.len()];
                        garbage(to, GARBAGE[(i + j) % GARBAGE.len()]).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        kind => {
            for i in 0..args.count {
                let src = source(args.src, i);
                let (done, cut, kind) = (done.clone(), cut.clone(), kind.to_owned());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        let Ok(stream) = open(src, addr, kind == "noread").await else {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        };
                        done.fetch_add(1, Ordering::Relaxed);
                        let ended = match kind.as_str() {
                            "slowloris" => slowloris(stream, until).await,
                            "noread" => noread(stream, until).await,
                            _ => hold(stream, until).await,
                        };
                        if ended {
                            cut.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "{}",
        serde_json::json!({
            "kind": args.kind,
            "connections": done.load(Ordering::Relaxed),
            "cut_by_server": cut.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

fn source(first: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first.saturating_add((i / 10_000) as u8))
}

async fn open(src: Ipv4Addr, addr: SocketAddr, tiny: bool) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if tiny {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind(SocketAddr::new(src.into(), 0))?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(addr))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A head sent one byte a second; true when the server cut it off.
async fn slowloris(mut stream: TcpStream, until: Instant) -> bool {
    let head = b"GET /api/poll/slow HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for byte in head.iter().cycle() {
        if Instant::now() >= until {
            return false;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}

/// Asks for a large answer and never reads it; true when the server cut it
/// off (seen as a failed write of the next request).
async fn noread(mut stream: TcpStream, until: Instant) -> bool {
    let ask = b"GET /api/poll/big?since=0&max=100 HTTP/1.1\r\nHost: x\r\n\r\n";
    if stream.write_all(ask).await.is_err() {
        return true;
    }
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Pipelined heads, never an answer read: a reset ends it.
        if stream.write_all(ask).await.is_err() {
            return true;
        }
    }
    false
}

/// Connects and says nothing; true when the server closed it.
async fn hold(mut stream: TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 64];
    let left = until.saturating_duration_since(Instant::now());
    matches!(
        tokio::time::timeout(left, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

const GARBAGE: [&[u8]; 8] = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    b"GET /api/poll/%ZZ%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /api/poll/x?timeout=1e309&since=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /publish/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello",
    b"GET /api/poll/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\x01\x00",
];

async fn garbage(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(bytes).await;
    // An answer, or the close: either says the garbage was dealt with.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut [0u8; 512])).await;
}
