//! The message types of the protocol (see `proto/PROTOCOL.md`).

use rmpv::Value;
use serde::{Deserialize, Serialize};

/// A message from a client, as the server understands it after decoding.
///
/// `Serialize` gives the exact wire form (used by the Rust client and tests);
/// the server decodes with [`super::decode_client`], not serde, so that field
/// errors are precise.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", rename_all_fields = "camelCase")]
pub enum ClientMessage {
    /// Present a token: first authentication or in-band refresh.
    Auth {
        /// The token; `None` when the field is absent or empty.
        token: Option<String>,
    },
    /// Liveness probe, allowed before authentication.
    Ping {
        /// Echoed in `PONG` when present.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Subscribe to a topic (needs `read`).
    Sub {
        /// Request id.
        id: u64,
        /// Topic name.
        topic: String,
    },
    /// Subscribe to a topic and be present on it (`SUB` with `presence: true`):
    /// the other present members see `PRESENCE_JOIN`, and this one receives
    /// joins and leaves from then on (needs `read`).
    #[serde(rename = "SUB")]
    SubPresent {
        /// Request id.
        id: u64,
        /// Topic name.
        topic: String,
        /// Always true on the wire.
        presence: bool,
        /// Client-supplied information shown to the other members (at most 1 KiB encoded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Value>,
    },
    /// Who is present on a topic (needs `read`); answered by `PRESENCE_STATE`,
    /// a page at a time.
    Presence {
        /// Request id.
        id: u64,
        /// Topic name.
        topic: String,
        /// The page after this `connId` (the last of the previous page); absent: the first page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Leave a topic.
    Unsub {
        /// Request id.
        id: u64,
        /// Topic name.
        topic: String,
    },
    /// Publish to a topic (needs `write`).
    Pub {
        /// Request id.
        id: u64,
        /// Topic name.
        topic: String,
        /// Any MessagePack value.
        data: Value,
    },
    /// Last-writer-wins writes, each accepted or rejected on its own.
    OpBatch {
        /// Request id.
        id: u64,
        /// The ops, in order; an op that failed to decode is kept as a rejection.
        ops: Vec<OpInput>,
    },
    /// Read a collection and follow its changes (needs `read`).
    Sync {
        /// Request id.
        id: u64,
        /// Collection name.
        collection: String,
        /// A cursor from an earlier `SYNC_DATA`/`CHANGE`.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Stop following a collection.
    Unsync {
        /// Request id.
        id: u64,
        /// Collection name.
        collection: String,
    },
}

/// One op of an `OP_BATCH`: decoded, or the reason it could not be.
#[derive(Debug, Clone, PartialEq)]
pub enum OpInput {
    /// A well-formed op.
    Op(RawOp),
    /// An op whose fields were missing or mistyped; rejected with `invalid`.
    Invalid {
        /// The op's `opId` if it had a usable one (else nil is echoed).
        op_id: Value,
        /// What was wrong.
        reason: String,
    },
}

impl Serialize for OpInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            OpInput::Op(op) => op.serialize(s),
            // A map with only the usable `opId`: it decodes back to the same rejection.
            OpInput::Invalid { op_id, .. } => {
                let mut map = s.serialize_map(None)?;
                if !op_id.is_nil() {
                    map.serialize_entry("opId", op_id)?;
                }
                map.end()
            }
        }
    }
}

/// A last-writer-wins write as the client sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawOp {
    /// Client-chosen id echoed in the op's result (string or integer).
    pub op_id: Value,
    /// Collection name.
    pub collection: String,
    /// Record key within the collection.
    pub key: String,
    /// New value; nil deletes (tombstone).
    pub value: Value,
    /// The writer's hybrid logical clock, `"<millis>:<counter>:<nodeId>"`.
    pub hlc: String,
}

/// The result of one op in `OP_RESULT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpOutcome {
    /// The op's `opId`, echoed.
    pub op_id: Value,
    /// Whether the op was accepted (an older `hlc` is accepted and changes nothing).
    pub ok: bool,
    /// Rejection code (`forbidden`, `invalid`, `clock_skew`, `unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable reason for a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One record of a collection, as sent in `SYNC_DATA` and `CHANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Record key.
    pub key: String,
    /// Current value; nil for a tombstone.
    pub value: Value,
    /// The hybrid logical clock of the write that set it.
    pub hlc: String,
}

