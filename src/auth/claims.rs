//! Verified JWT claims → an [`Identity`]: `exp`, `nbf`, `sub`, roles, claims.

use serde_json::{Map, Value};

use super::{AuthError, Identity, string_claims};
use crate::protocol::AuthFailCode;

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
    let claims = string_claims(claims);
    Ok(Identity { sub, roles, expires_at: Some(exp), claims, jti, issued_at, issuer: None })
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
