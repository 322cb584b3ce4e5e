//! The processes under test: pollgate (the binary cargo built), a Redis of
//! its own that can be killed, and the config file rewritten under it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{self, Result};
pub use common::proc_status_kib;

/// A pollgate process on ephemeral ports with its config in a temp dir.
pub struct Pollgate {
    pub public: SocketAddr,
    pub webhook: SocketAddr,
    pub config: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The config every phase starts from; `broker` is the broker section.
pub fn config(broker: &str, default_timeout: u32) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
webhook: {{ listen: "127.0.0.1:0", max_body: 4MiB }}
routes:
  - {{ prefix: /api/poll/, poll: {{}} }}
poll: {{ default_timeout: {default_timeout}s, max_timeout: 60s }}
buffer: {{ max_size: 1000, max_age: 300s }}
limits: {{ max_per_client: 1000000, max_per_address: 1000000, max_per_channel: 1000000, max_total: 1000000 }}
server: {{ header_timeout: 5s, write_timeout: 5s, body_timeout: 5s }}
{broker}
"#
    )
}

impl Pollgate {
    pub fn start(yaml: &str) -> Result<Pollgate> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("pollgate.yaml");
        std::fs::write(&config, yaml)?;
        let (child, public, webhook) = common::spawn_pollgate(&config, |line| {
            line.contains("\"ERROR\"") && !line.contains("config rejected")
        })?;
        Ok(Pollgate {
            public,
            webhook,
            config,
            child,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:").unwrap_or(0)
    }
}

impl Drop for Pollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server of the chaos run's own, on a fixed free port so that it
/// comes back where pollgate expects it after `kill -9`.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir()?,
            child: None,
        };
        redis.restart()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port, with no persistence: history is
    /// gone, as after a crash of a Redis without AOF.
    pub fn restart(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("redis-server did not start".into())
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rewrites the config `total` times, `invalid` of them broken, one every
/// `every` (longer than the reload debounce, so each is its own reload).
pub async fn rewrite_config(
    path: PathBuf,
    base: String,
    total: usize,
    invalid: usize,
    every: Duration,
) -> (usize, usize) {
    let (mut good, mut bad) = (0, 0);
    let stride = total.checked_div(invalid).unwrap_or(usize::MAX);
    for i in 0..total {
        tokio::time::sleep(every).await;
        let text = if invalid > 0 && i % stride == stride - 1 && bad < invalid {
            bad += 1;
            // A typo'd key: the file is refused, the running config stays.
            format!("{base}defualt_timeout: 30s\n")
        } else {
            good += 1;
            // A harmless change that takes effect: the default hold time.
            base.replace(
                "default_timeout: 25s",
                &format!("default_timeout: {}s", 20 + i % 10),
            )
        };
        let _ = std::fs::write(&path, text);
    }
    (good, bad)
}
