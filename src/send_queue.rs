//! A connection's bounded send queue, as seen by publishers. (Not to be
//! confused with a client's outbox, which holds its unacknowledged writes.)
//!
//! Fan-out never blocks and never copies a payload per subscriber: a
//! publisher encodes a message once and offers the shared [`Bytes`] to each
//! queue. A full queue is not dropped silently: it trips the connection's
//! overflow signal and the connection closes with 4200 (slow consumer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Identifies one connection within a server.
pub type ConnId = u64;

/// A pre-encoded message on its way to one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A `MESSAGE` from pub/sub.
    Message(Bytes),
    /// A `CHANGE` of a collection, shared by every watcher (behind an `Arc`,
    /// which keeps this enum and so every queue's blocks small).
    Change(Arc<SharedChange>),
    /// Changes of a collection may have been missed (a lost backplane
    /// message): the connection catches up from the store from its own cursor.
    Resync {
        /// The collection.
        collection: Arc<str>,
        /// The hub's count of resyncs: watchers of one round share their catch-up scans.
        round: u64,
    },
}

/// A `CHANGE` on its way to the watchers of a collection; `cursor` lets a
/// connection skip what its snapshot already held.
#[derive(Debug)]
pub struct SharedChange {
    /// The collection.
    pub collection: Arc<str>,
    /// The change's cursor (highest sequence number in it).
    pub cursor: u64,
    /// The encoded `CHANGE`.
    pub bytes: Bytes,
}

/// The sending side of a connection's outbound queue.
#[derive(Debug, Clone)]
pub struct SendQueue {
    id: ConnId,
    queue: Arc<Queue>,
    overflow: CancellationToken,
}

/// The connection's side of its outbound queue. It takes everything queued
/// at once (one lock per burst, not per message) and the two buffers trade
/// places, so a steady flow allocates nothing.
#[derive(Debug)]
pub struct SendQueueReceiver {
    queue: Arc<Queue>,
    taken: VecDeque<Outbound>,
}

/// A bounded queue that holds memory only while it has held messages
/// lately: a channel would allocate a block of slots for every connection,
/// idle or not.
#[derive(Debug)]
struct Queue {
    slots: Mutex<Slots>,
    /// Messages queued and not yet taken by the connection, wherever they wait.
    pending: AtomicUsize,
    /// Wakes the connection when something is queued.
    queued: Notify,
    capacity: usize,
}

/// What the queue's lock guards.
#[derive(Debug, Default)]
struct Slots {
    items: VecDeque<Outbound>,
    /// The connection has gone: offers are refused.
    closed: bool,
}

/// Buffers found empty keep up to this many slots (a burst's worth) and give
/// back larger ones.
const KEEP_SLOTS: usize = 16;

impl SendQueue {
    /// Creates a queue of `capacity` messages; the connection keeps the receiver and watches `overflow`.
    pub fn new(id: ConnId, capacity: usize) -> (Self, SendQueueReceiver, CancellationToken) {
        let queue = Arc::new(Queue {
            slots: Mutex::default(),
            pending: AtomicUsize::new(0),
            queued: Notify::new(),
            capacity: capacity.max(1),
        });
        let overflow = CancellationToken::new();
        (
            Self { id, queue: queue.clone(), overflow: overflow.clone() },
            SendQueueReceiver { queue, taken: VecDeque::new() },
            overflow,
        )
    }

    /// The connection this queue belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues a message without waiting. On overflow the connection is told to
    /// close with 4200 and `false` is returned; a closed connection also gives `false`.
    pub fn offer(&self, item: Outbound) -> bool {
        let queued_before = {
            let mut slots = self.queue.lock();
            if slots.closed {
                return false;
            }
            if self.queue.pending.load(Ordering::Acquire) >= self.queue.capacity {
                drop(slots);
                self.overflow.cancel();
                return false;
            }
            slots.items.push_back(item);
            self.queue.pending.fetch_add(1, Ordering::AcqRel)
        };
        // Only the first item wakes the receiver: it takes everything queued
        // (`try_recv` until empty) before it waits again, and an item offered
        // while it holds others is found by that draining.
        if queued_before == 0 {
            self.queue.queued.notify_one();
        }
        true
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SendQueueReceiver {
    /// The next message, once there is one. Cancel-safe: nothing is taken
    /// from the queue unless it is returned.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.queue.queued.notified().await;
        }
    }

