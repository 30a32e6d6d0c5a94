//! What a request may do, decided once for every surface: the WebSocket
//! session (`session::route`) and the HTTP API (through [`crate::node::Node`])
//! call the same checks, so the same request is refused with the same code
//! and message wherever it arrives.
//!
//! Every refusal is a [`RequestError`]: its [`RequestError::code`] is the wire
//! code and its `Display` the human-readable message, mapped to the wire
//! (`ERROR` and `OP_RESULT` entries) here and nowhere else.

use rmpv::Value;

use crate::cursor::Cursor;
use crate::protocol::codes::error;
use crate::protocol::{OpOutcome, ServerMessage};
use crate::rules::{Access, Action};
use crate::values::{self, MAX_VALUE_DEPTH, ValueLimits};
use syncgate_proto::names::valid_name;

/// The bounds a request is checked against: the same on every surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Largest encoded `PUB.data` or op `value`.
    pub(crate) max_value_bytes: usize,
    /// Ops one batch may carry.
    pub(crate) max_batch_ops: usize,
}

/// What a reader wants of a topic or collection; the refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// `SUB`.
    Subscribe,
    /// `PRESENCE`.
    Presence,
    /// `SYNC`, `GET /api/collections/{name}` and its change feed.
    Records,
}

/// `name` as a topic (`what` = "topic") or collection follows the naming rule.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), RequestError> {
    valid_name(name).map_err(|why| RequestError::Invalid(format!("{what} {why}")))
}

/// Whether `access` may read `name` as `reading` asks (names checked first).
pub(crate) fn check_read(access: &Access, reading: Reading, name: &str) -> Result<(), RequestError> {
    let (what, verb) = match reading {
        Reading::Subscribe => ("topic", "subscribe to"),
        Reading::Presence => ("topic", "see who is on"),
        Reading::Records => ("collection", "read"),
    };
    check_name(what, name)?;
    if reading == Reading::Records && crate::api::vault::is_vault_collection(name) {
        return Err(RequestError::Forbidden(format!("{name:?} belongs to the key vault: use /vault/")));
    }
    if !access.allows(Action::Read, name) {
        return Err(RequestError::Forbidden(format!("not allowed to {verb} {name:?}")));
    }
    Ok(())
}

/// Whether `access` may publish `data` on `topic`.
pub(crate) fn check_publish(
    access: &Access,
    topic: &str,
    data: &Value,
    limits: RequestLimits,
) -> Result<(), RequestError> {
    check_name("topic", topic)?;
    if !access.allows(Action::Write, topic) {
        return Err(RequestError::Forbidden(format!("not allowed to publish to {topic:?}")));
    }
    check_value("data", data, limits)
}

/// Whether a batch of `ops` ops may be taken at all.
pub(crate) fn check_batch(ops: usize, limits: RequestLimits) -> Result<(), RequestError> {
    let max = limits.max_batch_ops;
    if ops > max {
        return Err(RequestError::Invalid(format!("at most {max} ops per batch")));
    }
    Ok(())
}

/// Whether `access` may apply one op (its id, its `value` into
/// `collection`; its key and `hlc` are judged when it is committed). The
/// refusal is the op's `OP_RESULT` entry, echoing its id unless the id
/// itself is what is wrong.
pub(crate) fn check_op(
    access: &Access,
    op_id: &Value,
    collection: &str,
    value: &Value,
    limits: RequestLimits,
) -> Result<(), OpOutcome> {
    check_op_fields(op_id, value, limits)?;
    check_writable(access, collection).map_err(|refusal| refusal.rejection(op_id.clone()))
}

/// [`check_op`] without the collection: for an op of a batch whose previous
/// op was allowed into the same collection (checked once per run of ops).
pub(crate) fn check_op_fields(op_id: &Value, value: &Value, limits: RequestLimits) -> Result<(), OpOutcome> {
    check_op_id(op_id).map_err(|refusal| refusal.rejection(Value::Nil))?;
    check_value("value", value, limits).map_err(|refusal| refusal.rejection(op_id.clone()))
}

/// Whether `access` may write into `collection` at all (its name checked first).
pub(crate) fn check_writable(access: &Access, collection: &str) -> Result<(), RequestError> {
    check_name("collection", collection)?;
    if crate::api::vault::is_vault_collection(collection) {
        return Err(RequestError::Forbidden(format!("{collection:?} belongs to the key vault: use /vault/")));
    }
    if !access.allows(Action::Write, collection) {
        return Err(RequestError::Forbidden(format!("not allowed to write to {collection:?}")));
    }
    Ok(())
}

/// A value (`what`: "value", "data") that keeps the value rule
/// ([`crate::values`]: kinds, depth) and the size bound.
pub(crate) fn check_value(what: &str, value: &Value, limits: RequestLimits) -> Result<(), RequestError> {
    let bounds = ValueLimits { max_bytes: limits.max_value_bytes, max_depth: MAX_VALUE_DEPTH };
    values::check_value(value, bounds).map_err(|why| RequestError::Invalid(format!("{what} {why}")))
}

/// Largest presence `info`, encoded.
pub(crate) const MAX_PRESENCE_INFO_BYTES: usize = 1024;

