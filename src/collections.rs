//! Last-writer-wins collections: validating ops, committing them, and
//! streaming `CHANGE`s to syncing connections.
//!
//! Commits run concurrently (so the store can group them), but `CHANGE`s
//! leave strictly in acceptance order: a reorder buffer releases a commit's
//! changes only once every earlier sequence number has been published. So a
//! reader that resumes from any cursor it was given can never skip a write
//! accepted before it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rmpv::Value;

use crate::cursor::Cursor;
use crate::hlc::{Hlc, HlcClock};
use crate::outbox::{ConnId, Outbound, Outbox};
use crate::protocol::codes::error;
use crate::protocol::{OpOutcome, RawOp, Record, ServerMessage, encode_server};
use crate::store::{Applied, Scan, Store, StoreError, StoredRecord, Write};

/// Longest accepted record key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Default record bytes (key, value, hlc) per page of a snapshot: ordinary
/// collections arrive as one `SYNC_DATA`, a huge one never becomes one huge
/// message. A page holds at least one record.
pub const SYNC_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// A collection's records for `SYNC`, in acceptance order.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Never empty: the first page answers as `SYNC_DATA`, the others follow
    /// as `CHANGE`s. Each page carries the cursor after its last record, so a
    /// client cut off between pages resumes without a gap.
    pub pages: Vec<(Vec<Record>, u64)>,
    /// The cursor after the whole snapshot (the last page's).
    pub cursor: u64,
    /// `since` could not be resumed from (older than the tombstone horizon, of
    /// another epoch, or a position never issued): this is the full state.
    pub reset: bool,
}

/// Cuts `records` (in acceptance order) into pages of about `max_bytes`;
/// each page's cursor is its last record's sequence number, the last page's
/// is `cursor` (the store's position when it was scanned).
fn paginate(records: Vec<StoredRecord>, cursor: u64, max_bytes: usize) -> Vec<(Vec<Record>, u64)> {
    let mut pages = Vec::new();
    let (mut page, mut bytes, mut last_seq) = (Vec::new(), 0, 0);
    for record in records {
        let size = record.key.len() + crate::protocol::encoded_len(&record.value) + 40;
        if !page.is_empty() && bytes + size > max_bytes {
            pages.push((std::mem::take(&mut page), last_seq));
            bytes = 0;
        }
        bytes += size;
        last_seq = record.seq;
        page.push(to_wire(record));
    }
    pages.push((page, cursor));
    pages
}

/// The collections of one server.
pub struct Collections {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// The store's epoch, carried by every cursor this server issues.
    epoch: u64,
    clock: HlcClock,
    max_drift_ms: u64,
    feeds: DashMap<String, Arc<Feed>>,
    /// Commits whose changes wait for earlier sequence numbers. A std mutex:
    /// held to insert and flush, never across an await.
    pending: Mutex<Reorder>,
}

/// Changes of committed batches, keyed by their first sequence number.
struct Reorder {
    next: u64,
    waiting: BTreeMap<u64, (u64, Vec<(Write, u64)>)>,
}

/// Connections syncing one collection. A std mutex: offering never waits.
#[derive(Debug, Default)]
struct Feed {
    watchers: Mutex<Vec<Outbox>>,
}

impl Collections {
    /// Collections over `store`; writes stamped more than `max_drift_ms` ahead of the server's clock are refused.
    pub fn new(store: Arc<dyn Store>, clock: HlcClock, max_drift_ms: u64) -> Self {
        let next = store.last_seq() + 1;
        let pending = Mutex::new(Reorder { next, waiting: BTreeMap::new() });
        let epoch = store.epoch();
        Self { inner: Arc::new(Inner { store, epoch, clock, max_drift_ms, feeds: DashMap::new(), pending }) }
    }

    /// The cursor string for `position` in this server's store.
    pub fn cursor(&self, position: u64) -> String {
        Cursor::new(self.inner.epoch, position).to_string()
    }

    /// The server's hybrid logical clock.
    pub fn clock(&self) -> &HlcClock {
        &self.inner.clock
    }

