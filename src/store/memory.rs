//! The in-memory store: for tests, embedding and ephemeral deployments.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Applied, Scan, Store, StoreError, StoreFuture, StoredRecord, Write, ready};
use crate::hlc::merge_value;

/// Collections in memory; nothing survives the process.
#[derive(Debug)]
pub struct MemoryStore {
    /// A std mutex: held for in-memory updates only, never across an await.
    inner: Mutex<Inner>,
    epoch: u64,
    /// Fault injection for tests and drills: every commit fails while set.
    fail_commits: AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self { inner: Mutex::default(), epoch: crate::cursor::new_epoch(), fail_commits: AtomicBool::new(false) }
    }
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    clock: (u64, u32),
    horizon: u64,
    /// Writes stamped before this (ms) are stale: tombstones before it were collected.
    hlc_horizon: u64,
    collections: HashMap<String, Collection>,
}

#[derive(Debug, Default)]
struct Collection {
    records: HashMap<String, StoredRecord>,
    /// Sequence number → key, for `scan_since`.
    by_seq: BTreeMap<u64, String>,
    /// The position of the collection's latest stored write (kept when a tombstone goes).
    head: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every commit fail (`true`) or succeed again: for failure tests and drills.
    pub fn inject_commit_failure(&self, fail: bool) {
        self.fail_commits.store(fail, Ordering::SeqCst);
    }
}

impl Store for MemoryStore {
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return ready(Err(StoreError("injected commit failure".into())));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { seq, clock, hlc_horizon, collections, .. } = &mut *inner;
        let mut outcomes = Vec::with_capacity(writes.len());
        // A batch usually writes one collection: it is looked up once per run
        // of writes to it, and each record is hashed once (callgrind: three
        // SipHashes and a clone of the collection's name per op before).
        for run in writes.chunk_by(|a, b| a.collection == b.collection) {
            let collection = collections.entry(run[0].collection.clone()).or_default();
            for write in run {
                if write.hlc.millis < *hlc_horizon {
                    outcomes.push(Applied::Stale);
                    continue;
                }
                let position = *seq + 1;
                let record = || StoredRecord {
                    key: write.key.clone(),
                    value: write.value.clone(),
                    hlc: write.hlc.clone(),
                    seq: position,
                };
                match collection.records.entry(write.key.clone()) {
                    Entry::Occupied(mut current) => {
                        let current = current.get_mut();
                        let merge = merge_value(&write.hlc, &write.value, &current.hlc, &current.value);
                        if let Some(outcome) = Applied::unless_stored(merge) {
                            outcomes.push(outcome);
                            continue;
                        }
                        collection.by_seq.remove(&current.seq);
                        *current = record();
                    }
                    Entry::Vacant(vacant) => {
                        vacant.insert(record());
                    }
                }
                *seq = position;
                *clock = (*clock).max((write.hlc.millis, write.hlc.counter));
                collection.by_seq.insert(position, write.key.clone());
                let prev = std::mem::replace(&mut collection.head, position);
                outcomes.push(Applied::Stored { seq: position, prev });
            }
        }
        ready(Ok(outcomes))
    }

    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ready(Ok(inner.collections.get(collection).and_then(|c| c.records.get(key)).cloned()))
    }

    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let records = match inner.collections.get(collection) {
            None => Vec::new(),
            Some(c) => {
                c.by_seq.range(since.saturating_add(1)..).filter_map(|(_, key)| c.records.get(key).cloned()).collect()
            }
        };
        ready(Ok(Scan { records, cursor: inner.seq, horizon: inner.horizon }))
    }

    fn last_seq(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).seq))
    }

    fn collection_position<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, u64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ready(Ok(inner.collections.get(collection).map_or(0, |c| c.head)))
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return ready(Err(StoreError("injected commit failure".into())));
        }
        ready(Ok(()))
    }

    fn clock(&self) -> StoreFuture<'_, (u64, u32)> {
        ready(Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).clock))
    }

    fn horizon(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).horizon))
    }

    fn epoch(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.epoch))
    }

    fn collect_tombstones<'a>(&'a self, before_millis: u64) -> StoreFuture<'a, usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let mut removed = 0;
        for collection in inner.collections.values_mut() {
            let dead: Vec<(String, u64)> = collection
                .records
                .values()
                .filter(|r| r.value.is_nil() && r.hlc.millis < before_millis)
                .map(|r| (r.key.clone(), r.seq))
                .collect();
            for (key, seq) in dead {
                if let Some(gone) = collection.records.get(&key) {
                    // Writes up to the newest collected tombstone's millisecond could have lost to it.
                    inner.hlc_horizon = inner.hlc_horizon.max(gone.hlc.millis + 1);
                }
                collection.records.remove(&key);
                collection.by_seq.remove(&seq);
                inner.horizon = inner.horizon.max(seq);
                removed += 1;
            }
        }
        ready(Ok(removed))
    }
}
