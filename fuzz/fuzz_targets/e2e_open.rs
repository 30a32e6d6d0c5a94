//! End-to-end encryption decoders on hostile bytes (what a server or a
//! corrupted store could hand a client): an envelope, a key wrap, a grant
//! and a vault's items never panic, and nothing but the real envelope opens.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use syncgate_client::e2e::envelope::{self, Binding, Kind};
use syncgate_client::e2e::vault;
use syncgate_client::e2e::wrap::{self, KeyWrap};
use syncgate_client::e2e::{DataKey, Grant, UserKeys};

static KEY: LazyLock<DataKey> = LazyLock::new(|| DataKey::from_bytes(1, [7; 32]));
static ME: LazyLock<UserKeys> = LazyLock::new(|| UserKeys::from_secret([9; 32]));
const BINDING: Binding<'static> = Binding { kind: Kind::Record, space: "users/alice", place: "users/alice/todos", key: "t1" };

fuzz_target!(|data: &[u8]| {
    // Random bytes never authenticate under a fixed key (a forgery would be an AES-GCM break).
    assert!(envelope::open(&KEY, &BINDING, data).is_err());
    if let Ok(wrapped) = wrap::from_bytes::<KeyWrap>(data) {
        let _ = wrapped.open(&[7; 32], b"purpose");
    }
    if let Ok(grant) = wrap::from_bytes::<Grant>(data) {
        let _ = grant.open("users/alice", &ME, "alice");
    }
    // A vault of hostile items: the identity and a space key item (no Argon2id: the
    // password wrap is absent, so unlocking fails early or on the items' shapes).
    let items: BTreeMap<String, Vec<u8>> =
        [("identity".to_string(), data.to_vec()), ("keys/1/users/alice".to_string(), data.to_vec())].into();
    let _ = vault::unlock_with_password("alice", "pw", &items);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = syncgate_client::e2e::recovery::import_secret("users/alice", text);
        let _ = syncgate_client::e2e::recovery::from_qr_payload(text);
    }
});
