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
    /// A Redis of the test's own, or a loud skip (never in CI).
    pub fn start_or_skip(untested: &str) -> Option<RedisServer> {
        let server = RedisServer::start();
        if server.is_none() {
            super::tools::skip(
                "POLLGATE_REQUIRE_REDIS",
                "redis-server is not on PATH",
                untested,
            );
        }
        server
    }

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

/// A 3-node Redis Cluster of the test's own (no replicas), on free ports.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> Option<RedisCluster> {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()?;
        Command::new("redis-cli").arg("--version").output().ok()?;
        let dir = tempfile::tempdir().ok()?;
        let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
        let mut nodes = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            nodes.push(child);
        }
        let mut cluster = RedisCluster {
            nodes,
            ports,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for (port, node) in cluster.ports.iter().zip(&mut cluster.nodes) {
            while !ping(&format!("redis://127.0.0.1:{port}")).await {
                if let Ok(Some(status)) = node.try_wait() {
                    panic!("redis-server on port {port} exited: {status}");
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis-server on port {port} did not answer"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every node must agree the cluster is up before clients use it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for port in &cluster.ports {
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster never reported cluster_state:ok on port {port}"
                );
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .ok()?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Some(cluster)
    }

    pub fn seed_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

/// A free port for a cluster node: Redis also listens on port + 10000 (the
/// cluster bus), so that one must be free and within range too. (A port
/// from the upper ephemeral range made the node exit at once.)
fn cluster_port() -> u16 {
    loop {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        let port = addr.port();
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
