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
//! joins a scan started for an earlier round.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::Node;
use crate::cursor::Cursor;
use crate::protocol::{ServerMessage, encode_server};
use crate::store::StoreError;

/// What a catch-up read: the encoded `CHANGE` pages (empty ones left out)
/// and the cursor after them.
#[derive(Debug)]
pub(crate) struct CatchUpPages {
    /// Encoded `CHANGE`s, in order; every watcher sends the same bytes.
    pub(crate) changes: Vec<Bytes>,
    /// The cursor after the last page.
    pub(crate) cursor: u64,
}

type Key = (Arc<str>, u64, u64);
type Flight = Arc<OnceCell<Result<Arc<CatchUpPages>, StoreError>>>;

/// Catch-up scans in flight.
#[derive(Default)]
pub(crate) struct CatchUps {
    /// A std mutex: held to look up or insert, never across an await.
    flights: Mutex<HashMap<Key, Flight>>,
}

impl CatchUps {
    /// The result of the scan for `key`, run by `scan` unless one is in flight.
    async fn share<F, Fut>(&self, key: Key, scan: F) -> Result<Arc<CatchUpPages>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<CatchUpPages>, StoreError>>,
    {
        let flight = self.flights.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        let result = flight.get_or_init(scan).await.clone();
        // The first to finish takes the entry away (if it is still this flight):
        // a later round, or a watcher arriving now, starts a fresh scan.
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&key);
        }
        result
    }
}

impl Node {
    /// Every change of `collection` after `since`, as `CHANGE` pages, read
    /// once for every watcher asking in resync `round`.
    pub(crate) async fn catch_up(
        &self,
        collection: Arc<str>,
        since: u64,
        round: u64,
    ) -> Result<Arc<CatchUpPages>, StoreError> {
        let key = (collection.clone(), since, round);
        self.catch_ups
            .share(key, || async {
                let since = Cursor::new(self.collections.epoch(), since);
                let page_bytes = self.config.limits.sync_page_bytes;
                let snapshot = self.collections.snapshot(&collection, Some(since), page_bytes).await?;
                let changes = snapshot
                    .pages
                    .into_iter()
                    .filter(|(records, _)| !records.is_empty())
                    .map(|(records, position)| {
                        encode_server(&ServerMessage::Change {
                            collection: collection.to_string(),
                            records,
                            cursor: self.collections.cursor(position),
                            more: false,
                        })
                    })
                    .collect();
                Ok(Arc::new(CatchUpPages { changes, cursor: snapshot.cursor }))
            })
            .await
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
                let key = (Arc::from("c"), since, round);
                catch_ups
                    .share(key, || async move {
                        scans.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(Arc::new(CatchUpPages { changes: Vec::new(), cursor: since + 10 }))
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
        assert_eq!(scans.load(Ordering::SeqCst), 4, "a finished flight is not joined");
    }
}
