//! A store wrapper for tests: delegates to a real store, with hooks that can
//! delay or fail a commit and delay a scan (a slow disk, a full disk).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use syncgate::store::{Applied, Scan, Store, StoreError, StoreFuture, StoredRecord, Write};

/// What runs before each commit: an error refuses the commit.
pub type ApplyHook =
    Box<dyn Fn(&[Write]) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> + Send + Sync>;

/// A store that delegates to `inner` after its hooks.
pub struct Hooked {
    pub inner: Arc<dyn Store>,
    pub before_apply: ApplyHook,
    /// Runs (on the blocking pool) before each scan, with the collection's name.
    pub before_scan: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Hooked {
    /// A wrapper whose hooks do nothing yet.
    pub fn around(inner: Arc<dyn Store>) -> Self {
        Self { inner, before_apply: Box::new(|_| Box::pin(async { Ok(()) })), before_scan: Arc::new(|_| {}) }
    }
}

impl Store for Hooked {
    fn apply<'a>(&'a self, writes: &'a [Write]) -> StoreFuture<'a, Vec<Applied>> {
        let before = (self.before_apply)(writes);
        Box::pin(async move {
            before.await?;
            self.inner.apply(writes).await
        })
    }
    fn get<'a>(&'a self, collection: &'a str, key: &'a str) -> StoreFuture<'a, Option<StoredRecord>> {
        self.inner.get(collection, key)
    }
    fn scan_since<'a>(&'a self, collection: &'a str, since: u64) -> StoreFuture<'a, Scan> {
        let (hook, name) = (self.before_scan.clone(), collection.to_string());
        Box::pin(async move {
            // The hook may sleep like a slow disk: on the blocking pool, as a disk read would be.
            tokio::task::spawn_blocking(move || hook(&name)).await.map_err(|e| StoreError(e.to_string()))?;
            self.inner.scan_since(collection, since).await
        })
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
