//! The conformance suite every [`Store`] implementation must pass.
//!
//! Call [`run`] from a test with an async factory for fresh, empty stores;
//! call [`run_shared`] with one that opens three handles on one fresh
//! database (two writers and a follower) for a store several processes may
//! share. Both panic with a description of the first broken rule.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmpv::Value;

use super::{Applied, MemoryStore, Scan, SqliteStore, Store, StoreError, StoreFuture, StoredRecord, Write};
use crate::hlc::Hlc;

mod shared;

pub use shared::run_shared;

/// A store whose commits can be made to fail, so the suite can check what a
/// failed commit leaves behind.
pub trait CommitFaults {
    /// Makes every commit fail (`true`) or succeed again.
    fn inject_commit_failure(&self, fail: bool);
}

impl CommitFaults for MemoryStore {
    fn inject_commit_failure(&self, fail: bool) {
        MemoryStore::inject_commit_failure(self, fail);
    }
}

impl CommitFaults for SqliteStore {
    fn inject_commit_failure(&self, fail: bool) {
        SqliteStore::inject_commit_failure(self, fail);
    }
}

/// Any store with commits that fail on demand (before they reach it): the
/// suite's fault hook, so production types need none.
pub struct Faulty {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
}

impl Faulty {
    /// Wraps `inner`; commits pass through until [`CommitFaults::inject_commit_failure`].
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, failing: AtomicBool::new(false) }
    }
}

impl CommitFaults for Faulty {
    fn inject_commit_failure(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }
}

impl Store for Faulty {
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>> {
        if self.failing.load(Ordering::SeqCst) {
            return super::ready(Err(StoreError("injected commit failure".into())));
        }
        self.inner.apply(writes)
    }
    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>> {
        self.inner.get(collection, key)
    }
    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan> {
        self.inner.scan_since(collection, since)
    }
    fn last_seq(&self) -> StoreFuture<'_, u64> {
        self.inner.last_seq()
    }
    fn collection_position<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, u64> {
        self.inner.collection_position(collection)
    }
    fn check(&self) -> StoreFuture<'_, ()> {
        self.inner.check()
    }
    fn clock(&self) -> StoreFuture<'_, (u64, u32)> {
        self.inner.clock()
    }
    fn horizon(&self) -> StoreFuture<'_, u64> {
        self.inner.horizon()
    }
    fn epoch(&self) -> StoreFuture<'_, u64> {
        self.inner.epoch()
    }
    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize> {
        self.inner.collect_tombstones(before_millis)
    }
}

fn hlc(millis: u64, counter: u32, node: &str) -> Hlc {
    Hlc { millis, counter, node: node.into() }
}

fn write(collection: &str, key: &str, value: impl Into<Value>, hlc: Hlc) -> Write {
    Write { collection: collection.into(), key: key.into(), value: value.into(), hlc }
}

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    last_writer_wins(&*fresh().await).await;
    replays_are_harmless(&*fresh().await).await;
    tombstones_are_records(&*fresh().await).await;
    scans_follow_acceptance_order(&*fresh().await).await;
    batches_apply_in_order(&*fresh().await).await;
    collections_are_separate(&*fresh().await).await;
    old_tombstones_are_collected(&*fresh().await).await;
    reused_stamps_are_refused(&*fresh().await).await;
    positions_grow_and_chain_per_collection(&*fresh().await).await;
    a_failed_commit_leaves_no_trace(&Faulty::new(fresh().await)).await;
    collection_positions_and_readiness(&*fresh().await).await;
}

/// `collection_position` is the collection's latest stored write, read now;
/// `check` answers while the store can serve.
async fn collection_positions_and_readiness(store: &dyn Store) {
    assert_eq!(store.collection_position("c").await.unwrap(), 0, "an unknown collection is at 0");
    store.check().await.expect("a fresh store is ready");
    let applied = store
        .apply(&[
            write("c", "a", 1, hlc(10, 0, "n")),
            write("d", "a", 1, hlc(10, 0, "n")),
            write("c", "b", 2, hlc(11, 0, "n")),
        ])
        .await
        .unwrap();
    let (c_last, d_last) = (stored(&applied[2]).0, stored(&applied[1]).0);
    assert_eq!(store.collection_position("c").await.unwrap(), c_last);
    assert_eq!(store.collection_position("d").await.unwrap(), d_last);
    store.apply(&[write("d", "a", 0, hlc(9, 0, "n"))]).await.unwrap();
    assert_eq!(store.collection_position("d").await.unwrap(), d_last, "a superseded write moves nothing");
    store.check().await.expect("still ready");
}

fn stored(applied: &Applied) -> (u64, u64) {
    match applied {
        Applied::Stored { seq, prev } => (*seq, *prev),
        other => panic!("expected a stored write, got {other:?}"),
    }
}

