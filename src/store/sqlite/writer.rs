//! The SQLite store's writer thread: every job waiting when it wakes goes
//! into one transaction and one fsync (group commit); tombstone collection
//! and revocations are written here too, so one connection does all writing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::checkpoint::restart_wal;
use super::{ApplyReply, Job, MAX_GROUP, State, err, to_i64, to_u64};
use crate::hlc::{Hlc, encode_value, merge};
use crate::store::Revoked;
use crate::store::{Applied, StoreError, Write};

/// The writer thread: groups waiting jobs into one transaction each round.
/// `heads` holds each collection's latest position; only this thread writes, so it owns them.
pub(super) fn commit_loop(
    mut conn: Connection,
    mut jobs: mpsc::Receiver<Job>,
    state: &State,
    mut heads: HashMap<String, u64>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut applies = Vec::new();
        for job in group {
            match job {
                Job::Apply { writes, reply } => applies.push((writes, reply)),
                Job::Collect { before_millis, reply } => {
                    let _ = reply.send(collect(&mut conn, before_millis, state));
                }
                Job::Revoke { revoked, reply } => {
                    let _ = reply.send(revoke(&conn, &revoked));
                }
            }
        }
        if applies.is_empty() {
            continue;
        }
        restart_wal(&conn, state);
        match commit(&mut conn, &applies, state, &mut heads) {
            Ok(outcomes) => {
                for ((writes, reply), outcome) in applies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok((outcome, writes)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the writes are refused");
                for (_, reply) in applies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies a group of batches in one transaction; nothing is visible unless all commit.
fn commit(
    conn: &mut Connection,
    applies: &[(Vec<Write>, ApplyReply)],
    state: &State,
    heads: &mut HashMap<String, u64>,
) -> Result<Vec<Vec<Applied>>, StoreError> {
    let mut seq = state.last_seq.load(Ordering::SeqCst);
    let mut clock = *state.clock.lock().unwrap_or_else(|e| e.into_inner());
    let hlc_horizon = state.hlc_horizon.load(Ordering::SeqCst);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| err("starting a commit", e))?;
    let mut all = Vec::with_capacity(applies.len());
    // The touched collections' new heads: kept only once the commit succeeds.
    // A commit touches few collections: a list searched in order costs less
    // than hashing every op's collection name.
    let mut moved: Vec<(&str, u64)> = Vec::new();
    {
        // The stamp comparison is in the upsert itself: a write whose stamp is
        // not greater than the stored one changes nothing, and only then is the
        // record read, to tell a replay from a reused stamp. Reading every
        // record before writing it cost an index search per op (callgrind:
        // about 4,000 instructions of SQLite per op).
        let mut put = tx
            .prepare_cached(
                "INSERT INTO records (collection, key, value, hlc_millis, hlc_counter, hlc_node, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, hlc_millis = excluded.hlc_millis,
                 hlc_counter = excluded.hlc_counter, hlc_node = excluded.hlc_node, seq = excluded.seq
                 WHERE (excluded.hlc_millis, excluded.hlc_counter, excluded.hlc_node)
                     > (records.hlc_millis, records.hlc_counter, records.hlc_node)",
            )
            .map_err(|e| err("preparing", e))?;
        let mut current = tx
            .prepare_cached(
                "SELECT hlc_millis, hlc_counter, hlc_node, value FROM records WHERE collection = ?1 AND key = ?2",
            )
            .map_err(|e| err("preparing", e))?;
        for (writes, _) in applies {
            let mut outcomes = Vec::with_capacity(writes.len());
            for write in writes {
                if write.hlc.millis < hlc_horizon {
                    outcomes.push(Applied::Stale);
                    continue;
                }
                let encoded = encode_value(&write.value);
                let changed = put
                    .execute(params![
                        write.collection,
                        write.key,
                        encoded,
                        to_i64(write.hlc.millis),
                        i64::from(write.hlc.counter),
                        write.hlc.node,
                        to_i64(seq + 1)
                    ])
                    .map_err(|e| err("writing a record", e))?;
                if changed == 0 {
                    outcomes.push(not_stored(&mut current, write, &encoded)?);
                    continue;
                }
                seq += 1;
                clock = clock.max((write.hlc.millis, write.hlc.counter));
                let prev = match moved.iter_mut().find(|(name, _)| *name == write.collection) {
                    Some((_, latest)) => std::mem::replace(latest, seq),
                    None => {
                        moved.push((&write.collection, seq));
                        heads.get(&write.collection).copied().unwrap_or(0)
                    }
                };
                outcomes.push(Applied::Stored { seq, prev });
            }
            all.push(outcomes);
        }
        // One statement for the three rows: a statement per row was a tenth of a small commit.
        tx.prepare_cached(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('seq', ?1), ('clock_millis', ?2), ('clock_counter', ?3)",
        )
        .and_then(|mut meta| meta.execute(params![to_i64(seq), to_i64(clock.0), i64::from(clock.1)]))
        .map_err(|e| err("writing meta", e))?;
    }
    if state.fail_commits.load(Ordering::SeqCst) {
        // After every write, so the injected failure rolls back a real transaction.
        return Err(StoreError("injected commit failure".into()));
    }
    tx.commit().map_err(|e| err("commit", e))?;
    for (collection, latest) in moved {
        match heads.get_mut(collection) {
            Some(head) => *head = latest,
            None => {
                heads.insert(collection.to_string(), latest);
            }
        }
    }
    state.last_seq.store(seq, Ordering::SeqCst);
    *state.clock.lock().unwrap_or_else(|e| e.into_inner()) = clock;
    Ok(all)
}

/// Why a write the upsert did not store was not stored: the stored record's
/// stamp is greater (superseded), or equal with a value that is the same
/// (a replay: superseded) or not (a reused stamp: conflict).
fn not_stored(
    current: &mut rusqlite::CachedStatement<'_>,
    write: &Write,
    encoded: &[u8],
) -> Result<Applied, StoreError> {
    let (hlc, value) = current
        .query_row(params![write.collection, write.key], |r| {
            let hlc = Hlc {
                millis: to_u64(r.get(0)?),
                counter: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                node: r.get(2)?,
            };
            Ok((hlc, r.get::<_, Vec<u8>>(3)?))
        })
        .map_err(|e| err("reading a record", e))?;
    Applied::unless_stored(merge(&write.hlc, encoded, &hlc, &value))
        .ok_or_else(|| StoreError(format!("the upsert kept a record older than its write ({:?})", write.key)))
}

fn collect(conn: &mut Connection, before_millis: u64, state: &State) -> Result<usize, StoreError> {
    let tx =
        conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| err("starting a collection", e))?;
    let (removed, highest, latest): (i64, Option<i64>, Option<i64>) = tx
        .query_row(
            "SELECT COUNT(*), MAX(seq), MAX(hlc_millis) FROM records WHERE value = x'c0' AND hlc_millis < ?1",
            [to_i64(before_millis)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| err("finding tombstones", e))?;
    // A collection's head may be a tombstone about to go: the heads table keeps
    // it, so the chain survives a restart (at open, heads come from records and this table).
    tx.execute(
        "INSERT INTO heads (collection, seq) SELECT collection, MAX(seq) FROM records GROUP BY collection
         ON CONFLICT (collection) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        [],
    )
    .map_err(|e| err("keeping the heads", e))?;
    tx.execute("DELETE FROM records WHERE value = x'c0' AND hlc_millis < ?1", [to_i64(before_millis)])
        .map_err(|e| err("collecting tombstones", e))?;
    let horizon = state.horizon.load(Ordering::SeqCst).max(highest.map_or(0, to_u64));
    // Writes up to the newest collected tombstone's millisecond could have lost to it.
    let hlc_horizon = state.hlc_horizon.load(Ordering::SeqCst).max(latest.map_or(0, |m| to_u64(m) + 1));
    tx.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('horizon', ?1)", [to_i64(horizon)])
        .map_err(|e| err("writing meta", e))?;
    tx.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('hlc_horizon', ?1)", [to_i64(hlc_horizon)])
        .map_err(|e| err("writing meta", e))?;
    tx.commit().map_err(|e| err("commit", e))?;
    state.horizon.store(horizon, Ordering::SeqCst);
    state.hlc_horizon.store(hlc_horizon, Ordering::SeqCst);
    Ok(usize::try_from(removed).unwrap_or(0))
}

/// Records the store's epoch (stored as the i64 with the same bits).
pub(crate) fn set_epoch(conn: &Connection, epoch: u64) -> Result<(), StoreError> {
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('epoch', ?1)", [epoch as i64])
        .map(|_| ())
        .map_err(|e| err("writing the epoch", e))
}

fn revoke(conn: &Connection, revoked: &Revoked) -> Result<(), StoreError> {
    let (kind, subject, before) = match revoked {
        Revoked::Jti(jti) => ("jti", jti.as_str(), 0),
        Revoked::Subject { sub, issued_before } => ("sub", sub.as_str(), to_i64(*issued_before)),
    };
    conn.execute(
        "INSERT INTO revocations (kind, subject, issued_before) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, subject) DO UPDATE SET issued_before = MAX(issued_before, excluded.issued_before)",
        params![kind, subject, before],
    )
    .map(|_| ())
    .map_err(|e| err("saving a revocation", e))
}
