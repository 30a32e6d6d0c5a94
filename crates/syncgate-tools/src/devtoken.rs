//! Minting HS256/384/512 tokens for development, tests and the load generator
//! (`syncgate token`), so the quick start needs no identity provider.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// What to put in a development token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The `sub` claim.
    pub sub: String,
    /// The `roles` claim.
    pub roles: Vec<String>,
    /// Lifetime: `exp = now + ttl`.
    pub ttl: Duration,
    /// Optional `aud`.
    pub audience: Option<String>,
    /// Optional `iss`.
    pub issuer: Option<String>,
    /// Extra string claims (`orgId`, `docId`, …).
    pub claims: BTreeMap<String, String>,
    /// HS256, HS384 or HS512.
    pub algorithm: Algorithm,
}

impl TokenSpec {
    /// A one-hour HS256 token for `sub` with `roles`.
    pub fn new(sub: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            sub: sub.into(),
            roles,
            ttl: Duration::from_secs(3600),
            audience: None,
            issuer: None,
            claims: BTreeMap::new(),
            algorithm: Algorithm::HS256,
        }
    }
}

/// Signs `spec` with an HMAC `secret` as of `now` (Unix seconds).
pub fn mint(secret: &[u8], spec: &TokenSpec, now: u64) -> Result<String, jsonwebtoken::errors::Error> {
    let mut claims = Map::new();
    for (k, v) in &spec.claims {
        claims.insert(k.clone(), Value::String(v.clone()));
    }
    claims.insert("sub".into(), Value::String(spec.sub.clone()));
    claims.insert("roles".into(), Value::from(spec.roles.clone()));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now.saturating_add(spec.ttl.as_secs())));
    if let Some(aud) = &spec.audience {
        claims.insert("aud".into(), Value::String(aud.clone()));
    }
    if let Some(iss) = &spec.issuer {
        claims.insert("iss".into(), Value::String(iss.clone()));
    }
    jsonwebtoken::encode(&Header::new(spec.algorithm), &claims, &EncodingKey::from_secret(secret))
}
