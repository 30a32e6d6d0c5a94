//! Last-writer-wins collections: validating ops, committing them, and
//! streaming `CHANGE`s to syncing connections.
//!
//! Commits run concurrently (so the store can group them). Each commit hands
//! the [`Hub`] one [`ChangeNotice`] per collection it touched, chained to the
//! collection's previous position; the hub puts them back in commit order
//! for the watchers here and sends them to the other nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmpv::Value;

use crate::cursor::Cursor;
use crate::hlc::{Hlc, HlcClock};
use crate::hub::{ChangeNotice, Hub};
use crate::metrics::Metrics;
use crate::protocol::{OpOutcome, RawOp, Record, ServerMessage, encode_server};
use crate::requests::RequestError;
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
    /// The tombstone-collection horizon the snapshot was read under: its
    /// pages' cursors carry it ([`Collections::cursor_under`]).
    pub horizon: u64,
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
    hub: Arc<Hub>,
    /// The store's epoch, carried by every cursor this server issues.
    epoch: u64,
    clock: HlcClock,
    max_drift_ms: u64,
    metrics: Arc<Metrics>,
    /// The highest tombstone-collection horizon seen (scans and collections
    /// report it; it never goes down): what live `CHANGE` cursors carry.
    horizon: AtomicU64,
}

impl Collections {
    /// Collections over `store`, publishing through `hub`; writes stamped more
    /// than `max_drift_ms` ahead of the server's clock are refused; commits and
    /// store failures are counted in `metrics`. Reads the store's epoch, which
    /// stays fixed while it is open.
    pub async fn open(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        clock: HlcClock,
        max_drift_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let epoch = store.epoch().await?;
        let horizon = AtomicU64::new(store.horizon().await?);
        Ok(Self { inner: Arc::new(Inner { store, hub, epoch, clock, max_drift_ms, metrics, horizon }) })
    }

    /// The epoch of the store behind these collections.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The cursor string for `position` in this server's store, under the
    /// latest horizon seen (for changes delivered live).
    pub fn cursor(&self, position: u64) -> String {
        self.cursor_under(position, self.inner.horizon.load(Ordering::Acquire))
    }

    /// The cursor string for `position` read under `horizon` (a snapshot's pages).
    pub fn cursor_under(&self, position: u64, horizon: u64) -> String {
        Cursor::with_horizon(self.inner.epoch, position, horizon).to_string()
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
                Err(refusal) => outcomes[i] = Some(refusal.rejection(op.op_id)),
            }
        }
        if !writes.is_empty() {
            // The commit and its publication run to the end even if the caller goes
            // away mid-commit (its change must reach the watchers): at once when the
            // store decides without waiting (memory), else in their own task.
            let inner = self.inner.clone();
            let committed = finish_detached(async move {
                let started = std::time::Instant::now();
                match inner.store.apply_owned(writes).await {
                    Ok((applied, writes)) => {
                        inner.metrics.committed(writes.len(), started.elapsed());
                        inner.publish(&writes, &applied);
                        Ok(applied)
                    }
                    Err(e) => {
                        inner.metrics.store_errors.inc();
                        Err(e)
                    }
                }
            })
            .await
            .unwrap_or_else(|e| Err(StoreError(format!("commit task failed: {e}"))));
            let unavailable = "the store cannot accept writes right now";
            for (n, (i, op_id)) in slots.into_iter().enumerate() {
                outcomes[i] = Some(match committed.as_ref().map(|applied| applied.get(n)) {
                    Ok(Some(Applied::Stale)) => RequestError::Stale.rejection(op_id),
                    Ok(Some(Applied::Conflict)) => RequestError::ReusedStamp.rejection(op_id),
                    Ok(_) => OpOutcome { op_id, ok: true, code: None, message: None },
                    Err(_) => RequestError::Unavailable(unavailable.into()).rejection(op_id),
                });
            }
            if let Err(StoreError(reason)) = &committed {
                tracing::warn!(%reason, "store write failed");
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RequestError::Unavailable("not processed".into()).rejection(Value::Nil)))
            .collect()
    }

    fn validate(&self, op: &RawOp, now_ms: u64) -> Result<Hlc, RequestError> {
        let max_drift_ms = self.inner.max_drift_ms;
        if op.key.is_empty() || op.key.len() > MAX_KEY_BYTES {
            return Err(RequestError::Invalid(format!("key must be 1 to {MAX_KEY_BYTES} bytes")));
        }
        let hlc: Hlc = op.hlc.parse().map_err(|e: crate::hlc::HlcError| RequestError::Invalid(e.to_string()))?;
        if hlc.millis > now_ms.saturating_add(max_drift_ms) {
            return Err(RequestError::ClockSkew { ahead_ms: hlc.millis - now_ms, limit_ms: max_drift_ms });
        }
        // Absorbed now, not after the commit: a server-stamped write that
        // follows can never sort before a write already accepted.
        self.inner.clock.observe(&hlc, now_ms);
        Ok(hlc)
    }

    /// Records of `collection` changed after `since` (all when `None`), as
    /// wire records cut into pages of about `page_bytes`. When `since` cannot
    /// be resumed from (another epoch, a position never issued, or one older
    /// than the tombstone horizon, so a delete may have been collected), the
    /// full state is returned instead and the flag says so (`SYNC_DATA.reset`).
    /// The horizon is read with the scan, in one view of the store.
    pub async fn snapshot(
        &self,
        collection: &str,
        since: Option<Cursor>,
        page_bytes: usize,
    ) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        let from = since.filter(|c| c.resumable(inner.epoch, u64::MAX)).map_or(0, |c| c.position);
        let mut scan = self.scan(collection, from).await?;
        // Reset only if a delete the reader did not see may have been collected
        // since its cursor was issued (see `Cursor::missed_collected_deletes`).
        let reset =
            since.is_some_and(|c| !c.resumable(inner.epoch, scan.cursor) || c.missed_collected_deletes(scan.horizon));
        if reset && from > 0 {
            scan = self.scan(collection, 0).await?;
        }
        let Scan { records, cursor, horizon } = scan;
        Ok(Snapshot { pages: paginate(records, cursor, page_bytes), cursor, reset, horizon })
    }

    async fn scan(&self, collection: &str, from: u64) -> Result<Scan, StoreError> {
        let scan = self.inner.store.scan_since(collection, from).await;
        match &scan {
            Ok(scan) => {
                self.inner.horizon.fetch_max(scan.horizon, Ordering::AcqRel);
            }
            Err(_) => {
                self.inner.metrics.store_errors.inc();
            }
        }
        scan
    }

    /// Collects tombstones written before `before_millis` (retention).
    pub async fn collect_tombstones(&self, before_millis: u64) -> Result<usize, StoreError> {
        let collected = self.inner.store.collect_tombstones(before_millis).await?;
        if collected > 0 {
            let horizon = self.inner.store.horizon().await?;
            self.inner.horizon.fetch_max(horizon, Ordering::AcqRel);
        }
        Ok(collected)
    }
}