/// Whether `access` may announce `info` to the members of `topic`: it is
/// sent to all of them, so it needs the right to write there, and it keeps
/// the value rule within [`MAX_PRESENCE_INFO_BYTES`].
pub(crate) fn check_presence_info(access: &Access, topic: &str, info: &Value) -> Result<(), RequestError> {
    check_name("topic", topic)?;
    let bounds = ValueLimits { max_bytes: MAX_PRESENCE_INFO_BYTES, max_depth: MAX_VALUE_DEPTH };
    values::check_value(info, bounds).map_err(|why| RequestError::Invalid(format!("presence info {why}")))?;
    if !access.allows(Action::Write, topic) {
        return Err(RequestError::Forbidden(format!("not allowed to announce presence info on {topic:?}")));
    }
    Ok(())
}

/// Longest string op id, in bytes.
pub(crate) const MAX_OP_ID_BYTES: usize = 256;

/// An op id is absent, an integer, or a string of at most [`MAX_OP_ID_BYTES`]
/// (it is echoed in the op's outcome, and clients key their outboxes by it).
fn check_op_id(op_id: &Value) -> Result<(), RequestError> {
    match op_id {
        Value::Nil | Value::Integer(_) => Ok(()),
        Value::String(s) if s.as_str().is_some_and(|s| s.len() <= MAX_OP_ID_BYTES) => Ok(()),
        _ => Err(RequestError::Invalid(format!(
            "`opId` must be a string of at most {MAX_OP_ID_BYTES} bytes or an integer"
        ))),
    }
}

/// A `since` cursor as a client sent it (absent or empty: from the start).
pub(crate) fn parse_since(text: Option<&str>) -> Result<Option<Cursor>, RequestError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<Cursor>()
            .map(Some)
            .map_err(|_| RequestError::Invalid("`since` is not a cursor this server issued".into())),
    }
}

/// A refused request or op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    /// The message `type` is not one this server knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known message with missing, mistyped or out-of-range fields.
    #[error("{0}")]
    Invalid(String),
    /// The identity's roles do not allow it; the message names the action and resource.
    #[error("{0}")]
    Forbidden(String),
    /// The writer's clock is too far ahead of the server's.
    #[error("hlc is {ahead_ms} ms ahead of the server's clock (limit {limit_ms} ms)")]
    ClockSkew {
        /// How far ahead the op's `hlc` is.
        ahead_ms: u64,
        /// The allowed drift.
        limit_ms: u64,
    },
    /// The server cannot serve it right now (storage or backplane failure): retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The connection's shared budget of subscriptions and syncs is used up.
    #[error("at most {0} subscriptions and syncs per connection")]
    TooManySubscriptions(usize),
    /// The connection sends faster than its message rate.
    #[error("more than {0} messages per second")]
    RateLimited(u32),
    /// A rate of its own (presence announcements, API requests) was exceeded; the message says which.
    #[error("{0}")]
    RateLimitedAs(String),
    /// The op's `hlc` is older than the tombstone-collection horizon.
    #[error("the op's hlc is older than the tombstone-collection horizon")]
    Stale,
    /// The record already holds another value under the op's `hlc`.
    #[error("the record holds another value written with this op's hlc: a writer must not reuse a stamp")]
    ReusedStamp,
}

impl RequestError {
    /// The wire code (`ERROR.code`, `OP_RESULT` entry `code`).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UnknownType(_) => error::UNKNOWN_TYPE,
            Self::Invalid(_) | Self::ReusedStamp => error::INVALID,
            Self::Forbidden(_) => error::FORBIDDEN,
            Self::ClockSkew { .. } => error::CLOCK_SKEW,
            Self::Unavailable(_) => error::UNAVAILABLE,
            Self::TooManySubscriptions(_) => error::TOO_MANY_SUBSCRIPTIONS,
            Self::RateLimited(_) | Self::RateLimitedAs(_) => error::RATE_LIMITED,
            Self::Stale => error::STALE,
        }
    }

    /// Whether a client should send the refused op again later (the op stays
    /// queued) rather than roll it back: [`error::is_final_op_code`]'s table.
    #[cfg(test)]
    pub(crate) fn should_retry(&self) -> bool {
        !error::is_final_op_code(self.code())
    }

    /// The `ERROR` answering request `id`.
    pub(crate) fn reply(&self, id: Option<u64>) -> ServerMessage {
        ServerMessage::Error { id, code: self.code().into(), message: self.to_string() }
    }

    /// The `OP_RESULT` entry refusing op `op_id`.
    pub(crate) fn rejection(&self, op_id: Value) -> OpOutcome {
        OpOutcome { op_id, ok: false, code: Some(self.code().into()), message: Some(self.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retry_follow_the_protocol_table() {
        let retryable = [RequestError::Unavailable("disk".into()), RequestError::RateLimited(10)];
        let final_ones = [
            RequestError::Forbidden("no".into()),
            RequestError::Invalid("bad".into()),
            RequestError::ClockSkew { ahead_ms: 5, limit_ms: 1 },
            RequestError::Stale,
        ];
        assert!(retryable.iter().all(RequestError::should_retry));
        assert!(final_ones.iter().all(|e| !e.should_retry()));
        let reply = RequestError::TooManySubscriptions(3).reply(Some(7));
        assert_eq!(
            reply,
            ServerMessage::Error {
                id: Some(7),
                code: "too_many_subscriptions".into(),
                message: "at most 3 subscriptions and syncs per connection".into()
            }
        );
    }
}
