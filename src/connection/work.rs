//! What the actor does with the session's effects: sends go to the socket at
//! once; verifications, commits and snapshot scans start as tasks, and their
//! completions come back to the actor's loop ([`Actor::complete`]).
//!
//! While a snapshot is being read, `CHANGE`s of its collection wait in a
//! buffer ([`PendingSync`]) and follow the snapshot, so a reader still sees
//! every change exactly once and in order.

use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::{Actor, Flow};
use crate::auth::{AuthError, Identity};
use crate::collections::Snapshot;
use crate::cursor::Cursor;
use crate::outbox::Outbound;
use crate::protocol::codes::{close, error};
use crate::protocol::{AuthFailCode, OpOutcome, ServerMessage};
use crate::server::Shared;
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
    /// A snapshot read for `SYNC {id}`.
    Scanned { id: u64, collection: Arc<str>, generation: u64, result: Result<Snapshot, StoreError> },
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
}

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Carries out effects in order; work that waits on I/O starts as a task.
    pub(super) async fn apply(&mut self, effects: Vec<Effect>) -> Flow {
        for effect in effects {
            let flow = match effect {
                Effect::Send(message) => self.send(&message).await,
                Effect::Verify(token) => self.start_verification(token),
                Effect::Subscribe { id, topic } => {
                    // The memory broker answers at once; a backplane's `subscribe` belongs in a task too.
                    match self.shared.config.broker.subscribe(&topic, self.outbox.clone()).await {
                        Ok(()) => self.send(&ServerMessage::Ok { id }).await,
                        Err(e) => {
                            self.session.forget_subscription(&topic);
                            self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await
                        }
                    }
                }
                Effect::Unsubscribe { topic } => {
                    let _ = self.shared.config.broker.unsubscribe(&topic, self.outbox.id()).await;
                    Flow::Continue
                }
                Effect::Publish { id, topic, data } => {
                    let from = self.session.identity().map(|i| i.sub.clone()).unwrap_or_default();
                    let message =
                        crate::protocol::encode_server(&ServerMessage::Message { topic: topic.clone(), data, from });
                    match self.shared.config.broker.publish(&topic, message).await {
                        Ok(_) => self.send(&ServerMessage::Ok { id }).await,
                        Err(e) => self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await,
                    }
                }
                Effect::Write { id, results, ops } => {
                    let (slots, ops): (Vec<usize>, Vec<_>) = ops.into_iter().unzip();
                    // Clock skew is judged against the wall clock, like the writers' stamps.
                    let (shared, now) = (self.shared.clone(), crate::clock::unix_ms());
                    self.writes_in_flight += 1;
                    self.tasks.spawn(async move {
                        let outcomes = shared.collections.apply(ops, now).await;
                        Completion::Written { id, results, slots, outcomes }
                    });
                    Flow::Continue
                }
                Effect::Sync { id, collection, since } => self.start_sync(id, collection, since),
                Effect::Unsync { collection } => {
                    self.shared.collections.unwatch(&collection, self.outbox.id());
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

    /// Starts verifying in a task, which takes a failure slot first (none left:
    /// nothing is verified) and gives it back when the token passes or the
    /// provider is down. Slot, verification and refund sit in one task, so a
    /// burst of valid logins from one address holds slots only while each is
    /// being checked.
    fn start_verification(&mut self, token: String) -> Flow {
        let (shared, ip) = (self.shared.clone(), self.peer.ip());
        self.tasks.spawn(async move {
            if !shared.auth_failures.try_reserve(ip) {
                return Completion::Blocked;
            }
            let result = verify(&shared, &token).await;
            // A success, or an identity provider outage, is not the client's failure.
            if result.is_ok() || result.as_ref().is_err_and(|e| e.code == AuthFailCode::IntrospectionUnavailable) {
                shared.auth_failures.refund(ip);
            }
            Completion::Verified(result)
        });
        Flow::Continue
    }

    /// Watches the collection at once (so nothing falls between snapshot and
    /// stream), then reads the snapshot in a task.
    fn start_sync(&mut self, id: u64, collection: String, since: Option<Cursor>) -> Flow {
        let name: Arc<str> = Arc::from(collection.as_str());
        self.shared.collections.watch(&collection, self.outbox.clone());
        self.generations += 1;
        let fresh = self.generations;
        let pending = self
            .syncing
            .entry(name.clone())
            .or_insert_with(|| PendingSync { generation: fresh, ..PendingSync::default() });
        pending.scans += 1;
        let generation = pending.generation;
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let page_bytes = shared.config.limits.sync_page_bytes;
            let result = shared.collections.snapshot(&collection, since, page_bytes).await;
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
                match &result {
                    // Claims are logged with Debug: a `sub` holding a newline cannot forge a log line.
                    Ok(identity) => info!(peer = %self.peer, sub = ?identity.sub, "authenticated"),
                    Err(e) => info!(peer = %self.peer, code = %e.code, "authentication refused"),
                }
                let effects = self.admit(result);
                if self.session.identity().is_some() {
                    self.pending = None;
                }
                self.authenticated.send_replace(self.session.identity().is_some());
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
        }
    }

    /// Feeds a verification result to the session and registers the
    /// connection, as one step with the revocation check: an admin revocation
    /// either sees the connection registered (and closes it) or is seen here.
    fn admit(&mut self, result: Result<Identity, AuthError>) -> Vec<Effect> {
        let now = self.now();
        let _admission = self.shared.admission.lock().unwrap_or_else(|e| e.into_inner());
        let result = result.and_then(|identity| {
            if self.shared.config.revocations.is_revoked(&identity, now / 1000) {
                Err(AuthError::new(AuthFailCode::Forbidden, "the token has been revoked"))
            } else {
                Ok(identity)
            }
        });
        let effects = self.session.on_verified(result, now);
        if let Some(identity) = self.session.identity() {
            self.shared.registry.register(self.outbox.id(), identity, self.control.clone());
        }
        effects
    }

    /// Sends a snapshot (the first page as `SYNC_DATA`, the rest as `CHANGE`
    /// pages), then the changes that arrived while it was read.
    async fn finish_sync(
        &mut self,
        id: u64,
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
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(e) => {
                if current == Some(true) {
                    self.syncing.remove(&collection);
                    self.shared.collections.unwatch(&collection, self.outbox.id());
                    self.session.forget_sync(&collection);
                }
                return self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await;
            }
        };
        if current.is_some() {
            let seen = self.sync_cursors.entry(collection.clone()).or_insert(0);
            *seen = (*seen).max(snapshot.cursor);
        }
        let collections = &self.shared.collections;
        let page_count = snapshot.pages.len();
        let mut messages = Vec::with_capacity(page_count);
        for (n, (records, cursor)) in snapshot.pages.into_iter().enumerate() {
            let (cursor, more) = (collections.cursor(cursor), n + 1 < page_count);
            messages.push(if n == 0 {
                ServerMessage::SyncData {
                    id,
                    collection: collection.to_string(),
                    records,
                    cursor,
                    reset: snapshot.reset,
                    more,
                }
            } else {
                ServerMessage::Change { collection: collection.to_string(), records, cursor, more }
            });
        }
        for message in &messages {
            if let Flow::Stop = self.send(message).await {
                return Flow::Stop;
            }
        }
        if current == Some(true)
            && let Some(done) = self.syncing.remove(&collection)
        {
            for (cursor, bytes) in done.buffered {
                if let Flow::Stop =
                    self.deliver(Outbound::Change { collection: collection.clone(), cursor, bytes }).await
                {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    /// Writes a queued publication or change (skipping changes a snapshot
    /// already covered, holding those of a snapshot still being read).
    pub(super) async fn deliver(&mut self, item: Outbound) -> Flow {
        let bytes = match item {
            Outbound::Message(bytes) => bytes,
            Outbound::Change { collection, cursor, bytes } => {
                if let Some(pending) = self.syncing.get_mut(&collection) {
                    if pending.buffered.len() >= self.shared.config.limits.outbound_queue {
                        info!(peer = %self.peer, "slow consumer: changes piled up behind a snapshot");
                        self.close(close::SLOW_CONSUMER, "slow consumer").await;
                        return Flow::Stop;
                    }
                    pending.buffered.push((cursor, bytes));
                    return Flow::Continue;
                }
                match self.sync_cursors.get_mut(&collection) {
                    Some(seen) if cursor > *seen => {
                        *seen = cursor;
                        bytes
                    }
                    _ => return Flow::Continue,
                }
            }
        };
        self.write_data(&bytes).await
    }
}

/// Verifies a token within the verification timeout (failing closed), as of the server clock.
async fn verify(shared: &Shared, token: &str) -> Result<Identity, AuthError> {
    let verifier = shared.config.authenticator.verify(token, shared.config.clock.now_secs());
    match tokio::time::timeout(shared.config.timeouts.verify, verifier).await {
        Ok(result) => result,
        Err(_) => {
            debug!("token verification timed out");
            Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "token verification timed out"))
        }
    }
}

fn error_reply(id: u64, code: &str, message: String) -> ServerMessage {
    ServerMessage::Error { id: Some(id), code: code.into(), message }
}
