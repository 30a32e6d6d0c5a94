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
