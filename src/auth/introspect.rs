//! Mode `introspect`: the operator's API decides, per token.
//!
//! The token is POSTed to the introspection endpoint (JSON `{"token": …}`, or
//! RFC 7662 form encoding) with a bearer credential. The operator picks the
//! answer's shape ([`IntrospectShape`]): RFC 7662 (`active`, `sub`, `exp`,
//! `scope`, …; only a boolean `active: true` admits) or the `{userId, orgId,
//! role}` answer of the Formula sync server. Only a clear yes authenticates:
//! every other answer refuses. Every string or integer field becomes a claim
//! usable in rules (`{orgId}`). Successful answers are cached in memory, keyed
//! by the SHA-256 of the token, for the cache TTL; concurrent checks of one
//! token share one request.
//!
//! | the endpoint answers | the token is |
//! | --- | --- |
//! | 2xx with a clear yes | accepted |
//! | 2xx with anything else, 401, 403, other 4xx | `token_invalid` (or `claim_missing`, `token_expired`): the client's failure, counted |
//! | timeout, connection error, 5xx | `introspection_unavailable`: an outage (fail-open may apply) |
//! | 2xx that is not a JSON object, 1xx, 3xx | `introspection_unavailable`, never fail-open |

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{AuthError, Authenticator, Identity, VerifyFuture, string_claims};
use crate::http_client::HttpClient;
use crate::protocol::AuthFailCode;

/// Which answer shape the introspection endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntrospectShape {
    /// RFC 7662: a boolean `active: true` and a `sub` admit (`--introspect-shape rfc7662`, the default).
    #[default]
    Rfc7662,
    /// `{userId, orgId, role}`: a non-empty `userId` and no `error` field admit (`--introspect-shape user`).
    User,
}

impl std::str::FromStr for IntrospectShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rfc7662" => Ok(Self::Rfc7662),
            "user" => Ok(Self::User),
            other => Err(format!("{other:?} is not an introspection shape (rfc7662, user)")),
        }
    }
}

/// How to reach and trust the introspection endpoint.
#[derive(Debug, Clone)]
pub struct IntrospectSettings {
    /// The endpoint (`--introspect-url`).
    pub url: String,
    /// Bearer credential sent with every request (`--introspect-token`).
    pub bearer: String,
    /// How long a successful answer is reused (`--introspect-cache-ms`).
    pub cache_ttl: Duration,
    /// Most answers kept in the cache.
    pub cache_max_entries: usize,
    /// Send `token=…` form-encoded (RFC 7662) instead of JSON.
    pub form: bool,
    /// The shape of the endpoint's answers.
    pub shape: IntrospectShape,
    /// On unavailability, accept the token's own (unverified) claims. Development only.
    pub fail_open: bool,
    /// Clock-skew allowance for a returned `exp`.
    pub leeway_secs: u64,
}

struct Cached {
    identity: Identity,
    at: Instant,
}

type Key = [u8; 32];

/// Verifies tokens by asking the operator's API.
pub struct Introspector {
    settings: IntrospectSettings,
    http: HttpClient,
    cache: DashMap<Key, Cached>,
    inflight: DashMap<Key, Arc<OnceCell<Result<Identity, AuthError>>>>,
}

impl Introspector {
    /// An introspector using `http` (whose timeout bounds each request).
    pub fn new(settings: IntrospectSettings, http: HttpClient) -> Self {
        Self { settings, http, cache: DashMap::new(), inflight: DashMap::new() }
    }

