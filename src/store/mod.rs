//! Where collections live: the [`Store`] trait and its implementations.
//!
//! Every implementation must pass [`conformance::run`], which checks the
//! contract below against a fresh, empty store.

mod backup;
pub mod conformance;
mod memory;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

use rmpv::Value;

pub use backup::{BackupReport, backup as sqlite_backup, restore as sqlite_restore};
pub use memory::MemoryStore;
pub use sqlite::{Durability, FORMAT_VERSION, SqliteStore, decode_value, encode_value};

use crate::hlc::Hlc;

/// One last-writer-wins write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Collection name.
    pub collection: String,
    /// Record key.
    pub key: String,
    /// The value; nil is a tombstone.
    pub value: Value,
    /// The writer's timestamp, kept as sent.
    pub hlc: Hlc,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Record key.
    pub key: String,
    /// The value; nil is a tombstone.
    pub value: Value,
    /// The timestamp of the write that set it.
    pub hlc: Hlc,
    /// The server's acceptance sequence number of that write.
    pub seq: u64,
}

/// What became of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer and is now the record, with this sequence number.
    Stored {
        /// Its acceptance sequence number.
        seq: u64,
    },
    /// The stored record's timestamp is the same or newer: nothing changed.
    Superseded,
    /// The write's timestamp is not newer than the newest collected tombstone
    /// ([`Store::collect_tombstones`]): it could resurrect a collected delete,
    /// so it changes nothing and is refused (`stale`).
    Stale,
}

/// Records changed after a cursor, and the cursor that follows them, all
/// read in one consistent view of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Changed records, in acceptance order, each key once (its latest state).
    pub records: Vec<StoredRecord>,
    /// The store's latest sequence number when the scan ran.
    pub cursor: u64,
    /// The sequence-number horizon when the scan ran: a reader whose position
    /// is below it may have missed a collected tombstone.
    pub horizon: u64,
}

/// A store failure: the affected writes fail with `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// The future returned by [`Store::apply`].
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable (or not) storage of last-writer-wins collections.
///
/// Contract:
/// - `apply` processes writes in order. A write is stored iff its `hlc` is
///   greater than the stored record's (`(millis, counter, node)` order); an
///   equal or older one is [`Applied::Superseded`] and changes nothing, so
///   replaying a write is harmless. Stored writes get strictly increasing
///   sequence numbers, shared by all collections.
/// - `apply` is atomic: on `Err` nothing of the batch is visible. When it
///   returns `Ok`, the batch has reached the store's durability point (for a
///   disk store: fsync), and a following `get`/`scan_since` sees it.
/// - Tombstones (nil values) are records like any other.
/// - `scan_since(c, s)` returns each record of `c` whose sequence number is
///   greater than `s`, in sequence order, and a cursor no smaller than every
///   sequence number returned; `scan_since(c, cursor)` then returns only
///   later changes.
/// - `collect_tombstones(t)` removes tombstones whose `hlc.millis < t`,
///   raises `horizon()` to the highest sequence number it removed (a reader
///   whose cursor is below the horizon may have missed a delete and must
///   resync from scratch), and raises the *time* horizon past the newest
///   removed tombstone's millisecond: from then on `apply` answers
///   [`Applied::Stale`] for every write stamped before it, checked atomically
///   with the write. Such a write could have lost to a collected delete, so
///   accepting it could resurrect the record on some replicas and not others.
/// - `scan_since` reads the records, the cursor and the horizon in one
///   consistent view: a collection never falls between them.
/// - `epoch()` is a random non-zero number drawn when the store is created and
///   drawn again by a restore; it never changes while the store is open.
///   Cursors carry it ([`crate::cursor::Cursor`]).
/// - `last_seq`, `clock`, `horizon`, the time horizon and `epoch` survive a
///   restart of a durable store.
pub trait Store: Send + Sync + 'static {
    /// Applies writes (see the contract).
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>>;
    /// The current record of `key` in `collection`.
    fn get(&self, collection: &str, key: &str) -> Result<Option<StoredRecord>, StoreError>;
    /// Records of `collection` changed after sequence number `since`.
    fn scan_since(&self, collection: &str, since: u64) -> Result<Scan, StoreError>;
    /// The highest sequence number assigned so far.
    fn last_seq(&self) -> u64;
    /// The highest `(millis, counter)` of any stored write, so the server's clock never goes back.
    fn clock(&self) -> (u64, u32);
    /// Cursors below this may have missed collected tombstones.
    fn horizon(&self) -> u64;
    /// This store's epoch (see the contract).
    fn epoch(&self) -> u64;
    /// Removes tombstones written (by `hlc`) before `before_millis`; returns how many.
    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize>;
}
