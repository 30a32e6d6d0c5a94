//! The mode-3 vault's contents, without I/O: what enrolment stores, and how a
//! device unlocks with the password or the recovery code.
//!
//! A random 256-bit vault master key (VMK) is wrapped twice: under the
//! password (`master/password`) and under the recovery code shown once at
//! enrolment (`master/recovery`), both with Argon2id. Everything else is
//! wrapped under the VMK: the user's X25519 private key (`identity`) and
//! each space key (`keys/{version}/{space}`). So changing the password
//! rewraps one item, and the server only ever holds wraps: never the
//! password, the recovery code, the VMK or a data key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::E2eError;
use super::keys::{DataKey, Keyring, check_space};
use super::recovery::{new_recovery_code, parse_recovery_code};
use super::share::UserKeys;
use super::wrap::{self, KdfParams, KeyWrap, PassphraseWrap, purpose};

/// The password wrap of the master key.
pub const MASTER_BY_PASSWORD: &str = "master/password";
/// The recovery-code wrap of the master key.
pub const MASTER_BY_RECOVERY: &str = "master/recovery";
/// The user's key pair.
pub const IDENTITY: &str = "identity";
/// The prefix of space keys: `keys/{version}/{space}`.
pub const KEYS_PREFIX: &str = "keys/";

/// The `identity` item: the public key in clear, the private key wrapped.
#[derive(Debug, Serialize, Deserialize)]
struct IdentityItem {
    v: u8,
    #[serde(with = "serde_bytes")]
    public: Vec<u8>,
    secret: KeyWrap,
}

/// A `keys/…` item: which key it is, and the key wrapped under the VMK.
#[derive(Debug, Serialize, Deserialize)]
struct SpaceKeyItem {
    space: String,
    version: u32,
    wrap: KeyWrap,
}

/// A vault opened on this device: the master key, the user's key pair and the space keys.
pub struct Unlocked {
    sub: String,
    master: Zeroizing<[u8; 32]>,
    /// The user's X25519 key pair (for grants).
    pub user: UserKeys,
    /// Every space key the vault held (plus any added since).
    pub keyring: Keyring,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked").field("sub", &self.sub).field("keyring", &self.keyring).finish_non_exhaustive()
    }
}

/// What enrolment produced: the items to store, the recovery code to show
/// the user once, and the unlocked vault.
#[derive(Debug)]
pub struct Enrolment {
    /// `(item name, bytes)` to put in the vault.
    pub items: Vec<(String, Vec<u8>)>,
    /// Show it once; it is never stored anywhere in clear.
    pub recovery_code: String,
    /// The vault, open.
    pub unlocked: Unlocked,
}

fn master_purpose(sub: &str, by: &str) -> Result<Vec<u8>, E2eError> {
    purpose(&["vault-master", sub, by])
}

/// The item name of a space key.
pub fn key_item(space: &str, version: u32) -> String {
    format!("{KEYS_PREFIX}{version}/{space}")
}

/// A new vault for `sub`: a fresh master key and key pair, wrapped under
/// `password` and a fresh recovery code.
pub fn enrol(sub: &str, password: &str, params: KdfParams) -> Result<Enrolment, E2eError> {
    if password.is_empty() {
        return Err(E2eError::Invalid("an empty password".into()));
    }
    let master = Zeroizing::new(super::random_bytes::<32>());
    let recovery_code = new_recovery_code(sub)?;
    let by_password = PassphraseWrap::seal(password.as_bytes(), params, &master_purpose(sub, "password")?, &*master)?;
    let code_secret = parse_recovery_code(sub, &recovery_code)?;
    let by_recovery = PassphraseWrap::seal(&code_secret, params, &master_purpose(sub, "recovery")?, &*master)?;
    let unlocked = Unlocked { sub: sub.to_string(), master, user: UserKeys::generate(), keyring: Keyring::new() };
    let items = vec![
        (MASTER_BY_PASSWORD.to_string(), wrap::to_bytes(&by_password)),
        (MASTER_BY_RECOVERY.to_string(), wrap::to_bytes(&by_recovery)),
        (IDENTITY.to_string(), unlocked.identity_item()?),
    ];
    Ok(Enrolment { items, recovery_code, unlocked })
}

/// Opens a vault's `items` with the password.
pub fn unlock_with_password(
    sub: &str,
    password: &str,
    items: &BTreeMap<String, Vec<u8>>,
) -> Result<Unlocked, E2eError> {
    let wrap: PassphraseWrap = wrap::from_bytes(item(items, MASTER_BY_PASSWORD)?)?;
    let master = wrap.open(password.as_bytes(), &master_purpose(sub, "password")?)?;
    Unlocked::open(sub, &master, items)
}

/// Opens a vault's `items` with the recovery code (a lost password).
pub fn unlock_with_recovery_code(
    sub: &str,
    code: &str,
    items: &BTreeMap<String, Vec<u8>>,
) -> Result<Unlocked, E2eError> {
    let secret = parse_recovery_code(sub, code)?;
    let wrap: PassphraseWrap = wrap::from_bytes(item(items, MASTER_BY_RECOVERY)?)?;
    let master = wrap.open(&secret, &master_purpose(sub, "recovery")?)?;
    Unlocked::open(sub, &master, items)
}

