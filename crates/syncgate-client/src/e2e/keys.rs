//! Data keys and the keyring: one random 256-bit key per space and version.
//!
//! A *space* is a collection prefix (`users/alice`, `orgs/acme`): it covers
//! the collection of that name and every collection under it
//! (`orgs/acme/todos`), and topics alike. Each space has numbered key
//! versions; new values are sealed with the newest, and every version the
//! keyring holds stays readable, so records written before a rotation still
//! open.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::E2eError;

/// Longest space name: a collection name is at most 256 bytes.
pub const MAX_SPACE_LEN: usize = 256;

/// One data key (DK): 32 random bytes and the version it has in its space.
#[derive(Clone)]
pub struct DataKey {
    /// The version within its space (1 for the first key, +1 per rotation).
    pub version: u32,
    /// Zeroized when dropped, so a freed key does not linger in memory.
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key bytes, not even in a debug log.
        f.debug_struct("DataKey").field("version", &self.version).finish_non_exhaustive()
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate(version: u32) -> Self {
        Self::from_bytes(version, super::random_bytes::<32>())
    }

    /// A key from its bytes (an import, a test vector).
    pub fn from_bytes(version: u32, secret: [u8; 32]) -> Self {
        Self { version, secret: Zeroizing::new(secret) }
    }

    /// The key bytes, for the AEAD and for wrapping.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// Checks a space name: non-empty, at most [`MAX_SPACE_LEN`] bytes, no
/// wildcard, no empty segment (so `orgs/acme` and `orgs/acme/` are not two spaces).
pub fn check_space(space: &str) -> Result<(), E2eError> {
    if space.is_empty() || space.len() > MAX_SPACE_LEN {
        return Err(E2eError::Invalid(format!("a space name has 1 to {MAX_SPACE_LEN} bytes")));
    }
    if space.split('/').any(|segment| segment.is_empty() || segment == "*" || segment == "**") {
        return Err(E2eError::Invalid(format!("space {space:?} has an empty or wildcard segment")));
    }
    Ok(())
}

/// Whether `name` (a collection or topic) lies in `space`.
pub fn in_space(space: &str, name: &str) -> bool {
    name == space || (name.len() > space.len() && name.starts_with(space) && name.as_bytes()[space.len()] == b'/')
}

/// The keys of one space, by version.
#[derive(Debug, Clone, Default)]
pub struct SpaceKeys {
    versions: BTreeMap<u32, DataKey>,
}

impl SpaceKeys {
    /// The newest version: what new values are sealed with.
    pub fn current(&self) -> Option<&DataKey> {
        self.versions.values().next_back()
    }

    /// A given version, if held.
    pub fn version(&self, version: u32) -> Option<&DataKey> {
        self.versions.get(&version)
    }

    /// Every version held, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &DataKey> {
        self.versions.values()
    }
}

/// Every space's keys this device holds.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    spaces: BTreeMap<String, SpaceKeys>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `space` with a fresh version-1 key; refused if the space exists.
    pub fn create_space(&mut self, space: &str) -> Result<&DataKey, E2eError> {
        check_space(space)?;
        if self.spaces.contains_key(space) {
            return Err(E2eError::Invalid(format!("space {space:?} already has keys")));
        }
        self.insert(space, DataKey::generate(1))?;
        Ok(self.current(space).expect("just inserted"))
    }

    /// Adds a key (imported, unwrapped or granted). Adding the same version
    /// with other bytes is refused: two keys under one id would make some
    /// records unreadable depending on which one a device has.
    pub fn insert(&mut self, space: &str, key: DataKey) -> Result<(), E2eError> {
        check_space(space)?;
        if key.version == 0 {
            return Err(E2eError::Invalid("key versions start at 1".into()));
        }
        let keys = self.spaces.entry(space.to_string()).or_default();
        if let Some(held) = keys.versions.get(&key.version) {
            if held.secret() != key.secret() {
                return Err(E2eError::Invalid(format!(
                    "space {space:?} already holds another key as version {}",
                    key.version
                )));
            }
            return Ok(());
        }
        keys.versions.insert(key.version, key);
        Ok(())
    }

    /// Adds a fresh key as the next version of `space` (a rotation) and returns it.
    pub fn rotate(&mut self, space: &str) -> Result<&DataKey, E2eError> {
        let next = self
            .spaces
            .get(space)
            .and_then(SpaceKeys::current)
            .map(|key| key.version + 1)
            .ok_or_else(|| E2eError::NoKey { name: space.to_string() })?;
        self.insert(space, DataKey::generate(next))?;
        Ok(self.current(space).expect("just inserted"))
    }

    /// The keys of `space`.
    pub fn space(&self, space: &str) -> Option<&SpaceKeys> {
        self.spaces.get(space)
    }

    /// The newest key of `space`.
    pub fn current(&self, space: &str) -> Option<&DataKey> {
        self.spaces.get(space).and_then(SpaceKeys::current)
    }

    /// The names of the spaces held.
    pub fn spaces(&self) -> impl Iterator<Item = &str> {
        self.spaces.keys().map(String::as_str)
    }

    /// The space `name` (a collection or topic) belongs to: the longest held
    /// space that covers it, so `orgs/acme/private` can have keys apart from `orgs/acme`.
    pub fn space_of(&self, name: &str) -> Option<&str> {
        self.spaces.keys().filter(|space| in_space(space, name)).max_by_key(|space| space.len()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_cover_their_prefix_by_whole_segments() {
        assert!(in_space("orgs/acme", "orgs/acme"));
        assert!(in_space("orgs/acme", "orgs/acme/todos"));
        assert!(!in_space("orgs/acme", "orgs/acmex"));
        assert!(!in_space("orgs/acme", "orgs"));
        let mut ring = Keyring::new();
        ring.create_space("orgs/acme").unwrap();
        ring.create_space("orgs/acme/private").unwrap();
        assert_eq!(ring.space_of("orgs/acme/private/x"), Some("orgs/acme/private"));
        assert_eq!(ring.space_of("orgs/acme/todos"), Some("orgs/acme"));
        assert_eq!(ring.space_of("orgs/other"), None);
        assert!(check_space("orgs//acme").is_err());
        assert!(check_space("orgs/*").is_err());
    }

    #[test]
    fn rotation_adds_a_version_and_keeps_the_old_one() {
        let mut ring = Keyring::new();
        let first = ring.create_space("users/alice").unwrap().clone();
        let second = ring.rotate("users/alice").unwrap().clone();
        assert_eq!((first.version, second.version), (1, 2));
        assert_ne!(first.secret(), second.secret());
        assert_eq!(ring.space("users/alice").unwrap().version(1).unwrap().secret(), first.secret());
        assert!(ring.insert("users/alice", DataKey::from_bytes(1, [7; 32])).is_err(), "a second key under one id");
    }
}
