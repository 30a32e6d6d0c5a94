//! Sharing a space with another user without the server learning its key.
//!
//! Each user has an X25519 key pair (its private half wrapped in their
//! vault). A *grant* seals one space key to a recipient's public key:
//! an ephemeral X25519 key pair, the shared secret through HKDF-SHA256
//! (salt: both public keys; info: `syncgate-share/1`) into an AES-256-GCM
//! key, and associated data naming the space, the key version and the
//! recipient's `sub`, so a grant cannot be redirected to another space,
//! version or person. (The construction of ECIES / HPKE base mode, from the
//! RustCrypto `x25519-dalek`, `hkdf` and `aes-gcm` crates.)

use aes_gcm::aead::{Aead, OsRng, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::E2eError;
use super::envelope::{NONCE_LEN, push_str16};
use super::keys::DataKey;

/// The grant format this code writes and reads.
pub const GRANT_VERSION: u8 = 1;

/// A user's X25519 key pair.
#[derive(Clone)]
pub struct UserKeys {
    secret: StaticSecret,
    /// What others seal grants to; published (it is not secret).
    pub public: PublicKey,
}

impl std::fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeys").field("public", &self.public.as_bytes()).finish_non_exhaustive()
    }
}

impl UserKeys {
    /// A fresh key pair.
    pub fn generate() -> Self {
        Self::from_secret(StaticSecret::random_from_rng(OsRng).to_bytes())
    }

    /// The pair of a private key (unwrapped from the vault).
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The private key bytes, for wrapping into the vault.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }
}

/// One space key sealed to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Format version ([`GRANT_VERSION`]).
    pub v: u8,
    /// The key version it carries (also bound by the associated data).
    pub version: u32,
    /// The sender's ephemeral public key.
    #[serde(with = "serde_bytes")]
    pub eph: Vec<u8>,
    /// Random per grant.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext and tag of the 32 key bytes.
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

fn grant_cipher(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> Aes256Gcm {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(b"syncgate-share/1", okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Aes256Gcm::new(okm.as_ref().into())
}

fn grant_aad(space: &str, version: u32, recipient_sub: &str) -> Result<Vec<u8>, E2eError> {
    let mut aad = b"syncgate-share".to_vec();
    aad.push(GRANT_VERSION);
    push_str16(&mut aad, space)?;
    aad.extend_from_slice(&version.to_be_bytes());
    push_str16(&mut aad, recipient_sub)?;
    Ok(aad)
}

impl Grant {
    /// Seals `key` of `space` to `recipient` (their public key and `sub`).
    pub fn seal(space: &str, key: &DataKey, recipient: &PublicKey, recipient_sub: &str) -> Result<Self, E2eError> {
        let eph = StaticSecret::random_from_rng(OsRng);
        let eph_public = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(recipient);
        if !shared.was_contributory() {
            return Err(E2eError::Invalid("the recipient's public key is a low-order point".into()));
        }
        let nonce = super::random_bytes::<NONCE_LEN>();
        let cipher = grant_cipher(shared.as_bytes(), eph_public.as_bytes(), recipient.as_bytes());
        let aad = grant_aad(space, key.version, recipient_sub)?;
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: key.secret(), aad: &aad })
            .map_err(|_| E2eError::Invalid("AES-GCM refused to encrypt".into()))?;
        Ok(Self {
            v: GRANT_VERSION,
            version: key.version,
            eph: eph_public.as_bytes().to_vec(),
            nonce: nonce.to_vec(),
            ct,
        })
    }

    /// The key a grant for `space` carries, opened by its recipient.
    pub fn open(&self, space: &str, me: &UserKeys, my_sub: &str) -> Result<DataKey, E2eError> {
        if self.v != GRANT_VERSION {
            return Err(E2eError::Malformed(format!("unknown grant format {}", self.v)));
        }
        let eph: [u8; 32] = self
            .eph
            .as_slice()
            .try_into()
            .map_err(|_| E2eError::Malformed("a grant's public key has 32 bytes".into()))?;
        if self.nonce.len() != NONCE_LEN {
            return Err(E2eError::Malformed("a grant's nonce has 12 bytes".into()));
        }
        let shared = me.secret.diffie_hellman(&PublicKey::from(eph));
        if !shared.was_contributory() {
            return Err(E2eError::Tampered);
        }
        let cipher = grant_cipher(shared.as_bytes(), &eph, me.public.as_bytes());
        let aad = grant_aad(space, self.version, my_sub)?;
        let bytes = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&self.nonce), Payload { msg: &self.ct, aad: &aad })
                .map_err(|_| E2eError::Tampered)?,
        );
        let secret: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| E2eError::Malformed("a granted key has 32 bytes".into()))?;
        Ok(DataKey::from_bytes(self.version, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_recipient_opens_a_grant_for_its_space() {
        let bob = UserKeys::generate();
        let carol = UserKeys::generate();
        let key = DataKey::generate(2);
        let grant = Grant::seal("orgs/acme", &key, &bob.public, "bob").unwrap();
        assert_eq!(grant.open("orgs/acme", &bob, "bob").unwrap().secret(), key.secret());
        assert!(matches!(grant.open("orgs/acme", &carol, "carol"), Err(E2eError::Tampered)));
        assert!(matches!(grant.open("orgs/other", &bob, "bob"), Err(E2eError::Tampered)));
        assert!(matches!(grant.open("orgs/acme", &bob, "carol"), Err(E2eError::Tampered)));
        let relabelled = Grant { version: 3, ..grant };
        assert!(matches!(relabelled.open("orgs/acme", &bob, "bob"), Err(E2eError::Tampered)));
        assert!(Grant::seal("orgs/acme", &key, &PublicKey::from([0u8; 32]), "x").is_err(), "low-order point");
    }
}
