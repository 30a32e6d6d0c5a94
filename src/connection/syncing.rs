//! The actor's side of its sync streams: it starts the scans that
//! [`SyncStreams`](crate::sync_streams::SyncStreams) asks for (a `SYNC`'s
//! snapshot, a catch-up after a lost change), sends what they read, and
//! passes each queued change through the streams, which decide whether it
//! goes out now, waits behind a scan, or was already sent. The ordering and
//! exactly-once rules live in `sync_streams`; this module only does the I/O.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::completion::{Completion, ScanFrom, Scanned};
use super::{Actor, Flow};
use crate::collections::Snapshot;
use crate::cursor::Cursor;
use crate::node::Trigger;
use crate::protocol::ServerMessage;
use crate::protocol::codes::close;
use crate::requests::RequestError;
use crate::send_queue::SharedChange;
use crate::store::StoreError;
use crate::sync_streams::{ChangeStep, ScanStep, Ticket};

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Watches the collection at once (so nothing falls between the scan
    /// and the stream), then, in a task, waits for the feed to follow the
    /// store and reads. `id` is the `SYNC`'s, `None` for a catch-up.
    pub(super) fn start_scan(&mut self, id: Option<u64>, collection: Arc<str>, ticket: Ticket, from: ScanFrom) -> Flow {
        if !ticket.answers_only() {
            self.node.hub.watch(&collection, self.queue.clone());
        }
        let since = match &from {
            ScanFrom::Request(since) => *since,
            ScanFrom::CatchUp(_) => None,
        };
        let node = self.node.clone();
        self.tasks.spawn(async move {
            let result = match node.feed_ready(&collection).await {
                Err(e) => Err(StoreError(e.to_string())),
                Ok(()) => match from {
                    ScanFrom::Request(since) => {
                        let page_bytes = node.config.limits.sync_page_bytes;
                        node.collections.snapshot(&collection, since, page_bytes).await.map(Scanned::Snapshot)
                    }
                    ScanFrom::CatchUp(catch_up) => {
                        let since = Cursor::new(node.collections.epoch(), catch_up.since);
                        let trigger = Trigger::Resync(catch_up.round);
                        node.catch_up(collection.clone(), since, trigger).await.map(Scanned::CatchUp)
                    }
                },
            };
            Completion::Scanned { id, collection, ticket, since, result }
        });
        Flow::Continue
    }

    /// Sends what a scan read, as the sync streams decide: a snapshot's first
    /// page as `SYNC_DATA` and the rest as `CHANGE`s, a catch-up's pages as
    /// `CHANGE`s; then the changes held meanwhile, or the catch-up that must
    /// come first.
    pub(super) async fn finish_scan(
        &mut self,
        id: Option<u64>,
        collection: Arc<str>,
        ticket: Ticket,
        since: Option<Cursor>,
        result: Result<Scanned, StoreError>,
    ) -> Flow {
        let cursor = result.as_ref().map(Scanned::cursor).map_err(|_| ());
        match self.streams.scan_done(&collection, ticket, id.is_some(), cursor) {
            ScanStep::Drop => Flow::Continue,
            ScanStep::Rescan(again) => self.start_scan(id, collection, again, ScanFrom::Request(since)),
            ScanStep::Failed { ended } => {
                if ended {
                    self.node.hub.unwatch(&collection, self.queue.id());
                    self.session.forget_sync(&collection);
                }
                let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
                match id {
                    Some(id) => self.send(&RequestError::Unavailable(reason).reply(Some(id))).await,
                    None => {
                        // A catch-up that cannot read the store: the client resyncs when it reconnects.
                        info!(peer = %self.peer, error = %reason, "catch-up failed; closing so the client resyncs");
                        self.close(close::GOING_AWAY, "changes could not be caught up").await;
                        Flow::Stop
                    }
                }
            }
            ScanStep::Send { deliver, then } => {
                let sent = match result {
                    Ok(Scanned::Snapshot(snapshot)) => self.send_snapshot(id, &collection, snapshot).await,
                    Ok(Scanned::CatchUp(pages)) if pages.reset => {
                        // The connection's position fell behind a tombstone collection: a delta
                        // could keep records whose deletes are gone. The client reconnects and
                        // its SYNC {since} gets the full state with `reset: true`.
                        info!(peer = %self.peer, %collection, "catch-up needs a full resync; closing so the client resyncs");
                        self.close(close::GOING_AWAY, "changes must be synced again").await;
                        return Flow::Stop;
                    }
                    Ok(Scanned::CatchUp(pages)) => {
                        let node = self.node.clone();
                        let changes = pages.changes(|list| node.encode_changes(&collection, list, pages.horizon));
                        self.send_pages(changes).await
                    }
                    Err(_) => Flow::Continue,
                };
                if let Flow::Stop = sent {
                    return Flow::Stop;
                }
                for change in deliver {
                    self.node.metrics.changes.inc();
                    if let Flow::Stop = self.write_data(&change).await {
                        return Flow::Stop;
                    }
                }
                match then {
                    Some(catch_up) => self.start_scan(None, collection, catch_up.ticket, ScanFrom::CatchUp(catch_up)),
                    None => Flow::Continue,
                }
            }
        }
    }

    async fn send_snapshot(&mut self, id: Option<u64>, collection: &str, snapshot: Snapshot) -> Flow {
        let collections = &self.node.collections;
        let page_count = snapshot.pages.len();
        let mut messages = Vec::with_capacity(page_count);
        for (n, (records, cursor)) in snapshot.pages.into_iter().enumerate() {
            let (cursor, more) = (collections.cursor_under(cursor, snapshot.horizon), n + 1 < page_count);
            messages.push(match id {
                Some(id) if n == 0 => ServerMessage::SyncData {
                    id,
                    collection: collection.to_string(),
                    records,
                    cursor,
                    reset: snapshot.reset,
                    more,
                },
                None if records.is_empty() => continue,
                _ => ServerMessage::Change { collection: collection.to_string(), records, cursor, more },
            });
        }
        self.node.metrics.sync_pages.inc_by(messages.len() as u64);
        for message in &messages {
            if let Flow::Stop = self.send(message).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn send_pages(&mut self, pages: &[Bytes]) -> Flow {
        self.node.metrics.sync_pages.inc_by(pages.len() as u64);
        for page in pages {
            if let Flow::Stop = self.write_data(page).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Queues a change of a burst, as the sync streams decide (the burst
    /// looked at the deadline and close orders for it).
    pub(super) async fn deliver_change(&mut self, change: Arc<SharedChange>) -> Flow {
        match self.streams.change(&change.collection, change.cursor, change.bytes.clone()) {
            ChangeStep::Deliver(bytes) => {
                self.node.metrics.changes.inc();
                self.gather(&bytes)
            }
            ChangeStep::Held | ChangeStep::Skip => Flow::Continue,
            ChangeStep::Overflow => {
                info!(peer = %self.peer, "slow consumer: changes piled up behind a snapshot");
                self.close(close::SLOW_CONSUMER, "slow consumer").await;
                Flow::Stop
            }
        }
    }

    /// Starts the catch-up a resync asks for, if the sync streams want one.
    pub(super) fn resync(&mut self, collection: Arc<str>, round: u64) -> Flow {
        match self.streams.resync(&collection, round) {
            Some(catch_up) => self.start_scan(None, collection, catch_up.ticket, ScanFrom::CatchUp(catch_up)),
            None => Flow::Continue,
        }
    }
}
