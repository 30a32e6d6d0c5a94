//! How the client's driver handles what the server sends after the handshake:
//! answers to its requests, snapshots and changes, op results, deliveries.

use tokio::io::AsyncWrite;

use super::driver::Driver;
use super::link::{Internal, Link, Paging};
use super::{ClientEvent, Delivery, Settled};
use syncgate_proto::protocol::{OpOutcome, ServerMessage};
use syncgate_proto::time::unix_ms;

impl Driver {
    /// Handles a message that is not part of the handshake.
    pub(super) async fn answer<S: AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        message: ServerMessage,
    ) -> Result<(), ()> {
        let id = match &message {
            ServerMessage::Pong { id } | ServerMessage::Error { id, .. } => *id,
            ServerMessage::Ok { id }
            | ServerMessage::OpResult { id, .. }
            | ServerMessage::SyncData { id, .. }
            | ServerMessage::PresenceState { id, .. } => Some(*id),
            ServerMessage::PresenceJoin { topic, sub, conn_id, info } => {
                let (topic, sub, conn_id, info) = (topic.clone(), sub.clone(), *conn_id, info.clone());
                self.emit(ClientEvent::PresenceJoined { topic, sub, conn_id, info });
                return Ok(());
            }
            ServerMessage::PresenceLeave { topic, sub, conn_id } => {
                let (topic, sub, conn_id) = (topic.clone(), sub.clone(), *conn_id);
                self.emit(ClientEvent::PresenceLeft { topic, sub, conn_id });
                return Ok(());
            }
            ServerMessage::Message { topic, data, from } => {
                self.deliver(Delivery { topic: topic.clone(), data: data.clone(), from: from.clone() });
                return Ok(());
            }
            ServerMessage::Change { collection, records, cursor, more } => {
                let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
                let mut local = self.local();
                local.replica.merge(collection, records, unix_ms());
                local.replica.set_cursor(collection, cursor.clone());
                drop(local);
                self.persist();
                match link.paging.get_mut(collection.as_str()) {
                    // A page of a snapshot: Synced comes after the last one.
                    Some(paging) => {
                        paging.records += keys.len();
                        if !more && let Some(done) = link.paging.remove(collection.as_str()) {
                            let (records, reset) = (done.records, done.reset);
                            self.emit(ClientEvent::Synced { collection: collection.clone(), records, reset });
                        }
                    }
                    None => self.emit(ClientEvent::Changed { collection: collection.clone(), keys }),
                }
                return Ok(());
            }
            _ => None,
        };
        if let Some(id) = id
            && link.internal.contains_key(&id)
        {
            return self.internal_answer(link, id, message).await;
        }
        match id.and_then(|id| link.pending.remove(&id)) {
            Some(reply) => {
                let _ = reply.send(Ok(message));
            }
            None => self.emit(ClientEvent::Message(message)),
        }
        Ok(())
    }

    async fn internal_answer<S: AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        id: u64,
        message: ServerMessage,
    ) -> Result<(), ()> {
        match (link.internal.get(&id), message) {
            (Some(Internal::Replay), ServerMessage::OpResult { results, .. }) => {
                link.internal.remove(&id);
                link.replaying = false;
                if self.settle(&results) {
                    self.retry_later();
                } else {
                    self.replay_failures = 0;
                    self.replay(link).await?;
                }
            }
            (
                Some(Internal::Sync(_, full)),
                ServerMessage::SyncData { collection, records, cursor, reset, more, .. },
            ) => {
                // An answer to a SYNC without a cursor is the whole state too: what the
                // replica confirmed earlier (an accepted write) but the server no longer
                // has (a restore) must go, as after a reset.
                let full = *full;
                let mut local = self.local();
                if reset || full {
                    local.replica.reset(&collection);
                }
                local.replica.merge(&collection, &records, unix_ms());
                local.replica.set_cursor(&collection, cursor);
                drop(local);
                self.persist();
                if more {
                    link.paging.insert(collection, Paging { records: records.len(), reset });
                } else {
                    self.emit(ClientEvent::Synced { collection, records: records.len(), reset });
                }
            }
            (Some(Internal::Sub(_) | Internal::Sync(..)), ServerMessage::Error { code, message, .. })
                if is_temporary(&code) =>
            {
                // Not a refusal: forget it on this link and send it again after a backoff.
                match link.internal.remove(&id) {
                    Some(Internal::Sub(topic)) => link.topics.remove(&topic),
                    Some(Internal::Sync(collection, _)) => link.syncs.remove(&collection),
                    _ => false,
                };
                self.emit(ClientEvent::Error(format!("request refused for now ({code}): {message}; retrying")));
                self.retry_later();
            }
            (Some(Internal::Sub(_) | Internal::Sync(..)), ServerMessage::Error { code, message, .. }) => {
                let name = match link.internal.remove(&id) {
                    Some(Internal::Sub(topic)) => {
                        link.topics.remove(&topic);
                        let mut local = self.local();
                        local.topics.remove(&topic);
                        local.presence.remove(&topic);
                        topic
                    }
                    Some(Internal::Sync(collection, _)) => {
                        link.syncs.remove(&collection);
                        self.local().synced.remove(&collection);
                        collection
                    }
                    _ => String::new(),
                };
                self.emit(ClientEvent::SubscriptionEnded { name, code, message });
            }
            (Some(Internal::Replay), ServerMessage::Error { code, message, .. }) => {
                // The whole batch was refused (not per op, e.g. rate_limited): it stays
                // queued and is sent again after a backoff.
                link.internal.remove(&id);
                link.replaying = false;
                self.emit(ClientEvent::Error(format!("replay refused ({code}): {message}; retrying")));
                self.retry_later();
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies op results to the replica, saves it, and reports each op;
    /// returns whether some op was refused with a retryable code.
    fn settle(&mut self, results: &[OpOutcome]) -> bool {
        let report = self.local().replica.settle(results, unix_ms());
        self.persist();
        for (op_id, code) in &report.retrying {
            self.emit(ClientEvent::OpRetrying { op_id: op_id.clone(), code: code.clone() });
        }
        self.report(report.settled);
        !report.retrying.is_empty()
    }

    pub(super) fn report(&self, settled: Vec<Settled>) {
        for s in settled {
            self.emit(ClientEvent::OpSettled {
                op_id: s.op.op_id,
                collection: s.op.collection,
                key: s.op.key,
                rejected: s.rejected,
                message: s.message,
            });
        }
    }

    /// Saves the replica in the background after a change (merges, settles).
    pub(super) fn persist(&self) {
        let Some(file) = self.file.clone() else { return };
        let generation = {
            let mut local = self.local();
            local.generation += 1;
            local.generation
        };
        let (local, events) = (self.local.clone(), self.events.clone());
        tokio::spawn(async move {
            if let Err(e) = file.save_through(&local, generation).await {
                let _ = events.send(ClientEvent::Error(format!("cannot save the replica: {e}")));
            }
        });
    }

    fn deliver(&self, delivery: Delivery) {
        let sender = self.local().topics.get(&delivery.topic).cloned();
        if let Some(sender) = sender
            && sender.try_send(delivery).is_err()
        {
            self.emit(ClientEvent::Error("a topic subscriber is not keeping up; a delivery was dropped".into()));
        }
    }
}

/// Whether a request's `ERROR` code means "not now" rather than "no".
fn is_temporary(code: &str) -> bool {
    matches!(
        code,
        syncgate_proto::protocol::codes::error::RATE_LIMITED | syncgate_proto::protocol::codes::error::UNAVAILABLE
    )
}
