//! Verification keys from PEM files, and the algorithms each key may verify.
//!
//! The key alone fixes its algorithms: an RSA key RS*/PS*, an EC key exactly
//! its curve's ES*, an Ed25519 key EdDSA. Nothing in a token can widen that.

use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use spki::ObjectIdentifier;

/// A configuration error found while building a verifier (a key that does
/// not parse, a missing or repeated issuer).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub(crate) String);

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The HMAC algorithms: what a shared secret may verify.
pub(crate) const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Reads a PEM public key and the exact algorithms it may verify.
pub(crate) fn public_key(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
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
pub(crate) fn rsa_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512]
}
