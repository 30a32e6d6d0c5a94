//! Mode `token`: one shared secret chosen by the operator.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Identity, VerifyFuture};
use crate::protocol::AuthFailCode;

/// Accepts exactly one static token and grants a configured identity.
pub struct StaticTokenVerifier {
    /// SHA-256 of the secret: comparing digests in constant time hides both
    /// the content and the length of the secret from timing.
    digest: [u8; 32],
    identity: Identity,
}

impl StaticTokenVerifier {
    /// Holders of `secret` authenticate as `identity`.
    pub fn new(secret: &str, identity: Identity) -> Self {
        Self { digest: Sha256::digest(secret.as_bytes()).into(), identity }
    }

    /// Compares `token` with the secret in constant time.
    pub fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(presented.ct_eq(&self.digest)) {
            Ok(self.identity.clone())
        } else {
            Err(AuthError::new(AuthFailCode::TokenInvalid, "the token does not match"))
        }
    }
}

impl Authenticator for StaticTokenVerifier {
    fn verify<'a>(&'a self, token: &'a str, _now: u64) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(self.check(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_passes() {
        let v = StaticTokenVerifier::new("s3cret", Identity::new("holder", vec!["user".into()]));
        assert_eq!(v.check("s3cret").unwrap().sub, "holder");
        for wrong in ["s3cre", "s3cret ", "S3CRET", "", "s3cret\0"] {
            assert_eq!(v.check(wrong).unwrap_err().code, AuthFailCode::TokenInvalid);
        }
    }
}