    /// The store behind the collections.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Validates and applies ops (already authorised), returning one outcome per op in order.
    /// Accepted ops are durable in the store before this returns.
    pub async fn apply(&self, ops: Vec<RawOp>, now_ms: u64) -> Vec<OpOutcome> {
        let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
        let mut writes = Vec::with_capacity(ops.len());
        let mut slots = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            match self.validate(&op, now_ms) {
                Ok(hlc) => {
                    slots.push((i, op.op_id));
                    writes.push(Write { collection: op.collection, key: op.key, value: op.value, hlc });
                }
                Err((code, message)) => outcomes[i] = Some(rejected(op.op_id, code, message)),
            }
        }
        if !writes.is_empty() {
            // The commit and its publication run in their own task: a caller that
            // goes away mid-commit can never leave a gap in the reorder buffer.
            let inner = self.inner.clone();
            let committed = tokio::spawn(async move {
                let result = inner.store.apply(&writes).await;
                if let Ok(applied) = &result {
                    inner.publish(&writes, applied, now_ms);
                }
                result
            })
            .await
            .unwrap_or_else(|e| Err(StoreError(format!("commit task failed: {e}"))));
            let unavailable = "the store cannot accept writes right now";
            for (n, (i, op_id)) in slots.into_iter().enumerate() {
                outcomes[i] = Some(match committed.as_ref().map(|applied| applied.get(n)) {
                    Ok(Some(Applied::Stale)) => rejected(
                        op_id,
                        error::STALE,
                        "the op's hlc is older than the tombstone-collection horizon".into(),
                    ),
                    Ok(_) => OpOutcome { op_id, ok: true, code: None, message: None },
                    Err(_) => rejected(op_id, error::UNAVAILABLE, unavailable.into()),
                });
            }
            if let Err(StoreError(reason)) = &committed {
                tracing::warn!(%reason, "store write failed");
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| rejected(Value::Nil, error::UNAVAILABLE, "not processed".into())))
            .collect()
    }

    fn validate(&self, op: &RawOp, now_ms: u64) -> Result<Hlc, (&'static str, String)> {
        let max_drift_ms = self.inner.max_drift_ms;
        if op.key.is_empty() || op.key.len() > MAX_KEY_BYTES {
            return Err((error::INVALID, format!("key must be 1 to {MAX_KEY_BYTES} bytes")));
        }
        let hlc: Hlc = op.hlc.parse().map_err(|e: crate::hlc::HlcError| (error::INVALID, e.to_string()))?;
        if hlc.millis > now_ms.saturating_add(max_drift_ms) {
            let ahead = hlc.millis - now_ms;
            return Err((
                error::CLOCK_SKEW,
                format!("hlc is {ahead} ms ahead of the server's clock (limit {} ms)", max_drift_ms),
            ));
        }
        Ok(hlc)
    }

    /// Starts sending `CHANGE`s of `collection` to `outbox`. Call before [`Collections::snapshot`]
    /// so nothing falls between the snapshot and the stream.
    pub fn watch(&self, collection: &str, outbox: Outbox) {
        let entry = self.inner.feeds.entry(collection.to_string()).or_default();
        let mut watchers = entry.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if !watchers.iter().any(|w| w.id() == outbox.id()) {
            watchers.push(outbox);
        }
    }

    /// Stops sending `CHANGE`s of `collection` to connection `id`.
    pub fn unwatch(&self, collection: &str, id: ConnId) {
        self.inner.feeds.remove_if(collection, |_, feed| {
            let mut watchers = feed.watchers.lock().unwrap_or_else(|e| e.into_inner());
            watchers.retain(|w| w.id() != id);
            watchers.is_empty()
        });
    }

    /// Records of `collection` changed after `since` (all when `None`), as
    /// wire records cut into pages of about `page_bytes`. When `since` cannot
    /// be resumed from (another epoch, a position never issued, or one older
    /// than the tombstone horizon, so a delete may have been collected), the
    /// full state is returned instead and the flag says so (`SYNC_DATA.reset`).
    /// The horizon is read with the scan, in one view of the store.
    /// The scan runs on the blocking pool: a large collection must not stall
    /// the connections that share this runtime thread.
    pub async fn snapshot(
        &self,
        collection: &str,
        since: Option<Cursor>,
        page_bytes: usize,
    ) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        let from = since.filter(|c| c.resumable(inner.epoch, u64::MAX)).map_or(0, |c| c.position);
        let mut scan = self.scan(collection, from).await?;
        let reset = since
            .is_some_and(|c| !c.resumable(inner.epoch, scan.cursor) || (c.position > 0 && c.position < scan.horizon));
        if reset && from > 0 {
            scan = self.scan(collection, 0).await?;
        }
        let Scan { records, cursor, .. } = scan;
        Ok(Snapshot { pages: paginate(records, cursor, page_bytes), cursor, reset })
    }

    async fn scan(&self, collection: &str, from: u64) -> Result<Scan, StoreError> {
        let (store, collection) = (self.inner.store.clone(), collection.to_string());
        tokio::task::spawn_blocking(move || store.scan_since(&collection, from))
            .await
            .map_err(|e| StoreError(format!("scan failed: {e}")))?
    }

    /// Collects tombstones written before `before_millis` (retention).
    pub async fn collect_tombstones(&self, before_millis: u64) -> Result<usize, StoreError> {
        self.inner.store.collect_tombstones(before_millis).await
    }
}

