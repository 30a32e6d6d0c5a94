//! Mode `jwt`: short-lived JSON Web Tokens verified against configured keys.
//!
//! jsonwebtoken checks the signature, the algorithm, `aud`, `iss` and the
//! presence of `exp`/`sub`; `exp` and `nbf` are compared against the `now`
//! passed in ([`super::claims`]), so that expiry is deterministic under test.
//! The accepted algorithms follow from each key alone ([`super::keys`]): an
//! HMAC secret accepts HS*, an RSA PEM RS*/PS*, an EC PEM exactly its curve's
//! ES*, an Ed25519 PEM EdDSA, a JWKS key its declared (or implied) `alg`. A
//! PEM key is never usable as an HMAC secret and `alg: none` never passes.
//!
//! Keys are grouped by issuer. With one key source the flat settings apply
//! (`--jwt-secret` and a previous secret during a rotation count as one
//! source). With several, each source is bound to its issuer
//! ([`IssuerSettings`], the `[[issuers]]` tables): a token's `iss` picks its
//! binding, and only that binding's keys, audience and role claims apply, so
//! a token signed by one provider can never pass as another's. An unbound
//! configuration of several sources is refused when the verifier is built.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::claims::identity_from_claims;
use super::jwks::JwksSource;
use super::keys::{HMAC_ALGORITHMS, KeyError, public_key};
use super::peek::{peek_header, peek_issuer, refusal};
use super::{AuthError, Authenticator, Identity, VerifyFuture};
use crate::protocol::AuthFailCode;

/// Longest token accepted before any parsing (bigger ones are `token_malformed`), in every auth mode.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A verification key, as configured.
#[derive(Clone)]
pub enum JwtKey {
    /// An HMAC secret (`--jwt-secret`): HS256/384/512.
    Secret(Vec<u8>),
    /// A previous HMAC secret, accepted until `until` (Unix seconds) during a rotation.
    PreviousSecret {
        /// The old secret.
        secret: Vec<u8>,
        /// When it stops being accepted.
        until: u64,
    },
    /// The contents of a PEM public key file (`--jwt-public-key`).
    PublicKeyPem(Vec<u8>),
    /// A JWKS endpoint (`--jwks-url`).
    Jwks(Arc<JwksSource>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PreviousSecret { until, .. } => write!(f, "PreviousSecret(<redacted>, until {until})"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            JwtKey::Jwks(source) => write!(f, "Jwks({})", source.url()),
        }
    }
}

/// Everything that decides whether a JWT is accepted.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The keys of a single key source (flat configuration); each fixes the algorithms it accepts.
    pub keys: Vec<JwtKey>,
    /// Accepted `aud` values for the flat keys; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// Accepted `iss` values for the flat keys; empty means `iss` is not checked.
    pub issuer: Vec<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Claim holding an array of roles (a dotted path such as `app_metadata.roles` works).
    pub roles_claim: String,
    /// Claim holding a single role string, used when the roles claim is absent.
    pub role_claim: String,
    /// Key sources bound to their issuers (`[[issuers]]`). When given, the
    /// flat `keys`, `audience` and `issuer` must be empty.
    pub issuers: Vec<IssuerSettings>,
}

impl JwtSettings {
    /// Settings with the protocol's defaults for a key (`proto/PROTOCOL.md`).
    pub fn new(key: JwtKey) -> Self {
        Self {
            keys: vec![key],
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_secs: 30,
            roles_claim: "roles".into(),
            role_claim: "role".into(),
            issuers: Vec::new(),
        }
    }

    /// Settings where every key source is bound to its issuer.
    pub fn bound(issuers: Vec<IssuerSettings>) -> Self {
        Self { keys: Vec::new(), issuers, ..Self::new(JwtKey::Secret(Vec::new())) }
    }
}

/// One issuer and the only keys, audience and role claims its tokens are checked with.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The exact `iss` of this provider's tokens.
    pub issuer: String,
    /// Its keys (a JWKS endpoint, a PEM key, an HMAC secret, or several of them).
    pub keys: Vec<JwtKey>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// Claim holding the roles array; the flat setting when absent.
    pub roles_claim: Option<String>,
    /// Claim holding a single role; the flat setting when absent.
    pub role_claim: Option<String>,
    /// What `{iss}` stands for in rules (one path segment); the issuer itself
    /// when absent. It also namespaces the issuer's subjects (see `default`).
    pub name: Option<String>,
    /// This issuer's subjects keep their `sub` as it is. Every other issuer's
    /// become `<name>:<sub>` everywhere a subject counts (rules, revocation,
    /// disconnect, `MESSAGE.from`, presence), so two providers' `alice` are
    /// two people. At most one issuer is the default.
    pub default: bool,
    /// The roles this issuer may grant; any other role in its tokens is
    /// dropped. `None`: every role (a partner's token could then claim any).
    pub roles: Option<Vec<String>>,
}

