//! Authentication: who is on the other end of a connection.
//!
//! Every mode implements [`Authenticator`], a small async trait that turns a
//! token into an [`Identity`] or a precise [`AuthError`]. The session never
//! knows which mode is configured; the JWKS and introspection verifiers plug
//! in here. Time is passed in (`now`, Unix seconds) so verification is
//! deterministic under test.

mod assemble;
mod claims;
mod introspect;
mod jwks;
mod jwt;
mod keys;
mod peek;
mod static_token;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use assemble::{AuthMode, AuthSpec, IssuerTable, OneOrMany};
pub use introspect::{IntrospectSettings, IntrospectShape, Introspector};
pub use jwks::{JwksPolicy, JwksSource};
pub use jwt::{IssuerSettings, JwtKey, JwtSettings, JwtVerifier, KeyError, MAX_TOKEN_BYTES};
pub use static_token::StaticTokenVerifier;

use crate::protocol::AuthFailCode;

/// A verified identity: what the per-connection actor authorizes against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject (user id).
    pub sub: String,
    /// Roles, from the `roles` array or the `role` string claim.
    pub roles: Vec<String>,
    /// Unix seconds at which the credential expires; `None` never expires.
    pub expires_at: Option<u64>,
    /// String-valued claims (`orgId`, `docId`, …) for `{claim}` substitution in rules.
    pub claims: BTreeMap<String, String>,
    /// The token's `jti`, for revocation by token id.
    pub jti: Option<String>,
    /// The token's `iat` (Unix seconds), for revocation of tokens issued before a time.
    pub issued_at: Option<u64>,
    /// The issuer binding that verified the token (its `name`, else its `iss`):
    /// what `{iss}` stands for in rules. `None` outside `[[issuers]]` bindings,
    /// where `{iss}` is the token's `iss` claim.
    pub issuer: Option<String>,
}

impl Identity {
    /// An identity with no expiry and no extra claims.
    pub fn new(sub: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            sub: sub.into(),
            roles,
            expires_at: None,
            claims: BTreeMap::new(),
            jti: None,
            issued_at: None,
            issuer: None,
        }
    }
}

/// Why a token was refused; `code` is sent in `AUTH_FAIL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError {
    /// The documented `AUTH_FAIL.code`.
    pub code: AuthFailCode,
    /// A human-readable reason; never contains the token.
    pub message: String,
}

impl AuthError {
    /// Builds an error with a code and a reason.
    pub fn new(code: AuthFailCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The future returned by [`Authenticator::verify`].
pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

/// Turns a presented token into an identity.
///
/// Contract: `verify` never panics on any input, never logs the token, and
/// answers within a bounded time (network-backed verifiers apply their own
/// timeouts and fail closed).
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `token` as of `now` (Unix seconds).
    fn verify<'a>(&'a self, token: &'a str, now: u64) -> VerifyFuture<'a>;

    /// The identity granted without a token, when the mode needs none.
    fn anonymous(&self) -> Option<Identity> {
        None
    }

    /// How often a live session's token must be verified again (introspection:
    /// the cache TTL, so that revocation takes effect within it).
    fn revalidate_every(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Mode `none`: the network is the boundary; everyone is `anonymous`.
#[derive(Debug, Clone)]
pub struct AnonymousAuthenticator {
    /// Roles granted to every connection.
    pub roles: Vec<String>,
}

impl Authenticator for AnonymousAuthenticator {
    fn verify<'a>(&'a self, _token: &'a str, _now: u64) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(Ok(Identity::new("anonymous", self.roles.clone()))))
    }

    fn anonymous(&self) -> Option<Identity> {
        Some(Identity::new("anonymous", self.roles.clone()))
    }
}

/// The string and integer claims of a token or introspection answer, as
/// strings, for `{claim}` substitution in rules.
pub(crate) fn string_claims(fields: serde_json::Map<String, serde_json::Value>) -> BTreeMap<String, String> {
    use serde_json::Value;
    fields
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            Value::Number(n) if n.is_u64() || n.is_i64() => Some((k, n.to_string())),
            _ => None,
        })
        .collect()
}

/// A shareable authenticator, as held by the server.
pub type SharedAuthenticator = Arc<dyn Authenticator>;