/// One member present on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's subject.
    pub sub: String,
    /// The member's connection.
    pub conn_id: u64,
    /// What the member said about itself, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", rename_all_fields = "camelCase")]
pub enum ServerMessage {
    /// Sent on open: the client must authenticate.
    AuthRequired {
        /// Protocol version (1).
        protocol_version: u32,
    },
    /// Authentication (or refresh) succeeded.
    AuthAck {
        /// The identity's subject.
        sub: String,
        /// The identity's roles.
        roles: Vec<String>,
        /// Unix seconds at which the session ends, or nil.
        expires_at: Option<u64>,
        /// The server's limits, so a client can cut its batches to fit (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<SessionLimits>,
    },
    /// Authentication failed; a close frame follows.
    AuthFail {
        /// One of the documented `AUTH_FAIL` codes.
        code: String,
        /// Human-readable reason (never contains the token).
        message: String,
    },
    /// The session's token expires soon: refresh with `AUTH`.
    TokenExpiring {
        /// Unix seconds of expiry.
        expires_at: u64,
    },
    /// Answer to `PING`.
    Pong {
        /// The `PING`'s id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request succeeded.
    Ok {
        /// The request's id.
        id: u64,
    },
    /// A request (or an unknown message) failed.
    Error {
        /// The request's id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Machine-readable code.
        code: String,
        /// Human-readable reason.
        message: String,
    },
    /// A member joined a topic this connection is present on.
    PresenceJoin {
        /// Topic name.
        topic: String,
        /// The member's subject.
        sub: String,
        /// The member's connection (one subject may be present several times).
        conn_id: u64,
        /// What the member said about itself, if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Value>,
    },
    /// A member left (unsubscribed, disconnected, or lost `read`).
    PresenceLeave {
        /// Topic name.
        topic: String,
        /// The member's subject.
        sub: String,
        /// The member's connection.
        conn_id: u64,
    },
    /// The members present on a topic, answering `PRESENCE {id}`.
    PresenceState {
        /// The `PRESENCE`'s id.
        id: u64,
        /// Topic name.
        topic: String,
        /// Members in `connId` order, after the request's `after`.
        members: Vec<Member>,
        /// More members follow: ask again with `after` set to the last `connId`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// A publication on a subscribed topic.
    Message {
        /// Topic name.
        topic: String,
        /// The published value.
        data: Value,
        /// The publisher's `sub`.
        from: String,
    },
    /// Per-op results of an `OP_BATCH`, in order.
    OpResult {
        /// The batch's id.
        id: u64,
        /// One entry per op.
        results: Vec<OpOutcome>,
    },
    /// Snapshot (or delta) answering `SYNC`.
    SyncData {
        /// The `SYNC`'s id.
        id: u64,
        /// Collection name.
        collection: String,
        /// Records changed after `since` (all when absent).
        records: Vec<Record>,
        /// Position to resume from.
        cursor: String,
        /// True when `since` could not be resumed from (another epoch, a
        /// position never issued, older than the tombstone horizon) and the full
        /// state was sent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
        /// True when more pages of this snapshot follow as `CHANGE`s.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Records accepted since the last `SYNC_DATA`/`CHANGE`.
    Change {
        /// Collection name.
        collection: String,
        /// The changed records.
        records: Vec<Record>,
        /// Position after these records.
        cursor: String,
        /// True on a snapshot page that is not the last one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
}

/// The limits a server announces in `AUTH_ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// Largest message the server accepts (close 1009 above it).
    pub max_message_bytes: u64,
    /// Largest encoded `PUB.data` or op `value`.
    pub max_value_bytes: u64,
    /// Most ops in one `OP_BATCH`.
    pub max_batch_ops: u64,
    /// Deepest nesting of arrays and maps in a value (servers before it: 16).
    #[serde(default = "default_value_depth")]
    pub max_value_depth: u64,
    /// Sustained messages per second a connection may send (0: no limit; absent: unknown).
    #[serde(default)]
    pub messages_per_second: u64,
    /// Messages a connection may send at once above that rate.
    #[serde(default)]
    pub message_burst: u64,
}

fn default_value_depth() -> u64 {
    crate::values::MAX_VALUE_DEPTH as u64
}
