//! Mode `jwt`: short-lived JSON Web Tokens verified against configured keys.
//!
//! jsonwebtoken checks the signature, the algorithm, `aud`, `iss` and the
//! presence of `exp`/`sub`; `exp` and `nbf` are compared here against the
//! `now` passed in, so that expiry is deterministic under test. The accepted
//! algorithms follow from each key alone: an HMAC secret accepts HS*, an RSA
//! PEM RS*/PS*, an EC PEM exactly its curve's ES*, an Ed25519 PEM EdDSA, a
//! JWKS key its declared (or implied) `alg`. A PEM key is never usable as an
//! HMAC secret and `alg: none` never passes.
//!
//! Keys form a ring: the current HMAC secret, a previous one valid until a
//! configured time (rotation), PEM public keys and JWKS endpoints. The token's
//! `alg` (and `kid`, for JWKS) select the candidate keys.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};
use spki::ObjectIdentifier;

use std::sync::Arc;

use super::jwks::JwksSource;
use super::{AuthError, Authenticator, Identity, VerifyFuture, string_claims};
use crate::protocol::AuthFailCode;

/// Longest token accepted before any parsing (bigger ones are `token_malformed`).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

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
    /// The keys; each fixes the algorithms it accepts.
    pub keys: Vec<JwtKey>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// Accepted `iss` values; empty means `iss` is not checked.
    pub issuer: Vec<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Claim holding an array of roles (a dotted path such as `app_metadata.roles` works).
    pub roles_claim: String,
    /// Claim holding a single role string, used when the roles claim is absent.
    pub role_claim: String,
}

impl JwtSettings {
    /// Settings with the brief's defaults for a key.
    pub fn new(key: JwtKey) -> Self {
        Self {
            keys: vec![key],
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_secs: 30,
            roles_claim: "roles".into(),
            role_claim: "role".into(),
        }
    }
}

/// A configuration error found while building a verifier.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A static key of the ring.
struct StaticKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// Unix seconds after which the key is no longer accepted.
    until: Option<u64>,
}

/// Verifies JWTs against a ring of configured keys.
pub struct JwtVerifier {
    statics: Vec<StaticKey>,
    jwks: Vec<Arc<JwksSource>>,
    /// One validation per algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    leeway_secs: u64,
    roles_claim: Vec<String>,
    role_claim: String,
}