impl IssuerSettings {
    /// An issuer with its keys, no audience, namespaced subjects and any role.
    pub fn new(issuer: impl Into<String>, keys: Vec<JwtKey>) -> Self {
        Self {
            issuer: issuer.into(),
            keys,
            audience: Vec::new(),
            roles_claim: None,
            role_claim: None,
            name: None,
            default: false,
            roles: None,
        }
    }
}

/// A static key of a binding.
struct StaticKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// Unix seconds after which the key is no longer accepted.
    until: Option<u64>,
}

/// The keys and checks of one issuer (or of the flat configuration).
struct Binding {
    /// What `{iss}` stands for in rules (bound issuers only).
    label: Option<String>,
    statics: Vec<StaticKey>,
    jwks: Vec<Arc<JwksSource>>,
    /// One validation per algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    roles_claim: Vec<String>,
    role_claim: String,
    /// Prefix of this binding's subjects (`<namespace>:<sub>`), if they are namespaced.
    namespace: Option<String>,
    /// The roles this binding may grant (`None`: any).
    allowed_roles: Option<Vec<String>>,
}

/// How a token finds its binding.
enum Bindings {
    /// One key source: every token is checked against it.
    Flat(Binding),
    /// Several sources: the token's `iss` picks exactly one.
    ByIssuer(HashMap<String, Binding>),
}

/// Verifies JWTs against the configured keys.
pub struct JwtVerifier {
    bindings: Bindings,
    leeway_secs: u64,
}

impl JwtVerifier {
    /// Builds a verifier; a PEM that does not parse, a key type that is not
    /// supported, or several unbound key sources is an error naming the problem.
    pub fn new(settings: JwtSettings) -> Result<Self, KeyError> {
        let JwtSettings { keys, audience, issuer, leeway_secs, roles_claim, role_claim, issuers } = settings;
        let bindings = if issuers.is_empty() {
            if keys.is_empty() {
                return Err(KeyError("no JWT key configured".into()));
            }
            let sources = key_sources(&keys);
            if sources > 1 {
                return Err(KeyError(format!(
                    "{sources} JWT key sources are configured but not bound to their issuers: give each its own \
                     [[issuers]] table (issuer, and jwks-url, jwt-public-key or jwt-secret) in the --config file"
                )));
            }
            Bindings::Flat(Binding::new(&keys, &audience, &issuer, &roles_claim, &role_claim, None)?)
        } else {
            if !keys.is_empty() || !audience.is_empty() || !issuer.is_empty() {
                return Err(KeyError(
                    "with [[issuers]] tables, every key, audience and issuer belongs in a table (not in the \
                     --jwt-secret, --jwt-public-key, --jwks-url, --jwt-audience or --jwt-issuer flags)"
                        .into(),
                ));
            }
            if issuers.iter().filter(|table| table.default).count() > 1 {
                return Err(KeyError("at most one [[issuers]] table may be the default".into()));
            }
            let mut map = HashMap::new();
            for table in issuers {
                if table.issuer.is_empty() {
                    return Err(KeyError("an [[issuers]] table has an empty issuer".into()));
                }
                if table.keys.is_empty() {
                    return Err(KeyError(format!("[[issuers]] {:?} has no key", table.issuer)));
                }
                let roles = table.roles_claim.as_deref().unwrap_or(&roles_claim);
                let role = table.role_claim.as_deref().unwrap_or(&role_claim);
                let label = table.name.clone().unwrap_or_else(|| table.issuer.clone());
                let issuer = std::slice::from_ref(&table.issuer);
                let mut binding = Binding::new(&table.keys, &table.audience, issuer, roles, role, Some(label.clone()))
                    .map_err(|KeyError(e)| KeyError(format!("[[issuers]] {:?}: {e}", table.issuer)))?;
                binding.namespace = (!table.default).then_some(label);
                binding.allowed_roles = table.roles.clone();
                if map.insert(table.issuer.clone(), binding).is_some() {
                    return Err(KeyError(format!("[[issuers]] {:?} is given twice", table.issuer)));
                }
            }
            Bindings::ByIssuer(map)
        };
        Ok(Self { bindings, leeway_secs })
    }

