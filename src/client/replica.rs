//! The client's local replica and outbox, without I/O.
//!
//! Two layers per record: what the server confirmed (from `SYNC_DATA`,
//! `CHANGE` and accepted ops) and the ops still in the outbox. The visible
//! value is the last-writer-wins winner of both, exactly as the server will
//! decide it; so a rejected op "rolls back" simply by leaving the outbox, and
//! the record shows the server's value again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::hlc::{Hlc, HlcClock, replaces};
use crate::protocol::{OpInput, OpOutcome, RawOp, Record};
use crate::store::encode_value;

/// A write made locally and not yet settled by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    /// Client-chosen id, unique per replica.
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

/// What became of a pending op.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The op.
    pub op: PendingOp,
    /// `None` if accepted, else the rejection code (`forbidden`, `invalid`, `clock_skew`, …).
    pub rejected: Option<String>,
    /// The server's reason for a rejection.
    pub message: Option<String>,
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
    next_op: u64,
    collections: HashMap<String, CollectionState>,
    outbox: VecDeque<PendingOp>,
}

impl Replica {
    /// An empty replica writing as `node_id`.
    pub fn new(node_id: &str) -> Self {
        Self { clock: HlcClock::new(node_id, (0, 0)), next_op: 1, collections: HashMap::new(), outbox: VecDeque::new() }
    }

