//! Wrapping keys: under a passphrase (Argon2id, its parameters stored with
//! the wrap) and under another key (AES-256-GCM). Every wrap is a
//! MessagePack map with a format version `v`, and its associated data names
//! its *purpose*, so a wrap made for one slot (the vault's master key, a
//! space's version 3) cannot be passed off as another.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::E2eError;
use super::envelope::{NONCE_LEN, push_str16};

/// The wrap format this code writes and reads.
pub const WRAP_VERSION: u8 = 1;
/// The only key-derivation function of format 1.
pub const KDF_ARGON2ID: &str = "argon2id";
/// Bytes of Argon2 salt.
pub const SALT_LEN: usize = 16;

/// Argon2id (version 0x13) cost parameters, stored with each wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes, 1 lane): a
    /// fraction of a second on a laptop, costly to guess at scale.
    pub const DEFAULT: KdfParams = KdfParams { m: 64 * 1024, t: 3, p: 1 };
    /// Largest memory a wrap may ask for (1 GiB): a wrap read from a vault
    /// cannot make a device allocate without bound.
    pub const MAX_M: u32 = 1024 * 1024;
    /// Most passes a wrap may ask for.
    pub const MAX_T: u32 = 16;
    /// Most lanes a wrap may ask for.
    pub const MAX_P: u32 = 16;

    fn argon2(&self) -> Result<Argon2<'static>, E2eError> {
        if self.m > Self::MAX_M || self.t > Self::MAX_T || self.p > Self::MAX_P {
            return Err(E2eError::Invalid(format!("Argon2id parameters {self:?} exceed the bounds")));
        }
        let params = Params::new(self.m, self.t, self.p, Some(32))
            .map_err(|e| E2eError::Invalid(format!("Argon2id parameters {self:?}: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// The 32-byte key Argon2id derives from `secret` and `salt`.
    pub fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        let mut out = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(secret, salt, out.as_mut())
            .map_err(|e| E2eError::Invalid(format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

/// Key material wrapped under a passphrase (or a recovery code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseWrap {
    /// Format version ([`WRAP_VERSION`]).
    pub v: u8,
    /// Always [`KDF_ARGON2ID`] in format 1; named so a later format can add another.
    pub kdf: String,
    /// The cost the wrap was made with (what unwrapping must pay again).
    #[serde(flatten)]
    pub params: KdfParams,
    /// Random per wrap, so equal passphrases give unrelated keys.
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    /// Random per wrap.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext and tag of the wrapped material.
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// Key material wrapped under another 32-byte key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWrap {
    /// Format version ([`WRAP_VERSION`]).
    pub v: u8,
    /// Random per wrap.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext and tag of the wrapped material.
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// A purpose: labelled, length-prefixed parts (a slot name, a space, a version).
pub fn purpose(parts: &[&str]) -> Result<Vec<u8>, E2eError> {
    let mut out = Vec::new();
    for part in parts {
        push_str16(&mut out, part)?;
    }
    Ok(out)
}

fn passphrase_aad(purpose: &[u8], kdf: &str, params: &KdfParams, salt: &[u8]) -> Result<Vec<u8>, E2eError> {
    let mut aad = b"syncgate-wrap".to_vec();
    aad.push(WRAP_VERSION);
    aad.extend_from_slice(purpose);
    push_str16(&mut aad, kdf)?;
    for n in [params.m, params.t, params.p] {
        aad.extend_from_slice(&n.to_be_bytes());
    }
    aad.extend_from_slice(salt);
    Ok(aad)
}

fn key_aad(purpose: &[u8]) -> Vec<u8> {
    let mut aad = b"syncgate-keywrap".to_vec();
    aad.push(WRAP_VERSION);
    aad.extend_from_slice(purpose);
    aad
}

fn seal(key: &[u8; 32], nonce: &[u8], aad: &[u8], material: &[u8]) -> Result<Vec<u8>, E2eError> {
    Aes256Gcm::new(key.into())
        .encrypt(Nonce::from_slice(nonce), Payload { msg: material, aad })
        .map_err(|_| E2eError::Invalid("AES-GCM refused to encrypt".into()))
}

fn open(key: &[u8; 32], nonce: &[u8], aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    if nonce.len() != NONCE_LEN {
        return Err(E2eError::Malformed(format!("a wrap's nonce has {NONCE_LEN} bytes, not {}", nonce.len())));
    }
    Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| E2eError::Tampered)
}

impl PassphraseWrap {
    /// Wraps `material` under `passphrase` for `purpose`, with fresh salt and nonce.
    pub fn seal(passphrase: &[u8], params: KdfParams, purpose: &[u8], material: &[u8]) -> Result<Self, E2eError> {
        let salt = super::random_bytes::<SALT_LEN>().to_vec();
        let nonce = super::random_bytes::<NONCE_LEN>().to_vec();
        let kek = params.derive(passphrase, &salt)?;
        let aad = passphrase_aad(purpose, KDF_ARGON2ID, &params, &salt)?;
        let ct = seal(&kek, &nonce, &aad, material)?;
        Ok(Self { v: WRAP_VERSION, kdf: KDF_ARGON2ID.into(), params, salt, nonce, ct })
    }

    /// The wrapped material; [`E2eError::Tampered`] for a wrong passphrase
    /// (indistinguishable, by design, from a changed wrap).
    pub fn open(&self, passphrase: &[u8], purpose: &[u8]) -> Result<Zeroizing<Vec<u8>>, E2eError> {
        if self.v != WRAP_VERSION || self.kdf != KDF_ARGON2ID {
            return Err(E2eError::Malformed(format!("unknown wrap format {} / kdf {:?}", self.v, self.kdf)));
        }
        let kek = self.params.derive(passphrase, &self.salt)?;
        let aad = passphrase_aad(purpose, &self.kdf, &self.params, &self.salt)?;
        open(&kek, &self.nonce, &aad, &self.ct)
    }
}

impl KeyWrap {
    /// Wraps `material` under `key` for `purpose`, with a fresh nonce.
    pub fn seal(key: &[u8; 32], purpose: &[u8], material: &[u8]) -> Result<Self, E2eError> {
        let nonce = super::random_bytes::<NONCE_LEN>().to_vec();
        let ct = seal(key, &nonce, &key_aad(purpose), material)?;
        Ok(Self { v: WRAP_VERSION, nonce, ct })
    }

    /// The wrapped material, or why not.
    pub fn open(&self, key: &[u8; 32], purpose: &[u8]) -> Result<Zeroizing<Vec<u8>>, E2eError> {
        if self.v != WRAP_VERSION {
            return Err(E2eError::Malformed(format!("unknown wrap format {}", self.v)));
        }
        open(key, &self.nonce, &key_aad(purpose), &self.ct)
    }
}

/// Encodes a wrap as the MessagePack map that is stored or sent.
pub fn to_bytes<T: Serialize>(wrap: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(wrap).expect("a wrap always encodes")
}

/// Decodes a wrap, refusing bytes that are not one.
pub fn from_bytes<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, E2eError> {
    rmp_serde::from_slice(bytes).map_err(|e| E2eError::Malformed(format!("not a wrap: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams { m: 64, t: 1, p: 1 };

    #[test]
    fn a_passphrase_wrap_opens_only_with_its_passphrase_and_purpose() {
        let purpose = purpose(&["test"]).unwrap();
        let wrap = PassphraseWrap::seal(b"correct horse", CHEAP, &purpose, b"material").unwrap();
        let stored: PassphraseWrap = from_bytes(&to_bytes(&wrap)).unwrap();
        assert_eq!(&stored.open(b"correct horse", &purpose).unwrap()[..], b"material");
        assert!(matches!(stored.open(b"wrong", &purpose), Err(E2eError::Tampered)));
        assert!(matches!(stored.open(b"correct horse", b"other"), Err(E2eError::Tampered)));
        let mut cheaper = stored.clone();
        cheaper.params.t = 2;
        assert!(matches!(cheaper.open(b"correct horse", &purpose), Err(E2eError::Tampered)), "params are bound");
        let mut greedy = stored;
        greedy.params.m = u32::MAX;
        assert!(matches!(greedy.open(b"correct horse", &purpose), Err(E2eError::Invalid(_))), "bounded memory");
    }

    #[test]
    fn a_key_wrap_is_bound_to_its_purpose() {
        let key = [9u8; 32];
        let wrap = KeyWrap::seal(&key, b"a", b"dk").unwrap();
        assert_eq!(&wrap.open(&key, b"a").unwrap()[..], b"dk");
        assert!(matches!(wrap.open(&key, b"b"), Err(E2eError::Tampered)));
        assert!(matches!(wrap.open(&[8u8; 32], b"a"), Err(E2eError::Tampered)));
    }
}
