//! [`EncryptedClient`]: the app reads and writes plaintext, the replica,
//! the outbox, the state file and the server hold envelopes.
//!
//! A value is sealed *before* it is handed to [`Client::write`], so it is
//! stamped and queued as ciphertext (MessagePack `bin`) and never exists in
//! clear outside the app's own memory. Deletes stay `nil` tombstones: there
//! is nothing to hide in an absence, and the server must see them to merge.
//! A record that does not open (no key for its version, a changed byte, a
//! ciphertext moved from another record) is reported in
//! [`Readout::unreadable`] with its collection and key and left as it is.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rmpv::Value;

use super::E2eError;
use super::envelope::{self, Binding, Kind};
use super::keys::Keyring;
use crate::{Client, Delivery};

/// A record that did not open, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its collection.
    pub collection: String,
    /// Its key.
    pub key: String,
    /// Why it did not open.
    pub error: E2eError,
}

/// A collection's records, opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readout {
    /// The records that opened, by key.
    pub values: BTreeMap<String, Value>,
    /// Those that did not (left untouched in the replica).
    pub unreadable: Vec<Unreadable>,
}

/// A [`Client`] whose record values (and, through [`EncryptedClient::publish`],
/// messages) are sealed with the keyring's space keys.
pub struct EncryptedClient {
    client: Client,
    /// Shared so a key received later (a grant, a rotation) serves every handle at once.
    keyring: Arc<RwLock<Keyring>>,
}

impl EncryptedClient {
    /// Wraps `client`; values of collections no space covers are refused, never sent in clear.
    pub fn new(client: Client, keyring: Keyring) -> Self {
        Self { client, keyring: Arc::new(RwLock::new(keyring)) }
    }

    /// The client underneath (sync, subscribe, close, events).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The keyring, to read.
    pub fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The keyring, to add keys (an import, a grant, a rotation).
    pub fn keyring_mut(&self) -> RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Seals `value` with the current key of the space covering `collection`, then writes it.
    pub async fn write(&self, collection: &str, key: &str, value: &Value) -> Result<String, E2eError> {
        let sealed = self.seal(Kind::Record, collection, key, value)?;
        self.client.write(collection, key, Value::Binary(sealed)).await.map_err(|e| E2eError::Client(e.to_string()))
    }

    /// Deletes a record (a `nil` tombstone, as without encryption).
    pub async fn delete(&self, collection: &str, key: &str) -> Result<String, E2eError> {
        self.client.write(collection, key, Value::Nil).await.map_err(|e| E2eError::Client(e.to_string()))
    }

    /// One record, opened: `None` when absent or deleted.
    pub fn get(&self, collection: &str, key: &str) -> Option<Result<Value, E2eError>> {
        let stored = self.client.get(collection, key)?;
        if stored.is_nil() {
            return None;
        }
        Some(self.open(Kind::Record, collection, key, &stored))
    }

    /// Every record of `collection`, opened; those that do not open are listed apart.
    pub fn entries(&self, collection: &str) -> Readout {
        let mut readout = Readout::default();
        for (key, stored) in self.client.records(collection) {
            match self.open(Kind::Record, collection, &key, &stored) {
                Ok(value) => {
                    readout.values.insert(key, value);
                }
                Err(error) => readout.unreadable.push(Unreadable { collection: collection.to_string(), key, error }),
            }
        }
        readout
    }

    /// Publishes `data` sealed with the key of the space covering `topic`.
    pub async fn publish(&self, topic: &str, data: &Value) -> Result<(), E2eError> {
        let sealed = self.seal(Kind::Message, topic, "", data)?;
        self.client.publish(topic, Value::Binary(sealed)).await.map(drop).map_err(|e| E2eError::Client(e.to_string()))
    }

    /// Opens a delivered message.
    pub fn open_message(&self, delivery: &Delivery) -> Result<Value, E2eError> {
        self.open(Kind::Message, &delivery.topic, "", &delivery.data)
    }

    fn seal(&self, kind: Kind, place: &str, key: &str, value: &Value) -> Result<Vec<u8>, E2eError> {
        let keyring = self.keyring();
        let space = keyring.space_of(place).ok_or_else(|| E2eError::NoKey { name: place.to_string() })?;
        let data_key = keyring.current(space).ok_or_else(|| E2eError::NoKey { name: place.to_string() })?;
        envelope::seal(data_key, &Binding { kind, space, place, key }, value)
    }

    fn open(&self, kind: Kind, place: &str, key: &str, stored: &Value) -> Result<Value, E2eError> {
        let Value::Binary(sealed) = stored else {
            return Err(E2eError::NotEncrypted);
        };
        let keyring = self.keyring();
        let space = keyring.space_of(place).ok_or_else(|| E2eError::NoKey { name: place.to_string() })?;
        let version = envelope::key_version(sealed)?;
        let data_key = keyring
            .space(space)
            .and_then(|keys| keys.version(version))
            .ok_or_else(|| E2eError::UnknownKey { space: space.to_string(), version })?;
        envelope::open(data_key, &Binding { kind, space, place, key }, sealed)
    }
}
