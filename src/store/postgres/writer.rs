//! The Postgres store's group commit: every batch waiting when the commit
//! task is free goes into one transaction, which locks the store row first
//! (positions in commit order across nodes), reads every touched record and
//! collection head in two statements, decides each write by
//! [`crate::hlc::merge`], and writes records, heads and the store row back in
//! three pipelined statements before `COMMIT`.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Client;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{Statements, err, timed, to_i64, to_u64};
use crate::hlc::{Hlc, Merge, encode_value, merge};
use crate::store::{Applied, StoreError, Write};

/// Batches waiting for the commit task at most (senders wait beyond it).
pub(super) const QUEUE: usize = 4096;
/// Writes in one group transaction at most.
const MAX_GROUP_WRITES: usize = 8192;

/// A batch for the commit task, and where its outcome goes.
pub(super) struct Job {
    pub(super) writes: Vec<Write>,
    pub(super) reply: oneshot::Sender<Result<Vec<Applied>, StoreError>>,
}

/// Fails when the database's epoch is not the one this node opened with:
/// `syncgate new-epoch` ran (a restore), and this node must be restarted.
pub(super) fn check_epoch(found: u64, opened: u64) -> Result<(), StoreError> {
    if found == opened {
        Ok(())
    } else {
        Err(StoreError(format!(
            "postgres: the store's epoch changed ({opened:x} → {found:x}, a restore ran new-epoch): restart this node"
        )))
    }
}

