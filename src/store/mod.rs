//! Where collections live: the [`Store`] trait and its implementations.
//!
//! Every implementation must pass [`conformance::run`], which checks the
//! contract below against a fresh, empty store; a store several processes
//! share (Postgres) must also pass [`conformance::run_shared`].

mod backup;
pub mod conformance;
mod memory;
mod postgres;
mod revocations;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

use rmpv::Value;

pub use backup::{BackupReport, backup as sqlite_backup, restore as sqlite_restore};
pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore, new_epoch as postgres_new_epoch};
pub use revocations::{MemoryRevocationStore, RevocationStore, Revoked};
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
        /// Its acceptance sequence number (its position).
        seq: u64,
        /// The position of the collection's previous stored write (0 if none):
        /// no write of the collection has a position between `prev` and `seq`.
        /// Readers chain on it to notice a change they never received.
        prev: u64,
    },
    /// The stored record's timestamp is newer, or this is the same write
    /// again: nothing changed.
    Superseded,
    /// The stored record has the same timestamp and another value: a writer
    /// reused a stamp. Nothing changed; the write is refused (`invalid`).
    Conflict,
    /// The write's timestamp is not newer than the newest collected tombstone
    /// ([`Store::collect_tombstones`]): it could resurrect a collected delete,
    /// so it changes nothing and is refused (`stale`).
    Stale,
}

impl Applied {
    /// What a write that `merge` judged comes to when it stores nothing
    /// (`None`: it replaces the record). One mapping for every store.
    pub(crate) fn unless_stored(merge: crate::hlc::Merge) -> Option<Self> {
        match merge {
            crate::hlc::Merge::Replaces => None,
            crate::hlc::Merge::Keeps => Some(Self::Superseded),
            crate::hlc::Merge::Conflicts => Some(Self::Conflict),
        }
    }
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

/// The future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable (or not) storage of last-writer-wins collections.
///
/// Every method is asynchronous and fallible: a store may live across the
/// network (Postgres), and nothing here may block the runtime or answer from
/// a cache a remote store could not keep true.
///
/// Contract:
/// - `apply` processes writes in order, by [`crate::hlc::merge`]: a write is
///   stored iff its `hlc` is greater than the stored record's
///   (`(millis, counter, node)`, the node id compared byte-wise); an older one,
///   or the same write again, is [`Applied::Superseded`] and changes nothing,
///   so replaying a write is harmless; one with the stored record's `hlc` and
///   another value is [`Applied::Conflict`] and changes nothing.
/// - **Positions.** Each stored write gets a position (`seq`), shared by all
///   collections, and the position of its collection's previous stored write
///   (`prev`). Positions grow in commit order: once `apply` returns, every
///   position it assigned is greater than every position any earlier finished
///   `apply` assigned, and a reader never sees a position appear below one it
///   has already seen — across every process sharing the store. A shared store
///   must therefore not take positions from a plain sequence (taken at
///   `nextval`, not at commit); the Postgres store locks one position row first
///   in every commit, which serialises commits across nodes for the length of
///   one commit (its cost, see `BENCHMARKS.md`). *Gaps are allowed*: a store
///   may use up positions that never appear, so readers must never wait for a
///   position to be filled. They chain on `prev` instead:
///   for each collection, `prev` is exactly the previous stored write's
///   position, so a reader that has every write up to `p` and receives a
///   change with `prev <= p` has missed nothing, and one with `prev > p` knows
///   it missed something and reads it with `scan_since`.
/// - `apply` is atomic: on `Err` nothing of the batch is visible, and the
///   collection chains (`prev`) continue from the last *committed* write. When
///   it returns `Ok`, the batch has reached the store's durability point (for a
///   disk store: fsync), and a following `get`/`scan_since` sees it.
/// - Tombstones (nil values) are records like any other.
/// - `scan_since(c, s)` returns each record of `c` whose position is greater
///   than `s`, in position order, and a cursor no smaller than every position
///   returned nor than any position committed before the scan began;
///   `scan_since(c, cursor)` then returns only later changes. The records, the
///   cursor and the horizon come from one consistent view: a commit is either
///   wholly in it or wholly after it.
/// - `collect_tombstones(t)` removes tombstones whose `hlc.millis < t`,
///   raises `horizon()` to the highest position it removed (a reader whose
///   cursor is below the horizon may have missed a delete and must resync
///   from scratch), and raises the *time* horizon past the newest removed
///   tombstone's millisecond: from then on `apply` answers
///   [`Applied::Stale`] for every write stamped before it, checked atomically
///   with the write. Such a write could have lost to a collected delete, so
///   accepting it could resurrect the record on some replicas and not others.
/// - `epoch()` is a random non-zero number drawn when the store is created and
///   drawn again by a restore; it never changes while the store is open.
///   Cursors carry it ([`crate::cursor::Cursor`]).
/// - `last_seq`, `clock`, `horizon`, the time horizon, the chains and `epoch`
///   survive a restart of a durable store.
pub trait Store: Send + Sync + 'static {
    /// Applies writes (see the contract).
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>>;
    /// [`Store::apply`] for writes the caller hands over and gets back with
    /// the outcomes: a store that commits on another thread takes them
    /// without copying them (the commit path uses this; a copy of every
    /// write was a fiftieth of a durable op).
    fn apply_owned(&self, writes: Vec<Write>) -> StoreFuture<'_, (Vec<Applied>, Vec<Write>)> {
        Box::pin(async move {
            let applied = self.apply(&writes).await?;
            Ok((applied, writes))
        })
    }
    /// The current record of `key` in `collection`.
    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>>;
    /// Records of `collection` changed after position `since`.
    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan>;
    /// The highest position committed so far.
    fn last_seq(&self) -> StoreFuture<'_, u64>;
    /// The position of `collection`'s latest stored write (0 if none), read
    /// from the store now: readers compare it with what they were sent, to
    /// notice a last change that never reached them.
    fn collection_position<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, u64>;
    /// A cheap readiness probe (`/readyz`): whether the store can serve reads
    /// and its commit path is alive. It writes nothing.
    fn check(&self) -> StoreFuture<'_, ()>;
    /// The highest `(millis, counter)` of any stored write, so the server's clock never goes back.
    fn clock(&self) -> StoreFuture<'_, (u64, u32)>;
    /// Cursors below this may have missed collected tombstones.
    fn horizon(&self) -> StoreFuture<'_, u64>;
    /// This store's epoch (see the contract).
    fn epoch(&self) -> StoreFuture<'_, u64>;
    /// Removes tombstones written (by `hlc`) before `before_millis`; returns how many.
    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize>;
}

/// An answer that is ready at once (memory stores, cached counters).
pub(crate) fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(value))
}