    /// Number of cached answers.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    async fn check(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let key: Key = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&key)
            && hit.at.elapsed() < self.settings.cache_ttl
        {
            let identity = hit.identity.clone();
            drop(hit);
            return still_valid(identity, now, self.settings.leeway_secs);
        }
        // One request per token at a time: later callers await the same cell.
        let cell = self.inflight.entry(key).or_insert_with(|| Arc::new(OnceCell::new())).clone();
        let result = cell.get_or_init(|| self.ask(token, now)).await.clone();
        self.inflight.remove_if(&key, |_, c| Arc::ptr_eq(c, &cell));
        if let Ok(identity) = &result {
            self.remember(key, identity.clone());
        }
        result
    }

    fn remember(&self, key: Key, identity: Identity) {
        if self.cache.len() >= self.settings.cache_max_entries {
            let ttl = self.settings.cache_ttl;
            self.cache.retain(|_, c| c.at.elapsed() < ttl);
            // Still full of live entries: drop an arbitrary one rather than grow.
            if self.cache.len() >= self.settings.cache_max_entries
                && let Some(victim) = self.cache.iter().next().map(|e| *e.key())
            {
                self.cache.remove(&victim);
            }
        }
        self.cache.insert(key, Cached { identity, at: Instant::now() });
    }

    async fn ask(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let (content_type, body) = if self.settings.form {
            let encoded: String = form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish();
            ("application/x-www-form-urlencoded", Bytes::from(encoded))
        } else {
            ("application/json", Bytes::from(serde_json::json!({ "token": token }).to_string()))
        };
        let unavailable = |why: String| {
            tracing::warn!(reason = %why, "token introspection unavailable");
            AuthError::new(AuthFailCode::IntrospectionUnavailable, "the token could not be checked right now")
        };
        // Fail-open (development only) covers outages, never an answer that refuses.
        let outage = |why: String| self.fail_open(token, now).ok_or_else(|| unavailable(why));
        let response = match self.http.post(&self.settings.url, content_type, Some(&self.settings.bearer), body).await {
            Ok(r) => r,
            Err(e) => return outage(e.0),
        };
        match response.status {
            200..=299 => {}
            s @ 400..=499 => {
                return Err(AuthError::new(
                    AuthFailCode::TokenInvalid,
                    format!("the identity provider refused the token (status {s})"),
                ));
            }
            s @ 500.. => return outage(format!("status {s}")),
            s => return Err(unavailable(format!("unexpected status {s}"))),
        }
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&response.body) else {
            return Err(unavailable("the answer is not a JSON object".into()));
        };
        identity_from_answer(fields, self.settings.shape, now, self.settings.leeway_secs)
    }

    /// Development escape hatch: the token's own claims, unverified.
    fn fail_open(&self, token: &str, now: u64) -> Option<Identity> {
        if !self.settings.fail_open {
            return None;
        }
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else { return None };
        tracing::warn!("introspection unavailable: accepting unverified claims (--introspect-fail-open)");
        let sub = fields.get("sub").cloned().unwrap_or(Value::Null);
        let mut answer = fields;
        // The unverified claims are read as the endpoint's shape would give them.
        match self.settings.shape {
            IntrospectShape::Rfc7662 => answer.insert("active".into(), Value::Bool(true)),
            IntrospectShape::User => answer.insert("userId".into(), sub),
        };
        identity_from_answer(answer, self.settings.shape, now, self.settings.leeway_secs).ok()
    }
}

impl Authenticator for Introspector {
    fn verify<'a>(&'a self, token: &'a str, now: u64) -> VerifyFuture<'a> {
        Box::pin(self.check(token, now))
    }

    fn revalidate_every(&self) -> Option<Duration> {
        Some(self.settings.cache_ttl)
    }
}

fn still_valid(identity: Identity, now: u64, leeway: u64) -> Result<Identity, AuthError> {
    match identity.expires_at {
        Some(exp) if now >= exp.saturating_add(leeway) => {
            Err(AuthError::new(AuthFailCode::TokenExpired, "the token has expired"))
        }
        _ => Ok(identity),
    }
}

