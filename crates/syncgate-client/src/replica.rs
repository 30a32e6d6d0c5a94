//! The client's local replica and outbox, without I/O.
//!
//! Two layers per record: what the server confirmed (from `SYNC_DATA`,
//! `CHANGE` and accepted ops) and the ops still in the outbox. The visible
//! value is the last-writer-wins winner of both, exactly as the server will
//! decide it; so a rejected op "rolls back" simply by leaving the outbox, and
//! the record shows the server's value again.
//!
//! A refusal is final or retryable ([`syncgate_proto::protocol::codes::error::is_final_op_code`]):
//! a final one (`forbidden`, `invalid`, `clock_skew`, `stale`) leaves the
//! outbox; a retryable one (`unavailable`, `rate_limited`, anything unknown)
//! stays, stays visible, and is sent again later.
//!
//! The whole replica (confirmed records, cursors, outbox, clock, op counter)
//! serialises to one MessagePack document ([`Replica::to_bytes`]) that the
//! client saves atomically, so a restarted app shows its data offline and
//! resumes every sync with a delta.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rmpv::Value;
use serde::{Deserialize, Serialize};

use syncgate_proto::cursor::Cursor;
use syncgate_proto::hlc::{Hlc, HlcClock, Merge, merge_value};
use syncgate_proto::protocol::codes::error::is_final_op_code;
use syncgate_proto::protocol::{OpInput, OpOutcome, RawOp, Record};

/// A write made locally and not yet settled by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    /// Client-chosen id, unique per device across restarts.
    pub op_id: String,
    /// Collection name.
    pub collection: String,
    /// Record key.
    pub key: String,
    /// New value; nil deletes.
    pub value: Value,
    /// When it was written (kept when replayed later).
    pub hlc: String,
}

impl PendingOp {
    /// The op as sent in `OP_BATCH`.
    pub fn to_wire(&self) -> OpInput {
        OpInput::Op(RawOp {
            op_id: Value::from(self.op_id.as_str()),
            collection: self.collection.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            hlc: self.hlc.clone(),
        })
    }
}

/// What became of a pending op that left the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The op.
    pub op: PendingOp,
    /// `None` if accepted, else the final refusal code (`forbidden`, `invalid`, `clock_skew`, `stale`).
    pub rejected: Option<String>,
    /// The reason for a refusal.
    pub message: Option<String>,
}

/// The outcome of applying an `OP_RESULT`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettleReport {
    /// Ops that left the outbox: accepted, or refused for good and rolled back.
    pub settled: Vec<Settled>,
    /// Ops refused with a retryable code: still queued, `(op id, code)`.
    pub retrying: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct CollectionState {
    confirmed: BTreeMap<String, (Value, Hlc)>,
    cursor: Option<String>,
}

/// The local state of an offline-first client.
#[derive(Debug)]
pub struct Replica {
    clock: HlcClock,
    /// Random per process: with the persisted counter, op ids never repeat
    /// across restarts, whatever the wall clock does.
    incarnation: u32,
    next_op: u64,
    collections: HashMap<String, CollectionState>,
    outbox: VecDeque<PendingOp>,
}

/// The saved form of a replica (format version 1).
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    node: String,
    clock: (u64, u32),
    next_op: u64,
    collections: Vec<SavedCollection>,
    outbox: Vec<PendingOp>,
}

#[derive(Serialize, Deserialize)]
struct SavedCollection {
    name: String,
    cursor: Option<String>,
    records: Vec<(String, Value, String)>,
}

impl Replica {
    /// An empty replica writing as `node_id`, whose clock follows remote
    /// stamps up to `max_ahead_ms` ahead of the wall clock.
    pub fn new(node_id: &str) -> Self {
        Self::with_clock(HlcClock::new(node_id, (0, 0)), 1)
    }

    fn with_clock(clock: HlcClock, next_op: u64) -> Self {
        Self { clock, incarnation: fastrand::u32(..), next_op, collections: HashMap::new(), outbox: VecDeque::new() }
    }

    /// This replica's node id.
    pub fn node_id(&self) -> &str {
        self.clock.node()
    }

