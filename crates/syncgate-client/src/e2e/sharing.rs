//! Sharing through the server: public keys in a per-user directory
//! collection, grants in the shared space's own grants collection. The
//! server routes and stores both and can read neither key: a public key is
//! public, a grant is sealed to its recipient ([`super::share`]).
//!
//! | what | collection | key | value |
//! | --- | --- | --- | --- |
//! | a user's public key | `{directory}/{sub}` | `x25519` | `bin` 32 bytes |
//! | a grant | `{space}/_e2e/grants` | `{version}/{recipient sub}` | `bin` (a MessagePack [`Grant`]) |
//!
//! Rules should let each user write only their own directory collection
//! (`{directory}/{sub}`), so nobody can swap another user's key. The server
//! could still hand out a forged key: apps that need to rule that out
//! compare [`fingerprint`]s out of band, as messengers compare safety numbers.
//!
//! Removing a member is [`EncryptedClient::rotate`] (new writes use the new
//! version) and, to close the records written before as well,
//! [`EncryptedClient::reseal`] on each collection of the space.

use rmpv::Value;
use sha2::{Digest, Sha256};
use x25519_dalek::PublicKey;

use super::E2eError;
use super::encrypted::EncryptedClient;
use super::share::{Grant, UserKeys};
use super::wrap;

/// The record key of a public key in a directory collection.
pub const PUBLIC_KEY_RECORD: &str = "x25519";

/// The collection holding `space`'s grants.
pub fn grants_collection(space: &str) -> String {
    format!("{space}/_e2e/grants")
}

/// The directory collection of `sub`.
pub fn directory_collection(directory: &str, sub: &str) -> String {
    format!("{directory}/{sub}")
}

/// A short, comparable fingerprint of a public key (hex of SHA-256's first 10 bytes, in groups of 4).
pub fn fingerprint(public: &PublicKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    let hex = data_encoding::HEXUPPER.encode(&digest[..10]);
    hex.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("hex is ASCII")).collect::<Vec<_>>().join(" ")
}

impl EncryptedClient {
    /// Publishes `keys.public` as `sub`'s public key in `directory`.
    pub async fn publish_public_key(&self, directory: &str, sub: &str, keys: &UserKeys) -> Result<(), E2eError> {
        let value = Value::Binary(keys.public.as_bytes().to_vec());
        self.client()
            .write(&directory_collection(directory, sub), PUBLIC_KEY_RECORD, value)
            .await
            .map(drop)
            .map_err(|e| E2eError::Client(e.to_string()))
    }

    /// `sub`'s public key as the local replica holds it (sync
    /// `{directory}/{sub}` first); `None` until it arrived.
    pub fn public_key_of(&self, directory: &str, sub: &str) -> Result<Option<PublicKey>, E2eError> {
        match self.client().get(&directory_collection(directory, sub), PUBLIC_KEY_RECORD) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Binary(bytes)) => {
                let bytes: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| E2eError::Malformed("a public key has 32 bytes".into()))?;
                Ok(Some(PublicKey::from(bytes)))
            }
            Some(_) => Err(E2eError::Malformed(format!("{sub}'s public key is not binary"))),
        }
    }

    /// Grants the current key of `space` to `recipient` (their `sub` and public key).
    pub async fn grant(&self, space: &str, recipient_sub: &str, recipient: &PublicKey) -> Result<u32, E2eError> {
        let grant = {
            let keyring = self.keyring();
            let key = keyring.current(space).ok_or_else(|| E2eError::NoKey { name: space.to_string() })?;
            Grant::seal(space, key, recipient, recipient_sub)?
        };
        let record = format!("{}/{recipient_sub}", grant.version);
        self.client()
            .write(&grants_collection(space), &record, Value::Binary(wrap::to_bytes(&grant)))
            .await
            .map_err(|e| E2eError::Client(e.to_string()))?;
        Ok(grant.version)
    }

    /// Removes `removed` from `space`: a new key version, granted to each of
    /// `remaining` (their subs and public keys). New writes use it; records
    /// written before stay under the old version, which the removed member
    /// may hold, until they are written again.
    pub async fn rotate(&self, space: &str, remaining: &[(String, PublicKey)]) -> Result<u32, E2eError> {
        let version = self.keyring_mut().rotate(space)?.version;
        for (sub, public) in remaining {
            self.grant(space, sub, public).await?;
        }
        Ok(version)
    }

    /// Writes again, under the current key, every record of `collection` that
    /// opens but was sealed with an older version: after a removal, this
    /// closes the old records to the removed member too (who may still have
    /// kept what they read before). Returns how many were resealed; records
    /// that do not open are left as they are (they are in [`EncryptedClient::entries`]'s report).
    pub async fn reseal(&self, collection: &str) -> Result<usize, E2eError> {
        let current = {
            let keyring = self.keyring();
            let space = keyring.space_of(collection).ok_or_else(|| E2eError::NoKey { name: collection.to_string() })?;
            keyring
                .current(space)
                .map(|key| key.version)
                .ok_or_else(|| E2eError::NoKey { name: collection.to_string() })?
        };
        let mut resealed = 0;
        for (key, value) in self.entries(collection).values {
            let older = match self.client().get(collection, &key) {
                Some(Value::Binary(sealed)) => super::envelope::key_version(&sealed)? < current,
                _ => false,
            };
            if older {
                self.write(collection, &key, &value).await?;
                resealed += 1;
            }
        }
        Ok(resealed)
    }

    /// Opens every grant for `me` in `space`'s grants collection (sync it
    /// first) and adds the keys to the keyring; returns the versions added.
    /// A grant that does not open is skipped and reported, never fatal.
    pub fn accept_grants(&self, space: &str, me: &UserKeys, my_sub: &str) -> (Vec<u32>, Vec<(String, E2eError)>) {
        let suffix = format!("/{my_sub}");
        let (mut added, mut failed) = (Vec::new(), Vec::new());
        for (record, value) in self.client().records(&grants_collection(space)) {
            if !record.ends_with(&suffix) {
                continue;
            }
            let opened = match value {
                Value::Binary(bytes) => {
                    wrap::from_bytes::<Grant>(&bytes).and_then(|grant| grant.open(space, me, my_sub))
                }
                _ => Err(E2eError::NotEncrypted),
            };
            match opened.and_then(|key| {
                let version = key.version;
                let fresh = self.keyring().space(space).and_then(|keys| keys.version(version)).is_none();
                self.keyring_mut().insert(space, key).map(|()| fresh.then_some(version))
            }) {
                Ok(Some(version)) => added.push(version),
                Ok(None) => {}
                Err(error) => failed.push((record, error)),
            }
        }
        (added, failed)
    }
}