/// The position contract: positions grow in commit order across
/// collections, and `prev` names exactly the collection's previous stored
/// write, so a reader can tell a missed change from a gap in the numbering.
async fn positions_grow_and_chain_per_collection(store: &dyn Store) {
    let mut latest: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut highest = 0;
    for round in 0..4u64 {
        let batch = [
            write("x", &format!("k{round}"), 1, hlc(10 + round, 0, "n")),
            write("y", "same", round, hlc(10 + round, 0, "n")),
            write("x", "old", 0, hlc(1, 0, "n")),
        ];
        let applied = store.apply(&batch).await.unwrap();
        for (write, outcome) in batch.iter().zip(&applied) {
            if round > 0 && write.key == "old" {
                assert_eq!(*outcome, Applied::Superseded, "a superseded write takes no position");
                continue;
            }
            let (seq, prev) = stored(outcome);
            assert!(seq > highest, "positions grow in commit order ({seq} after {highest})");
            highest = seq;
            let expected = latest.insert(write.collection.clone(), seq).unwrap_or(0);
            assert_eq!(
                prev, expected,
                "prev of {}/{} is the collection's previous position",
                write.collection, write.key
            );
        }
        let scan = store.scan_since("y", 0).await.unwrap();
        assert!(scan.cursor >= highest, "a scan's cursor covers every position committed before it");
    }
    assert_eq!(store.last_seq().await.unwrap(), highest);
}

/// A failed commit shows nothing, moves no chain, and does not stop later
/// commits from reaching readers who resume from a cursor taken before it.
async fn a_failed_commit_leaves_no_trace<S: Store + CommitFaults>(store: &S) {
    let first = store.apply(&[write("c", "a", 1, hlc(10, 0, "n"))]).await.unwrap();
    let (first_seq, _) = stored(&first[0]);
    let before = store.scan_since("c", 0).await.unwrap();
    store.inject_commit_failure(true);
    let failed = store.apply(&[write("c", "b", 2, hlc(11, 0, "n")), write("d", "z", 3, hlc(11, 0, "n"))]).await;
    assert!(failed.is_err(), "the injected failure is reported");
    store.inject_commit_failure(false);
    assert!(store.get("c", "b").await.unwrap().is_none(), "nothing of a failed batch is visible");
    assert!(store.get("d", "z").await.unwrap().is_none(), "nothing of a failed batch is visible");
    assert!(store.scan_since("c", before.cursor).await.unwrap().records.is_empty());
    assert_eq!(store.last_seq().await.unwrap(), before.cursor, "a failed commit publishes no position");
    let next = store.apply(&[write("c", "b", 2, hlc(12, 0, "n")), write("d", "z", 3, hlc(12, 0, "n"))]).await.unwrap();
    let ((seq_b, prev_b), (seq_z, prev_z)) = (stored(&next[0]), stored(&next[1]));
    assert!(seq_b > before.cursor && seq_z > seq_b, "positions after a failure still grow");
    assert_eq!(prev_b, first_seq, "the chain continues from the last committed write");
    assert_eq!(prev_z, 0, "a collection only the failed batch touched has no previous write");
    let resumed = store.scan_since("c", before.cursor).await.unwrap();
    let keys: Vec<_> = resumed.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["b"], "a reader resuming from before the failure gets the later write");
}

/// A reused stamp is refused, not settled by comparing values: a browser
/// client cannot re-create a value's bytes (`2.0` decodes to `2`), so every
/// replica must be able to decide by stamps alone. The first value stays.
async fn reused_stamps_are_refused(store: &dyn Store) {
    let first = write("c", "k", 5, hlc(7, 0, "n"));
    let float = write("c", "k", 2.0, hlc(7, 0, "n"));
    assert!(matches!(store.apply(std::slice::from_ref(&first)).await.unwrap()[..], [Applied::Stored { .. }]));
    let before = store.last_seq().await.unwrap();
    assert_eq!(store.apply(&[float, first.clone()]).await.unwrap(), [Applied::Conflict, Applied::Superseded]);
    assert_eq!(store.get("c", "k").await.unwrap().unwrap().value, Value::from(5), "the first value stays");
    assert_eq!(store.last_seq().await.unwrap(), before, "a refused write takes no position");
    let delete = write("c", "k", Value::Nil, hlc(7, 0, "n"));
    assert_eq!(store.apply(&[delete]).await.unwrap(), [Applied::Conflict], "a delete cannot reuse a stamp either");
}

async fn last_writer_wins(store: &dyn Store) {
    let first = store.apply(&[write("c", "k", "v1", hlc(10, 0, "a"))]).await.unwrap();
    assert!(matches!(first[..], [Applied::Stored { .. }]), "first write is stored");
    let older = store.apply(&[write("c", "k", "old", hlc(9, 5, "z"))]).await.unwrap();
    assert_eq!(older, [Applied::Superseded], "an older hlc changes nothing");
    assert_eq!(store.get("c", "k").await.unwrap().unwrap().value, Value::from("v1"));
    let tie = store.apply(&[write("c", "k", "tie", hlc(10, 0, "b"))]).await.unwrap();
    assert!(matches!(tie[..], [Applied::Stored { .. }]), "same time, greater node id wins");
    let lower_tie = store.apply(&[write("c", "k", "lower", hlc(10, 0, "a0"))]).await.unwrap();
    assert_eq!(lower_tie, [Applied::Superseded]);
    assert_eq!(store.get("c", "k").await.unwrap().unwrap().value, Value::from("tie"));
    assert!(store.get("c", "missing").await.unwrap().is_none());
}

