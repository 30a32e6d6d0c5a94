//! What the actor does with the session's effects: sends go to the socket at
//! once; verifications, commits and snapshot scans start as tasks, and their
//! completions come back to the actor's loop ([`Actor::complete`]).
//!
//! While a snapshot is being read, `CHANGE`s of its collection wait in a
//! buffer ([`PendingSync`]) and follow the snapshot, so a reader still sees
//! every change exactly once and in order. A catch-up the hub asks for (a
//! change was lost on the way) is a snapshot from the connection's own
//! cursor, sent as `CHANGE`s.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::{Actor, Flow};
use crate::auth::{AuthError, Identity};
use crate::backplane::BackplaneError;
use crate::collections::Snapshot;
use crate::cursor::Cursor;
use crate::node::AuthRefusal;
use crate::outbox::{Outbound, SharedChange};
use crate::protocol::codes::close;
use crate::protocol::{OpOutcome, ServerMessage};
use crate::requests::RequestError;
use crate::session::Effect;
use crate::store::StoreError;

/// The result of work the actor started.
pub(super) enum Completion {
    /// A token verification.
    Verified(Result<Identity, AuthError>),
    /// The client IP had used up its failed authentications: nothing was verified.
    Blocked,
    /// A committed `OP_BATCH`: the outcomes fill the slots the session left open.
    Written { id: u64, results: Vec<Option<OpOutcome>>, slots: Vec<usize>, outcomes: Vec<OpOutcome> },
    /// A snapshot read for `SYNC {id}`, or for a catch-up (no id).
    Scanned { id: Option<u64>, collection: Arc<str>, generation: u64, result: Result<Snapshot, StoreError> },
    /// Node-level interest in a `SUB`'s topic, established or not.
    Subscribed { id: u64, topic: String, result: Result<(), BackplaneError> },
}

