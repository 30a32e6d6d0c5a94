//! Reading a JWT before verifying it: the header (to pick candidate keys and
//! refuse unknown algorithms and critical extensions before any key is
//! tried), the issuer (to pick its binding), and the refusal for a failed
//! check. Nothing read here is trusted: it only narrows which keys may verify.

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use serde_json::Value;

use super::{AuthError, MAX_TOKEN_BYTES};
use crate::protocol::AuthFailCode;

/// What the header says, read without trusting it, to pick candidate keys.
pub(super) struct PeekedHeader {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
}

/// Reads the header, refusing oversized tokens, unknown algorithms and any
/// critical extension (RFC 7515 §4.1.11: this server understands none).
pub(super) fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        crit: Option<Value>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::new(AuthFailCode::TokenMalformed, "the token is too long"));
    }
    let malformed = || AuthError::new(AuthFailCode::TokenMalformed, "the token is not a well-formed JWT");
    if token.split('.').count() != 3 {
        return Err(malformed());
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if header.crit.is_some() {
        return Err(AuthError::new(
            AuthFailCode::TokenInvalid,
            "the token names critical header extensions (crit) this server does not understand",
        ));
    }
    let alg = header.alg.parse::<Algorithm>().map_err(|_| {
        AuthError::new(AuthFailCode::TokenInvalid, format!("algorithm {:?} is not accepted", header.alg))
    })?;
    Ok(PeekedHeader { alg, kid: header.kid })
}

/// The token's `iss`, read without trusting it, to choose the issuer's binding.
pub(super) fn peek_issuer(token: &str) -> Result<String, AuthError> {
    let malformed = || AuthError::new(AuthFailCode::TokenMalformed, "the token is not a well-formed JWT");
    let encoded = token.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) else { return Err(malformed()) };
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err(AuthError::new(AuthFailCode::ClaimMissing, "the token has no `iss` claim naming its issuer")),
    }
}

pub(super) fn refusal(kind: &ErrorKind, token: &str) -> AuthError {
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
