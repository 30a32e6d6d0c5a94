//! The durable store: SQLite (bundled) in `--data-dir`, with group commit.
//!
//! Why SQLite: its WAL mode lets `syncgate backup` read a consistent snapshot
//! of a live store from another process (the engines that lock their files
//! exclusively cannot), commit latency is comparable to the alternatives
//! (`docs/crate-notes.md`), and group commit amortises the fsync anyway.
//!
//! One writer thread owns the write connection: every `apply` waiting when it
//! wakes goes into one transaction and one fsync, then every waiter is
//! released, so throughput grows with concurrency. Reads use a second
//! connection; a third, on a thread of its own, copies the WAL back into the
//! database (`checkpoint`), so no commit waits for a checkpoint. A lock
//! file refuses a second server on the same directory.

mod checkpoint;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmpv::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use self::writer::commit_loop;
pub(super) use self::writer::set_epoch;
use super::{Applied, Scan, Store, StoreError, StoreFuture, StoredRecord, Write, ready};
use super::{RevocationStore, Revoked};
use crate::hlc::Hlc;
pub use crate::hlc::encode_value;

/// Schema version of the database file (and of backups, which are database files).
pub const FORMAT_VERSION: i64 = 1;

/// Most `apply` calls grouped into one transaction.
const MAX_GROUP: usize = 1024;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsync) before `OP_RESULT`: the default.
    Full,
    /// Handed to the OS only: a crash can lose acknowledged writes. For explicitly ephemeral use.
    None,
}

/// Where a batch's outcome goes.
/// The outcomes of a job's writes, and the writes given back.
type ApplyReply = oneshot::Sender<Result<(Vec<Applied>, Vec<Write>), StoreError>>;

enum Job {
    Apply { writes: Vec<Write>, reply: ApplyReply },
    Collect { before_millis: u64, reply: oneshot::Sender<Result<usize, StoreError>> },
    Revoke { revoked: Revoked, reply: oneshot::Sender<Result<(), StoreError>> },
}

/// Counters mirrored from the database for lock-free reads.
#[derive(Debug, Default)]
struct State {
    last_seq: AtomicU64,
    clock: Mutex<(u64, u32)>,
    horizon: AtomicU64,
    /// Writes stamped before this (ms) are stale. Written only by the commit thread.
    hlc_horizon: AtomicU64,
    /// The store's epoch, fixed while it is open.
    epoch: u64,
    /// Fault injection for tests and drills: every commit fails while set.
    fail_commits: AtomicBool,
    /// WAL pages after the latest passive checkpoint: past a bound the
    /// commit thread restarts the WAL (`checkpoint::restart_wal`).
    wal_pages: AtomicI64,
}

/// Collections in a SQLite database under a data directory.
pub struct SqliteStore {
    /// The read connection, used on the blocking pool. A std mutex: reads never await.
    reader: Arc<Mutex<Connection>>,
    jobs: mpsc::Sender<Job>,
    state: Arc<State>,
    dir: PathBuf,
    /// Held for the store's life: the exclusive lock on the data directory.
    _lock: File,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpointer: checkpoint::Stop,
}

