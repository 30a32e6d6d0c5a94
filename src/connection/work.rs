//! What the actor does with the session's effects: sends go to the socket at
//! once; verifications, commits and snapshot scans start as tasks, and their
//! completions come back to the actor's loop ([`Actor::complete`]). Scans and
//! the changes they hold back are the business of `syncing`.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::completion::{Completion, ScanFrom};
use super::{Actor, Flow};
use crate::auth::{AuthError, Identity};
use crate::node::{AuthRefusal, Lapsed};
use crate::protocol::ServerMessage;
use crate::protocol::codes::close;
use crate::registry::CloseOrder;
use crate::requests::RequestError;
use crate::session::Effect;

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Carries out effects in order; work that waits on I/O starts as a task.
    pub(super) async fn apply(&mut self, effects: Vec<Effect>) -> Flow {
        for effect in effects {
            let flow = match effect {
                Effect::Send(message) => self.send(&message).await,
                Effect::Verify(token) => self.start_verification(token).await,
                Effect::Subscribe { id, topic } => {
                    // Local deliveries start now; other nodes' once the interest task answers.
                    self.node.hub.subscribe(&topic, self.queue.clone());
                    let node = self.node.clone();
                    self.tasks.spawn(async move {
                        let result = node.hub.topic_ready(&topic).await;
                        Completion::Subscribed { id, topic, result }
                    });
                    Flow::Continue
                }
                Effect::Join { topic, info } => {
                    let sub = self.session.identity().map(|i| i.sub.clone()).unwrap_or_default();
                    self.node.hub.join(&topic, self.queue.clone(), sub, info);
                    Flow::Continue
                }
                Effect::Presence { id, topic, after } => {
                    let (members, more) = self.node.hub.members(&topic, after);
                    self.send(&ServerMessage::PresenceState { id, topic, members, more }).await
                }
                Effect::Unsubscribe { topic } => {
                    self.node.hub.leave(&topic, self.queue.id());
                    self.node.hub.unsubscribe(&topic, self.queue.id());
                    Flow::Continue
                }
                Effect::Publish { id, topic, data } => {
                    let from = self.session.identity().map(|i| i.sub.as_str()).unwrap_or_default();
                    // Never waits: local queues and the backplane's buffer.
                    self.node.deliver_publication(from, &topic, data);
                    self.send(&ServerMessage::Ok { id }).await
                }
                Effect::Write { id, results, ops } => {
                    let (slots, ops): (Vec<usize>, Vec<_>) = ops.into_iter().unzip();
                    let node = self.node.clone();
                    self.writes_in_flight += 1;
                    self.finish_or_spawn(async move {
                        let outcomes = node.commit(ops).await;
                        Completion::Written { id, results, slots, outcomes }
                    })
                    .await
                }
                Effect::Sync { id, collection, since } => {
                    let collection: Arc<str> = Arc::from(collection);
                    let ticket = self.streams.sync(&collection);
                    self.start_scan(Some(id), collection, ticket, ScanFrom::Request(since))
                }
                Effect::Unsync { collection } => {
                    self.node.hub.unwatch(&collection, self.queue.id());
                    self.streams.unsync(&collection);
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

    /// Verifies a token ([`crate::node::Node::authenticate`]): a token checked
    /// against keys in memory (HMAC, PEM, cached JWKS) is decided at once; one
    /// that must wait (a key fetch, introspection) goes on as a task.
    async fn start_verification(&mut self, token: String) -> Flow {
        let authentication = self.node.authenticate(token, self.peer.ip());
        self.finish_or_spawn(async move {
            match authentication.await {
                Err(AuthRefusal::Blocked) => Completion::Blocked,
                Err(AuthRefusal::Failed(e)) => Completion::Verified(Err(e)),
                Ok(identity) => Completion::Verified(Ok(identity)),
            }
        })
        .await
    }

    /// Polls `work` once here: work decided without waiting (a token checked
    /// against keys in memory, a commit to the memory store) completes at
    /// once, and then no task is spawned for it (a task per handshake or per
    /// batch was a measurable share of its cost). Work that must wait goes on
    /// as a task, so the actor never waits on I/O.
    async fn finish_or_spawn(&mut self, work: impl Future<Output = Completion> + Send + 'static) -> Flow {
        let mut work = Box::pin(work);
        let polled = work.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        match polled {
            // The task's first poll registers its own waker: nothing is lost.
            Poll::Pending => {
                self.tasks.spawn(work);
                Flow::Continue
            }
            Poll::Ready(completion) => Box::pin(self.complete(completion)).await,
        }
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
                self.node.metrics.handshake(kind);
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
            Completion::Scanned { id, collection, ticket, since, result } => {
                self.finish_scan(id, collection, ticket, since, result).await
            }
            Completion::Subscribed { id, topic, result } => match result {
                Ok(()) => self.send(&ServerMessage::Ok { id }).await,
                Err(e) => {
                    self.node.metrics.backplane_errors.inc();
                    self.node.hub.unsubscribe(&topic, self.queue.id());
                    self.session.forget_subscription(&topic);
                    self.send(&RequestError::Unavailable(e.to_string()).reply(Some(id))).await
                }
            },
        }
    }

    /// Revalidates the session's token in a task of its own, for when the
    /// actor is too busy writing to carry out the session's revalidation: a
    /// token that is no longer active (or revoked) leaves a 4003 close order
    /// that the next write finds. An unreachable identity provider closes
    /// nothing, as in the session's own revalidation.
    pub(super) fn revalidate_aside(&mut self, token: String) {
        let (node, close_slot, ip) = (self.node.clone(), self.close_slot.clone(), self.peer.ip());
        let sub = self.session.identity().map(|identity| identity.sub.clone()).unwrap_or_default();
        tokio::spawn(async move {
            let order = match node.revalidate(token, ip, &sub).await {
                Ok(()) => return,
                Err(Lapsed::Expired) => {
                    CloseOrder::Close { code: close::TOKEN_EXPIRED, reason: "token expired".into() }
                }
                Err(Lapsed::Inactive(why)) => CloseOrder::Close { code: close::FORBIDDEN, reason: why.into() },
            };
            close_slot.send(order);
        });
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
                node.registry.register(self.queue.id(), identity, self.close_slot.clone());
                tracing::Span::current().record("sub", tracing::field::debug(&identity.sub));
            }
            effects
        })
    }
}