    /// The next message, if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        if self.taken.is_empty() {
            let mut slots = self.queue.lock();
            if slots.items.is_empty() {
                // Both buffers are empty: give back what a past burst grew.
                for buffer in [&mut self.taken, &mut slots.items] {
                    if buffer.capacity() > KEEP_SLOTS {
                        *buffer = VecDeque::new();
                    }
                }
                return None;
            }
            std::mem::swap(&mut self.taken, &mut slots.items);
        }
        let item = self.taken.pop_front()?;
        self.queue.pending.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }
}

impl Drop for SendQueueReceiver {
    fn drop(&mut self) {
        let mut slots = self.queue.lock();
        slots.closed = true;
        slots.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u8) -> Outbound {
        Outbound::Message(Bytes::from(vec![n]))
    }

    fn byte(item: Option<Outbound>) -> Option<u8> {
        match item {
            Some(Outbound::Message(bytes)) => Some(bytes[0]),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_trips_the_overflow_and_keeps_what_it_holds_in_order() {
        let (sender, mut queue, overflow) = SendQueue::new(1, 3);
        for n in 0..3 {
            assert!(sender.offer(message(n)));
        }
        assert!(!overflow.is_cancelled());
        assert!(!sender.offer(message(3)), "the fourth does not fit");
        assert!(overflow.is_cancelled());
        assert_eq!(byte(Some(queue.recv().await)), Some(0));
        assert!(sender.offer(message(3)), "taken messages free their places");
        assert!(!sender.offer(message(4)), "messages taken but not yet delivered still count");
        assert_eq!(byte(queue.try_recv()), Some(1));
        assert_eq!(byte(queue.try_recv()), Some(2));
        assert_eq!(byte(queue.try_recv()), Some(3));
        assert_eq!(byte(queue.try_recv()), None);
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_and_a_gone_one_refuses() {
        let (sender, mut queue, _) = SendQueue::new(1, 8);
        let publisher = sender.clone();
        let waiting = tokio::spawn(async move { byte(Some(queue.recv().await)) });
        tokio::task::yield_now().await;
        assert!(publisher.offer(message(9)));
        assert_eq!(waiting.await.unwrap(), Some(9), "the queue is dropped with its task");
        assert!(!sender.offer(message(1)), "nobody reads any more");
    }

    #[tokio::test]
    async fn an_item_offered_while_others_wait_unread_is_received_without_a_wake_up_of_its_own() {
        let (sender, mut queue, _) = SendQueue::new(1, 8);
        assert!(sender.offer(message(1)));
        assert!(sender.offer(message(2)));
        assert_eq!(byte(queue.try_recv()), Some(1), "2 is now held by the receiver, unread");
        // Not the first item: no wake-up is sent for it; draining finds it.
        assert!(sender.offer(message(3)));
        let limit = std::time::Duration::from_secs(5);
        for expected in [2, 3] {
            let got = tokio::time::timeout(limit, queue.recv()).await.expect("received without waiting");
            assert_eq!(byte(Some(got)), Some(expected));
        }
        // Empty again: the next offer is the first and wakes a waiting receiver.
        let waiting = tokio::spawn(async move { byte(Some(queue.recv().await)) });
        tokio::task::yield_now().await;
        assert!(sender.offer(message(4)));
        assert_eq!(tokio::time::timeout(limit, waiting).await.expect("woken").unwrap(), Some(4));
    }

    #[test]
    fn a_drained_queue_gives_back_a_large_buffer() {
        let (sender, mut queue, _) = SendQueue::new(1, 1024);
        for n in 0..100 {
            assert!(sender.offer(message(n)));
        }
        while queue.try_recv().is_some() {}
        assert_eq!(queue.queue.lock().items.capacity() + queue.taken.capacity(), 0);
        assert!(sender.offer(message(1)));
        assert_eq!(byte(queue.try_recv()), Some(1));
        assert!(queue.try_recv().is_none());
        let kept = queue.queue.lock().items.capacity() + queue.taken.capacity();
        assert!(kept > 0 && kept <= 2 * KEEP_SLOTS, "small buffers are kept for the next burst");
    }
}
