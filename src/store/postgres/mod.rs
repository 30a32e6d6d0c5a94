//! Collections in Postgres: one database that several nodes share.
//!
//! Why `tokio-postgres` with a `deadpool` pool rather than `sqlx`: the store
//! is a handful of hand-written statements over a fixed schema, so sqlx's
//! query macros (which want a database at compile time) and its runtime
//! abstraction buy nothing, while tokio-postgres is the protocol
//! implementation sqlx's peers build on: binary parameters (`unnest` of arrays
//! for a whole group in one statement), pipelining of independent statements
//! on one connection, and per-connection prepared-statement caches.
//!
//! **Positions** follow option (A) of the store contract: every group
//! transaction first locks the one `store` row (`SELECT … FOR UPDATE`), reads
//! the position, clock and horizons from it, and writes them back before
//! `COMMIT`. Commits across every node are therefore serialised for the length
//! of one commit, and positions grow in commit order: a reader that saw
//! position `p` can never later see a change below `p` appear. The cost is one
//! commit at a time across the cluster; group commit (every batch waiting on a
//! node goes into one transaction) is what keeps throughput up.
//!
//! **Nothing is cached that another node can change**: the position, clock,
//! horizons and collection heads are read in the transaction that needs them.
//! Only the epoch is kept, and every commit compares it with the row: after
//! `syncgate new-epoch` a node refuses to serve (`unavailable`, `/readyz`
//! 503) until it is restarted and picks the new epoch up.
//!
//! **Reads go to the primary**: a replica lags, and a reader that was sent
//! position `p` by one node must find every change up to `p` on the next.
//!
//! **Acknowledged means committed**: `apply` returns after `COMMIT` returned,
//! with `synchronous_commit = on` (WAL flushed) unless `--durability none`.

mod schema;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::schema::{migrate, quote, valid_schema_name};
use super::sqlite::decode_value;
use super::{Applied, Durability, RevocationStore, Revoked, Scan, Store, StoreError, StoreFuture, StoredRecord, Write};
use crate::hlc::Hlc;

/// Longest wait for a pooled connection or one statement: past it the
/// operation fails (`unavailable`) rather than hanging on a dead server.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per node: the group-commit writer, tombstone collection and readers.
const POOL_SIZE: usize = 8;

/// The Postgres store's options.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The schema holding syncgate's tables (created if missing).
    pub schema: String,
    /// `Full`: `synchronous_commit = on`; `None`: off (ephemeral use).
    pub durability: Durability,
    /// A PEM file of CA certificates to trust for TLS to Postgres, besides the
    /// bundled Mozilla roots (a private CA, a managed database's CA bundle).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Collections and revocations in a Postgres schema.
pub struct PostgresStore {
    pool: Pool,
    statements: std::sync::Arc<Statements>,
    jobs: mpsc::Sender<writer::Job>,
    epoch: u64,
}

/// The SQL of every statement, with the schema name filled in once.
#[derive(Debug)]
struct Statements {
    lock_store: String,
    read_store: String,
    current: String,
    heads: String,
    upsert_records: String,
    upsert_heads: String,
    update_store: String,
    get: String,
    scan: String,
    head: String,
    collect: String,
    raise_horizons: String,
    collect_lock: String,
    save_revocation: String,
    load_revocations: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let s = quote(schema);
        Self {
            lock_store: format!(
                "SELECT epoch, seq, clock_millis, clock_counter, hlc_horizon FROM {s}.store WHERE id = 1 FOR UPDATE"
            ),
            read_store: format!("SELECT epoch, seq, clock_millis, clock_counter, horizon FROM {s}.store WHERE id = 1"),
            current: format!(
                "SELECT r.collection, r.key, r.hlc_millis, r.hlc_counter, r.hlc_node, r.value FROM {s}.records r
                 JOIN unnest($1::text[], $2::text[]) AS k(collection, key)
                 ON r.collection = k.collection AND r.key = k.key"
            ),
            heads: format!("SELECT name, head FROM {s}.collections WHERE name = ANY($1::text[])"),
            upsert_records: format!(
                "INSERT INTO {s}.records (collection, key, value, deleted, hlc_millis, hlc_counter, hlc_node, seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bool[], $5::int8[], $6::int4[], $7::text[], $8::int8[])
                 ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, deleted = excluded.deleted,
                 hlc_millis = excluded.hlc_millis, hlc_counter = excluded.hlc_counter, hlc_node = excluded.hlc_node,
                 seq = excluded.seq"
            ),
            upsert_heads: format!(
                "INSERT INTO {s}.collections (name, head) SELECT * FROM unnest($1::text[], $2::int8[])
                 ON CONFLICT (name) DO UPDATE SET head = excluded.head"
            ),
            update_store: format!(
                "UPDATE {s}.store SET seq = $1, clock_millis = $2, clock_counter = $3 WHERE id = 1"
            ),
            get: format!(
                "SELECT key, value, hlc_millis, hlc_counter, hlc_node, seq FROM {s}.records WHERE collection = $1 AND key = $2"
            ),
            scan: format!(
                "SELECT key, value, hlc_millis, hlc_counter, hlc_node, seq FROM {s}.records
                 WHERE collection = $1 AND seq > $2 ORDER BY seq"
            ),
            head: format!("SELECT head FROM {s}.collections WHERE name = $1"),
            collect: format!(
                "DELETE FROM {s}.records WHERE deleted AND hlc_millis < $1 RETURNING seq, hlc_millis"
            ),
            raise_horizons: format!(
                "UPDATE {s}.store SET horizon = greatest(horizon, $1), hlc_horizon = greatest(hlc_horizon, $2) WHERE id = 1"
            ),
            collect_lock: format!("{schema}.collect"),
            save_revocation: format!("INSERT INTO {s}.revocations (kind, subject, issued_before) VALUES ($1, $2, $3)"),
            load_revocations: format!("SELECT kind, subject, issued_before FROM {s}.revocations ORDER BY id"),
        }
    }
}

