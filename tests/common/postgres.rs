//! Postgres for tests: the URL from `SYNCGATE_TEST_POSTGRES` (skipped with one
//! line without it), a fresh schema per test so tests run in parallel, and a
//! private instance a test can stop and start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use syncgate::store::{Durability, PostgresOptions, PostgresStore, Store};

/// The test database's URL, or `None` after printing that `test` was skipped.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SYNCGATE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped {test}: SYNCGATE_TEST_POSTGRES is not set");
            None
        }
    }
}

/// A schema name no other test (or run) uses.
pub fn fresh_schema(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("t_{prefix}_{}_{}_{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), fastrand::u32(..))
}

pub fn options(url: &str, schema: &str) -> PostgresOptions {
    PostgresOptions { url: url.into(), schema: schema.into(), durability: Durability::Full }
}

/// A store on a fresh schema of the test database.
pub async fn fresh_store(url: &str, prefix: &str) -> Arc<dyn Store> {
    Arc::new(PostgresStore::open(options(url, &fresh_schema(prefix))).await.expect("the test database answers"))
}

/// Runs SQL on the test database (schema clean-up, inspection).
pub async fn sql(url: &str, statements: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.simple_query(statements).await.expect(statements)
}

/// A `syncgate serve` process on a Postgres schema, killed when dropped.
pub struct NodeProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl NodeProcess {
    /// Starts the binary on `schema` and waits until it listens.
    pub fn start(url: &str, schema: &str, extra: &[&str]) -> Self {
        use std::io::{BufRead as _, BufReader};
        let mut child = super::syncgate()
            .args(["serve", "--listen", "127.0.0.1:0", "--store", url, "--postgres-schema", schema])
            .args(["--jwt-secret", super::SECRET])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            let line = lines.next().expect("the node exited before listening").expect("a log line");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().expect("an address").parse().expect("an address");
            }
        };
        // Keep draining the log so the node never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, addr }
    }

    /// `kill -9`: no drain, no clean shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
