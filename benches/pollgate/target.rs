//! The server under test: pollgate started fresh from the binary cargo just
//! built, or an already running server (Nchan, Pushpin...) described by
//! flags. Also the trivial backend that proxied GETs (and Pushpin's GRIP
//! holds) are forwarded to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Child;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::common::{self, proc_status_kib, Result};

/// How the next poll tells the server what the client has already seen.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorKind {
    /// pollgate: the answer's `"timestamp"` goes back as `since=`.
    Pollgate,
    /// Nchan: `Last-Modified` / `Etag` go back as `If-Modified-Since` / `If-None-Match`.
    Nchan,
    /// GRIP: the last `seq` received goes back as `last=`; the backend holds
    /// with `Grip-Channel: CHANNEL; prev-id=SEQ` (items carry `id` = seq).
    Grip,
    /// No cursor: a message published between two polls is missed.
    None,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Name in the report. "pollgate" (the default) or any name starting
    /// with "pollgate" starts the pollgate binary built by cargo; any other
    /// name measures a running server described by the flags below.
    #[arg(long, default_value = "pollgate")]
    pub target: String,
    /// pollgate's `server.threads` (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Poll URL, `{channel}` replaced (external targets).
    #[arg(long)]
    pub poll_url: Option<String>,
    /// Publish URL, `{channel}` replaced (external targets).
    #[arg(long)]
    pub pub_url: Option<String>,
    /// Publish body: `{channel}`, `{seq}`, `{ts}` (µs since the epoch) replaced.
    #[arg(long, default_value = r#"{"seq":{seq},"ts":{ts}}"#)]
    pub pub_body: String,
    #[arg(long, value_enum, default_value = "pollgate")]
    pub cursor: CursorKind,
    /// PIDs whose RSS and CPU count as the server (external targets).
    #[arg(long, value_delimiter = ' ')]
    pub pids: Vec<u32>,
    /// Waiters open event streams (`Accept: text/event-stream`) instead of
    /// long polls; for pollgate, on the same poll route.
    #[arg(long)]
    pub sse: bool,
    /// Proxied GET URL for scenario d (external targets).
    #[arg(long)]
    pub proxy_url: Option<String>,
    /// The backend behind the proxy, measured directly in scenario d
    /// (external targets; pollgate gets a backend of its own).
    #[arg(long)]
    pub backend_url: Option<String>,
}

/// A server ready for one scenario.
pub struct Target {
    pub name: String,
    pub poll_url: String,
    pub pub_url: String,
    pub pub_body: String,
    pub cursor: CursorKind,
    pub sse: bool,
    pub pids: Vec<u32>,
    pub proxy_url: Option<String>,
    pub backend_url: Option<String>,
    child: Option<Child>,
}