/// A Postgres failure as a store error; `what` says what was being done.
pub(crate) fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("postgres: {what}: {e}"))
}

/// Runs `future` within [`OPERATION_TIMEOUT`].
async fn timed<T>(what: &str, future: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(StoreError(format!("postgres: {what}: no answer within {OPERATION_TIMEOUT:?}"))))
}

/// TLS to Postgres, always with a verified certificate: used when the URL
/// says `sslmode=require` (against the bundled Mozilla roots, plus
/// `--postgres-ca-file`) or when a CA file is given (then `sslmode=prefer`,
/// the default, also uses TLS when the server offers it). Otherwise plain
/// text, as before: unlike libpq, syncgate never encrypts without checking
/// whom it talks to, so a server with a self-signed certificate needs its
/// CA file.
fn tls_connector(
    config: &tokio_postgres::Config,
    ca_file: Option<&std::path::Path>,
) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if ca_file.is_none() && config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    crate::tls::client_config(ca_file, "--postgres-ca-file")
        .map(|c| Some(MakeRustlsConnect::new(c)))
        .map_err(StoreError)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the group-commit
    /// writer. Fails with one line naming the host when Postgres does not answer.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        if !valid_schema_name(&options.schema) {
            return Err(StoreError(format!(
                "--postgres-schema {:?}: use lower-case letters, digits and _ (at most 63, not starting with a digit)",
                options.schema
            )));
        }
        let mut config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| StoreError(format!("--store: not a Postgres URL: {e}")))?;
        let hosts = describe_hosts(&config);
        let synchronous = if options.durability == Durability::Full { "on" } else { "off" };
        config.options(format!("-c synchronous_commit={synchronous}"));
        config.application_name("syncgate");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls_connector(&config, options.ca_file.as_deref())? {
            Some(tls) => Manager::from_config(config, tls, recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(OPERATION_TIMEOUT))
            .create_timeout(Some(OPERATION_TIMEOUT))
            .recycle_timeout(Some(OPERATION_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError(format!("postgres pool: {e}")))?;
        let mut client =
            pool.get().await.map_err(|e| StoreError(format!("Postgres at {hosts} does not answer: {e}")))?;
        let epoch = timed("migrating", migrate(&mut client, &options.schema, fastrand::u64(1..))).await?;
        drop(client);
        let statements = std::sync::Arc::new(Statements::new(&options.schema));
        let (jobs, queue) = mpsc::channel(writer::QUEUE);
        tokio::spawn(writer::commit_loop(pool.clone(), statements.clone(), queue, epoch));
        Ok(Self { pool, statements, jobs, epoch })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| err("getting a connection", e))
    }

    /// One query on a pooled connection, within the operation timeout.
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        timed(what, async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(|e| err(what, e))?;
            client.query(&statement, params).await.map_err(|e| err(what, e))
        })
        .await
    }

    /// The store row (`epoch, seq, clock_millis, clock_counter, horizon`), checked against our epoch.
    async fn store_row(&self) -> Result<tokio_postgres::Row, StoreError> {
        let rows = self.query("reading the store row", &self.statements.read_store, &[]).await?;
        let row = rows.into_iter().next().ok_or_else(|| StoreError("postgres: the store row is missing".into()))?;
        writer::check_epoch(to_u64(row.get(0)), self.epoch)?;
        Ok(row)
    }

    async fn send(&self, job: writer::Job) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| StoreError("postgres: the commit task stopped".into()))
    }
}

/// `host:port` of every host in the URL, for start-up errors (never the password).
fn describe_hosts(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            }
        })
        .collect();
    if hosts.is_empty() { "localhost:5432".into() } else { hosts.join(", ") }
}

fn record(row: &tokio_postgres::Row) -> Result<StoredRecord, StoreError> {
    let bytes: &[u8] = row.get(1);
    let value =
        decode_value(bytes).map_err(|e| StoreError(format!("postgres: a stored value does not decode: {e}")))?;
    Ok(StoredRecord {
        key: row.get(0),
        value,
        hlc: Hlc {
            millis: to_u64(row.get(2)),
            counter: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            node: row.get(4),
        },
        seq: to_u64(row.get(5)),
    })
}