impl Inner {
    /// Hands the hub one notice per collection the commit changed, chained to
    /// the collection's previous position.
    fn publish(&self, writes: &[Write], applied: &[Applied]) {
        // collection → (prev, last, records); records only for collections someone follows.
        let mut changed: BTreeMap<&str, (u64, u64, Option<Vec<Record>>)> = BTreeMap::new();
        for (write, outcome) in writes.iter().zip(applied) {
            let Applied::Stored { seq, prev } = *outcome else { continue };
            let collection = write.collection.as_str();
            let entry = changed
                .entry(collection)
                .or_insert_with(|| (prev, seq, self.hub.wants_changes(collection).then(Vec::new)));
            entry.1 = seq;
            if let Some(records) = &mut entry.2 {
                records.push(Record { key: write.key.clone(), value: write.value.clone(), hlc: write.hlc.to_string() });
            }
        }
        for (collection, (prev, last, records)) in changed {
            let Some(records) = records else { continue };
            let change = encode_server(&ServerMessage::Change {
                collection: collection.to_string(),
                records,
                cursor: Cursor::with_horizon(self.epoch, last, self.horizon.load(Ordering::Acquire)).to_string(),
                more: false,
            });
            self.hub.committed(collection, ChangeNotice { prev, last, change });
        }
    }
}

fn to_wire(record: StoredRecord) -> Record {
    Record { key: record.key, value: record.value, hlc: record.hlc.to_string() }
}

/// Runs `work` to its end even if the caller stops waiting: polled once here,
/// it completes without a task when it does not wait (a task per batch was a
/// measurable share of an op in memory); otherwise it goes on as its own task.
async fn finish_detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let mut work = Box::pin(work);
    let polled = work.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    match polled {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => tokio::spawn(work).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::MemoryBackplane;
    use crate::send_queue::{Outbound, SendQueue};
    use crate::store::MemoryStore;

    fn op(id: &str, key: &str, value: Value, hlc: &str) -> RawOp {
        RawOp { op_id: Value::from(id), collection: "c".into(), key: key.into(), value, hlc: hlc.into() }
    }

    #[tokio::test]
    async fn each_op_is_judged_alone_and_changes_stream_in_order() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let hub = Hub::new(Arc::new(MemoryBackplane::standalone()));
        let metrics = Arc::new(Metrics::new());
        let clock = HlcClock::new("srv", (0, 0));
        let collections = Collections::open(store.clone(), hub.clone(), clock, 60_000, metrics).await.unwrap();
        let (queue, mut rx, _) = SendQueue::new(1, 16);
        hub.watch("c", queue);
        hub.feed_ready("c", || store.last_seq()).await.unwrap();
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
        let Outbound::Change(change) = rx.recv().await else { panic!() };
        let (cursor, bytes) = (change.cursor, change.bytes.clone());
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
