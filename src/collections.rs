//! Last-writer-wins collections: validating ops, committing them, and
//! streaming `CHANGE`s to syncing connections.
//!
//! Commits and `CHANGE` publication are serialised by one lock, so `CHANGE`s
//! leave in acceptance order: a reader that resumes from any cursor it was
//! given can never skip a write accepted before it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rmpv::Value;

use crate::hlc::{Hlc, HlcClock};
use crate::outbox::{ConnId, Outbound, Outbox};
use crate::protocol::codes::error;
use crate::protocol::{OpOutcome, RawOp, Record, ServerMessage, encode_server};
use crate::store::{Applied, Scan, Store, StoreError, StoredRecord, Write};

/// Longest accepted record key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The collections of one server.
pub struct Collections {
    store: Arc<dyn Store>,
    clock: HlcClock,
    max_drift_ms: u64,
    /// Held across a commit and its `CHANGE` publication (a tokio mutex: the commit awaits).
    commit: tokio::sync::Mutex<()>,
    feeds: DashMap<String, Arc<Feed>>,
}

/// Connections syncing one collection. A std mutex: offering never waits.
#[derive(Debug, Default)]
struct Feed {
    watchers: Mutex<Vec<Outbox>>,
}

impl Collections {
    /// Collections over `store`; writes stamped more than `max_drift_ms` ahead of the server's clock are refused.
    pub fn new(store: Arc<dyn Store>, clock: HlcClock, max_drift_ms: u64) -> Self {
        Self { store, clock, max_drift_ms, commit: tokio::sync::Mutex::new(()), feeds: DashMap::new() }
    }

    /// The server's hybrid logical clock.
    pub fn clock(&self) -> &HlcClock {
        &self.clock
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
            let _commit = self.commit.lock().await;
            match self.store.apply(&writes).await {
                Ok(applied) => {
                    self.publish(&writes, &applied);
                    for (i, op_id) in slots {
                        outcomes[i] = Some(OpOutcome { op_id, ok: true, code: None, message: None });
                    }
                }
                Err(StoreError(reason)) => {
                    tracing::warn!(%reason, "store write failed");
                    for (i, op_id) in slots {
                        outcomes[i] = Some(rejected(
                            op_id,
                            error::UNAVAILABLE,
                            "the store cannot accept writes right now".into(),
                        ));
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| rejected(Value::Nil, error::UNAVAILABLE, "not processed".into())))
            .collect()
    }

    fn validate(&self, op: &RawOp, now_ms: u64) -> Result<Hlc, (&'static str, String)> {
        if op.key.is_empty() || op.key.len() > MAX_KEY_BYTES {
            return Err((error::INVALID, format!("key must be 1 to {MAX_KEY_BYTES} bytes")));
        }
        let hlc: Hlc = op.hlc.parse().map_err(|e: crate::hlc::HlcError| (error::INVALID, e.to_string()))?;
        if hlc.millis > now_ms.saturating_add(self.max_drift_ms) {
            let ahead = hlc.millis - now_ms;
            return Err((
                error::CLOCK_SKEW,
                format!("hlc is {ahead} ms ahead of the server's clock (limit {} ms)", self.max_drift_ms),
            ));
        }
        Ok(hlc)
    }

    /// Sends one `CHANGE` per collection touched, encoded once for all its watchers.
    fn publish(&self, writes: &[Write], applied: &[Applied]) {
        let mut changed: BTreeMap<&str, (Vec<Record>, u64)> = BTreeMap::new();
        for (write, outcome) in writes.iter().zip(applied) {
            if let Applied::Stored { seq } = outcome {
                self.clock.observe(&write.hlc);
                let entry = changed.entry(write.collection.as_str()).or_default();
                entry.0.push(Record { key: write.key.clone(), value: write.value.clone(), hlc: write.hlc.to_string() });
                entry.1 = entry.1.max(*seq);
            }
        }
        for (collection, (records, cursor)) in changed {
            let Some(feed) = self.feeds.get(collection).map(|f| f.value().clone()) else {
                continue;
            };
            let bytes = encode_server(&ServerMessage::Change {
                collection: collection.to_string(),
                records,
                cursor: cursor.to_string(),
            });
            let name: Arc<str> = Arc::from(collection);
            let watchers = feed.watchers.lock().unwrap_or_else(|e| e.into_inner());
            for watcher in watchers.iter() {
                watcher.offer(Outbound::Change { collection: name.clone(), cursor, bytes: bytes.clone() });
            }
        }
    }

    /// Starts sending `CHANGE`s of `collection` to `outbox`. Call before [`Collections::snapshot`]
    /// so nothing falls between the snapshot and the stream.
    pub fn watch(&self, collection: &str, outbox: Outbox) {
        let entry = self.feeds.entry(collection.to_string()).or_default();
        let mut watchers = entry.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if !watchers.iter().any(|w| w.id() == outbox.id()) {
            watchers.push(outbox);
        }
    }

    /// Stops sending `CHANGE`s of `collection` to connection `id`.
    pub fn unwatch(&self, collection: &str, id: ConnId) {
        self.feeds.remove_if(collection, |_, feed| {
            let mut watchers = feed.watchers.lock().unwrap_or_else(|e| e.into_inner());
            watchers.retain(|w| w.id() != id);
            watchers.is_empty()
        });
    }

    /// Records of `collection` changed after `since` (all when 0), as wire records.
    pub fn snapshot(&self, collection: &str, since: u64) -> Result<(Vec<Record>, u64), StoreError> {
        let Scan { records, cursor } = self.store.scan_since(collection, since)?;
        Ok((records.into_iter().map(to_wire).collect(), cursor))
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
        let (records, cursor) = collections.snapshot("c", 0).unwrap();
        assert_eq!((records.len(), cursor), (1, 1));
    }
}