pub(super) fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`. Fails with one clear
    /// message if the directory is unwritable, locked by another server, or
    /// holds a database of an unknown format.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        private_dir(dir)?;
        let lock = private_file(&dir.join("syncgate.lock"))
            .map_err(|e| err(&format!("{} is not writable", dir.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError(format!("{} is in use by another syncgate server", dir.display())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(&format!("cannot lock {}", dir.display()), e)),
        }
        let path = dir.join("syncgate.db");
        // Created owner-only before SQLite opens it: SQLite gives the WAL and
        // shared-memory files the database file's permissions.
        for file in ["syncgate.db", "syncgate.db-wal", "syncgate.db-shm"] {
            let file = dir.join(file);
            if file == path || file.exists() {
                private_file(&file).map_err(|e| err(&format!("cannot create {}", file.display()), e))?;
            }
        }
        let writer = Connection::open(&path).map_err(|e| err(&format!("cannot open {}", path.display()), e))?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::None => "OFF",
        };
        // Checkpoints are the checkpoint thread's, not whichever commit crosses 1,000 pages.
        let wal_keep = checkpoint::WAL_KEEP_BYTES;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;
                 PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={wal_keep};
                 CREATE TABLE IF NOT EXISTS records (
                     collection TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     hlc_millis INTEGER NOT NULL, hlc_counter INTEGER NOT NULL, hlc_node TEXT NOT NULL,
                     seq INTEGER NOT NULL, PRIMARY KEY (collection, key)) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS records_by_seq ON records (collection, seq);
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS heads (collection TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS revocations (
                     kind TEXT NOT NULL, subject TEXT NOT NULL, issued_before INTEGER NOT NULL,
                     PRIMARY KEY (kind, subject)) WITHOUT ROWID;"
            ))
            .map_err(|e| err(&format!("cannot initialise {}", path.display()), e))?;
        let version: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| err("reading the format version", e))?;
        match version {
            0 => writer
                .execute_batch(&format!("PRAGMA user_version={FORMAT_VERSION}"))
                .map_err(|e| err("setting the format version", e))?,
            FORMAT_VERSION => {}
            other => {
                return Err(StoreError(format!(
                    "{} has format {other}; this syncgate reads format {FORMAT_VERSION}",
                    path.display()
                )));
            }
        }
        let meta = |name: &str| -> u64 {
            writer
                .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
                .optional()
                .ok()
                .flatten()
                .map_or(0, to_u64)
        };
        let stored_epoch: Option<i64> = writer
            .query_row("SELECT value FROM meta WHERE name = 'epoch'", [], |r| r.get(0))
            .optional()
            .map_err(|e| err("reading the epoch", e))?;
        let epoch = match stored_epoch.map_or(0, |bits| bits as u64) {
            0 => {
                let epoch = crate::cursor::new_epoch();
                set_epoch(&writer, epoch)?;
                epoch
            }
            epoch => epoch,
        };
        let state = Arc::new(State {
            last_seq: AtomicU64::new(meta("seq")),
            clock: Mutex::new((meta("clock_millis"), u32::try_from(meta("clock_counter")).unwrap_or(u32::MAX))),
            horizon: AtomicU64::new(meta("horizon")),
            hlc_horizon: AtomicU64::new(meta("hlc_horizon")),
            epoch,
            fail_commits: AtomicBool::new(false),
            wal_pages: AtomicI64::new(0),
        });
        let reader =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| err("opening the read connection", e))?;
        reader.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| err("configuring reads", e))?;
        let heads = read_heads(&writer)?;
        let (jobs, rx) = mpsc::channel(4096);
        let thread_state = state.clone();
        let checkpointer = checkpoint::start(&path, state.clone())?;
        std::thread::Builder::new()
            .name("syncgate-commit".into())
            .spawn(move || commit_loop(writer, rx, &thread_state, heads))
            .map_err(|e| err("starting the commit thread", e))?;
        Ok(Self {
            reader: Arc::new(Mutex::new(reader)),
            jobs,
            state,
            dir: dir.to_path_buf(),
            _lock: lock,
            _checkpointer: checkpointer,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every commit fail (`true`) or succeed again: for failure tests and drills.
    pub fn inject_commit_failure(&self, fail: bool) {
        self.state.fail_commits.store(fail, Ordering::SeqCst);
    }

    /// Runs `read` with the read connection on the blocking pool.
    fn read<'a, T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let reader = self.reader.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read(&mut reader.lock().unwrap_or_else(|e| e.into_inner())))
                .await
                .map_err(|e| err("a read failed", e))?
        })
    }

    async fn submit<T>(&self, job: Job, answer: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
        self.jobs.send(job).await.map_err(|_| StoreError("the commit thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError("the commit thread has stopped".into()))?
    }
}

impl Store for SqliteStore {
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>> {
        let owned = self.apply_owned(writes.to_vec());
        Box::pin(async move { owned.await.map(|(applied, _)| applied) })
    }

    fn apply_owned(&self, writes: Vec<Write>) -> StoreFuture<'_, (Vec<Applied>, Vec<Write>)> {
        let (reply, answer) = oneshot::channel();
        Box::pin(self.submit(Job::Apply { writes, reply }, answer))
    }

    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>> {
        let (collection, key) = (collection.to_string(), key.to_string());
        self.read(move |reader| {
            reader
                .query_row(
                    "SELECT key, value, hlc_millis, hlc_counter, hlc_node, seq FROM records WHERE collection = ?1 AND key = ?2",
                    params![collection, key],
                    row_to_record,
                )
                .optional()
                .map_err(|e| err("reading a record", e))?
                .transpose()
        })
    }

    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan> {
        let collection = collection.to_string();
        self.read(move |reader| scan(reader, &collection, since))
    }

    fn last_seq(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.state.last_seq.load(Ordering::SeqCst)))
    }

    fn collection_position<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, u64> {
        let collection = collection.to_string();
        self.read(move |reader| {
            // A head whose tombstone was collected is kept in `heads`.
            reader
                .query_row(
                    "SELECT MAX(seq) FROM (SELECT MAX(seq) AS seq FROM records WHERE collection = ?1
                     UNION ALL SELECT seq FROM heads WHERE collection = ?1)",
                    params![collection],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .map(|seq| seq.map_or(0, to_u64))
                .map_err(|e| err("reading a collection's position", e))
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        if self.state.fail_commits.load(Ordering::SeqCst) {
            return ready(Err(StoreError("injected commit failure".into())));
        }
        if self.jobs.is_closed() {
            return ready(Err(StoreError("the commit thread has stopped".into())));
        }
        self.read(|reader| {
            reader.query_row("SELECT COUNT(*) FROM meta", [], |_| Ok(())).map_err(|e| err("probing the database", e))
        })
    }

    fn clock(&self) -> StoreFuture<'_, (u64, u32)> {
        ready(Ok(*self.state.clock.lock().unwrap_or_else(|e| e.into_inner())))
    }

    fn horizon(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.state.horizon.load(Ordering::SeqCst)))
    }

    fn epoch(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.state.epoch))
    }

    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize> {
        let (reply, answer) = oneshot::channel();
        Box::pin(self.submit(Job::Collect { before_millis, reply }, answer))
    }
}

impl RevocationStore for SqliteStore {
    fn save<'a>(&'a self, revoked: &'a Revoked) -> StoreFuture<'a, ()> {
        let (reply, answer) = oneshot::channel();
        Box::pin(self.submit(Job::Revoke { revoked: revoked.clone(), reply }, answer))
    }

    fn load(&self) -> StoreFuture<'_, Vec<Revoked>> {
        self.read(|reader| saved_revocations(reader))
    }
}

/// Each collection's latest position: its newest record, or the newest
/// collected tombstone kept in `heads` (see `writer::collect`).
fn read_heads(conn: &Connection) -> Result<std::collections::HashMap<String, u64>, StoreError> {
    let mut statement = conn
        .prepare(
            "SELECT collection, MAX(seq) FROM (SELECT collection, seq FROM records UNION ALL SELECT collection, seq FROM heads)
             GROUP BY collection",
        )
        .map_err(|e| err("reading the heads", e))?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))
        .map_err(|e| err("reading the heads", e))?;
    rows.map(|r| r.map_err(|e| err("reading the heads", e))).collect()
}

/// Records of `collection` after `since`, with the cursor and horizon, in one read transaction.
fn scan(reader: &mut Connection, collection: &str, since: u64) -> Result<Scan, StoreError> {
    let tx = reader.transaction().map_err(|e| err("starting a read", e))?;
    let meta = |name: &str| {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|e| err("reading the cursor", e))
            .map(|v| v.map_or(0, to_u64))
    };
    let (cursor, horizon) = (meta("seq")?, meta("horizon")?);
    let records = {
        let mut statement = tx
            .prepare_cached("SELECT key, value, hlc_millis, hlc_counter, hlc_node, seq FROM records WHERE collection = ?1 AND seq > ?2 ORDER BY seq")
            .map_err(|e| err("scanning", e))?;
        let rows =
            statement.query_map(params![collection, to_i64(since)], row_to_record).map_err(|e| err("scanning", e))?;
        rows.map(|r| r.map_err(|e| err("scanning", e))?).collect::<Result<Vec<_>, _>>()?
    };
    Ok(Scan { records, cursor, horizon })
}

fn saved_revocations(reader: &Connection) -> Result<Vec<Revoked>, StoreError> {
    let mut statement = reader
        .prepare("SELECT kind, subject, issued_before FROM revocations")
        .map_err(|e| err("reading revocations", e))?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
        .map_err(|e| err("reading revocations", e))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, subject, before) = row.map_err(|e| err("reading revocations", e))?;
        out.push(if kind == "jti" {
            Revoked::Jti(subject)
        } else {
            Revoked::Subject { sub: subject, issued_before: to_u64(before) }
        });
    }
    Ok(out)
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredRecord, StoreError>> {
    let key: String = row.get(0)?;
    let blob: Vec<u8> = row.get(1)?;
    let hlc = Hlc {
        millis: to_u64(row.get(2)?),
        counter: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        node: row.get(4)?,
    };
    let seq = to_u64(row.get(5)?);
    Ok(decode_value(&blob).map(|value| StoredRecord { key, value, hlc, seq }))
}

/// Creates `dir` (and its parents) if needed, owner-only (0700): records and
/// revocations are nobody else's business on a shared machine.
pub(super) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let cannot = |e| err(&format!("cannot create {}", dir.display()), e);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(cannot)?;
        // A directory made by an older version (or by hand) is tightened too.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(cannot)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(cannot)
}

/// Opens (creating if needed) a file readable and writable by the owner only (0600).
pub(super) fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Decodes a stored value.
pub fn decode_value(bytes: &[u8]) -> Result<Value, StoreError> {
    rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| err("a stored value does not decode", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        let second = SqliteStore::open(dir.path(), Durability::Full).err().unwrap();
        assert!(second.0.contains("in use by another syncgate server"), "{second}");
    }
}