    /// Writes locally: visible at once, queued for the server.
    pub fn write(&mut self, collection: &str, key: &str, value: Value, now_ms: u64) -> PendingOp {
        let hlc = self.clock.tick(now_ms);
        let op = PendingOp {
            op_id: format!("{}-{:08x}-{}", hlc.node, self.incarnation, self.next_op),
            collection: collection.into(),
            key: key.into(),
            value,
            hlc: hlc.to_string(),
        };
        self.next_op += 1;
        self.outbox.push_back(op.clone());
        op
    }

    /// Removes a queued op without settling it (its write could not be saved).
    pub fn discard(&mut self, op_id: &str) {
        self.outbox.retain(|op| op.op_id != op_id);
    }

    /// The visible value of a record (`None` if absent or deleted).
    pub fn get(&self, collection: &str, key: &str) -> Option<&Value> {
        let confirmed =
            self.collections.get(collection).and_then(|c| c.confirmed.get(key)).map(|(v, h)| (v, h.clone()));
        let pending = self
            .outbox
            .iter()
            .filter(|op| op.collection == collection && op.key == key)
            .filter_map(|op| op.hlc.parse::<Hlc>().ok().map(|h| (&op.value, h)));
        // The same rule as the server's: the greater stamp wins; on an equal
        // one (our own op's echo) what the server confirmed stays, as the
        // server keeps the first value written under a stamp.
        let winner = pending.chain(confirmed).max_by(|a, b| a.1.cmp(&b.1));
        winner.map(|(v, _)| v).filter(|v| !v.is_nil())
    }

    /// Every visible record of a collection (tombstones omitted).
    pub fn records(&self, collection: &str) -> BTreeMap<String, Value> {
        let mut keys: Vec<&str> = self
            .collections
            .get(collection)
            .map(|c| c.confirmed.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.extend(self.outbox.iter().filter(|op| op.collection == collection).map(|op| op.key.as_str()));
        keys.into_iter().filter_map(|k| self.get(collection, k).map(|v| (k.to_string(), v.clone()))).collect()
    }

    /// Forgets what the server confirmed of `collection` (a `SYNC_DATA` with
    /// `reset`: deletes may have been collected, or the store was restored; the
    /// snapshot is the whole state). Pending writes stay and are still sent.
    pub fn reset(&mut self, collection: &str) {
        if let Some(state) = self.collections.get_mut(collection) {
            state.confirmed.clear();
            state.cursor = None;
        }
    }

    /// Merges server records (snapshot or change) seen at `now_ms`, last writer wins.
    pub fn merge(&mut self, collection: &str, records: &[Record], now_ms: u64) {
        let state = self.collections.entry(collection.to_string()).or_default();
        for record in records {
            let Ok(hlc) = record.hlc.parse::<Hlc>() else { continue };
            // A stamp far ahead of our wall clock is stored, but does not drag our clock along.
            self.clock.observe(&hlc, now_ms);
            let newer = state
                .confirmed
                .get(&record.key)
                .is_none_or(|(value, current)| merge_value(&hlc, &record.value, current, value) == Merge::Replaces);
            if newer {
                state.confirmed.insert(record.key.clone(), (record.value.clone(), hlc));
            }
        }
    }

    /// Remembers the latest cursor of a synced collection: a later position of
    /// the same epoch, or any cursor of another epoch (the store was restored).
    pub fn set_cursor(&mut self, collection: &str, cursor: String) {
        let state = self.collections.entry(collection.to_string()).or_default();
        let newer = match (state.cursor.as_deref().map(str::parse::<Cursor>), cursor.parse::<Cursor>()) {
            (Some(Ok(old)), Ok(new)) => new.epoch != old.epoch || new.position > old.position,
            _ => true,
        };
        if newer {
            state.cursor = Some(cursor);
        }
    }

    /// The cursor to resume a collection's sync from.
    pub fn cursor(&self, collection: &str) -> Option<String> {
        self.collections.get(collection).and_then(|c| c.cursor.clone())
    }

    /// The ops waiting for the server, oldest first.
    pub fn outbox(&self) -> &VecDeque<PendingOp> {
        &self.outbox
    }

    /// Applies the server's verdicts: accepted ops join the confirmed layer (by
    /// last-writer-wins) and leave the outbox, as do ops refused for good (the
    /// rollback); ops refused with a retryable code stay queued.
    pub fn settle(&mut self, outcomes: &[OpOutcome], now_ms: u64) -> SettleReport {
        let mut report = SettleReport::default();
        for outcome in outcomes {
            let Some(op_id) = outcome.op_id.as_str() else { continue };
            let code = outcome.code.clone().unwrap_or_else(|| "rejected".into());
            if !outcome.ok && !is_final_op_code(&code) {
                report.retrying.push((op_id.to_string(), code));
                continue;
            }
            let Some(position) = self.outbox.iter().position(|op| op.op_id == op_id) else { continue };
            let Some(op) = self.outbox.remove(position) else { continue };
            if outcome.ok {
                let record = Record { key: op.key.clone(), value: op.value.clone(), hlc: op.hlc.clone() };
                self.merge(&op.collection.clone(), &[record], now_ms);
            }
            let rejected = (!outcome.ok).then_some(code);
            report.settled.push(Settled { op, rejected, message: outcome.message.clone() });
        }
        report
    }

    /// Refuses a queued op locally (it can never be sent, e.g. larger than the
    /// server accepts): it leaves the outbox like a final refusal.
    pub fn refuse_locally(&mut self, op_id: &str, code: &str, message: String) -> Option<Settled> {
        let position = self.outbox.iter().position(|op| op.op_id == op_id)?;
        let op = self.outbox.remove(position)?;
        Some(Settled { op, rejected: Some(code.to_string()), message: Some(message) })
    }

    /// The whole replica as one MessagePack document.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut collections: Vec<SavedCollection> = self
            .collections
            .iter()
            .map(|(name, state)| SavedCollection {
                name: name.clone(),
                cursor: state.cursor.clone(),
                records: state
                    .confirmed
                    .iter()
                    .map(|(key, (value, hlc))| (key.clone(), value.clone(), hlc.to_string()))
                    .collect(),
            })
            .collect();
        collections.sort_by(|a, b| a.name.cmp(&b.name));
        let saved = Saved {
            version: 1,
            node: self.clock.node().to_string(),
            clock: self.clock.last(),
            next_op: self.next_op,
            collections,
            outbox: self.outbox.iter().cloned().collect(),
        };
        // Owned, serde-supported values into a Vec: this cannot fail.
        rmp_serde::to_vec_named(&saved).unwrap_or_default()
    }

