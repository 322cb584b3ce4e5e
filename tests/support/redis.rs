//! Redis for tests: the one named by REDIS_URL (default 127.0.0.1:6379), or
//! a redis-server of our own on a free port. Each test uses its own random
//! key prefix, so tests never see each other's keys and nothing is flushed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Redis to test against, or `None` (with a loud notice) when there is none
/// and POLLGATE_REQUIRE_REDIS is not set.
pub async fn shared_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    if ping(&url).await {
        return Some(url);
    }
    if let Some(own) = RedisServer::start() {
        let url = own.url();
        // Shared by the rest of this test process, and left running after it
        // (a developer-machine fallback: .ci/run starts a Redis on 6379).
        std::mem::forget(own);
        return Some(url);
    }
    assert!(
        std::env::var("POLLGATE_REQUIRE_REDIS").is_err(),
        "POLLGATE_REQUIRE_REDIS is set but no Redis answers at {url} and redis-server is not on PATH"
    );
    eprintln!("\n*** SKIPPED: no Redis at {url} and no redis-server on PATH: the Redis broker was NOT tested ***\n");
    None
}

pub async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(_))
    )
}

/// A fresh key prefix for one test.
pub fn prefix() -> String {
    format!("pgtest:{}:", uuid::Uuid::new_v4().simple())
}

/// YAML for the Redis broker.
pub fn broker_yaml(url: &str, prefix: &str) -> String {
    format!("broker: {{ kind: redis, url: \"{url}\", key_prefix: \"{prefix}\" }}\n")
}

/// A redis-server of the test's own, with an append-only file so its data
/// survives a restart (as a production Redis with persistence would).
pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let mut server = RedisServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server did not start");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
