//! End-to-end encryption: values the server stores, merges and routes but
//! cannot read (`proto/E2E.md` fixes every byte).
//!
//! # Layout
//! | module | what |
//! | --- | --- |
//! | [`envelope`] | seal and open one value (AES-256-GCM, bound to space, key version, collection and key) |
//! | [`keys`] | data keys, spaces (collection prefixes) and the versioned keyring |
//! | [`wrap`] | wrapping keys under a passphrase (Argon2id, parameters stored) or another key |
//! | [`recovery`] | the typable recovery secret, the vault recovery code, the QR payload |
//! | [`share`] | X25519 user keys and grants that seal a space key to another user |
//! | [`sharing`] | public keys and grants through the server; removal with rotation |
//! | [`vault`] | the mode-3 vault's items: enrol, unlock by password or recovery code (no I/O) |
//! | [`vault_http`] | the `/vault/{sub}` HTTP endpoints of the server |
//! | [`encrypted`] | [`EncryptedClient`]: a [`crate::Client`] whose values are sealed before they are stamped |

pub mod encrypted;
pub mod envelope;
pub mod keys;
pub mod recovery;
pub mod share;
pub mod sharing;
pub mod vault;
pub mod vault_http;
pub mod wrap;

pub use encrypted::{EncryptedClient, Readout, Unreadable};
pub use keys::{DataKey, Keyring};
pub use share::{Grant, UserKeys};
pub use vault::Unlocked;
pub use vault_http::VaultClient;
pub use wrap::KdfParams;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;

/// Why an encryption step failed. Decryption failures are values, never
/// panics: the app reports them with the record they concern and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// No key of this space/version is held (a rotation not yet received, a space not shared with us).
    #[error("no key version {version} of space {space:?} on this device")]
    UnknownKey {
        /// The space.
        space: String,
        /// The version the envelope names.
        version: u32,
    },
    /// No space held covers this collection or topic.
    #[error("no key covers {name:?}")]
    NoKey {
        /// The collection or topic.
        name: String,
    },
    /// Authentication failed: a wrong key or passphrase, a changed byte, a
    /// ciphertext moved to another record (AES-GCM cannot tell which).
    #[error("the ciphertext does not authenticate (wrong key, tampered, or moved)")]
    Tampered,
    /// Bytes that are not an envelope, wrap or grant of a known format.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A typed recovery secret or code, or a QR payload, that does not check out.
    #[error("bad recovery string: {0}")]
    BadSecret(String),
    /// A stored value that should be an envelope but is not binary.
    #[error("not encrypted: the stored value is not an envelope")]
    NotEncrypted,
    /// A request the caller made wrongly (a bad space name, parameters out of bounds).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The vault could not be reached or refused the request.
    #[error("vault: {0}")]
    Vault(String),
    /// The underlying client failed.
    #[error("client: {0}")]
    Client(String),
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}