impl Inner {
    /// Queues a commit's changes and publishes every batch that is now next in sequence.
    fn publish(&self, writes: &[Write], applied: &[Applied], now_ms: u64) {
        let stored: Vec<(Write, u64)> = writes
            .iter()
            .zip(applied)
            .filter_map(|(w, a)| match a {
                Applied::Stored { seq } => Some((w.clone(), *seq)),
                Applied::Superseded | Applied::Stale => None,
            })
            .collect();
        let (Some(first), Some(last)) = (stored.first().map(|s| s.1), stored.last().map(|s| s.1)) else {
            return;
        };
        for (write, _) in &stored {
            self.clock.observe(&write.hlc, now_ms);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.waiting.insert(first, (last, stored));
        loop {
            let next = pending.next;
            let Some((last, batch)) = pending.waiting.remove(&next) else { break };
            pending.next = last + 1;
            self.send_changes(&batch);
        }
    }

    /// Sends one `CHANGE` per collection touched, encoded once for all its watchers.
    fn send_changes(&self, batch: &[(Write, u64)]) {
        let mut changed: BTreeMap<&str, (Vec<Record>, u64)> = BTreeMap::new();
        for (write, seq) in batch {
            let entry = changed.entry(write.collection.as_str()).or_default();
            entry.0.push(Record { key: write.key.clone(), value: write.value.clone(), hlc: write.hlc.to_string() });
            entry.1 = entry.1.max(*seq);
        }
        for (collection, (records, cursor)) in changed {
            let Some(feed) = self.feeds.get(collection).map(|f| f.value().clone()) else {
                continue;
            };
            let bytes = encode_server(&ServerMessage::Change {
                collection: collection.to_string(),
                records,
                cursor: Cursor::new(self.epoch, cursor).to_string(),
                more: false,
            });
            let name: Arc<str> = Arc::from(collection);
            let watchers = feed.watchers.lock().unwrap_or_else(|e| e.into_inner());
            for watcher in watchers.iter() {
                watcher.offer(Outbound::Change { collection: name.clone(), cursor, bytes: bytes.clone() });
            }
        }
    }
}

fn to_wire(record: StoredRecord) -> Record {
    Record { key: record.key, value: record.value, hlc: record.hlc.to_string() }
}

fn rejected(op_id: Value, code: &str, message: String) -> OpOutcome {
    OpOutcome { op_id, ok: false, code: Some(code.to_string()), message: Some(message) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn op(id: &str, key: &str, value: Value, hlc: &str) -> RawOp {
        RawOp { op_id: Value::from(id), collection: "c".into(), key: key.into(), value, hlc: hlc.into() }
    }

    #[tokio::test]
    async fn each_op_is_judged_alone_and_changes_stream_in_order() {
        let collections = Collections::new(Arc::new(MemoryStore::new()), HlcClock::new("srv", (0, 0)), 60_000);
        let (outbox, mut rx, _) = Outbox::new(1, 16);
        collections.watch("c", outbox);
        let now = 1_000_000;
        let outcomes = collections
            .apply(
                vec![
                    op("a", "k1", Value::from(1), "999000:0:n"),
                    op("b", "k2", Value::from(2), "not-an-hlc"),
                    op("c", "k3", Value::from(3), "1061001:0:n"),
                    op("d", "", Value::from(4), "1:0:n"),
                    op("e", "k1", Value::from(5), "1:0:n"),
                ],
                now,
            )
            .await;
        let summary: Vec<_> = outcomes.iter().map(|o| (o.ok, o.code.as_deref())).collect();
        assert_eq!(
            summary,
            [
                (true, None),
                (false, Some("invalid")),
                (false, Some("clock_skew")),
                (false, Some("invalid")),
                (true, None)
            ]
        );
        let Some(Outbound::Change { cursor, bytes, .. }) = rx.recv().await else { panic!() };
        assert_eq!(cursor, 1, "the stale op e changed nothing");
        let change: ServerMessage = rmp_serde::from_slice(&bytes).unwrap();
        assert!(
            matches!(change, ServerMessage::Change { ref records, .. } if records.len() == 1 && records[0].key == "k1")
        );
        assert_eq!(collections.clock().last(), (999_000, 0), "the clock absorbed the accepted hlc");
        let snapshot = collections.snapshot("c", None, SYNC_PAGE_BYTES).await.unwrap();
        assert_eq!((snapshot.pages.len(), snapshot.pages[0].0.len(), snapshot.cursor), (1, 1, 1));
    }

    fn stored(key: &str, bytes: usize, seq: u64) -> StoredRecord {
        StoredRecord {
            key: key.into(),
            value: Value::Binary(vec![0; bytes]),
            hlc: format!("{seq}:0:n").parse().unwrap(),
            seq,
        }
    }

    #[test]
    fn snapshots_are_cut_into_pages_with_their_own_cursors() {
        assert_eq!(paginate(Vec::new(), 7, 100), vec![(Vec::new(), 7)], "an empty snapshot is one empty page");
        let records = vec![stored("a", 60, 3), stored("b", 60, 5), stored("c", 500, 8), stored("d", 10, 9)];
        let pages = paginate(records, 12, 220);
        let shape: Vec<(Vec<&str>, u64)> =
            pages.iter().map(|(page, cursor)| (page.iter().map(|r| r.key.as_str()).collect(), *cursor)).collect();
        assert_eq!(
            shape,
            [(vec!["a", "b"], 5), (vec!["c"], 8), (vec!["d"], 12)],
            "pages keep acceptance order; a record larger than a page gets its own; the last cursor is the scan's"
        );
    }
}
