//! A connection's bounded outbound queue, as seen by publishers.
//!
//! Fan-out never blocks and never copies a payload per subscriber: a
//! publisher encodes a message once and offers the shared [`Bytes`] to each
//! outbox. A full queue is not dropped silently: it trips the connection's
//! overflow signal and the connection closes with 4200 (slow consumer).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one connection within a server.
pub type ConnId = u64;

/// A pre-encoded message on its way to one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A `MESSAGE` from pub/sub.
    Message(Bytes),
    /// A `CHANGE` of a collection; `cursor` lets the connection skip what its snapshot already held.
    Change {
        /// The collection.
        collection: Arc<str>,
        /// The change's cursor (highest sequence number in it).
        cursor: u64,
        /// The encoded `CHANGE`.
        bytes: Bytes,
    },
    /// Changes of a collection may have been missed (a lost backplane
    /// message): the connection catches up from the store from its own cursor.
    Resync {
        /// The collection.
        collection: Arc<str>,
    },
}

/// The sending side of a connection's outbound queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    id: ConnId,
    tx: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
}

impl Outbox {
    /// Creates a queue of `capacity` messages; the connection keeps the receiver and watches `overflow`.
    pub fn new(id: ConnId, capacity: usize) -> (Self, mpsc::Receiver<Outbound>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        (Self { id, tx, overflow: overflow.clone() }, rx, overflow)
    }

    /// The connection this outbox belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues a message without waiting. On overflow the connection is told to
    /// close with 4200 and `false` is returned; a closed connection also gives `false`.
    pub fn offer(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
