//! Wire-visible close codes and error codes: the one place they are defined.
//!
//! Close codes are split like centrifuge's: `4000..4099` and `1009` mean "fix the
//! client" (terminal), the rest say how to reconnect. `proto/PROTOCOL.md` is the
//! documentation of record for every value here.

/// Close codes sent in WebSocket close frames.
pub mod close {
    /// Normal closure (the client asked, or the session ended cleanly).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown, idle timeout): reconnect with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket-level protocol error (unmasked client frame, bad fragment).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The message was larger than `--max-frame-bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Malformed frame or syncgate protocol violation.
    pub const MALFORMED: u16 = 4000;
    /// Missing, malformed or invalid token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Token valid but not allowed (revoked, wrong subject on refresh).
    pub const FORBIDDEN: u16 = 4003;
    /// No `AUTH` within the auth timeout.
    pub const AUTH_TIMEOUT: u16 = 4008;
    /// Rate limit exceeded.
    pub const RATE_LIMITED: u16 = 4029;
    /// The token expired and was not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4100;
    /// The outbound queue overflowed: the client reads too slowly.
    pub const SLOW_CONSUMER: u16 = 4200;

    /// Every close code the server sends, in order: `proto/PROTOCOL.md` §5
    /// lists exactly these (`tests/readme.rs` checks it), and `/metrics`
    /// shows a zero for each before the first close.
    pub const ALL: [u16; 11] = [
        NORMAL,
        GOING_AWAY,
        PROTOCOL_ERROR,
        MESSAGE_TOO_BIG,
        MALFORMED,
        UNAUTHORIZED,
        FORBIDDEN,
        AUTH_TIMEOUT,
        RATE_LIMITED,
        TOKEN_EXPIRED,
        SLOW_CONSUMER,
    ];
}

/// What a client does after the server closes with a code: the one table the
/// server docs, `proto/PROTOCOL.md` §5 and every client follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Give up and report: the client or its credentials must be fixed (1002, 1009, 4000, 4003).
    Stop,
    /// Ask the token provider for a new token (the last one was refused), then reconnect (4001).
    NewToken,
    /// Ask for a fresh token (the session's expired), then reconnect (4100).
    RefreshToken,
    /// Back off longer than usual, then reconnect (4029).
    BackOff,
    /// Reconnect with backoff and resume every sync from its cursor (4200: messages were dropped).
    Resync,
    /// Reconnect with backoff (1000, 1001, 4008, a dropped connection, any other code).
    Reconnect,
}

impl CloseAction {
    /// The action for a close `code` (`None`: the connection dropped without one).
    pub fn for_code(code: Option<u16>) -> Self {
        match code {
            Some(close::PROTOCOL_ERROR | close::MESSAGE_TOO_BIG | close::MALFORMED | close::FORBIDDEN) => Self::Stop,
            Some(close::UNAUTHORIZED) => Self::NewToken,
            Some(close::TOKEN_EXPIRED) => Self::RefreshToken,
            Some(close::RATE_LIMITED) => Self::BackOff,
            Some(close::SLOW_CONSUMER) => Self::Resync,
            _ => Self::Reconnect,
        }
    }

    /// Whether the client stops for good.
    pub fn is_terminal(self) -> bool {
        self == Self::Stop
    }
}

/// `code` strings carried by `ERROR` and `OP_RESULT` entries.
pub mod error {
    /// The message `type` is not one this server knows.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A known message with missing or mistyped fields.
    pub const INVALID: &str = "invalid";
    /// The identity's roles do not allow the action.
    pub const FORBIDDEN: &str = "forbidden";
    /// The writer's clock is too far ahead of the server's.
    pub const CLOCK_SKEW: &str = "clock_skew";
    /// The server cannot serve the request right now (storage failure).
    pub const UNAVAILABLE: &str = "unavailable";
    /// A per-connection limit (subscriptions, syncs) was reached.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// The connection sends messages faster than its rate limit.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// (op) The op's `hlc` is older than the tombstone-collection horizon: it
    /// may not create or change a record (it could resurrect a collected delete).
    pub const STALE: &str = "stale";
    /// The server failed to encode an answer (a bug, logged); the connection stays.
    pub const INTERNAL: &str = "internal";

