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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use assemble::{AuthMode, AuthSpec, IssuerTable, OneOrMany};
pub use introspect::{IntrospectSettings, IntrospectShape, Introspector};
pub use jwks::{JwksPolicy, JwksSource};
pub use jwt::{IssuerSettings, JwtKey, JwtSettings, JwtVerifier, MAX_TOKEN_BYTES};
pub use keys::KeyError;
pub use static_token::StaticTokenVerifier;

use crate::protocol::AuthFailCode;

/// A token's string-valued claims, sorted by name. A token carries a
/// handful, and every connection keeps its own: a sorted vector costs what
/// the claims take, where a B-tree map's first node alone is half a kilobyte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims(Vec<(String, String)>);

impl Claims {
    /// The claim's value, if the token has it.
    pub fn get(&self, name: &str) -> Option<&String> {
        let at = self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        Some(&self.0[at].1)
    }

    /// Sets a claim, replacing any value it had.
    pub fn insert(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (name, value)),
        }
    }
}

impl FromIterator<(String, String)> for Claims {
    /// Collects claims; of two with one name, the later wins (as in a map).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut claims: Vec<(String, String)> = iter.into_iter().collect();
        claims.reverse();
        claims.sort_by(|a, b| a.0.cmp(&b.0));
        claims.dedup_by(|later, earlier| later.0 == earlier.0);
        claims.shrink_to_fit();
        Self(claims)
    }
}

impl std::ops::Index<&str> for Claims {
    type Output = String;

    fn index(&self, name: &str) -> &String {
        self.get(name).unwrap_or_else(|| panic!("no claim {name:?}"))
    }
}

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
    pub claims: Claims,
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
            claims: Claims::default(),
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

/// The credential of an `Authorization: Bearer …` header (the scheme in any
/// case), trimmed; `None` when the header is absent, of another scheme or empty.
/// The server API and the admin API read their tokens this one way.
pub(crate) fn bearer_token(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim())
        .filter(|credential| !credential.is_empty())
}

/// The string and integer claims of a token or introspection answer, as
/// strings, for `{claim}` substitution in rules.
pub(crate) fn string_claims(fields: serde_json::Map<String, serde_json::Value>) -> Claims {
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

#[cfg(test)]
mod claims_tests {
    use super::Claims;

    #[test]
    fn claims_are_found_by_name_and_the_later_of_two_wins() {
        let pairs = [("org", "a"), ("doc", "d"), ("org", "b")];
        let mut claims: Claims = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(claims.get("org").map(String::as_str), Some("b"));
        assert_eq!(claims["doc"], "d");
        assert_eq!(claims.get("sub"), None);
        claims.insert("sub".into(), "u1".into());
        claims.insert("doc".into(), "e".into());
        assert_eq!((claims["sub"].as_str(), claims["doc"].as_str()), ("u1", "e"));
    }
}
