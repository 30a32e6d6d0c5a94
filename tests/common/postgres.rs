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
    PostgresOptions { url: url.into(), schema: schema.into(), durability: Durability::Full, ca_file: None }
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
        let args = ["--store", url, "--postgres-schema", schema, "--jwt-secret", super::SECRET];
        let (child, addr) = super::spawn_serve(args.iter().chain(extra), std::process::Stdio::inherit());
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

/// A private Postgres instance a test can stop and start (run as the
/// `postgres` user: Postgres refuses root), in a temporary directory.
pub struct PrivatePostgres {
    dir: std::path::PathBuf,
    pub port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// `initdb` and start; `None` (after printing why) when the binaries are missing.
    pub fn start(test: &str) -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists());
        let Some(bin) = bin else {
            println!("skipped {test}: no Postgres binaries under /usr/lib/postgresql");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!("syncgate-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let handed = std::process::Command::new("chown").args(["postgres", dir.to_str()?]).status();
        if !handed.is_ok_and(|s| s.success()) {
            println!("skipped {test}: cannot hand a data directory to the postgres user (run as root)");
            return None;
        }
        let pg = Self { dir, port, bin };
        pg.run("initdb", &["-D", pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        pg.start_again();
        Some(pg)
    }

    fn data(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 path")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .expect("runuser");
        assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start_again(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.data());
        let log = format!("{}/log", self.data());
        self.run("pg_ctl", &["-D", self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    /// Stops at once, as a crash would (`-m immediate`).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