/// The commit task: one group transaction at a time.
pub(super) async fn commit_loop(pool: Pool, statements: Arc<Statements>, mut jobs: mpsc::Receiver<Job>, epoch: u64) {
    while let Some(first) = jobs.recv().await {
        let mut writes = first.writes.len();
        let mut group = vec![first];
        while writes < MAX_GROUP_WRITES {
            match jobs.try_recv() {
                Ok(job) => {
                    writes += job.writes.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<&[Write]> = group.iter().map(|job| job.writes.as_slice()).collect();
        let outcome = timed("committing", async {
            let mut client = pool.get().await.map_err(|e| err("getting a connection", e))?;
            commit(&mut client, &statements, &batches, epoch).await
        })
        .await;
        match outcome {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; the writes are refused as unavailable");
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The latest state of a key within the transaction.
struct Current {
    hlc: Hlc,
    value: Vec<u8>,
    /// The position this transaction gave it (`None`: read, not written).
    written_at: Option<u64>,
}

/// Applies a group of batches in one transaction; nothing is visible unless all commit.
async fn commit(
    client: &mut Client,
    statements: &Statements,
    batches: &[&[Write]],
    epoch: u64,
) -> Result<Vec<Vec<Applied>>, StoreError> {
    let tx = client.transaction().await.map_err(|e| err("starting a commit", e))?;
    // First, always: the position row. Every commit on every node queues here.
    let store = tx.query_one(&statements.lock_store, &[]).await.map_err(|e| err("locking the store row", e))?;
    check_epoch(to_u64(store.get(0)), epoch)?;
    let mut seq = to_u64(store.get(1));
    let mut clock = (to_u64(store.get(2)), u32::try_from(store.get::<_, i32>(3)).unwrap_or(0));
    let hlc_horizon = to_u64(store.get(4));

    let mut pairs: (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut names: Vec<&str> = Vec::new();
    for write in batches.iter().flat_map(|b| b.iter()) {
        pairs.0.push(&write.collection);
        pairs.1.push(&write.key);
        if !names.contains(&write.collection.as_str()) {
            names.push(&write.collection);
        }
    }
    let current_statement = tx.prepare_cached(&statements.current).await.map_err(|e| err("preparing", e))?;
    let heads_statement = tx.prepare_cached(&statements.heads).await.map_err(|e| err("preparing", e))?;
    let (rows, head_rows) = futures_util::future::try_join(
        tx.query(&current_statement, &[&pairs.0, &pairs.1]),
        tx.query(&heads_statement, &[&names]),
    )
    .await
    .map_err(|e| err("reading records", e))?;
    let mut current: HashMap<(String, String), Current> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let hlc = Hlc {
            millis: to_u64(row.get(2)),
            counter: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            node: row.get(4),
        };
        current.insert((row.get(0), row.get(1)), Current { hlc, value: row.get(5), written_at: None });
    }
    let mut heads: HashMap<String, u64> = head_rows.iter().map(|row| (row.get(0), to_u64(row.get(1)))).collect();
    let mut all = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut outcomes = Vec::with_capacity(batch.len());
        for write in batch.iter() {
            if write.hlc.millis < hlc_horizon {
                outcomes.push(Applied::Stale);
                continue;
            }
            let id = (write.collection.clone(), write.key.clone());
            let encoded = encode_value(&write.value);
            let verdict = current.get(&id).map_or(Merge::Replaces, |c| merge(&write.hlc, &encoded, &c.hlc, &c.value));
            if let Some(outcome) = Applied::unless_stored(verdict) {
                outcomes.push(outcome);
                continue;
            }
            seq += 1;
            clock = clock.max((write.hlc.millis, write.hlc.counter));
            let prev = heads.insert(write.collection.clone(), seq).unwrap_or(0);
            current.insert(id, Current { hlc: write.hlc.clone(), value: encoded, written_at: Some(seq) });
            outcomes.push(Applied::Stored { seq, prev });
        }
        all.push(outcomes);
    }
    // What to write back follows from `current`: each key written here once,
    // in its last state, and each moved collection's head, its highest position.
    let written: Vec<(&(String, String), &Current, u64)> =
        current.iter().filter_map(|(id, c)| c.written_at.map(|at| (id, c, at))).collect();
    if written.is_empty() {
        // Nothing changed: no position was taken.
        tx.rollback().await.map_err(|e| err("ending a commit", e))?;
        return Ok(all);
    }
    let collections: Vec<&str> = written.iter().map(|w| w.0.0.as_str()).collect();
    let keys: Vec<&str> = written.iter().map(|w| w.0.1.as_str()).collect();
    let nodes: Vec<&str> = written.iter().map(|w| w.1.hlc.node.as_str()).collect();
    let values: Vec<&[u8]> = written.iter().map(|w| w.1.value.as_slice()).collect();
    // A tombstone is the encoding of nil.
    let deleted: Vec<bool> = written.iter().map(|w| w.1.value == [0xc0]).collect();
    let millis: Vec<i64> = written.iter().map(|w| to_i64(w.1.hlc.millis)).collect();
    let counters: Vec<i32> = written.iter().map(|w| i32::try_from(w.1.hlc.counter).unwrap_or(i32::MAX)).collect();
    let seqs: Vec<i64> = written.iter().map(|w| to_i64(w.2)).collect();
    let mut moved: HashMap<&str, i64> = HashMap::new();
    for w in &written {
        let head = moved.entry(w.0.0.as_str()).or_insert(0);
        *head = (*head).max(to_i64(w.2));
    }
    let (head_names, head_seqs): (Vec<&str>, Vec<i64>) = moved.into_iter().unzip();
    let records = tx.prepare_cached(&statements.upsert_records).await.map_err(|e| err("preparing", e))?;
    let heads_upsert = tx.prepare_cached(&statements.upsert_heads).await.map_err(|e| err("preparing", e))?;
    let store_update = tx.prepare_cached(&statements.update_store).await.map_err(|e| err("preparing", e))?;
    let (clock_millis, clock_counter) = (to_i64(clock.0), i32::try_from(clock.1).unwrap_or(i32::MAX));
    let seq_now = to_i64(seq);
    futures_util::future::try_join3(
        tx.execute(&records, &[&collections, &keys, &values, &deleted, &millis, &counters, &nodes, &seqs]),
        tx.execute(&heads_upsert, &[&head_names, &head_seqs]),
        tx.execute(&store_update, &[&seq_now, &clock_millis, &clock_counter]),
    )
    .await
    .map_err(|e| err("writing records", e))?;
    tx.commit().await.map_err(|e| err("commit", e))?;
    Ok(all)
}

/// Removes tombstones stamped before `before_millis` and raises both
/// horizons, in one transaction. One node at a time: a node that finds the
/// advisory lock taken collects nothing this round.
pub(super) async fn collect(
    client: &mut Client,
    statements: &Statements,
    epoch: u64,
    before_millis: u64,
) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(|e| err("starting a collection", e))?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock(hashtext($1))", &[&statements.collect_lock])
        .await
        .map_err(|e| err("taking the collection lock", e))?
        .get(0);
    if !locked {
        return Ok(0);
    }
    // The store row too: the horizons change atomically with every commit's stale check.
    let store = tx.query_one(&statements.lock_store, &[]).await.map_err(|e| err("locking the store row", e))?;
    check_epoch(to_u64(store.get(0)), epoch)?;
    let removed = tx.query(&statements.collect, &[&to_i64(before_millis)]).await.map_err(|e| err("collecting", e))?;
    if removed.is_empty() {
        return Ok(0);
    }
    let horizon = removed.iter().map(|row| row.get::<_, i64>(0)).max().unwrap_or(0);
    let newest = removed.iter().map(|row| row.get::<_, i64>(1)).max().unwrap_or(0);
    tx.execute(&statements.raise_horizons, &[&horizon, &newest.saturating_add(1)])
        .await
        .map_err(|e| err("raising the horizons", e))?;
    tx.commit().await.map_err(|e| err("committing a collection", e))?;
    Ok(removed.len())
}
