//! What connects the nodes of one deployment: the [`Backplane`] trait.
//!
//! A node's [`crate::hub::Hub`] delivers to its own connections; the
//! backplane carries what other nodes need: publications on topics, the
//! `CHANGE`s of collections, and control messages (disconnect a subject,
//! revoke a token, reload the rules). One node with no peers uses a
//! [`MemoryBackplane`] alone; a cluster would use NATS or Postgres
//! `LISTEN`/`NOTIFY` behind the same trait, checked by [`conformance::run`].

pub mod conformance;
mod memory;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use memory::{MemoryBackplane, MemoryBus};

/// What a message is about: node-level interest is per subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A pub/sub topic; the payload is an encoded `MESSAGE`.
    Topic(String),
    /// A collection's changes; the payload is a [`crate::hub::ChangeNotice`].
    Changes(String),
}

/// An instruction for every other node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close every connection of this subject (an administrator's disconnect).
    Disconnect {
        /// The subject (`sub`).
        sub: String,
    },
    /// Refuse this token id from now on and close its connections.
    RevokeJti {
        /// The token's `jti`.
        jti: String,
    },
    /// Refuse this subject's tokens issued before a time, and close its connections.
    RevokeSubject {
        /// The subject (`sub`).
        sub: String,
        /// Unix seconds: tokens with an earlier `iat` are refused.
        issued_before: u64,
    },
    /// The rules changed: reload them.
    RulesChanged,
}

/// What a node receives from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message on a subject this node has interest in.
    Message {
        /// Its subject.
        subject: Subject,
        /// What the publisher sent.
        payload: Bytes,
    },
    /// A control message from another node.
    Control(Control),
    /// Messages may have been lost (a full inbound queue, a reconnect after an
    /// outage): every collection feed must be treated as possibly missing changes.
    Lost,
}

/// A backplane failure (it cannot be reached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backplane unavailable: {0}")]
pub struct BackplaneError(pub String);

/// The future returned by [`Backplane`] methods that wait for the backplane.
pub type BackplaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackplaneError>> + Send + 'a>>;

/// Connects the nodes of one deployment.
///
/// Contract:
/// - **Interest**: a node receives messages on a subject only between a
///   successful `interest` and the following `drop_interest`. The hub calls
///   `interest` when a subject's first local subscriber comes and
///   `drop_interest` when its last one goes, one call at a time per node.
/// - **Delivery**: at most once. `publish` reaches every *other* node that
///   had interest when the message was sent, never the publisher (its hub
///   delivers locally itself). A message can be lost (an overflowing queue, an
///   outage); losing one is announced by [`Inbound::Lost`] when the
///   implementation can tell, and `CHANGE`s are recovered from the store
///   either way (their `prev` chain shows the gap).
/// - **Ordering**: per publisher and subject, messages arrive in the order
///   they were published. Nothing is promised between publishers.
/// - **Never waits**: `publish` hands the message over and returns; it must
///   not block or await the network (a bounded buffer that drops when full is
///   fine). `interest`, `drop_interest` and `control` may wait and may fail.
/// - **Control** messages reach every other node (not the sender), at most once.
/// - **Outage**: `interest` and `control` fail with [`BackplaneError`] (a
///   `SUB`/`SYNC` is then refused with `unavailable`, an admin request answers
///   503 after acting locally); `publish` drops; the inbound stream stays open,
///   and on recovery the implementation re-establishes its interests and
///   yields [`Inbound::Lost`].
pub trait Backplane: Send + Sync + 'static {
    /// Starts receiving messages on `subject`.
    fn interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()>;
    /// Stops receiving messages on `subject`.
    fn drop_interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()>;
    /// Sends `payload` on `subject` to the other nodes with interest; never waits.
    fn publish(&self, subject: &Subject, payload: Bytes);
    /// Sends a control message to every other node.
    fn control(&self, control: Control) -> BackplaneFuture<'_, ()>;
    /// This node's inbound stream; `None` once taken (one consumer per node).
    fn inbound(&self) -> Option<mpsc::Receiver<Inbound>>;
    /// Whether the backplane is reachable now; `/readyz` answers 503 while it is not.
    fn is_connected(&self) -> bool {
        true
    }
    /// Whether another node could receive anything right now. `false` lets the
    /// hub skip encoding what nobody would read; an implementation that cannot
    /// tell answers `true`.
    fn has_peers(&self) -> bool {
        true
    }
}