/// Maps an introspection answer to an identity: only a clear yes of the
/// configured shape admits.
fn identity_from_answer(
    fields: Map<String, Value>,
    shape: IntrospectShape,
    now: u64,
    leeway: u64,
) -> Result<Identity, AuthError> {
    let refused = |why: &str| AuthError::new(AuthFailCode::TokenInvalid, why);
    if fields.contains_key("error") {
        return Err(refused("the identity provider answered with an error"));
    }
    let active = fields.get("active");
    let subject_field = match shape {
        IntrospectShape::Rfc7662 if active != Some(&Value::Bool(true)) => {
            return Err(refused("the token is not active"));
        }
        IntrospectShape::Rfc7662 => "sub",
        // The user shape has no `active`; one that is present must still say yes.
        IntrospectShape::User if active.is_some_and(|a| a != &Value::Bool(true)) => {
            return Err(refused("the token is not active"));
        }
        IntrospectShape::User => "userId",
    };
    let sub = match fields.get(subject_field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(AuthError::new(
                AuthFailCode::ClaimMissing,
                format!("the introspection answer has no `{subject_field}`"),
            ));
        }
    };
    let roles = match (fields.get("roles"), fields.get("role")) {
        (Some(Value::Array(items)), _) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        (_, Some(Value::String(role))) => vec![role.clone()],
        _ => Vec::new(),
    };
    let expires_at = fields.get("exp").and_then(Value::as_u64);
    let issued_at = fields.get("iat").and_then(Value::as_u64);
    let jti = fields.get("jti").and_then(Value::as_str).map(str::to_string);
    let mut claims = string_claims(fields);
    claims.insert("sub".into(), sub.clone());
    let identity = Identity { sub, roles, expires_at, claims, jti, issued_at, ..Identity::new("", Vec::new()) };
    still_valid(identity, now, leeway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(shape: IntrospectShape, v: Value) -> Result<Identity, AuthError> {
        let Value::Object(fields) = v else { panic!() };
        identity_from_answer(fields, shape, 1000, 0)
    }

    #[test]
    fn only_a_clear_yes_of_the_configured_shape_admits() {
        use IntrospectShape::{Rfc7662, User};
        let rfc = answer(
            Rfc7662,
            json!({"active": true, "sub": "u1", "exp": 2000, "scope": "read write", "roles": ["user"]}),
        )
        .unwrap();
        assert_eq!(
            (rfc.sub.as_str(), rfc.roles.as_slice(), rfc.expires_at),
            ("u1", &["user".to_string()][..], Some(2000))
        );
        assert_eq!(rfc.claims["scope"], "read write");
        let formula = answer(User, json!({"userId": "u2", "orgId": "acme", "role": "editor"})).unwrap();
        assert_eq!((formula.sub.as_str(), formula.roles.as_slice()), ("u2", &["editor".to_string()][..]));
        assert_eq!(formula.claims["orgId"], "acme");
        for (shape, refused) in [
            (Rfc7662, json!({"active": false})),
            (Rfc7662, json!({"sub": "victim", "role": "admin"})),
            (Rfc7662, json!({"active": "false", "sub": "victim"})),
            (Rfc7662, json!({"active": "true", "sub": "victim"})),
            (Rfc7662, json!({"active": 1, "sub": "victim"})),
            (Rfc7662, json!({"error": "invalid_token", "user_id": "victim"})),
            (Rfc7662, json!({"userId": "victim", "role": "admin"})),
            (User, json!({"error": "invalid_token", "userId": "victim"})),
            (User, json!({"active": false, "userId": "victim"})),
            (User, json!({"sub": "victim"})),
            (User, json!({"user_id": "victim"})),
        ] {
            let code = answer(shape, refused.clone()).map(|i| i.sub).unwrap_err().code;
            assert!(
                matches!(code, AuthFailCode::TokenInvalid | AuthFailCode::ClaimMissing),
                "{shape:?} {refused} gave {code}"
            );
        }
        assert_eq!(answer(Rfc7662, json!({"active": true})).unwrap_err().code, AuthFailCode::ClaimMissing);
        assert_eq!(
            answer(Rfc7662, json!({"active": true, "sub": "u", "exp": 999})).unwrap_err().code,
            AuthFailCode::TokenExpired
        );
    }
}
