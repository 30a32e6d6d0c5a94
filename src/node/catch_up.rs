//! Catch-up scans, once per feed rather than once per watcher.
//!
//! When the hub loses a change (a gap that does not close, a backplane
//! loss, a feed behind the store), every watcher of the collection must read
//! what it missed from the store. Watchers of one feed are nearly always at
//! the same position, so the scans are single-flight: one scan per
//! collection, starting position and resync round, shared by every watcher
//! that asks for it while it runs, and its `CHANGE` pages encoded once.
//!
//! The round is part of the key because a scan only covers a loss if it
//! started after the loss was noticed: a watcher handling round `r` never
//! joins a scan started for an earlier round. Change feeds share their
//! rescans the same way, keyed by the hub's wake-up that started them
//! ([`Trigger::Wake`]), and render their SSE events once per read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::Node;
use crate::cursor::Cursor;
use crate::protocol::{Record, ServerMessage, encode_server};
use crate::store::StoreError;

/// What started a shared read: a hub resync round (WebSocket watchers) or
/// a hub wake-up (change feeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Trigger {
    /// Resync round `n`.
    Resync(u64),
    /// Wake-up `n` of the collection's listeners.
    Wake(u64),
}

/// What a shared read found: the non-empty pages after the starting
/// position, the cursor after them, and their encodings, made once for
/// every reader that shares the read.
#[derive(Debug)]
pub(crate) struct CatchUpPages {
    /// Pages of records, in order, each with the cursor after it (empty pages left out).
    pub(crate) pages: Vec<(Vec<Record>, u64)>,
    /// The cursor after the last page.
    pub(crate) cursor: u64,
    /// The starting position could not be resumed from: the pages are the full state.
    pub(crate) reset: bool,
    /// The tombstone-collection horizon the pages were read under (their cursors carry it).
    pub(crate) horizon: u64,
    changes: OnceLock<Vec<Bytes>>,
    events: OnceLock<Vec<Bytes>>,
}

impl CatchUpPages {
    /// The pages as encoded `CHANGE`s (made by the first caller).
    pub(crate) fn changes(&self, encode: impl FnOnce(&[(Vec<Record>, u64)]) -> Vec<Bytes>) -> &[Bytes] {
        self.changes.get_or_init(|| encode(&self.pages))
    }

    /// The pages as SSE events (made by the first caller).
    pub(crate) fn events(&self, render: impl FnOnce(&[(Vec<Record>, u64)]) -> Vec<Bytes>) -> &[Bytes] {
        self.events.get_or_init(|| render(&self.pages))
    }
}

type Key = (Arc<str>, Cursor, Trigger);
type Flight = Arc<OnceCell<Result<Arc<CatchUpPages>, StoreError>>>;

/// How long a finished read stays to be shared. It stays valid for its key
/// (it started after its trigger), so readers woken a little later by the
/// same trigger still share it; it is kept only briefly to bound memory.
const KEEP_FINISHED: Duration = Duration::from_secs(1);

/// Catch-up scans in flight, and those finished in the last moment.
#[derive(Default)]
pub(crate) struct CatchUps {
    /// A std mutex: held to look up or insert, never across an await.
    flights: Mutex<HashMap<Key, (Instant, Flight)>>,
}

impl CatchUps {
    /// The result of the scan for `key`, run by `scan` unless one is in
    /// flight or has just finished.
    async fn share<F, Fut>(&self, key: Key, scan: F) -> Result<Arc<CatchUpPages>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<CatchUpPages>, StoreError>>,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.retain(|_, (started, flight)| !flight.initialized() || started.elapsed() < KEEP_FINISHED);
            flights.entry(key).or_insert_with(|| (Instant::now(), Flight::default())).1.clone()
        };
        flight.get_or_init(scan).await.clone()
    }
}

impl Node {
    /// Every change of `collection` after `since`, read once for every
    /// reader asking for the same position after the same `trigger`.
    pub(crate) async fn catch_up(
        &self,
        collection: Arc<str>,
        since: Cursor,
        trigger: Trigger,
    ) -> Result<Arc<CatchUpPages>, StoreError> {
        let key = (collection.clone(), since, trigger);
        self.catch_ups
            .share(key, || async {
                let page_bytes = self.config.limits.sync_page_bytes;
                let snapshot = self.collections.snapshot(&collection, Some(since), page_bytes).await?;
                let pages = snapshot.pages.into_iter().filter(|(records, _)| !records.is_empty()).collect();
                Ok(Arc::new(CatchUpPages {
                    pages,
                    cursor: snapshot.cursor,
                    reset: snapshot.reset,
                    horizon: snapshot.horizon,
                    changes: OnceLock::new(),
                    events: OnceLock::new(),
                }))
            })
            .await
    }

    /// `pages` (read under `horizon`) as encoded `CHANGE`s of `collection`.
    pub(crate) fn encode_changes(&self, collection: &str, pages: &[(Vec<Record>, u64)], horizon: u64) -> Vec<Bytes> {
        pages
            .iter()
            .map(|(records, position)| {
                encode_server(&ServerMessage::Change {
                    collection: collection.to_string(),
                    records: records.clone(),
                    cursor: self.collections.cursor_under(*position, horizon),
                    more: false,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn watchers_of_one_round_share_one_scan() {
        let catch_ups = Arc::new(CatchUps::default());
        let scans = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let ask = |since: u64, round: u64| {
            let (catch_ups, scans, mut released) = (catch_ups.clone(), scans.clone(), released.clone());
            tokio::spawn(async move {
                let key = (Arc::from("c"), Cursor::new(1, since), Trigger::Resync(round));
                catch_ups
                    .share(key, || async move {
                        scans.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(Arc::new(CatchUpPages {
                            pages: Vec::new(),
                            cursor: since + 10,
                            reset: false,
                            horizon: 0,
                            changes: OnceLock::new(),
                            events: OnceLock::new(),
                        }))
                    })
                    .await
            })
        };
        let mut waiting: Vec<_> = (0..100).map(|_| ask(5, 1)).collect();
        waiting.push(ask(7, 1));
        waiting.push(ask(5, 2));
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for answer in waiting {
            assert!(answer.await.unwrap().is_ok());
        }
        assert_eq!(scans.load(Ordering::SeqCst), 3, "one per position and round");
        assert!(ask(5, 1).await.unwrap().is_ok());
        assert_eq!(scans.load(Ordering::SeqCst), 3, "a read that just finished is still shared");
        assert!(ask(5, 3).await.unwrap().is_ok());
        assert_eq!(scans.load(Ordering::SeqCst), 4, "a later round reads again");
    }
}
