//! What connects the nodes of one deployment: the [`Backplane`] trait.
//!
//! A node's [`crate::hub::Hub`] delivers to its own connections; the
//! backplane carries what other nodes need: publications on topics, the
//! `CHANGE`s of collections, and control messages (disconnect a subject,
//! revoke a token, reload the rules), presence, and each node's
//! announcement of itself. One node with no peers uses a [`MemoryBackplane`]
//! alone; a cluster uses [`NatsBackplane`] (`--backplane nats://…`), checked
//! by the same [`conformance::run`].
//!
//! | module | what |
//! | --- | --- |
//! | this one | the trait, its messages and contract |
//! | `memory` | nodes of one process |
//! | `nats` | nodes connected through NATS |
//! | `envelope` | version, origin, kind and HMAC around every NATS message |
//! | `subjects` | NATS subjects no name can steer |
//! | `wire` | control messages and announcements as MessagePack |
//! | `inlet` | a node's bounded inbound queue that announces its losses |
//! | `conformance` | the suite every implementation passes |

pub mod conformance;
pub mod envelope;
mod inlet;
mod memory;
mod nats;
pub mod subjects;
mod wire;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use memory::{MemoryBackplane, MemoryBus};
pub use nats::{CONTROL_FRESHNESS, NatsBackplane, NatsOptions, host_of as nats_host};
pub use wire::Announcement;

/// How long [`Backplane::control`] waits for the other nodes' acknowledgements.
pub const CONTROL_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a message is about: node-level interest is per subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A pub/sub topic; the payload is an encoded `MESSAGE`.
    Topic(String),
    /// A collection's changes; the payload is a [`crate::hub::ChangeNotice`].
    Changes(String),
    /// Presence on a topic; the payload is a presence event of the hub.
    Presence(String),
}

/// An instruction for every other node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
    /// Another node's announcement of itself.
    Announcement(Announcement),
    /// Messages may have been lost (a full inbound queue, a reconnect after an
    /// outage): every collection feed must be treated as possibly missing changes.
    Lost,
}

/// A control message from another node, on a queue of its own (it never
/// waits behind data); [`ControlDelivery::ack`] tells its sender it was
/// carried out.
pub struct ControlDelivery {
    /// What to do.
    pub control: Control,
    /// The node that sent it.
    pub origin: String,
    ack: Option<Box<dyn FnOnce() + Send>>,
}

impl ControlDelivery {
    /// A delivery whose acknowledgement runs `ack`.
    pub fn new(control: Control, origin: String, ack: impl FnOnce() + Send + 'static) -> Self {
        Self { control, origin, ack: Some(Box::new(ack)) }
    }

    /// Tells the sender this node carried it out.
    pub fn ack(mut self) {
        if let Some(ack) = self.ack.take() {
            ack();
        }
    }
}

impl std::fmt::Debug for ControlDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlDelivery").field("control", &self.control).field("origin", &self.origin).finish()
    }
}

/// A node's inbound side: data and control on separate queues.
#[derive(Debug)]
pub struct Inlets {
    /// Publications, change notices, presence, announcements, losses.
    pub messages: mpsc::Receiver<Inbound>,
    /// Control messages.
    pub control: mpsc::Receiver<ControlDelivery>,
}

/// What a backplane counts, for `/metrics` (shared handles: the node
/// registers them, the backplane updates them).
#[derive(Debug, Clone, Default)]
pub struct BackplaneStats {
    /// 1 while the backplane is reachable.
    pub connected: prometheus_client::metrics::gauge::Gauge,
    /// Messages dropped because their envelope failed its check (forged, another secret, malformed).
    pub rejected: prometheus_client::metrics::counter::Counter,
    /// Publications dropped because the backplane could not take them (an outage, a full buffer).
    pub dropped: prometheus_client::metrics::counter::Counter,
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
/// - **Control** messages reach every other node (not the sender), at most
///   once, on their own queue: no amount of data delays or drops them. Each
///   receiving node acknowledges one after carrying it out; `control` answers
///   how many did within [`CONTROL_ACK_WAIT`].
/// - **Announcements** (`announce`) reach every other node, like control,
///   but on the data queue and unacknowledged; they never wait.
/// - **Outage**: `interest` and `drop_interest` are recorded and take effect
///   on recovery (a `SUB`/`SYNC` is served locally meanwhile); `control` fails
///   with [`BackplaneError`] (an admin request answers 503 after acting
///   locally); `publish` drops; the inbound stream stays open, and on
///   recovery the implementation re-establishes its interests and yields
///   [`Inbound::Lost`].
pub trait Backplane: Send + Sync + 'static {
    /// Starts receiving messages on `subject`.
    fn interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()>;
    /// Stops receiving messages on `subject`.
    fn drop_interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()>;
    /// Sends `payload` on `subject` to the other nodes with interest; never waits.
    fn publish(&self, subject: &Subject, payload: Bytes);
    /// Sends a control message to every other node; answers how many
    /// acknowledged it within [`CONTROL_ACK_WAIT`].
    fn control(&self, control: Control) -> BackplaneFuture<'_, usize>;
    /// Sends this node's announcement to every other node; never waits.
    fn announce(&self, announcement: &Announcement);
    /// This node's inbound queues; `None` once taken (one consumer per node).
    fn inbound(&self) -> Option<Inlets>;
    /// Whether the backplane is reachable now (`/readyz` names it when it is not).
    fn is_connected(&self) -> bool {
        true
    }
    /// Whether another node could receive anything right now. `false` lets the
    /// hub skip encoding what nobody would read; an implementation that cannot
    /// tell answers `true`.
    fn has_peers(&self) -> bool {
        true
    }
    /// The backplane's counters (an implementation that counts nothing
    /// reports itself connected).
    fn stats(&self) -> BackplaneStats {
        let stats = BackplaneStats::default();
        stats.connected.set(i64::from(self.is_connected()));
        stats
    }
}
