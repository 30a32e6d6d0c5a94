//! The envelope: how one value (a record's or a message's) is sealed with a
//! space's data key, byte for byte as `proto/E2E.md` fixes it.
//!
//! ```text
//! envelope = 0x01 | keyVersion (u32 BE) | nonce (12 random bytes) | AES-256-GCM(ciphertext || tag)
//! aad      = "syncgate-e2e" | 0x01 | kind | str16(space) | keyVersion (u32 BE) | str16(collection or topic) | str16(key)
//! ```
//!
//! The associated data binds the ciphertext to where it lives: moved to
//! another key, collection or space, or relabelled with another key version,
//! it no longer authenticates. The plaintext is the value's MessagePack
//! encoding, so any value the protocol carries round-trips.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rmpv::Value;

use super::E2eError;
use super::keys::DataKey;

/// The envelope format this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the ciphertext: format, key version, nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// AES-GCM's standard 96-bit nonce.
pub const NONCE_LEN: usize = 12;
/// AES-GCM's tag.
pub const TAG_LEN: usize = 16;
/// The label every associated data starts with, so an envelope can never
/// pass for a key wrap or a share (they use other labels).
const AAD_LABEL: &[u8] = b"syncgate-e2e";

/// What a sealed value is: the associated data says which, so a record's
/// ciphertext cannot be replayed as a message or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A record value in a collection (`place` is the collection, `key` the record key).
    Record = 1,
    /// A pub/sub `data` (`place` is the topic, `key` is empty).
    Message = 2,
}

/// Where a sealed value lives; all of it is authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// Record or message.
    pub kind: Kind,
    /// The space whose key seals it.
    pub space: &'a str,
    /// The collection (records) or topic (messages).
    pub place: &'a str,
    /// The record key (empty for messages).
    pub key: &'a str,
}

/// Appends a length-prefixed (u16 BE) string; names are at most 256 bytes by
/// the protocol, spaces are checked when created, so the prefix never wraps.
pub(crate) fn push_str16(out: &mut Vec<u8>, s: &str) -> Result<(), E2eError> {
    let len =
        u16::try_from(s.len()).map_err(|_| E2eError::Invalid(format!("name of {} bytes is too long", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The associated data of an envelope sealed under `version` at `binding`.
pub fn associated_data(binding: &Binding<'_>, version: u32) -> Result<Vec<u8>, E2eError> {
    let mut aad =
        Vec::with_capacity(AAD_LABEL.len() + 16 + binding.space.len() + binding.place.len() + binding.key.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.push(FORMAT_VERSION);
    aad.push(binding.kind as u8);
    push_str16(&mut aad, binding.space)?;
    aad.extend_from_slice(&version.to_be_bytes());
    push_str16(&mut aad, binding.place)?;
    push_str16(&mut aad, binding.key)?;
    Ok(aad)
}

/// Seals `value` under `key` with a fresh random nonce.
pub fn seal(key: &DataKey, binding: &Binding<'_>, value: &Value) -> Result<Vec<u8>, E2eError> {
    seal_with_nonce(key, binding, value, &super::random_bytes::<NONCE_LEN>())
}

/// Seals with a given nonce. Only for test vectors: a nonce must never be
/// used twice with one key, which is why [`seal`] draws it at random.
#[doc(hidden)]
pub fn seal_with_nonce(
    key: &DataKey,
    binding: &Binding<'_>,
    value: &Value,
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, E2eError> {
    let mut plaintext = Vec::new();
    rmpv::encode::write_value(&mut plaintext, value).map_err(|e| E2eError::Invalid(e.to_string()))?;
    let aad = associated_data(binding, key.version)?;
    let cipher = Aes256Gcm::new(key.secret().into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg: &plaintext, aad: &aad })
        .map_err(|_| E2eError::Invalid("AES-GCM refused to encrypt".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&key.version.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key version an envelope names, after checking its format and length.
pub fn key_version(envelope: &[u8]) -> Result<u32, E2eError> {
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Err(E2eError::Malformed(format!(
            "an envelope has at least {} bytes, this one {}",
            HEADER_LEN + TAG_LEN,
            envelope.len()
        )));
    }
    if envelope[0] != FORMAT_VERSION {
        return Err(E2eError::Malformed(format!("unknown envelope format {}", envelope[0])));
    }
    Ok(u32::from_be_bytes([envelope[1], envelope[2], envelope[3], envelope[4]]))
}

/// Opens an envelope sealed at `binding` with `key` (whose version must be
/// the one the envelope names): the value, or why not.
pub fn open(key: &DataKey, binding: &Binding<'_>, envelope: &[u8]) -> Result<Value, E2eError> {
    let version = key_version(envelope)?;
    if version != key.version {
        return Err(E2eError::UnknownKey { space: binding.space.to_string(), version });
    }
    let aad = associated_data(binding, version)?;
    let cipher = Aes256Gcm::new(key.secret().into());
    let plaintext = cipher
        .decrypt(Nonce::from_slice(&envelope[5..HEADER_LEN]), Payload { msg: &envelope[HEADER_LEN..], aad: &aad })
        .map_err(|_| E2eError::Tampered)?;
    let mut reader = plaintext.as_slice();
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| E2eError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(E2eError::Malformed("bytes after the sealed value".into()));
    }
    Ok(value)
}
