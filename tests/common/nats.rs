//! NATS for tests: the URL from `SYNCGATE_TEST_NATS` (skipped with one line
//! without it), a fresh cluster name per test so tests run in parallel, and a
//! private `nats-server` a test can stop and start on one port.

use std::sync::atomic::{AtomicU32, Ordering};

use syncgate::backplane::{NatsBackplane, NatsOptions};

/// The test NATS server's URL, or `None` after printing that `test` was skipped.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SYNCGATE_TEST_NATS") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped {test}: SYNCGATE_TEST_NATS is not set");
            None
        }
    }
}

/// A cluster name no other test (or run) uses.
pub fn fresh_cluster(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("t_{prefix}_{}_{}_{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), fastrand::u32(..))
}

pub fn options(url: &str, cluster: &str, node: &str, secret: Option<&str>) -> NatsOptions {
    NatsOptions {
        url: url.into(),
        cluster: cluster.into(),
        secret: secret.map(|s| s.as_bytes().to_vec()),
        creds: None,
        node_id: node.into(),
    }
}

/// A node's backplane on `cluster`.
pub async fn node(url: &str, cluster: &str, node: &str, secret: Option<&str>) -> NatsBackplane {
    NatsBackplane::connect(options(url, cluster, node, secret)).await.expect("NATS answers")
}

/// A private `nats-server` on a port of its own, killed when dropped.
pub struct PrivateNats {
    pub port: u16,
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl PrivateNats {
    /// Starts one; `None` (after printing why) when `nats-server` is missing.
    pub fn start(test: &str) -> Option<Self> {
        if std::process::Command::new("nats-server").arg("--version").output().is_err() {
            println!("skipped {test}: nats-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let nats = Self { port, child: std::sync::Mutex::new(None) };
        nats.start_again();
        Some(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the private nats-server did not start");
    }

    /// Kills the server at once.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}