/// A collection whose snapshot is being read.
#[derive(Default)]
pub(super) struct PendingSync {
    /// Which following of the collection this is: an `UNSYNC` ends it, and a
    /// scan started for an earlier one only answers its request.
    generation: u64,
    /// Scans still running (a client may send `SYNC` for a collection twice).
    scans: usize,
    /// `CHANGE`s that arrived meanwhile: `(cursor, encoded CHANGE)`.
    buffered: Vec<(u64, Bytes)>,
    /// The hub asked for a catch-up meanwhile: one follows from the snapshot's cursor.
    catch_up: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Carries out effects in order; work that waits on I/O starts as a task.
    pub(super) async fn apply(&mut self, effects: Vec<Effect>) -> Flow {
        for effect in effects {
            let flow = match effect {
                Effect::Send(message) => self.send(&message).await,
                Effect::Verify(token) => self.start_verification(token).await,
                Effect::Subscribe { id, topic } => {
                    // Local deliveries start now; other nodes' once the interest task answers.
                    self.node.hub.subscribe(&topic, self.outbox.clone());
                    let node = self.node.clone();
                    self.tasks.spawn(async move {
                        let result = node.hub.topic_ready(&topic).await;
                        Completion::Subscribed { id, topic, result }
                    });
                    Flow::Continue
                }
                Effect::Join { topic, info } => {
                    let sub = self.session.identity().map(|i| i.sub.clone()).unwrap_or_default();
                    self.node.hub.join(&topic, self.outbox.clone(), sub, info);
                    Flow::Continue
                }
                Effect::Presence { id, topic } => {
                    let members = self.node.hub.members(&topic);
                    self.send(&ServerMessage::PresenceState { id, topic, members }).await
                }
                Effect::Unsubscribe { topic } => {
                    self.node.hub.leave(&topic, self.outbox.id());
                    self.node.hub.unsubscribe(&topic, self.outbox.id());
                    Flow::Continue
                }
                Effect::Publish { id, topic, data } => {
                    let from = self.session.identity().map(|i| i.sub.as_str()).unwrap_or_default();
                    // Never waits: local outboxes and the backplane's buffer.
                    self.node.deliver_publication(from, &topic, data);
                    self.send(&ServerMessage::Ok { id }).await
                }
                Effect::Write { id, results, ops } => {
                    let (slots, ops): (Vec<usize>, Vec<_>) = ops.into_iter().unzip();
                    let node = self.node.clone();
                    self.writes_in_flight += 1;
                    self.tasks.spawn(async move {
                        let outcomes = node.commit(ops).await;
                        Completion::Written { id, results, slots, outcomes }
                    });
                    Flow::Continue
                }
                Effect::Sync { id, collection, since } => self.start_sync(Some(id), collection, since),
                Effect::Unsync { collection } => {
                    self.node.hub.unwatch(&collection, self.outbox.id());
                    self.sync_cursors.remove(collection.as_str());
                    self.syncing.remove(collection.as_str());
                    Flow::Continue
                }
                Effect::Ping => match self.write(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""))).await {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Stop,
                },
                Effect::Close { code, reason } => {
                    self.close(code, &reason).await;
                    Flow::Stop
                }
            };
            if let Flow::Stop = flow {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Verifies a token ([`crate::node::Node::authenticate`]). The verification is polled
    /// once here: a token checked against keys in memory (HMAC, PEM, cached
    /// JWKS) is decided without waiting, and then no task is spawned for it (a
    /// task per handshake was a measurable share of the handshake's cost). One
    /// that must wait (a key fetch, introspection) goes on as a task, so the
    /// actor never waits on I/O.
    async fn start_verification(&mut self, token: String) -> Flow {
        let authentication = self.node.authenticate(token, self.peer.ip());
        let mut verification = Box::pin(async move {
            match authentication.await {
                Err(AuthRefusal::Blocked) => Completion::Blocked,
                Err(AuthRefusal::Failed(e)) => Completion::Verified(Err(e)),
                Ok(identity) => Completion::Verified(Ok(identity)),
            }
        });
        let polled = verification.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        match polled {
            // The task's first poll registers its own waker: nothing is lost.
            Poll::Pending => {
                self.tasks.spawn(verification);
                Flow::Continue
            }
            Poll::Ready(completion) => Box::pin(self.complete(completion)).await,
        }
    }

    /// Watches the collection at once (so nothing falls between snapshot and
    /// stream), then, in a task, waits for the feed to follow the store and
    /// reads the snapshot. `id` is `None` for a catch-up.
    fn start_sync(&mut self, id: Option<u64>, collection: String, since: Option<Cursor>) -> Flow {
        let name: Arc<str> = Arc::from(collection.as_str());
        self.node.hub.watch(&collection, self.outbox.clone());
        self.generations += 1;
        let fresh = self.generations;
        let pending = self
            .syncing
            .entry(name.clone())
            .or_insert_with(|| PendingSync { generation: fresh, ..PendingSync::default() });
        pending.scans += 1;
        let generation = pending.generation;
        let node = self.node.clone();
        self.tasks.spawn(async move {
            let page_bytes = node.config.limits.sync_page_bytes;
            let result = match node.feed_ready(&collection).await {
                Ok(()) => node.collections.snapshot(&collection, since, page_bytes).await,
                Err(e) => Err(StoreError(e.to_string())),
            };
            Completion::Scanned { id, collection: name, generation, result }
        });
        Flow::Continue
    }

    /// Handles the result of a task.
    pub(super) async fn complete(&mut self, completion: Completion) -> Flow {
        match completion {
            Completion::Blocked => {
                info!(peer = %self.peer, "too many failed authentications");
                self.close(close::RATE_LIMITED, "too many failed authentications").await;
                Flow::Stop
            }
            Completion::Verified(result) => {
                let kind = if result.is_ok() { "ok" } else { "failed" };
                self.node.metrics.handshakes.get_or_create(&crate::metrics::Kind { kind }).inc();
                match &result {
                    // Claims are logged with Debug: a `sub` holding a newline cannot forge a log line.
                    // Successes at DEBUG: one INFO line per handshake costs a measurable share of it.
                    Ok(identity) => debug!(peer = %self.peer, sub = ?identity.sub, "authenticated"),
                    Err(e) => info!(peer = %self.peer, code = %e.code, "authentication refused"),
                }
                let effects = self.admit(result);
                if self.session.identity().is_some() {
                    self.pending = None;
                }
                self.gate.verdict(self.session.identity().is_some());
                self.count_state();
                self.apply(effects).await
            }
            Completion::Written { id, mut results, slots, outcomes } => {
                self.writes_in_flight -= 1;
                for (slot, outcome) in slots.into_iter().zip(outcomes) {
                    results[slot] = Some(outcome);
                }
                self.send(&ServerMessage::OpResult { id, results: results.into_iter().flatten().collect() }).await
            }
            Completion::Scanned { id, collection, generation, result } => {
                self.finish_sync(id, collection, generation, result).await
            }
            Completion::Subscribed { id, topic, result } => match result {
                Ok(()) => self.send(&ServerMessage::Ok { id }).await,
                Err(e) => {
                    self.node.metrics.backplane_errors.inc();
                    self.node.hub.unsubscribe(&topic, self.outbox.id());
                    self.session.forget_subscription(&topic);
                    self.send(&RequestError::Unavailable(e.to_string()).reply(Some(id))).await
                }
            },
        }
    }

    /// Feeds a verification result to the session and registers the
    /// connection, inside the node's admission step ([`crate::node::Node::admit`]): an
    /// admin revocation either sees the connection registered (and closes
    /// it) or is seen here.
    fn admit(&mut self, result: Result<Identity, AuthError>) -> Vec<Effect> {
        let now = self.now();
        let node = self.node.clone();
        node.admit(result, |admitted| {
            let effects = self.session.on_verified(admitted, now);
            if let Some(identity) = self.session.identity() {
                node.registry.register(self.outbox.id(), identity, self.control.clone());
                tracing::Span::current().record("sub", tracing::field::debug(&identity.sub));
            }
            effects
        })
    }

    /// Sends a snapshot (the first page as `SYNC_DATA`, the rest as `CHANGE`
    /// pages; a catch-up sends every non-empty page as a `CHANGE`), then the
    /// changes that arrived while it was read.
    async fn finish_sync(
        &mut self,
        id: Option<u64>,
        collection: Arc<str>,
        generation: u64,
        result: Result<Snapshot, StoreError>,
    ) -> Flow {
        // A scan of a following that has ended (UNSYNC, then maybe a new SYNC) still
        // answers its request, but leaves the stream and its buffer alone.
        let current = match self.syncing.get_mut(&collection) {
            Some(pending) if pending.generation == generation => {
                pending.scans -= 1;
                Some(pending.scans == 0)
            }
            _ => None,
        };
        if id.is_none() && current.is_none() {
            // A catch-up for a following that has ended: nobody wants it.
            return Flow::Continue;
        }
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(e) => {
                if current == Some(true) {
                    self.syncing.remove(&collection);
                    self.node.hub.unwatch(&collection, self.outbox.id());
                    self.sync_cursors.remove(&collection);
                    self.session.forget_sync(&collection);
                }
                return match id {
                    Some(id) => self.send(&RequestError::Unavailable(e.to_string()).reply(Some(id))).await,
                    None => {
                        // A catch-up that cannot read the store: the client resyncs when it reconnects.
                        info!(peer = %self.peer, error = %e, "catch-up failed; closing so the client resyncs");
                        self.close(close::GOING_AWAY, "changes could not be caught up").await;
                        Flow::Stop
                    }
                };
            }
        };
        if current.is_some() {
            let seen = self.sync_cursors.entry(collection.clone()).or_insert(0);
            *seen = (*seen).max(snapshot.cursor);
        }
        let collections = &self.node.collections;
        let page_count = snapshot.pages.len();
        let mut messages = Vec::with_capacity(page_count);
        for (n, (records, cursor)) in snapshot.pages.into_iter().enumerate() {
            let (cursor, more) = (collections.cursor(cursor), n + 1 < page_count);
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
        if current == Some(true)
            && let Some(done) = self.syncing.remove(&collection)
        {
            for (cursor, bytes) in done.buffered {
                let change = SharedChange { collection: collection.clone(), cursor, bytes };
                if let Flow::Stop = self.deliver(Outbound::Change(Arc::new(change))).await {
                    return Flow::Stop;
                }
            }
            if done.catch_up {
                return self.catch_up(collection);
            }
        }
        Flow::Continue
    }

    /// The hub says changes of `collection` may have been lost: read them from
    /// the store, from this connection's cursor (after any snapshot in flight).
    fn catch_up(&mut self, collection: Arc<str>) -> Flow {
        if let Some(pending) = self.syncing.get_mut(&collection) {
            pending.catch_up = true;
            return Flow::Continue;
        }
        let Some(&seen) = self.sync_cursors.get(&collection) else { return Flow::Continue };
        let since = crate::cursor::Cursor::new(self.node.collections.epoch(), seen);
        self.start_sync(None, collection.to_string(), Some(since))
    }

    /// Writes a queued publication or change (skipping changes a snapshot
    /// already covered, holding those of a snapshot still being read).
    pub(super) async fn deliver(&mut self, item: Outbound) -> Flow {
        let bytes = match item {
            Outbound::Message(bytes) => {
                self.node.metrics.deliveries.inc();
                bytes
            }
            Outbound::Resync { collection } => return self.catch_up(collection),
            Outbound::Change(change) => {
                let SharedChange { collection, cursor, bytes } = &*change;
                let (cursor, bytes) = (*cursor, bytes.clone());
                if let Some(pending) = self.syncing.get_mut(collection) {
                    if pending.buffered.len() >= self.node.config.limits.outbound_queue {
                        info!(peer = %self.peer, "slow consumer: changes piled up behind a snapshot");
                        self.close(close::SLOW_CONSUMER, "slow consumer").await;
                        return Flow::Stop;
                    }
                    pending.buffered.push((cursor, bytes));
                    return Flow::Continue;
                }
                match self.sync_cursors.get_mut(collection) {
                    Some(seen) if cursor > *seen => {
                        *seen = cursor;
                        self.node.metrics.changes.inc();
                        bytes
                    }
                    _ => return Flow::Continue,
                }
            }
        };
        self.write_data(&bytes).await
    }
}