fn item<'a>(items: &'a BTreeMap<String, Vec<u8>>, name: &str) -> Result<&'a [u8], E2eError> {
    items
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| E2eError::Vault(format!("the vault has no {name:?}: not enrolled")))
}

impl Unlocked {
    fn open(sub: &str, master: &[u8], items: &BTreeMap<String, Vec<u8>>) -> Result<Self, E2eError> {
        let master: [u8; 32] =
            master.try_into().map_err(|_| E2eError::Malformed("a master key has 32 bytes".into()))?;
        let master = Zeroizing::new(master);
        let identity: IdentityItem = wrap::from_bytes(item(items, IDENTITY)?)?;
        let secret = identity.secret.open(&master, &purpose(&["identity", sub])?)?;
        let secret: [u8; 32] =
            secret.as_slice().try_into().map_err(|_| E2eError::Malformed("a private key has 32 bytes".into()))?;
        let user = UserKeys::from_secret(secret);
        if user.public.as_bytes().as_slice() != identity.public.as_slice() {
            return Err(E2eError::Malformed("the identity's public key does not match its private key".into()));
        }
        let mut unlocked = Self { sub: sub.to_string(), master, user, keyring: Keyring::new() };
        for (name, bytes) in items.range(KEYS_PREFIX.to_string()..) {
            if !name.starts_with(KEYS_PREFIX) {
                break;
            }
            let entry: SpaceKeyItem = wrap::from_bytes(bytes)?;
            if key_item(&entry.space, entry.version) != *name {
                return Err(E2eError::Malformed(format!("vault item {name:?} holds another key")));
            }
            let key =
                entry.wrap.open(&unlocked.master, &purpose(&["dk", sub, &entry.space, &entry.version.to_string()])?)?;
            let key: [u8; 32] =
                key.as_slice().try_into().map_err(|_| E2eError::Malformed("a data key has 32 bytes".into()))?;
            unlocked.keyring.insert(&entry.space, DataKey::from_bytes(entry.version, key))?;
        }
        Ok(unlocked)
    }

    /// The vault's owner.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    fn identity_item(&self) -> Result<Vec<u8>, E2eError> {
        let secret = KeyWrap::seal(&self.master, &purpose(&["identity", &self.sub])?, &*self.user.secret_bytes())?;
        Ok(wrap::to_bytes(&IdentityItem { v: 1, public: self.user.public.as_bytes().to_vec(), secret }))
    }

    /// The vault item that stores `key` of `space` (wrapped under the master key).
    pub fn key_item(&self, space: &str, key: &DataKey) -> Result<(String, Vec<u8>), E2eError> {
        check_space(space)?;
        let wrap =
            KeyWrap::seal(&self.master, &purpose(&["dk", &self.sub, space, &key.version.to_string()])?, key.secret())?;
        let item = SpaceKeyItem { space: space.to_string(), version: key.version, wrap };
        Ok((key_item(space, key.version), wrap::to_bytes(&item)))
    }

    /// The password wrap to store after a password change (the recovery wrap stays).
    pub fn password_item(&self, new_password: &str, params: KdfParams) -> Result<(String, Vec<u8>), E2eError> {
        if new_password.is_empty() {
            return Err(E2eError::Invalid("an empty password".into()));
        }
        let wrap = PassphraseWrap::seal(
            new_password.as_bytes(),
            params,
            &master_purpose(&self.sub, "password")?,
            &*self.master,
        )?;
        Ok((MASTER_BY_PASSWORD.to_string(), wrap::to_bytes(&wrap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams { m: 64, t: 1, p: 1 };

    fn stored(items: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
        items.iter().cloned().collect()
    }

    #[test]
    fn enrol_then_unlock_by_password_or_recovery_code_and_never_otherwise() {
        let mut enrolment = enrol("alice", "pw", CHEAP).unwrap();
        let key = enrolment.unlocked.keyring.create_space("users/alice").unwrap().clone();
        let mut items = enrolment.items.clone();
        items.push(enrolment.unlocked.key_item("users/alice", &key).unwrap());
        let items = stored(&items);
        for unlocked in [
            unlock_with_password("alice", "pw", &items).unwrap(),
            unlock_with_recovery_code("alice", &enrolment.recovery_code, &items).unwrap(),
        ] {
            assert_eq!(unlocked.keyring.current("users/alice").unwrap().secret(), key.secret());
            assert_eq!(unlocked.user.public, enrolment.unlocked.user.public);
        }
        assert!(matches!(unlock_with_password("alice", "wrong", &items), Err(E2eError::Tampered)));
        assert!(matches!(unlock_with_password("bob", "pw", &items), Err(E2eError::Tampered)), "bound to its sub");
        let mut swapped = items.clone();
        swapped.insert(MASTER_BY_PASSWORD.into(), items[MASTER_BY_RECOVERY].clone());
        assert!(unlock_with_password("alice", "pw", &swapped).is_err());
        let changed = enrolment.unlocked.password_item("new pw", CHEAP).unwrap();
        let mut after = items.clone();
        after.insert(changed.0, changed.1);
        assert!(unlock_with_password("alice", "new pw", &after).is_ok());
        assert!(unlock_with_password("alice", "pw", &after).is_err());
    }
}