impl JwtVerifier {
    /// Builds a verifier; a PEM that does not parse or a key type that is not
    /// supported is an error naming the problem.
    pub fn new(settings: JwtSettings) -> Result<Self, KeyError> {
        if settings.keys.is_empty() {
            return Err(KeyError("no JWT key configured".into()));
        }
        let mut statics = Vec::new();
        let mut jwks = Vec::new();
        for key in &settings.keys {
            match key {
                JwtKey::Secret(secret) | JwtKey::PreviousSecret { secret, .. } => {
                    if secret.is_empty() {
                        return Err(KeyError("the JWT secret is empty".into()));
                    }
                    let until = if let JwtKey::PreviousSecret { until, .. } = key { Some(*until) } else { None };
                    let algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
                    statics.push(StaticKey { key: DecodingKey::from_secret(secret), algorithms, until });
                }
                JwtKey::PublicKeyPem(pem) => {
                    let (key, algorithms) = public_key(pem)?;
                    statics.push(StaticKey { key, algorithms, until: None });
                }
                JwtKey::Jwks(source) => jwks.push(source.clone()),
            }
        }
        // A configured audience or issuer must also be present: jsonwebtoken
        // alone only rejects a token whose aud/iss is present and wrong.
        let mut required = vec!["exp", "sub"];
        if !settings.audience.is_empty() {
            required.push("aud");
        }
        if !settings.issuer.is_empty() {
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
        let validations = all
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.set_required_spec_claims(&required);
                // exp and nbf are checked in `identity_from_claims` against the `now` passed in.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.leeway = 0;
                if settings.audience.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(&settings.audience);
                }
                if !settings.issuer.is_empty() {
                    validation.set_issuer(&settings.issuer);
                }
                (alg, validation)
            })
            .collect();
        Ok(Self {
            statics,
            jwks,
            validations,
            leeway_secs: settings.leeway_secs,
            roles_claim: settings.roles_claim.split('.').map(str::to_string).collect(),
            role_claim: settings.role_claim,
        })
    }

    /// The algorithms the static keys accept (JWKS keys add theirs when fetched).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = self.statics.iter().flat_map(|k| k.algorithms.iter().copied()).collect();
        all.dedup();
        all
    }

    /// Verifies a token against the static keys as of `now` (Unix seconds).
    pub fn check(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = self.header(token)?;
        let candidates: Vec<DecodingKey> = self.static_candidates(header.alg, now).cloned().collect();
        self.try_keys(token, header.alg, &candidates, now)
    }

    /// Verifies a token against every key of the ring, fetching JWKS keys as needed.
    pub async fn verify_token(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = self.header(token)?;
        let mut candidates: Vec<DecodingKey> = self.static_candidates(header.alg, now).cloned().collect();
        for source in &self.jwks {
            candidates.extend(source.keys_for(header.kid.as_deref(), header.alg).await);
        }
        self.try_keys(token, header.alg, &candidates, now)
    }

    fn header(&self, token: &str) -> Result<PeekedHeader, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::new(AuthFailCode::TokenMalformed, "the token is too long"));
        }
        peek_header(token)
    }

    fn static_candidates(&self, alg: Algorithm, now: u64) -> impl Iterator<Item = &DecodingKey> {
        self.statics
            .iter()
            .filter(move |k| k.algorithms.contains(&alg) && k.until.is_none_or(|until| now < until))
            .map(|k| &k.key)
    }

    /// Tries each candidate key; a claim error after a good signature is final.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        candidates: &[DecodingKey],
        now: u64,
    ) -> Result<Identity, AuthError> {
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(AuthError::new(AuthFailCode::TokenInvalid, format!("algorithm {alg:?} is not accepted")));
        };
        if candidates.is_empty() {
            return Err(AuthError::new(
                AuthFailCode::TokenInvalid,
                format!("no configured key accepts {alg:?} for this token"),
            ));
        }
        let mut last = AuthError::new(AuthFailCode::TokenInvalid, "the token's signature does not verify");
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    return identity_from_claims(
                        data.claims,
                        now,
                        self.leeway_secs,
                        &self.roles_claim,
                        &self.role_claim,
                    );
                }
                Err(e) => {
                    let refusal = refusal(e.kind(), token);
                    if refusal.code != AuthFailCode::TokenInvalid {
                        return Err(refusal);
                    }
                    last = refusal;
                }
            }
        }
        Err(last)
    }
}

/// What the header says, read without trusting it, to pick candidate keys.
struct PeekedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let malformed = || AuthError::new(AuthFailCode::TokenMalformed, "the token is not a well-formed JWT");
    if token.split('.').count() != 3 {
        return Err(malformed());
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let alg = header.alg.parse::<Algorithm>().map_err(|_| {
        AuthError::new(AuthFailCode::TokenInvalid, format!("algorithm {:?} is not accepted", header.alg))
    })?;
    Ok(PeekedHeader { alg, kid: header.kid })
}

fn refusal(kind: &ErrorKind, token: &str) -> AuthError {
    use AuthFailCode as C;
    match kind {
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::new(C::TokenMalformed, "the token is not a well-formed JWT")
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            let alg = header_alg(token).unwrap_or_default();
            AuthError::new(C::TokenInvalid, format!("algorithm {alg:?} is not accepted for the configured key"))
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::new(C::ClaimMissing, format!("the token has no `{claim}` claim"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::new(C::ClaimMissing, format!("the `{claim}` claim has the wrong type"))
        }
        ErrorKind::ExpiredSignature => AuthError::new(C::TokenExpired, "the token has expired"),
        ErrorKind::ImmatureSignature => AuthError::new(C::TokenNotYetValid, "the token is not valid yet"),
        ErrorKind::InvalidAudience => AuthError::new(C::AudienceMismatch, "the token's audience is not accepted"),
        ErrorKind::InvalidIssuer => AuthError::new(C::IssuerMismatch, "the token's issuer is not accepted"),
        _ => AuthError::new(C::TokenInvalid, "the token's signature does not verify"),
    }
}

impl Authenticator for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str, now: u64) -> VerifyFuture<'a> {
        if self.jwks.is_empty() {
            Box::pin(std::future::ready(self.check(token, now)))
        } else {
            Box::pin(self.verify_token(token, now))
        }
    }
}