    /// The algorithms the static keys accept (JWKS keys add theirs when fetched).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> =
            self.all_bindings().flat_map(|b| b.statics.iter().flat_map(|k| k.algorithms.iter().copied())).collect();
        all.dedup();
        all
    }

    fn all_bindings(&self) -> Box<dyn Iterator<Item = &Binding> + '_> {
        match &self.bindings {
            Bindings::Flat(binding) => Box::new(std::iter::once(binding)),
            Bindings::ByIssuer(map) => Box::new(map.values()),
        }
    }

    /// Verifies a token against the static keys of its binding as of `now` (Unix seconds).
    pub fn check(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = peek_header(token)?;
        let binding = self.binding(token)?;
        binding.try_keys(token, header.alg, binding.static_candidates(header.alg, now), now, self.leeway_secs)
    }

    /// Verifies a token against every key of its binding, fetching JWKS keys as needed.
    pub async fn verify_token(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = peek_header(token)?;
        let binding = self.binding(token)?;
        let mut fetched: Vec<DecodingKey> = Vec::new();
        for source in &binding.jwks {
            fetched.extend(source.keys_for(header.kid.as_deref(), header.alg).await);
        }
        let candidates = binding.static_candidates(header.alg, now).chain(&fetched);
        binding.try_keys(token, header.alg, candidates, now, self.leeway_secs)
    }

    /// The binding that decides this token: the only one, or its issuer's.
    fn binding(&self, token: &str) -> Result<&Binding, AuthError> {
        match &self.bindings {
            Bindings::Flat(binding) => Ok(binding),
            Bindings::ByIssuer(map) => {
                // Read unverified, only to pick the keys; the binding's validation then requires this `iss`.
                // An unknown issuer is answered like a bad signature: the answer
                // must not tell which issuers are configured.
                let iss = peek_issuer(token)?;
                map.get(&iss)
                    .ok_or_else(|| AuthError::new(AuthFailCode::TokenInvalid, "the token's signature does not verify"))
            }
        }
    }

    fn has_jwks(&self) -> bool {
        self.all_bindings().any(|b| !b.jwks.is_empty())
    }
}

/// How many independent key sources `keys` holds: the HMAC secrets count as
/// one (a rotation), every PEM key and JWKS endpoint as one each.
fn key_sources(keys: &[JwtKey]) -> usize {
    let hmac = keys.iter().any(|k| matches!(k, JwtKey::Secret(_) | JwtKey::PreviousSecret { .. }));
    usize::from(hmac) + keys.iter().filter(|k| matches!(k, JwtKey::PublicKeyPem(_) | JwtKey::Jwks(_))).count()
}

impl Binding {
    fn new(
        keys: &[JwtKey],
        audience: &[String],
        issuer: &[String],
        roles_claim: &str,
        role_claim: &str,
        label: Option<String>,
    ) -> Result<Self, KeyError> {
        let mut statics = Vec::new();
        let mut jwks = Vec::new();
        for key in keys {
            match key {
                JwtKey::Secret(secret) | JwtKey::PreviousSecret { secret, .. } => {
                    if secret.is_empty() {
                        return Err(KeyError("the JWT secret is empty".into()));
                    }
                    let until = if let JwtKey::PreviousSecret { until, .. } = key { Some(*until) } else { None };
                    let algorithms = HMAC_ALGORITHMS.to_vec();
                    statics.push(StaticKey { key: DecodingKey::from_secret(secret), algorithms, until });
                }
                JwtKey::PublicKeyPem(pem) => {
                    let (key, algorithms) = public_key(pem)?;
                    statics.push(StaticKey { key, algorithms, until: None });
                }
                JwtKey::Jwks(source) => jwks.push(source.clone()),
            }
        }
        Ok(Self {
            label,
            statics,
            jwks,
            validations: validations(audience, issuer),
            roles_claim: roles_claim.split('.').map(str::to_string).collect(),
            role_claim: role_claim.to_string(),
            namespace: None,
            allowed_roles: None,
        })
    }

    fn static_candidates(&self, alg: Algorithm, now: u64) -> impl Iterator<Item = &DecodingKey> {
        self.statics
            .iter()
            .filter(move |k| k.algorithms.contains(&alg) && k.until.is_none_or(|until| now < until))
            .map(|k| &k.key)
    }

    /// Tries each candidate key; a claim error after a good signature is final.
    fn try_keys<'k>(
        &self,
        token: &str,
        alg: Algorithm,
        candidates: impl IntoIterator<Item = &'k DecodingKey>,
        now: u64,
        leeway: u64,
    ) -> Result<Identity, AuthError> {
        let mut candidates = candidates.into_iter().peekable();
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(AuthError::new(AuthFailCode::TokenInvalid, format!("algorithm {alg:?} is not accepted")));
        };
        if candidates.peek().is_none() {
            return Err(AuthError::new(
                AuthFailCode::TokenInvalid,
                format!("no configured key accepts {alg:?} for this token"),
            ));
        }
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    let mut identity =
                        identity_from_claims(data.claims, now, leeway, &self.roles_claim, &self.role_claim)?;
                    identity.issuer = self.label.clone();
                    if let Some(namespace) = &self.namespace {
                        identity.sub = format!("{namespace}:{}", identity.sub);
                    }
                    if let Some(allowed) = &self.allowed_roles {
                        identity.roles.retain(|role| allowed.contains(role));
                    }
                    return Ok(identity);
                }
                Err(e) => {
                    let refusal = refusal(e.kind(), token);
                    if refusal.code != AuthFailCode::TokenInvalid {
                        return Err(refusal);
                    }
                    last = Some(refusal);
                }
            }
        }
        Err(last.unwrap_or_else(|| AuthError::new(AuthFailCode::TokenInvalid, "the token's signature does not verify")))
    }
}