    /// Every `ERROR.code`: `proto/PROTOCOL.md` §4 lists exactly these
    /// (`tests/readme.rs` checks it).
    pub const ALL: [&str; 9] = [
        UNKNOWN_TYPE,
        INVALID,
        FORBIDDEN,
        UNAVAILABLE,
        RATE_LIMITED,
        INTERNAL,
        TOO_MANY_SUBSCRIPTIONS,
        CLOCK_SKEW,
        STALE,
    ];

    /// The codes an `OP_RESULT` entry can carry (§4's table of op results).
    pub const OP_CODES: [&str; 5] = [FORBIDDEN, INVALID, CLOCK_SKEW, STALE, UNAVAILABLE];

    /// Whether an op refused with `code` is refused for good: the client rolls
    /// it back. Every other code (`unavailable`, `rate_limited`, and any code
    /// the client does not know) is retryable: the op stays queued and is sent
    /// again later. `proto/PROTOCOL.md` §4 has the same table.
    pub fn is_final_op_code(code: &str) -> bool {
        matches!(code, FORBIDDEN | INVALID | CLOCK_SKEW | STALE)
    }
}

/// `AUTH_FAIL.code` values, each with the close code that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailCode {
    /// No token was presented (absent or empty).
    TokenMissing,
    /// The token is not a well-formed token of the configured kind.
    TokenMalformed,
    /// Signature, algorithm or key did not verify.
    TokenInvalid,
    /// `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// `nbf` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// `aud` does not match `--jwt-audience`.
    AudienceMismatch,
    /// `iss` does not match `--jwt-issuer`.
    IssuerMismatch,
    /// A required claim (`exp`, `sub`) is absent or of the wrong type.
    ClaimMissing,
    /// The introspection endpoint could not be reached (fail-closed).
    IntrospectionUnavailable,
    /// A message other than `AUTH`/`PING` arrived before `AUTH_ACK`.
    NotAuthenticated,
    /// The token is valid but not allowed (revoked, subject changed).
    Forbidden,
}

impl AuthFailCode {
    /// Every code, in the order of `proto/PROTOCOL.md` §3's table (`tests/readme.rs` checks it).
    pub const ALL: [AuthFailCode; 11] = [
        Self::TokenMissing,
        Self::TokenMalformed,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::AudienceMismatch,
        Self::IssuerMismatch,
        Self::ClaimMissing,
        Self::IntrospectionUnavailable,
        Self::NotAuthenticated,
        Self::Forbidden,
    ];

    /// The string sent in `AUTH_FAIL.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::AudienceMismatch => "audience_mismatch",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::ClaimMissing => "claim_missing",
            Self::IntrospectionUnavailable => "introspection_unavailable",
            Self::NotAuthenticated => "not_authenticated",
            Self::Forbidden => "forbidden",
        }
    }

    /// The close code that follows `AUTH_FAIL` with this code.
    pub fn close_code(self) -> u16 {
        match self {
            Self::TokenExpired => close::TOKEN_EXPIRED,
            Self::Forbidden => close::FORBIDDEN,
            _ => close::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Display for AuthFailCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_has_one_documented_action() {
        let table = [
            (None, CloseAction::Reconnect),
            (Some(1000), CloseAction::Reconnect),
            (Some(1001), CloseAction::Reconnect),
            (Some(1002), CloseAction::Stop),
            (Some(1009), CloseAction::Stop),
            (Some(4000), CloseAction::Stop),
            (Some(4001), CloseAction::NewToken),
            (Some(4003), CloseAction::Stop),
            (Some(4008), CloseAction::Reconnect),
            (Some(4029), CloseAction::BackOff),
            (Some(4100), CloseAction::RefreshToken),
            (Some(4200), CloseAction::Resync),
            (Some(4999), CloseAction::Reconnect),
        ];
        for (code, action) in table {
            assert_eq!(CloseAction::for_code(code), action, "{code:?}");
        }
        assert!(error::is_final_op_code("stale") && error::is_final_op_code("forbidden"));
        assert!(!error::is_final_op_code("unavailable") && !error::is_final_op_code("something_new"));
    }
}