/// Turns verified claims into an identity, enforcing `exp`, `nbf` and `sub`.
pub(crate) fn identity_from_claims(
    claims: Map<String, Value>,
    now: u64,
    leeway: u64,
    roles_claim: &[String],
    role_claim: &str,
) -> Result<Identity, AuthError> {
    use AuthFailCode as C;
    let exp = numeric_claim(&claims, "exp")?
        .ok_or_else(|| AuthError::new(C::ClaimMissing, "the token has no `exp` claim"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::new(C::TokenExpired, "the token has expired"));
    }
    if let Some(nbf) = numeric_claim(&claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(AuthError::new(C::TokenNotYetValid, "the token is not valid yet"));
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(AuthError::new(C::ClaimMissing, "the token has no non-empty `sub` claim"));
        }
    };
    let roles = roles_from_claims(&claims, roles_claim, role_claim);
    let jti = claims.get("jti").and_then(Value::as_str).map(str::to_string);
    let issued_at = numeric_claim(&claims, "iat").ok().flatten();
    Ok(Identity { sub, roles, expires_at: Some(exp), claims: string_claims(claims), jti, issued_at })
}

fn roles_from_claims(claims: &Map<String, Value>, roles_path: &[String], role_claim: &str) -> Vec<String> {
    let mut node = claims.get(roles_path.first().map(String::as_str).unwrap_or("roles"));
    for segment in roles_path.iter().skip(1) {
        node = node.and_then(|v| v.get(segment));
    }
    match node {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => match claims.get(role_claim) {
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        },
    }
}

/// A NumericDate claim: absent, or seconds (fractions are truncated).
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
            _ => Err(AuthError::new(AuthFailCode::ClaimMissing, format!("the `{name}` claim is not a valid time"))),
        },
        Some(_) => Err(AuthError::new(AuthFailCode::ClaimMissing, format!("the `{name}` claim is not a number"))),
    }
}

/// The `alg` of a token's header, read without trusting it (for error reporting only).
fn header_alg(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    let encoded = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
    serde_json::from_slice::<Header>(&bytes).ok().map(|h| h.alg)
}

/// Reads a PEM public key and the exact algorithms it may verify.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    let spki = match SubjectPublicKeyInfoDer::from_pem_slice(pem) {
        Ok(der) => der,
        Err(_) => {
            // PKCS#1 "RSA PUBLIC KEY" files carry no algorithm identifier.
            return DecodingKey::from_rsa_pem(pem).map(|k| (k, rsa_algorithms())).map_err(|_| {
                KeyError("not a PEM public key (expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)".into())
            });
        }
    };
    let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_ref())
        .map_err(|e| KeyError(format!("the PEM public key does not parse: {e}")))?;
    let oid = info.algorithm.oid;
    let invalid = |e: jsonwebtoken::errors::Error| KeyError(format!("the PEM public key does not parse: {e}"));
    if oid == OID_RSA {
        Ok((DecodingKey::from_rsa_pem(pem).map_err(invalid)?, rsa_algorithms()))
    } else if oid == OID_EC {
        let curve =
            info.algorithm.parameters_oid().map_err(|e| KeyError(format!("EC key without a named curve: {e}")))?;
        let alg = if curve == OID_P256 {
            Algorithm::ES256
        } else if curve == OID_P384 {
            Algorithm::ES384
        } else {
            return Err(KeyError(format!("EC curve {curve} is not supported (use P-256 or P-384)")));
        };
        Ok((DecodingKey::from_ec_pem(pem).map_err(invalid)?, vec![alg]))
    } else if oid == OID_ED25519 {
        Ok((DecodingKey::from_ed_pem(pem).map_err(invalid)?, vec![Algorithm::EdDSA]))
    } else {
        Err(KeyError(format!("public key algorithm {oid} is not supported (use RSA, EC P-256/P-384 or Ed25519)")))
    }
}

/// Every RSA signature algorithm: what an RSA key may verify.
pub(super) fn rsa_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512]
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
