//! Keys from a JWKS endpoint, cached and refreshed.
//!
//! The URL comes from configuration only: nothing in a token (`iss`, `kid`,
//! `jku`, `x5u`) ever chooses where to fetch. Keys are cached by `kid`;
//! `Cache-Control: max-age` is honoured within bounds and the set is
//! refreshed in the background before it expires. A failed refresh keeps the
//! cached keys. A token with an unknown `kid` triggers at most one fetch per
//! cooldown, and concurrent callers wait for that one fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use crate::http_client::{HttpClient, HttpError};

/// Timing policy of a JWKS source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Shortest time a fetched set is trusted (a smaller `max-age` is raised to it).
    pub min_ttl: Duration,
    /// Longest time a fetched set is trusted, and the TTL when no `max-age` is sent.
    pub max_ttl: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub unknown_kid_cooldown: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(10),
        }
    }
}

/// One usable key of a set.
#[derive(Clone)]
struct Entry {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Clone, Default)]
struct KeySet {
    by_kid: HashMap<String, Entry>,
    /// Keys published without a `kid`.
    unnamed: Vec<Entry>,
}

/// Fetch bookkeeping, behind the mutex that makes fetches single-flight.
struct FetchState {
    last_attempt: Option<Instant>,
    expires_at: Option<Instant>,
}

/// A JWKS endpoint and its cached keys.
pub struct JwksSource {
    url: String,
    http: HttpClient,
    policy: JwksPolicy,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchState>,
    refresher: AtomicBool,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource").field("url", &self.url).finish()
    }
}

impl JwksSource {
    /// A source for `url` (checked by [`crate::http_client::check_url`] beforehand).
    pub fn new(url: impl Into<String>, http: HttpClient, policy: JwksPolicy) -> Arc<Self> {
        Arc::new(Self {
            url: url.into(),
            http,
            policy,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetch: tokio::sync::Mutex::new(FetchState { last_attempt: None, expires_at: None }),
            refresher: AtomicBool::new(false),
        })
    }

    /// The configured URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keys that may verify a token with this `kid` and `alg`, fetching once
    /// (within the cooldown) when the `kid` is unknown.
    pub async fn keys_for(self: &Arc<Self>, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        self.start_refresher();
        let found = lookup(&self.current(), kid, alg);
        if !found.is_empty() {
            return found;
        }
        // A failed fetch leaves the cached set in place; the lookup decides.
        let _ = self.refetch(true).await;
        lookup(&self.current(), kid, alg)
    }

    /// Fetches the set unless a fetch happened within the cooldown (`respect_cooldown`);
    /// concurrent callers queue on the mutex and reuse the result.
    async fn refetch(&self, respect_cooldown: bool) -> Result<(), HttpError> {
        let mut state = self.fetch.lock().await;
        if respect_cooldown && state.last_attempt.is_some_and(|t| t.elapsed() < self.policy.unknown_kid_cooldown) {
            return Ok(());
        }
        state.last_attempt = Some(Instant::now());
        match self.download().await {
            Ok((set, ttl)) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                state.expires_at = Some(Instant::now() + ttl);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the cached keys");
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<(KeySet, Duration), HttpError> {
        let response = self.http.get(&self.url).await?;
        if response.status != 200 {
            return Err(HttpError(format!("status {}", response.status)));
        }
        let set = parse_set(&response.body)?;
        let ttl = response.max_age.unwrap_or(self.policy.max_ttl).clamp(self.policy.min_ttl, self.policy.max_ttl);
        tracing::info!(url = %self.url, keys = set.by_kid.len() + set.unnamed.len(), ?ttl, "JWKS fetched");
        Ok((set, ttl))
    }

    /// Refreshes the set in the background shortly before it expires.
    fn start_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let Some(source) = weak.upgrade() else { return };
                let expires_at = source.fetch.lock().await.expires_at;
                let wake = match expires_at {
                    // Refresh a little before the set expires.
                    Some(at) => at.checked_sub(source.policy.min_ttl / 10).unwrap_or(at),
                    None => Instant::now(),
                };
                drop(source);
                tokio::time::sleep_until(wake).await;
                let Some(source) = weak.upgrade() else { return };
                match source.refetch(false).await {
                    Ok(()) => retry = Duration::from_secs(1),
                    Err(_) => {
                        drop(source);
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }
}

fn lookup(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
    let usable = |e: &Entry| e.algorithms.contains(&alg).then(|| e.key.clone());
    match kid {
        Some(kid) => set.by_kid.get(kid).and_then(usable).into_iter().collect(),
        None => set.unnamed.iter().chain(set.by_kid.values()).filter_map(usable).collect(),
    }
}

/// Parses a JWKS document, skipping keys that are not usable for signatures.
fn parse_set(body: &[u8]) -> Result<KeySet, HttpError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| HttpError(format!("not a JWKS document: {e}")))?;
    let mut set = KeySet::default();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(entry) = entry(&jwk) else { continue };
        match &jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid.clone(), entry);
            }
            None => set.unnamed.push(entry),
        }
    }
    Ok(set)
}

/// A key and the algorithms it may verify: the JWK's `alg` when given (and
/// consistent with its type), else what its type implies. A symmetric (`oct`)
/// key is never used: a key set is a public document, so a secret published in
/// it would let anyone sign tokens.
fn entry(jwk: &Jwk) -> Option<Entry> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        tracing::warn!(kid = ?jwk.common.key_id, "ignoring a symmetric (oct) key published in a JWKS");
        return None;
    }
    let implied: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => super::keys::rsa_algorithms(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(match alg {
            KeyAlgorithm::HS256 => Algorithm::HS256,
            KeyAlgorithm::HS384 => Algorithm::HS384,
            KeyAlgorithm::HS512 => Algorithm::HS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return None,
        }),
    };
    let algorithms = match declared {
        Some(alg) if implied.contains(&alg) => vec![alg],
        Some(_) => return None,
        None => implied,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Entry { key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_need_a_consistent_alg_and_signature_use() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h1", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ"},
            {"kty": "oct", "kid": "h2", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "h3", "alg": "RS256", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]});
        let set = parse_set(body.to_string().as_bytes()).unwrap();
        assert!(set.by_kid.is_empty(), "oct keys are never used, RSA for encryption neither");
        assert_eq!(set.unnamed.len(), 1);
        assert_eq!(set.unnamed[0].algorithms, [Algorithm::EdDSA]);
        assert!(lookup(&set, None, Algorithm::ES256).is_empty(), "the key's type fixes its algorithms");
        assert!(parse_set(b"{}").is_err());
    }
}
