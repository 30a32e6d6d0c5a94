//! Pub/sub routing behind a small trait, with a sharded in-memory broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;

use crate::outbox::{ConnId, Outbound, Outbox};

/// A broker failure (a backplane that cannot be reached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// The future returned by [`Broker`] methods.
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// Routes publications to the subscribers of a topic.
///
/// Contract:
/// - **Delivery**: at most once. Topics are ephemeral: a message reaches the
///   subscribers present when it is published and is not stored.
/// - **Ordering**: per topic, every subscriber receives messages in one
///   order, the order in which `publish` calls were serialised; messages of
///   one publisher stay in the order it published them.
/// - **Back-pressure**: delivery never waits for a subscriber. A subscriber
///   whose outbox is full is disconnected with 4200 (see [`Outbox::offer`]);
///   it is never silently skipped while staying connected.
/// - A subscriber is identified by its [`ConnId`]; subscribing twice is one subscription.
///
/// The methods return futures so that a backplane (Redis, NATS) can
/// implement them with network round trips; the memory broker answers at once.
pub trait Broker: Send + Sync + 'static {
    /// Adds `subscriber` to `topic`.
    fn subscribe<'a>(&'a self, topic: &'a str, subscriber: Outbox) -> BrokerFuture<'a, ()>;
    /// Removes connection `id` from `topic` (a no-op if absent).
    fn unsubscribe<'a>(&'a self, topic: &'a str, id: ConnId) -> BrokerFuture<'a, ()>;
    /// Delivers an encoded `MESSAGE` to the topic's subscribers; returns how many were offered it.
    fn publish<'a>(&'a self, topic: &'a str, message: Bytes) -> BrokerFuture<'a, usize>;
}

/// Subscribers of one topic. A std mutex: it is held while offering to
/// outboxes, which never waits, and that lock is what orders a topic's messages.
#[derive(Debug, Default)]
struct Topic {
    subscribers: Mutex<Vec<Outbox>>,
}

/// The in-process broker: topics in a sharded map, one lock per topic.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    topics: DashMap<String, Arc<Topic>>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, topic: &'a str, subscriber: Outbox) -> BrokerFuture<'a, ()> {
        // The entry guard is held while pushing so an emptied topic cannot be
        // removed in between (lock order: shard, then topic; as in unsubscribe).
        let entry = self.topics.entry(topic.to_string()).or_default();
        let mut subscribers = entry.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if !subscribers.iter().any(|s| s.id() == subscriber.id()) {
            subscribers.push(subscriber);
        }
        drop(subscribers);
        drop(entry);
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str, id: ConnId) -> BrokerFuture<'a, ()> {
        self.topics.remove_if(topic, |_, t| {
            let mut subscribers = t.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|s| s.id() != id);
            subscribers.is_empty()
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Bytes) -> BrokerFuture<'a, usize> {
        // Clone the Arc out so no shard lock is held while delivering.
        let target = self.topics.get(topic).map(|t| t.value().clone());
        let delivered = match target {
            None => 0,
            Some(t) => {
                let subscribers = t.subscribers.lock().unwrap_or_else(|e| e.into_inner());
                subscribers.iter().filter(|s| s.offer(Outbound::Message(message.clone()))).count()
            }
        };
        Box::pin(std::future::ready(Ok(delivered)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_shares_one_buffer_and_overflow_trips_the_slow_one() {
        let broker = MemoryBroker::new();
        let (fast, mut fast_rx, _) = Outbox::new(1, 16);
        let (slow, _slow_rx, slow_overflow) = Outbox::new(2, 2);
        broker.subscribe("t", fast.clone()).await.unwrap();
        broker.subscribe("t", fast).await.unwrap();
        broker.subscribe("t", slow).await.unwrap();
        let payload = Bytes::from_static(b"hello");
        for _ in 0..3 {
            broker.publish("t", payload.clone()).await.unwrap();
        }
        assert!(slow_overflow.is_cancelled(), "the third message overflowed the slow queue");
        for _ in 0..3 {
            let Some(Outbound::Message(got)) = fast_rx.recv().await else { panic!() };
            assert_eq!(got.as_ptr(), payload.as_ptr(), "no per-subscriber copy");
        }
        assert!(fast_rx.try_recv().is_err(), "subscribing twice is one subscription");
        broker.unsubscribe("t", 1).await.unwrap();
        broker.unsubscribe("t", 2).await.unwrap();
        assert_eq!(broker.topic_count(), 0);
        assert_eq!(broker.publish("t", payload).await.unwrap(), 0);
    }
}