    /// Writes locally: visible at once, queued for the server.
    pub fn write(&mut self, collection: &str, key: &str, value: Value, now_ms: u64) -> PendingOp {
        let hlc = self.clock.tick(now_ms);
        let op = PendingOp {
            op_id: format!("{}-{}-{}", hlc.node, hlc.millis, self.next_op),
            collection: collection.into(),
            key: key.into(),
            value,
            hlc: hlc.to_string(),
        };
        self.next_op += 1;
        self.outbox.push_back(op.clone());
        op
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
        // The same rule as the server's: timestamp first, then the value's encoding.
        let winner = confirmed
            .into_iter()
            .chain(pending)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| encode_value(a.0).cmp(&encode_value(b.0))));
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
    /// `reset`: deletes may have been collected, the snapshot is the whole
    /// state). Pending writes stay and are still sent.
    pub fn reset(&mut self, collection: &str) {
        if let Some(state) = self.collections.get_mut(collection) {
            state.confirmed.clear();
        }
    }

    /// Merges server records (snapshot or change), last writer wins.
    pub fn merge(&mut self, collection: &str, records: &[Record]) {
        let state = self.collections.entry(collection.to_string()).or_default();
        for record in records {
            let Ok(hlc) = record.hlc.parse::<Hlc>() else { continue };
            self.clock.observe(&hlc);
            let newer = state.confirmed.get(&record.key).is_none_or(|(value, current)| {
                replaces(&hlc, &encode_value(&record.value), current, &encode_value(value))
            });
            if newer {
                state.confirmed.insert(record.key.clone(), (record.value.clone(), hlc));
            }
        }
    }

    /// Remembers the latest cursor of a synced collection.
    pub fn set_cursor(&mut self, collection: &str, cursor: String) {
        let state = self.collections.entry(collection.to_string()).or_default();
        let newer = match (&state.cursor, cursor.parse::<u64>()) {
            (Some(old), Ok(new)) => old.parse::<u64>().map_or(true, |old| new > old),
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

    /// Applies the server's verdicts: every settled op leaves the outbox;
    /// accepted ones join the confirmed layer (by last-writer-wins).
    pub fn settle(&mut self, outcomes: &[OpOutcome]) -> Vec<Settled> {
        let mut settled = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let Some(op_id) = outcome.op_id.as_str() else { continue };
            let Some(position) = self.outbox.iter().position(|op| op.op_id == op_id) else { continue };
            let Some(op) = self.outbox.remove(position) else { continue };
            if outcome.ok {
                let record = Record { key: op.key.clone(), value: op.value.clone(), hlc: op.hlc.clone() };
                self.merge(&op.collection.clone(), &[record]);
            }
            let rejected =
                if outcome.ok { None } else { Some(outcome.code.clone().unwrap_or_else(|| "rejected".into())) };
            settled.push(Settled { op, rejected, message: outcome.message.clone() });
        }
        settled
    }

    /// Restores an outbox saved by [`Replica::save_outbox`] (ops queued before a restart).
    pub fn load_outbox(&mut self, path: &Path) -> std::io::Result<()> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let ops: Vec<PendingOp> =
            rmp_serde::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        for op in &ops {
            if let Ok(hlc) = op.hlc.parse::<Hlc>() {
                self.clock.observe(&hlc);
            }
        }
        self.next_op += ops.len() as u64;
        self.outbox = ops.into();
        Ok(())
    }

    /// Saves the outbox atomically (write a temporary file, fsync, rename).
    pub fn save_outbox(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let ops: Vec<&PendingOp> = self.outbox.iter().collect();
        let bytes =
            rmp_serde::to_vec_named(&ops).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(op: &PendingOp, ok: bool) -> OpOutcome {
        OpOutcome { op_id: Value::from(op.op_id.as_str()), ok, code: (!ok).then(|| "forbidden".into()), message: None }
    }

    #[test]
    fn a_rejected_write_rolls_back_to_the_server_value() {
        let mut r = Replica::new("dev");
        r.merge("c", &[Record { key: "k".into(), value: Value::from("server"), hlc: "100:0:srv".into() }]);
        let op = r.write("c", "k", Value::from("mine"), 200);
        assert_eq!(r.get("c", "k"), Some(&Value::from("mine")), "visible at once");
        let settled = r.settle(&[outcome(&op, false)]);
        assert_eq!(settled[0].rejected.as_deref(), Some("forbidden"));
        assert_eq!(r.get("c", "k"), Some(&Value::from("server")), "rolled back");
        assert!(r.outbox().is_empty());
    }

    #[test]
    fn accepted_writes_are_confirmed_and_newer_server_values_win() {
        let mut r = Replica::new("dev");
        let op = r.write("c", "k", Value::from("offline"), 100);
        r.merge("c", &[Record { key: "k".into(), value: Value::from("newer"), hlc: "500:0:other".into() }]);
        assert_eq!(r.get("c", "k"), Some(&Value::from("newer")), "the later write wins even over a pending one");
        r.settle(&[outcome(&op, true)]);
        assert_eq!(r.get("c", "k"), Some(&Value::from("newer")));
        let del = r.write("c", "k", Value::Nil, 600);
        assert_eq!(r.get("c", "k"), None);
        r.settle(&[outcome(&del, true)]);
        assert!(r.records("c").is_empty());
    }

    #[test]
    fn a_reset_drops_confirmed_records_but_keeps_pending_writes() {
        let mut r = Replica::new("dev");
        let record = |key: &str| Record { key: key.into(), value: Value::from(1), hlc: "100:0:srv".into() };
        r.merge("c", &[record("collected"), record("kept")]);
        let pending = r.write("c", "mine", Value::from(2), 200);
        r.reset("c");
        r.merge("c", &[record("kept")]);
        let keys: Vec<String> = r.records("c").into_keys().collect();
        assert_eq!(keys, ["kept", "mine"], "a record deleted and collected on the server is gone");
        assert_eq!(r.outbox().front().map(|op| op.op_id.clone()), Some(pending.op_id));
    }

    #[test]
    fn equal_clocks_merge_the_same_in_any_order() {
        // Regression for the hlc_merge fuzz crash ac4a3118: same hlc, values 121 and 255.
        let records = |v: u8| Record { key: "k3".into(), value: Value::from(v), hlc: "7:0:n1".into() };
        let mut a = Replica::new("a");
        a.merge("c", &[records(121), records(255)]);
        let mut b = Replica::new("b");
        b.merge("c", &[records(255), records(121)]);
        assert_eq!(a.records("c"), b.records("c"));
    }

    #[test]
    fn the_outbox_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut r = Replica::new("dev");
        r.write("c", "a", Value::from(1), 100);
        r.write("c", "b", Value::from(2), 100);
        r.save_outbox(&path).unwrap();
        let mut again = Replica::new("dev");
        again.load_outbox(&path).unwrap();
        assert_eq!(again.outbox(), r.outbox());
        let next = again.write("c", "c", Value::from(3), 50);
        assert!(
            next.hlc.parse::<Hlc>().unwrap() > r.outbox()[1].hlc.parse::<Hlc>().unwrap(),
            "the clock resumes after saved ops"
        );
        assert!(again.outbox().iter().all(|op| op.op_id != next.op_id || op.key == "c"));
    }
}