    /// A replica saved by [`Replica::to_bytes`]. It keeps the saved node id
    /// (a device keeps its identity across restarts), its clock and its op
    /// counter, so nothing it issues repeats an earlier id or sorts before an
    /// earlier write.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let saved: Saved = rmp_serde::from_slice(bytes).map_err(|e| format!("not a saved replica: {e}"))?;
        if saved.version != 1 {
            return Err(format!("saved replica format {} is not supported (expected 1)", saved.version));
        }
        let mut replica = Self::with_clock(HlcClock::new(saved.node, saved.clock), saved.next_op.max(1));
        for collection in saved.collections {
            let mut state = CollectionState { cursor: collection.cursor, ..CollectionState::default() };
            for (key, value, hlc) in collection.records {
                let hlc = hlc.parse::<Hlc>().map_err(|e| format!("saved record {key:?}: {e}"))?;
                state.confirmed.insert(key, (value, hlc));
            }
            replica.collections.insert(collection.name, state);
        }
        for op in &saved.outbox {
            if let Ok(hlc) = op.hlc.parse::<Hlc>() {
                replica.clock.observe(&hlc, u64::MAX / 2);
            }
        }
        replica.outbox = saved.outbox.into();
        Ok(replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(op: &PendingOp, ok: bool) -> OpOutcome {
        OpOutcome { op_id: Value::from(op.op_id.as_str()), ok, code: (!ok).then(|| "forbidden".into()), message: None }
    }

    fn record(key: &str, value: impl Into<Value>, hlc: &str) -> Record {
        Record { key: key.into(), value: value.into(), hlc: hlc.into() }
    }

    #[test]
    fn a_rejected_write_rolls_back_to_the_server_value() {
        let mut r = Replica::new("dev");
        r.merge("c", &[record("k", "server", "100:0:srv")], 100);
        let op = r.write("c", "k", Value::from("mine"), 200);
        assert_eq!(r.get("c", "k"), Some(&Value::from("mine")), "visible at once");
        let report = r.settle(&[outcome(&op, false)], 200);
        assert_eq!(report.settled[0].rejected.as_deref(), Some("forbidden"));
        assert_eq!(r.get("c", "k"), Some(&Value::from("server")), "rolled back");
        assert!(r.outbox().is_empty());
    }

    #[test]
    fn a_retryable_refusal_keeps_the_write_queued_and_visible() {
        let mut r = Replica::new("dev");
        let op = r.write("c", "k", Value::from("mine"), 200);
        for code in ["unavailable", "rate_limited", "a_code_from_the_future"] {
            let refused =
                OpOutcome { op_id: Value::from(op.op_id.as_str()), ok: false, code: Some(code.into()), message: None };
            let report = r.settle(&[refused], 200);
            assert!(report.settled.is_empty(), "{code}");
            assert_eq!(report.retrying, [(op.op_id.clone(), code.to_string())]);
            assert_eq!(r.outbox().len(), 1);
            assert_eq!(r.get("c", "k"), Some(&Value::from("mine")));
        }
    }

    #[test]
    fn accepted_writes_are_confirmed_and_newer_server_values_win() {
        let mut r = Replica::new("dev");
        let op = r.write("c", "k", Value::from("offline"), 100);
        r.merge("c", &[record("k", "newer", "500:0:other")], 100);
        assert_eq!(r.get("c", "k"), Some(&Value::from("newer")), "the later write wins even over a pending one");
        r.settle(&[outcome(&op, true)], 600);
        assert_eq!(r.get("c", "k"), Some(&Value::from("newer")));
        let del = r.write("c", "k", Value::Nil, 600);
        assert_eq!(r.get("c", "k"), None);
        r.settle(&[outcome(&del, true)], 600);
        assert!(r.records("c").is_empty());
    }

    #[test]
    fn a_reset_drops_confirmed_records_but_keeps_pending_writes() {
        let mut r = Replica::new("dev");
        r.merge("c", &[record("collected", 1, "100:0:srv"), record("kept", 1, "100:0:srv")], 100);
        let pending = r.write("c", "mine", Value::from(2), 200);
        r.reset("c");
        r.merge("c", &[record("kept", 1, "100:0:srv")], 200);
        let keys: Vec<String> = r.records("c").into_keys().collect();
        assert_eq!(keys, ["kept", "mine"], "a record deleted and collected on the server is gone");
        assert_eq!(r.outbox().front().map(|op| op.op_id.clone()), Some(pending.op_id));
    }

    #[test]
    fn an_equal_stamp_keeps_what_is_held() {
        // The server refuses a second value under one stamp, so an equal stamp
        // is the same write again; values are never compared to pick a winner.
        let records = |v: u8| record("k3", v, "7:0:n1");
        let mut a = Replica::new("a");
        a.merge("c", &[records(121), records(255)], 7);
        assert_eq!(a.records("c").get("k3"), Some(&Value::from(121)));
    }

    #[test]
    fn cursors_move_forward_within_an_epoch_and_follow_a_new_one() {
        let mut r = Replica::new("dev");
        r.set_cursor("c", "a:10".into());
        r.set_cursor("c", "a:7".into());
        assert_eq!(r.cursor("c").as_deref(), Some("a:10"), "an older page does not move it back");
        r.set_cursor("c", "b:3".into());
        assert_eq!(r.cursor("c").as_deref(), Some("b:3"), "a restored store's cursor replaces it");
    }

    #[test]
    fn the_whole_replica_survives_a_restart_and_never_reuses_an_op_id() {
        let mut r = Replica::new("dev");
        r.merge("c", &[record("server", "v", "100:0:srv")], 100);
        r.set_cursor("c", "e:5".into());
        let first = r.write("c", "a", Value::from(1), 1_000);
        r.settle(&[outcome(&first, true)], 1_000);
        r.write("c", "b", Value::from(2), 1_000);
        let again = Replica::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(again.records("c"), r.records("c"), "data shows offline after a restart");
        assert_eq!(again.cursor("c").as_deref(), Some("e:5"), "and the sync resumes by delta");
        assert_eq!(again.outbox(), r.outbox());
        assert_eq!(again.node_id(), "dev");
        let mut again = again;
        // The wall clock went back, even below the saved ops: ids stay unique, stamps go forward.
        let next = again.write("c", "c", Value::from(3), 50);
        assert_ne!(next.op_id, first.op_id);
        assert!(r.outbox().iter().all(|op| op.op_id != next.op_id));
        assert!(next.hlc.parse::<Hlc>().unwrap() > r.outbox()[0].hlc.parse::<Hlc>().unwrap());
        assert!(Replica::from_bytes(b"not a replica").is_err());
    }
}
