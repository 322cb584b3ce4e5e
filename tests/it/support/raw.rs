//! HTTP/1 written and read by hand on one keep-alive connection: for tests
//! of the wire itself (the lean path, pipelining, what a stalled server does).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One answer as read off the wire.
pub struct Answer {
    pub head: String,
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The first header of this name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one answer; `head_only` for an answer to HEAD (no body follows).
pub async fn answer(conn: &mut BufReader<TcpStream>, head_only: bool) -> Answer {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "connection closed before an answer: {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head[9..12].parse().unwrap();
    let mut a = Answer {
        head,
        status,
        body: String::new(),
    };
    if !head_only {
        let len: usize = a.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.unwrap();
        a.body = String::from_utf8(body).unwrap();
    }
    a
}

/// Writes `bytes` as they are.
pub async fn send(conn: &mut BufReader<TcpStream>, bytes: &[u8]) {
    conn.get_mut().write_all(bytes).await.unwrap();
}

/// Sends `GET target` (HTTP/1.1, keep-alive) on `conn`.
pub async fn get_on(conn: &mut BufReader<TcpStream>, target: &str) {
    send(
        conn,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
}

/// A fresh connection to `addr`.
pub async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

/// Whether the server closes the connection within 5 s.
pub async fn closed(conn: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}
