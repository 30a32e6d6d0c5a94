//! The check for stores that several processes share: two handles on one
//! database apply concurrently while a third follows with `scan_since`.
//!
//! A store that takes positions from a plain Postgres sequence fails it: a
//! transaction can take position 10, another take 11 and commit first, and a
//! follower that scanned in between holds cursor 11 when 10 commits, so it
//! never sees 10. The writers here use a fresh key for most writes, so a change
//! the follower skipped stays missing instead of being hidden by a later write.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmpv::Value;

use super::{hlc, write};
use crate::hlc::Hlc;
use crate::store::{Applied, Store, Write};

const COLLECTIONS: [&str; 2] = ["c", "d"];
/// Batches per writer.
const ROUNDS: u64 = 120;

/// One stored write, as its writer saw it accepted.
#[derive(Debug, Clone)]
struct Accepted {
    write: Write,
    seq: u64,
    prev: u64,
}

/// Runs the shared-database check on the three handles `open` returns (two
/// writers and a follower on one fresh database; the same handle three times
/// for a store that lives in one process).
pub async fn run_shared<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = [Arc<dyn Store>; 3]>,
{
    let [a, b, follower] = open().await;
    let done = Arc::new(AtomicBool::new(false));
    let writers = [("a", a), ("b", b)].map(|(node, store)| tokio::spawn(write_rounds(node, store)));
    let follow = tokio::spawn(follow(follower.clone(), done.clone()));
    let mut accepted = Vec::new();
    for writer in writers {
        accepted.extend(writer.await.expect("a writer panicked"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = follow.await.expect("the follower panicked");
    for collection in COLLECTIONS {
        let truth = state(&follower.scan_since(collection, 0).await.unwrap().records);
        let followed = &seen[collection];
        for write in accepted.iter().filter(|w| w.write.collection == collection && w.write.key.starts_with("u-")) {
            assert!(
                followed.contains_key(&write.write.key),
                "the follower never saw {collection}/{} (position {}): a change committed below a position it had already seen",
                write.write.key,
                write.seq
            );
        }
        check_chain(collection, &accepted);
        assert_eq!(followed, &truth, "{collection}: what the follower pieced together differs from a full scan");
        for (key, (_, stamp)) in &truth {
            let newest = accepted
                .iter()
                .filter(|w| w.write.collection == collection && &w.write.key == key)
                .map(|w| &w.write.hlc)
                .max()
                .expect("a stored key was written");
            assert_eq!(stamp, newest, "{collection}/{key}: equal-key races converge on the newest stamp");
        }
    }
}

/// One writer's batches: mostly fresh keys, some shared with the other writer.
async fn write_rounds(node: &'static str, store: Arc<dyn Store>) -> Vec<Accepted> {
    let mut accepted = Vec::new();
    for round in 0..ROUNDS {
        let batch: Vec<Write> = (0..1 + round % 3)
            .map(|i| {
                let collection = COLLECTIONS[((round + i) % 2) as usize];
                let key =
                    if (round + i) % 4 == 0 { format!("s-{}", round % 3) } else { format!("u-{node}-{round}-{i}") };
                let value = Value::from(format!("{node}:{round}:{i}"));
                write(collection, &key, value, hlc(1_000 + round, u32::try_from(i).unwrap_or(0), node))
            })
            .collect();
        let outcomes = store.apply(&batch).await.expect("a commit on a healthy database");
        for (write, outcome) in batch.into_iter().zip(outcomes) {
            if let Applied::Stored { seq, prev } = outcome {
                accepted.push(Accepted { write, seq, prev });
            }
        }
        if round % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    accepted
}

/// A record's value and stamp, by key.
type State = BTreeMap<String, (Value, Hlc)>;

fn state(records: &[crate::store::StoredRecord]) -> State {
    records.iter().map(|r| (r.key.clone(), (r.value.clone(), r.hlc.clone()))).collect()
}

/// Follows both collections with `scan_since` until the writers are done,
/// then once more; checks each answer against what it had seen.
async fn follow(store: Arc<dyn Store>, done: Arc<AtomicBool>) -> HashMap<&'static str, State> {
    let mut cursors: HashMap<&str, u64> = COLLECTIONS.iter().map(|c| (*c, 0)).collect();
    let mut states: HashMap<&'static str, State> = COLLECTIONS.iter().map(|c| (*c, State::new())).collect();
    loop {
        let last_round = done.load(Ordering::SeqCst);
        for collection in COLLECTIONS {
            let since = cursors[collection];
            let scan = store.scan_since(collection, since).await.expect("a scan on a healthy database");
            let mut previous = since;
            for record in &scan.records {
                assert!(record.seq > previous, "{collection}: position {} after {previous}", record.seq);
                previous = record.seq;
            }
            assert!(scan.cursor >= previous && scan.cursor >= since, "{collection}: the cursor went back");
            states.get_mut(collection).expect("known").extend(state(&scan.records));
            cursors.insert(collection, scan.cursor);
        }
        if last_round {
            return states;
        }
        tokio::task::yield_now().await;
    }
}

/// Positions are unique and each collection's `prev` names exactly its previous stored write.
fn check_chain(collection: &str, accepted: &[Accepted]) {
    let mut mine: Vec<&Accepted> = accepted.iter().filter(|w| w.write.collection == collection).collect();
    mine.sort_by_key(|w| w.seq);
    let mut previous = 0;
    for w in mine {
        assert!(w.seq > previous, "{collection}: position {} taken twice", w.seq);
        assert_eq!(
            w.prev, previous,
            "{collection}: the write at {} names {} as previous, not {previous}",
            w.seq, w.prev
        );
        previous = w.seq;
    }
}