async fn replays_are_harmless(store: &dyn Store) {
    let w = write("c", "k", "v", hlc(5, 1, "n"));
    store.apply(std::slice::from_ref(&w)).await.unwrap();
    let before = store.scan_since("c", 0).await.unwrap();
    assert_eq!(store.apply(&[w]).await.unwrap(), [Applied::Superseded], "the same write again is superseded");
    let after = store.scan_since("c", 0).await.unwrap();
    assert_eq!(before.records, after.records);
    assert_eq!(before.cursor, after.cursor, "a replay assigns no sequence number");
}

async fn tombstones_are_records(store: &dyn Store) {
    store.apply(&[write("c", "k", "v", hlc(1, 0, "n"))]).await.unwrap();
    let cursor = store.scan_since("c", 0).await.unwrap().cursor;
    store.apply(&[write("c", "k", Value::Nil, hlc(2, 0, "n"))]).await.unwrap();
    let record = store.get("c", "k").await.unwrap().expect("a tombstone is kept");
    assert_eq!(record.value, Value::Nil);
    let delta = store.scan_since("c", cursor).await.unwrap();
    assert_eq!(delta.records.len(), 1);
    assert_eq!(delta.records[0].value, Value::Nil, "deletes reach delta readers");
    assert_eq!(
        store.apply(&[write("c", "k", "zombie", hlc(1, 5, "n"))]).await.unwrap(),
        [Applied::Superseded],
        "an older write cannot resurrect"
    );
}

async fn scans_follow_acceptance_order(store: &dyn Store) {
    // Acceptance order, not hlc order: a late offline write has an old hlc.
    store.apply(&[write("c", "a", 1, hlc(100, 0, "n"))]).await.unwrap();
    let mid = store.scan_since("c", 0).await.unwrap().cursor;
    store.apply(&[write("c", "late", 2, hlc(1, 0, "offline"))]).await.unwrap();
    store.apply(&[write("c", "b", 3, hlc(200, 0, "n"))]).await.unwrap();
    store.apply(&[write("c", "a", 4, hlc(300, 0, "n"))]).await.unwrap();
    let all = store.scan_since("c", 0).await.unwrap();
    let keys: Vec<_> = all.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["late", "b", "a"], "each key once, in acceptance order of its latest write");
    assert!(all.records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all.records.iter().all(|r| r.seq <= all.cursor));
    let delta = store.scan_since("c", mid).await.unwrap();
    assert!(
        delta.records.iter().any(|r| r.key == "late"),
        "a late write with an old hlc reaches readers who synced before it"
    );
    assert!(store.scan_since("c", all.cursor).await.unwrap().records.is_empty());
}

async fn batches_apply_in_order(store: &dyn Store) {
    let outcomes = store
        .apply(&[
            write("c", "k", "first", hlc(1, 0, "n")),
            write("c", "k", "second", hlc(2, 0, "n")),
            write("c", "k", "stale", hlc(1, 5, "n")),
        ])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Applied::Stored { seq: a, .. }, Applied::Stored { seq: b, .. }, Applied::Superseded] if a < b)
    );
    assert_eq!(store.get("c", "k").await.unwrap().unwrap().value, Value::from("second"));
}

async fn collections_are_separate(store: &dyn Store) {
    store.apply(&[write("x", "k", 1, hlc(1, 0, "n")), write("y", "k", 2, hlc(1, 0, "n"))]).await.unwrap();
    assert_eq!(store.get("x", "k").await.unwrap().unwrap().value, Value::from(1));
    assert_eq!(store.scan_since("y", 0).await.unwrap().records.len(), 1);
    assert!(store.scan_since("z", 0).await.unwrap().records.is_empty());
}

async fn old_tombstones_are_collected(store: &dyn Store) {
    store
        .apply(&[
            write("c", "gone", Value::Nil, hlc(100, 0, "n")),
            write("c", "recent", Value::Nil, hlc(900, 0, "n")),
            write("c", "live", 1, hlc(50, 0, "n")),
        ])
        .await
        .unwrap();
    let before = store.scan_since("c", 0).await.unwrap();
    assert_eq!(store.horizon().await.unwrap(), 0);
    assert_eq!(store.collect_tombstones(500).await.unwrap(), 1, "only tombstones older than the cutoff go");
    assert!(store.get("c", "gone").await.unwrap().is_none());
    assert!(store.get("c", "recent").await.unwrap().is_some());
    assert!(store.get("c", "live").await.unwrap().is_some(), "live records are never collected");
    let gone_seq = before.records.iter().find(|r| r.key == "gone").unwrap().seq;
    assert!(store.horizon().await.unwrap() >= gone_seq, "readers from before the collection must resync");
    assert_eq!(store.last_seq().await.unwrap(), before.cursor);
    assert_eq!(store.clock().await.unwrap(), (900, 0));
}
