//! Why a request or an op was refused: the one place that maps refusals to
//! the wire (`ERROR` and `OP_RESULT` entries). Every refusal is a
//! [`RequestError`]; its [`RequestError::code`] is the wire code and its
//! `Display` the human-readable message.

use rmpv::Value;

use crate::protocol::codes::error;
use crate::protocol::{OpOutcome, ServerMessage};

/// A refused request or op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
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
    /// The op's `hlc` is older than the tombstone-collection horizon.
    #[error("the op's hlc is older than the tombstone-collection horizon")]
    Stale,
}

impl RequestError {
    /// The wire code (`ERROR.code`, `OP_RESULT` entry `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownType(_) => error::UNKNOWN_TYPE,
            Self::Invalid(_) => error::INVALID,
            Self::Forbidden(_) => error::FORBIDDEN,
            Self::ClockSkew { .. } => error::CLOCK_SKEW,
            Self::Unavailable(_) => error::UNAVAILABLE,
            Self::TooManySubscriptions(_) => error::TOO_MANY_SUBSCRIPTIONS,
            Self::RateLimited(_) => error::RATE_LIMITED,
            Self::Stale => error::STALE,
        }
    }

    /// Whether a client should send the refused op again later (the op stays
    /// queued) rather than roll it back: [`error::is_final_op_code`]'s table.
    pub fn should_retry(&self) -> bool {
        !error::is_final_op_code(self.code())
    }

    /// The `ERROR` answering request `id`.
    pub fn reply(&self, id: Option<u64>) -> ServerMessage {
        ServerMessage::Error { id, code: self.code().into(), message: self.to_string() }
    }

    /// The `OP_RESULT` entry refusing op `op_id`.
    pub fn rejection(&self, op_id: Value) -> OpOutcome {
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