impl Store for PostgresStore {
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.send(writer::Job { writes: writes.to_vec(), reply }).await?;
            answer.await.unwrap_or_else(|_| Err(StoreError("postgres: the commit task stopped".into())))
        })
    }

    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>> {
        Box::pin(async move {
            let rows = self.query("reading a record", &self.statements.get, &[&collection, &key]).await?;
            rows.first().map(record).transpose()
        })
    }

    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan> {
        Box::pin(timed("scanning", async move {
            // One snapshot for the records, the cursor and the horizon.
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| err("starting a scan", e))?;
            let store = tx.prepare_cached(&self.statements.read_store).await.map_err(|e| err("scanning", e))?;
            let scan = tx.prepare_cached(&self.statements.scan).await.map_err(|e| err("scanning", e))?;
            let since = to_i64(since);
            let (head, rows) =
                futures_util::future::try_join(tx.query_one(&store, &[]), tx.query(&scan, &[&collection, &since]))
                    .await
                    .map_err(|e| err("scanning", e))?;
            writer::check_epoch(to_u64(head.get(0)), self.epoch)?;
            let records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            tx.commit().await.map_err(|e| err("ending a scan", e))?;
            Ok(Scan { records, cursor: to_u64(head.get(1)), horizon: to_u64(head.get(4)) })
        }))
    }

    fn last_seq(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { Ok(to_u64(self.store_row().await?.get(1))) })
    }

    fn collection_position<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let rows = self.query("reading a collection's head", &self.statements.head, &[&collection]).await?;
            Ok(rows.first().map_or(0, |row| to_u64(row.get(0))))
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.store_row().await.map(drop) })
    }

    fn clock(&self) -> StoreFuture<'_, (u64, u32)> {
        Box::pin(async move {
            let row = self.store_row().await?;
            Ok((to_u64(row.get(2)), u32::try_from(row.get::<_, i32>(3)).unwrap_or(0)))
        })
    }

    fn horizon(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { Ok(to_u64(self.store_row().await?.get(4))) })
    }

    fn epoch(&self) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(self.epoch)))
    }

    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize> {
        Box::pin(timed("collecting tombstones", async move {
            let mut client = self.client().await?;
            writer::collect(&mut client, &self.statements, self.epoch, before_millis).await
        }))
    }
}

impl RevocationStore for PostgresStore {
    fn save<'a>(&'a self, revoked: &'a Revoked) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (kind, subject, issued_before) = match revoked {
                Revoked::Jti(jti) => ("jti", jti.as_str(), 0),
                Revoked::Subject { sub, issued_before } => ("subject", sub.as_str(), to_i64(*issued_before)),
            };
            let sql = &self.statements.save_revocation;
            self.query("saving a revocation", sql, &[&kind, &subject, &issued_before]).await.map(drop)
        })
    }

    fn load(&self) -> StoreFuture<'_, Vec<Revoked>> {
        Box::pin(async move {
            let rows = self.query("loading revocations", &self.statements.load_revocations, &[]).await?;
            Ok(rows
                .iter()
                .map(|row| match row.get::<_, &str>(0) {
                    "jti" => Revoked::Jti(row.get(1)),
                    _ => Revoked::Subject { sub: row.get(1), issued_before: to_u64(row.get(2)) },
                })
                .collect())
        })
    }
}

/// Draws a new epoch for the store in `options.schema`: run after restoring a
/// dump (`pg_restore`), so every cursor issued before the restore resets.
/// Running nodes refuse to serve from then on, until restarted. It creates
/// nothing: a schema that holds no syncgate store (a typo) is an error.
pub async fn new_epoch(options: PostgresOptions) -> Result<u64, StoreError> {
    if !valid_schema_name(&options.schema) {
        return Err(StoreError(format!("--postgres-schema {:?} is not a schema name", options.schema)));
    }
    let config =
        tokio_postgres::Config::from_str(&options.url).map_err(|e| StoreError(format!("not a Postgres URL: {e}")))?;
    let hosts = describe_hosts(&config);
    let tls = tls_connector(&config, options.ca_file.as_deref())?;
    timed("drawing a new epoch", async {
        let answer = |e: tokio_postgres::Error| StoreError(format!("Postgres at {hosts} does not answer: {e}"));
        let client = match tls {
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(answer)?;
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = config.connect(NoTls).await.map_err(answer)?;
                tokio::spawn(connection);
                client
            }
        };
        let epoch = fastrand::u64(1..i64::MAX as u64);
        let sql = format!("UPDATE {}.store SET epoch = $1 WHERE id = 1", quote(&options.schema));
        match client.execute(&sql, &[&to_i64(epoch)]).await {
            Ok(1) => Ok(epoch),
            Ok(_) => Err(StoreError(format!("schema {} has no store row", options.schema))),
            Err(e) => Err(err(&format!("schema {} holds no syncgate store", options.schema), e)),
        }
    })
    .await
}