/// One validation per algorithm for this audience and issuer.
fn validations(audience: &[String], issuer: &[String]) -> Vec<(Algorithm, Validation)> {
    // A configured audience or issuer must also be present: jsonwebtoken
    // alone only rejects a token whose aud/iss is present and wrong.
    let mut required = vec!["exp", "sub"];
    if !audience.is_empty() {
        required.push("aud");
    }
    if !issuer.is_empty() {
        required.push("iss");
    }
    let all = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    all.into_iter()
        .map(|alg| {
            let mut validation = Validation::new(alg);
            validation.set_required_spec_claims(&required);
            // exp and nbf are checked in `identity_from_claims` against the `now` passed in.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.leeway = 0;
            if audience.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(audience);
            }
            if !issuer.is_empty() {
                validation.set_issuer(issuer);
            }
            (alg, validation)
        })
        .collect()
}

impl Authenticator for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str, now: u64) -> VerifyFuture<'a> {
        if !self.has_jwks() {
            Box::pin(std::future::ready(self.check(token, now)))
        } else {
            Box::pin(self.verify_token(token, now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn hs(secret: &str) -> JwtVerifier {
        JwtVerifier::new(JwtSettings::new(JwtKey::Secret(secret.as_bytes().to_vec()))).unwrap()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn expiry_and_not_before_use_the_given_clock_and_leeway() {
        let v = hs("k");
        let ok = sign(json!({"sub": "a", "exp": NOW + 10}), "k");
        assert!(v.check(&ok, NOW).is_ok());
        assert!(v.check(&ok, NOW + 39).is_ok(), "inside the 30 s leeway");
        assert_eq!(v.check(&ok, NOW + 40).unwrap_err().code, AuthFailCode::TokenExpired);
        let early = sign(json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 31}), "k");
        assert_eq!(v.check(&early, NOW).unwrap_err().code, AuthFailCode::TokenNotYetValid);
        assert!(v.check(&early, NOW + 1).is_ok());
    }

    #[test]
    fn required_claims_and_roles() {
        let v = hs("k");
        let no_exp = sign(json!({"sub": "a"}), "k");
        assert_eq!(v.check(&no_exp, NOW).unwrap_err().code, AuthFailCode::ClaimMissing);
        let no_sub = sign(json!({"exp": NOW + 10}), "k");
        assert_eq!(v.check(&no_sub, NOW).unwrap_err().code, AuthFailCode::ClaimMissing);
        let role = sign(json!({"sub": "a", "exp": NOW + 10, "role": "admin", "orgId": "o1"}), "k");
        let id = v.check(&role, NOW).unwrap();
        assert_eq!(id.roles, ["admin"]);
        assert_eq!(id.claims.get("orgId").map(String::as_str), Some("o1"));
        let roles = sign(json!({"sub": "a", "exp": NOW + 10, "roles": ["x", 3, "y"], "role": "z"}), "k");
        assert_eq!(v.check(&roles, NOW).unwrap().roles, ["x", "y"]);
    }

    #[test]
    fn garbage_and_alg_none_are_distinguished() {
        let v = hs("k");
        assert_eq!(v.check("not-a-jwt", NOW).unwrap_err().code, AuthFailCode::TokenMalformed);
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"a","exp":{}}}"#, NOW + 10))
        );
        assert_eq!(v.check(&none, NOW).unwrap_err().code, AuthFailCode::TokenInvalid);
        assert_eq!(
            v.check(&sign(json!({"sub": "a", "exp": NOW + 10}), "other"), NOW).unwrap_err().code,
            AuthFailCode::TokenInvalid
        );
        assert_eq!(v.check(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW).unwrap_err().code, AuthFailCode::TokenMalformed);
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        assert!(
            JwtVerifier::new(JwtSettings::new(JwtKey::PublicKeyPem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec()
            )))
            .is_err()
        );
        assert!(JwtVerifier::new(JwtSettings::new(JwtKey::PublicKeyPem(b"hello".to_vec()))).is_err());
        assert!(JwtVerifier::new(JwtSettings::new(JwtKey::Secret(Vec::new()))).is_err());
    }
}
