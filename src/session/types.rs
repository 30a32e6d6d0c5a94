//! The session's vocabulary: its configuration, its phases, and the effects
//! it asks the driver to carry out.

use std::collections::BTreeMap;
use std::time::Duration;

use rmpv::Value;

use crate::auth::Identity;
use crate::cursor::Cursor;
use crate::protocol::{OpOutcome, RawOp, ServerMessage};
use crate::rules::Access;

/// Timing policy of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed between open and a successful `AUTH` (close 4008 after).
    pub auth_timeout: Duration,
    /// How long before expiry `TOKEN_EXPIRING` is sent.
    pub expiry_notice: Duration,
    /// The JWT leeway: a token accepted inside it (already past `exp`) lives until `exp + leeway`.
    pub leeway: Duration,
    /// Interval between server WebSocket pings.
    pub ping_interval: Duration,
    /// Silence after which the connection is closed with 1001.
    pub idle_timeout: Duration,
    /// Subscriptions plus syncs one connection may hold.
    pub max_subscriptions: usize,
    /// Ops one `OP_BATCH` may carry.
    pub max_batch_ops: usize,
    /// Re-verify a live session's token this often (introspection), so that
    /// revocation at the identity provider ends the session.
    pub revalidate_every: Option<Duration>,
    /// Sustained messages per second per connection (0: unlimited).
    pub messages_per_second: u32,
    /// Messages a connection may send at once above the rate; as many again
    /// beyond that while rate-limited closes it with 4029.
    pub message_burst: u32,
    /// Largest encoded `PUB.data` or op `value`.
    pub max_value_bytes: usize,
    /// Largest message the transport accepts (announced in `AUTH_ACK`).
    pub max_message_bytes: usize,
}

impl SessionConfig {
    /// The bounds every request is checked against (the HTTP API's too).
    pub(crate) fn request_limits(&self) -> crate::requests::RequestLimits {
        crate::requests::RequestLimits { max_value_bytes: self.max_value_bytes, max_batch_ops: self.max_batch_ops }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(10),
            expiry_notice: Duration::from_secs(30),
            leeway: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_subscriptions: 256,
            max_batch_ops: 1000,
            revalidate_every: None,
            messages_per_second: 1000,
            message_burst: 2000,
            max_value_bytes: 256 * 1024,
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a protocol message.
    Send(ServerMessage),
    /// Verify this token and report back with [`Session::on_verified`](super::Session::on_verified) before
    /// feeding anything else.
    Verify(String),
    /// Join a topic (authorised); answer `OK {id}` once joined.
    Subscribe {
        /// The `SUB`'s id.
        id: u64,
        /// Topic name.
        topic: String,
    },
    /// Be present on a topic just subscribed to (after [`Effect::Subscribe`]).
    Join {
        /// Topic name.
        topic: String,
        /// What the member says about itself.
        info: Option<Value>,
    },
    /// Answer `PRESENCE {id}` with a page of the topic's members (authorised).
    Presence {
        /// The `PRESENCE`'s id.
        id: u64,
        /// Topic name.
        topic: String,
        /// The page after this connection id.
        after: Option<u64>,
    },
    /// Leave a topic (no answer: the session answers `UNSUB` itself).
    Unsubscribe {
        /// Topic name.
        topic: String,
    },
    /// Publish to a topic (authorised); answer `OK {id}`.
    Publish {
        /// The `PUB`'s id.
        id: u64,
        /// Topic name.
        topic: String,
        /// The payload.
        data: Value,
    },
    /// Apply the authorised ops and answer `OP_RESULT {id}`, filling in `results`.
    Write {
        /// The batch's id.
        id: u64,
        /// One slot per op; `Some` for ops already rejected here.
        results: Vec<Option<OpOutcome>>,
        /// The authorised ops with their positions in the batch.
        ops: Vec<(usize, RawOp)>,
    },
    /// Start following a collection (authorised); answer `SYNC_DATA {id}`.
    Sync {
        /// The `SYNC`'s id.
        id: u64,
        /// Collection name.
        collection: String,
        /// Cursor to resume from (`None`: everything).
        since: Option<Cursor>,
    },
    /// Stop following a collection (no answer).
    Unsync {
        /// Collection name.
        collection: String,
    },
    /// Send a WebSocket ping.
    Ping,
    /// Send a close frame and end the connection.
    Close {
        /// Close code (see [`close`](crate::protocol::codes::close)).
        code: u16,
        /// Close reason (short, never contains a token).
        reason: String,
    },
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a token; only `AUTH` and `PING` are processed.
    Unauthenticated {
        /// Unix ms after which the session closes with 4008.
        deadline: u64,
    },
    /// Authenticated as an identity (boxed: it is much larger than the other phases).
    Authenticated(Box<Authenticated>),
    /// A close was decided; nothing more is processed.
    Closed,
}

/// The state of an authenticated session.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// Who is connected.
    pub identity: Identity,
    /// What the identity may do under the current policy.
    pub access: Access,
    /// Topic → id of the `SUB` that joined it.
    pub subscriptions: BTreeMap<String, u64>,
    /// Collection → id of the `SYNC` that follows it.
    pub syncs: BTreeMap<String, u64>,
    /// Unix ms at which the session closes with 4100, if the credential expires.
    pub ends_at: Option<u64>,
    /// Whether `TOKEN_EXPIRING` was sent for the current credential.
    pub notice_sent: bool,
    /// Unix ms of the last presence `info` this connection announced (they are rate-limited).
    pub announced_at: Option<u64>,
}
