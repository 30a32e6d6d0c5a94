//! The conformance suite every [`Store`] implementation must pass.
//!
//! Call [`run`] from a test with a factory for fresh, empty stores; it
//! panics with a description of the first broken rule.

use rmpv::Value;

use super::{Applied, Store, Write};
use crate::hlc::Hlc;

fn hlc(millis: u64, counter: u32, node: &str) -> Hlc {
    Hlc { millis, counter, node: node.into() }
}

fn write(collection: &str, key: &str, value: impl Into<Value>, hlc: Hlc) -> Write {
    Write { collection: collection.into(), key: key.into(), value: value.into(), hlc }
}

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run(fresh: impl Fn() -> Box<dyn Store>) {
    last_writer_wins(fresh().as_ref()).await;
    replays_are_harmless(fresh().as_ref()).await;
    tombstones_are_records(fresh().as_ref()).await;
    scans_follow_acceptance_order(fresh().as_ref()).await;
    batches_apply_in_order(fresh().as_ref()).await;
    collections_are_separate(fresh().as_ref()).await;
    old_tombstones_are_collected(fresh().as_ref()).await;
    equal_clocks_break_ties_by_value(fresh().as_ref(), fresh().as_ref()).await;
}

/// Found by the `hlc_merge` fuzzer: two different writes with the same `hlc`
/// must resolve the same way whatever order they arrive in.
async fn equal_clocks_break_ties_by_value(a: &dyn Store, b: &dyn Store) {
    let low = write("c", "k", 121, hlc(7, 0, "n"));
    let high = write("c", "k", 255, hlc(7, 0, "n"));
    a.apply(std::slice::from_ref(&low)).await.unwrap();
    a.apply(std::slice::from_ref(&high)).await.unwrap();
    b.apply(&[high]).await.unwrap();
    b.apply(&[low]).await.unwrap();
    let (x, y) = (a.get("c", "k").unwrap().unwrap().value, b.get("c", "k").unwrap().unwrap().value);
    assert_eq!(x, y, "same hlc, different values: the outcome must not depend on arrival order");
}

async fn last_writer_wins(store: &dyn Store) {
    let first = store.apply(&[write("c", "k", "v1", hlc(10, 0, "a"))]).await.unwrap();
    assert!(matches!(first[..], [Applied::Stored { .. }]), "first write is stored");
    let older = store.apply(&[write("c", "k", "old", hlc(9, 5, "z"))]).await.unwrap();
    assert_eq!(older, [Applied::Superseded], "an older hlc changes nothing");
    assert_eq!(store.get("c", "k").unwrap().unwrap().value, Value::from("v1"));
    let tie = store.apply(&[write("c", "k", "tie", hlc(10, 0, "b"))]).await.unwrap();
    assert!(matches!(tie[..], [Applied::Stored { .. }]), "same time, greater node id wins");
    let lower_tie = store.apply(&[write("c", "k", "lower", hlc(10, 0, "a0"))]).await.unwrap();
    assert_eq!(lower_tie, [Applied::Superseded]);
    assert_eq!(store.get("c", "k").unwrap().unwrap().value, Value::from("tie"));
    assert!(store.get("c", "missing").unwrap().is_none());
}

async fn replays_are_harmless(store: &dyn Store) {
    let w = write("c", "k", "v", hlc(5, 1, "n"));
    store.apply(std::slice::from_ref(&w)).await.unwrap();
    let before = store.scan_since("c", 0).unwrap();
    assert_eq!(store.apply(&[w]).await.unwrap(), [Applied::Superseded], "the same write again is superseded");
    let after = store.scan_since("c", 0).unwrap();
    assert_eq!(before.records, after.records);
    assert_eq!(before.cursor, after.cursor, "a replay assigns no sequence number");
}

async fn tombstones_are_records(store: &dyn Store) {
    store.apply(&[write("c", "k", "v", hlc(1, 0, "n"))]).await.unwrap();
    let cursor = store.scan_since("c", 0).unwrap().cursor;
    store.apply(&[write("c", "k", Value::Nil, hlc(2, 0, "n"))]).await.unwrap();
    let record = store.get("c", "k").unwrap().expect("a tombstone is kept");
    assert_eq!(record.value, Value::Nil);
    let delta = store.scan_since("c", cursor).unwrap();
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
    let mid = store.scan_since("c", 0).unwrap().cursor;
    store.apply(&[write("c", "late", 2, hlc(1, 0, "offline"))]).await.unwrap();
    store.apply(&[write("c", "b", 3, hlc(200, 0, "n"))]).await.unwrap();
    store.apply(&[write("c", "a", 4, hlc(300, 0, "n"))]).await.unwrap();
    let all = store.scan_since("c", 0).unwrap();
    let keys: Vec<_> = all.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["late", "b", "a"], "each key once, in acceptance order of its latest write");
    assert!(all.records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all.records.iter().all(|r| r.seq <= all.cursor));
    let delta = store.scan_since("c", mid).unwrap();
    assert!(
        delta.records.iter().any(|r| r.key == "late"),
        "a late write with an old hlc reaches readers who synced before it"
    );
    assert!(store.scan_since("c", all.cursor).unwrap().records.is_empty());
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
        matches!(outcomes[..], [Applied::Stored { seq: a }, Applied::Stored { seq: b }, Applied::Superseded] if a < b)
    );
    assert_eq!(store.get("c", "k").unwrap().unwrap().value, Value::from("second"));
}

async fn collections_are_separate(store: &dyn Store) {
    store.apply(&[write("x", "k", 1, hlc(1, 0, "n")), write("y", "k", 2, hlc(1, 0, "n"))]).await.unwrap();
    assert_eq!(store.get("x", "k").unwrap().unwrap().value, Value::from(1));
    assert_eq!(store.scan_since("y", 0).unwrap().records.len(), 1);
    assert!(store.scan_since("z", 0).unwrap().records.is_empty());
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
    let before = store.scan_since("c", 0).unwrap();
    assert_eq!(store.horizon(), 0);
    assert_eq!(store.collect_tombstones(500).await.unwrap(), 1, "only tombstones older than the cutoff go");
    assert!(store.get("c", "gone").unwrap().is_none());
    assert!(store.get("c", "recent").unwrap().is_some());
    assert!(store.get("c", "live").unwrap().is_some(), "live records are never collected");
    let gone_seq = before.records.iter().find(|r| r.key == "gone").unwrap().seq;
    assert!(store.horizon() >= gone_seq, "readers from before the collection must resync");
    assert_eq!(store.last_seq(), before.cursor);
    assert_eq!(store.clock(), (900, 0));
}