impl Target {
    /// Starts pollgate (fresh, so its memory baseline is clean), or
    /// describes the running external server.
    pub async fn start(args: &TargetArgs) -> Result<Target> {
        if !args.target.starts_with("pollgate") {
            let need = |v: &Option<String>, flag: &str| {
                v.clone()
                    .ok_or_else(|| format!("--{flag} is needed for target {}", args.target))
            };
            return Ok(Target {
                name: args.target.clone(),
                poll_url: need(&args.poll_url, "poll-url")?,
                pub_url: need(&args.pub_url, "pub-url")?,
                pub_body: args.pub_body.clone(),
                cursor: args.cursor,
                sse: args.sse,
                pids: args.pids.clone(),
                proxy_url: args.proxy_url.clone(),
                backend_url: args.backend_url.clone(),
                child: None,
            });
        }
        let backend = spawn_backend("127.0.0.1:0".parse()?).await?;
        let dir = std::env::temp_dir().join(format!("pollgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("pollgate.yaml");
        std::fs::write(&config, pollgate_config(backend, args.threads))?;
        let (child, public, webhook) =
            tokio::task::spawn_blocking(move || common::spawn_pollgate(&config, |_| false))
                .await??;
        // `pollgate-grip`: the GRIP backend Pushpin is measured with, behind
        // a `grip:` route, publishing EPCP items.
        let grip = args.target.starts_with("pollgate-grip");
        let (poll_url, pub_url, pub_body, cursor) = if grip {
            (
                format!("http://{public}/poll/{{channel}}"),
                format!("http://{webhook}/publish/"),
                GRIP_PUB_BODY.to_owned(),
                CursorKind::Grip,
            )
        } else {
            (
                if args.sse {
                    format!("http://{public}/api/poll/{{channel}}")
                } else {
                    format!("http://{public}/api/poll/{{channel}}?timeout=55")
                },
                format!("http://{webhook}/publish/{{channel}}"),
                args.pub_body.clone(),
                CursorKind::Pollgate,
            )
        };
        Ok(Target {
            name: args.target.clone(),
            poll_url,
            pub_url,
            pub_body,
            cursor,
            sse: args.sse,
            pids: vec![child.id()],
            proxy_url: Some(format!("http://{public}/")),
            backend_url: Some(format!("http://{backend}/")),
            child: Some(child),
        })
    }

    /// Resident memory of the server's processes, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids
            .iter()
            .filter_map(|p| proc_status_kib(*p, "VmRSS:"))
            .sum()
    }

    /// CPU time the server's processes have used so far, user and kernel
    /// apart (every process of it: nginx's master and workers, pollgate).
    pub fn cpu(&self) -> Cpu {
        self.pids
            .iter()
            .filter_map(|p| proc_cpu(*p))
            .fold(Cpu::default(), |sum, c| sum + c)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An EPCP item whose `http-response` body is the message the load tool
/// reads, with `id` = seq so that a backend can name it as `prev-id`.
pub const GRIP_PUB_BODY: &str = r#"{"items":[{"channel":"{channel}","id":"{seq}","formats":{"http-response":{"body":"{\"seq\":{seq},\"ts\":{ts}}\n"}}}]}"#;

/// Large limits: the load tool holds tens of thousands of polls from four
/// addresses, up to this machine's open-file limit (so the connection cap
/// is lifted to it too: the load tool needs no reserve for the webhook).
fn pollgate_config(backend: SocketAddr, threads: Option<usize>) -> String {
    let threads = threads.map_or(String::new(), |n| format!(", threads: {n}"));
    format!(
        r#"listen: "127.0.0.1:0"
webhook: {{ listen: "127.0.0.1:0" }}
upstreams:
  backend: {{ url: "http://{backend}", connect_timeout: 2s, max_in_flight: 100000 }}
routes:
  - {{ prefix: /api/poll/, poll: {{}} }}
  - {{ prefix: /poll/, upstream: backend, timeout: 30s, grip: {{}} }}
  - {{ prefix: /, upstream: backend, timeout: 30s }}
poll: {{ max_timeout: 120s }}
limits: {{ max_per_client: 1000000, max_per_address: 1000000, max_per_channel: 1000000, max_total: 1000000 }}
server: {{ max_connections: 1000000{threads} }}
"#
    )
}

/// CPU seconds, split as the kernel accounts them: `user` is the server's
/// own code (what a change to it can move), `kernel` its system calls, most
/// of them loopback sends and receives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user: f64,
    pub kernel: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.kernel
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user + o.user,
            kernel: self.kernel + o.kernel,
        }
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user - o.user,
            kernel: self.kernel - o.kernel,
        }
    }
}

/// CPU time the load tool itself has used, seconds: when it nears a
/// scenario's duration, the tool, not the server, sets the pace.
pub fn own_cpu_seconds() -> f64 {
    proc_cpu(std::process::id()).map_or(0.0, Cpu::total)
}

fn proc_cpu(pid: u32) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // In clock ticks: 100 a second on Linux (USER_HZ).
    Some(Cpu {
        user: utime / 100.0,
        kernel: stime / 100.0,
    })
}

/// Serves the backend on `listen` forever.
pub async fn serve_backend(listen: SocketAddr) -> Result<()> {
    let addr = spawn_backend(listen).await?;
    eprintln!("backend listening on {addr}");
    std::future::pending::<()>().await;
    Ok(())
}

/// The backend, on a thread and runtime of its own so the load tool's work
/// does not slow it: "ok\n" for every GET, and for `/poll/{channel}` the GRIP
/// answer that makes Pushpin (or pollgate's `grip:` route) hold the request
/// on that channel, after the item `?last=` names when there is one.
async fn spawn_backend(listen: SocketAddr) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            Ok::<_, Infallible>(backend_answer(req.uri()))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

/// The largest `/bytes/N` answer the backend gives.
const MAX_BODY: usize = 1 << 20;

/// `N` bytes, cut from one buffer made once: the backend spends no time
/// making bodies, so what the proxy costs shows.
fn body_of(n: usize) -> Bytes {
    static BUF: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BUF.get_or_init(|| Bytes::from(vec![b'x'; MAX_BODY]))
        .slice(..n.min(MAX_BODY))
}

fn backend_answer(uri: &http::Uri) -> Response<Full<Bytes>> {
    if let Some(n) = uri.path().strip_prefix("/bytes/") {
        return Response::new(Full::new(body_of(n.parse().unwrap_or(0))));
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    if let Some(channel) = uri.path().strip_prefix("/poll/").filter(|c| !c.is_empty()) {
        // `last=SEQ`: the client has seen item SEQ; say so as `prev-id`.
        let last = uri
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("last=")));
        let channel = match last {
            Some(last) => format!("{channel}; prev-id={last}"),
            None => channel.to_owned(),
        };
        *resp.body_mut() = Full::new(Bytes::from_static(b"{\"status\":\"timeout\"}\n"));
        let headers = resp.headers_mut();
        headers.insert("grip-hold", http::HeaderValue::from_static("response"));
        headers.insert("grip-timeout", http::HeaderValue::from_static("55"));
        if let Ok(v) = http::HeaderValue::from_str(&channel) {
            headers.insert("grip-channel", v);
        }
    }
    resp
}
