//! End-to-end encryption through the real server, on SQLite and (with
//! `SYNCGATE_TEST_POSTGRES`) on Postgres: two devices of one user in mode 3
//! (enrol, unlock, write, converge), a recovery-code restore on a third, a
//! mode-2 transfer by recovery secret, QR payload and passphrase, sharing
//! with another user and removal with rotation; after each, the store's
//! files (or tables) are searched for the plaintext markers, the password
//! and every key: zero hits. The vault's endpoints are checked apart,
//! in `tests/e2e_vault.rs`.

mod common;

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use common::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::{Durability, SqliteStore, Store};
use syncgate_client::e2e::recovery::{
    export_secret, export_space, from_qr_payload, import_secret, import_space, qr_payload,
};
use syncgate_client::e2e::sharing::{directory_collection, grants_collection};
use syncgate_client::e2e::vault::MASTER_BY_PASSWORD;
use syncgate_client::e2e::wrap::{self, PassphraseWrap, purpose};
use syncgate_client::e2e::{E2eError, EncryptedClient, KdfParams, Keyring, VaultClient};
use syncgate_client::{Client, ClientConfig, TokenProvider};

const RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "users/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "vault/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "e2e-keys/{sub}"
actions = ["write"]

[[rules]]
roles = ["user"]
resource = "e2e-keys/*"
actions = ["read"]

[[rules]]
roles = ["member"]
resource = "orgs/acme/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "plain/{sub}"
actions = ["read", "write"]
"#;

/// Cheap enough for tests on a shared machine; real apps keep [`KdfParams::DEFAULT`].
const CHEAP: KdfParams = KdfParams { m: 1024, t: 1, p: 1 };
const MARKER: &str = "MARKER-e2e-plaintext-7f3a9c";
const PASSWORD: &str = "alice's long passphrase 9q8w7e";

/// Where a test server keeps its data, so the test can search it afterwards.
enum Backing {
    Disk(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Backing {
    async fn store(&self) -> Arc<dyn Store> {
        match self {
            Backing::Disk(dir) => Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap()),
            Backing::Postgres { url, schema } => {
                Arc::new(syncgate::store::PostgresStore::open(postgres::options(url, schema)).await.unwrap())
            }
        }
    }

    /// Everything the store holds, as bytes to search: every file of the
    /// data directory, or every row of every table of the schema as text
    /// (`bytea` shows as hex there, so byte strings are searched as hex too).
    async fn contents(&self) -> Vec<u8> {
        match self {
            Backing::Disk(dir) => {
                let mut all = Vec::new();
                read_tree(dir.path(), &mut all);
                all
            }
            Backing::Postgres { url, schema } => {
                let mut all = Vec::new();
                let tables = postgres::sql(
                    url,
                    &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"),
                )
                .await;
                for table in rows(&tables) {
                    let dump = postgres::sql(url, &format!("SELECT t::text FROM \"{schema}\".\"{table}\" t")).await;
                    for row in rows(&dump) {
                        all.extend_from_slice(row.as_bytes());
                        all.push(b'\n');
                    }
                }
                assert!(!all.is_empty(), "the schema holds rows");
                all
            }
        }
    }

    /// Drops a Postgres test schema (a data directory goes with its `TempDir`).
    async fn clean_up(&self) {
        if let Backing::Postgres { url, schema } = self {
            postgres::sql(url, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
        }
    }

    /// Whether the store holds `needle`, as bytes or (for Postgres's text rendering of `bytea`) as hex.
    async fn holds(&self, needle: &[u8]) -> bool {
        let contents = self.contents().await;
        let hex: Vec<u8> = needle.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
        find(&contents, needle) || (matches!(self, Backing::Postgres { .. }) && find(&contents, &hex))
    }
}

fn rows(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

fn read_tree(dir: &Path, into: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, into);
        } else {
            into.extend(std::fs::read(&path).unwrap());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn backings(test: &str) -> Vec<Backing> {
    let mut all = vec![Backing::Disk(tempfile::tempdir().unwrap())];
    if let Some(url) = postgres::url(test) {
        all.push(Backing::Postgres { url, schema: postgres::fresh_schema("e2e") });
    }
    all
}

async fn server_on(backing: &Backing) -> TestServer {
    let mut config = ServerConfig { store: backing.store().await, ..jwt_config() };
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    TestServer::start(config).await
}

fn tokens(sub: &str, roles: &[&str]) -> Arc<dyn TokenProvider> {
    let token = token(sub, roles);
    Arc::new(move |_| {
        let token = token.clone();
        async move { Ok(Some(token)) }
    })
}

/// A device: a client of `sub` with its own replica (in memory).
fn device(server: &TestServer, sub: &str, roles: &[&str], keyring: Keyring) -> EncryptedClient {
    device_saved_at(server, sub, roles, keyring, None)
}

/// A device whose replica and outbox are saved in the file `state`.
fn device_saved_at(
    server: &TestServer,
    sub: &str,
    roles: &[&str],
    keyring: Keyring,
    state: Option<std::path::PathBuf>,
) -> EncryptedClient {
    let mut config = ClientConfig::new(server.url());
    config.token_provider = Some(tokens(sub, roles));
    config.state_path = state;
    let (client, _events) = Client::connect(config).unwrap();
    EncryptedClient::new(client, keyring)
}

fn vault(server: &TestServer, sub: &str) -> VaultClient {
    VaultClient::new(&server.url(), sub, tokens(sub, &["user"]), None).unwrap()
}

fn todo(title: &str) -> Value {
    Value::Map(vec![("title".into(), title.into()), ("done".into(), false.into())])
}

/// Waits until `device` reads `expected` at `collection`/`key`.
async fn reads(device: &EncryptedClient, collection: &str, key: &str, expected: &Value) {
    eventually(&format!("{key} readable in {collection}"), || async {
        matches!(device.get(collection, key), Some(Ok(ref v)) if v == expected).then_some(())
    })
    .await;
}

async fn settled(device: &EncryptedClient) {
    eventually("writes settled", || async { (device.client().pending() == 0).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_3_two_devices_converge_and_a_third_restores_with_the_recovery_code() {
    for backing in backings("mode_3_two_devices_converge_and_a_third_restores_with_the_recovery_code").await {
        mode_3(&backing).await;
        backing.clean_up().await;
    }
}

async fn mode_3(backing: &Backing) {
    let server = server_on(backing).await;
    let todos = "users/alice/todos";
    // Device A enrols: a vault, a space key stored wrapped, an encrypted write.
    let (mut unlocked, recovery_code) = vault(&server, "alice").enrol(PASSWORD, CHEAP).await.unwrap();
    assert!(vault(&server, "alice").enrol("again", CHEAP).await.is_err(), "a vault is enrolled once");
    let key = unlocked.keyring.create_space("users/alice").unwrap().clone();
    vault(&server, "alice").store_key(&unlocked, "users/alice", &key).await.unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("alice-a.state");
    let a = device_saved_at(&server, "alice", &["user"], unlocked.keyring.clone(), Some(state.clone()));
    a.client().sync(todos);
    let first = todo(&format!("{MARKER} from A"));
    a.write(todos, "t1", &first).await.unwrap();
    // The outbox on disk (saved before write returns) holds the envelope, not the value.
    assert!(!find(&std::fs::read(&state).unwrap(), MARKER.as_bytes()), "the saved outbox holds plaintext");
    settled(&a).await;

    // Device B logs in: fetches the wraps, unlocks with the password, reads, writes.
    assert!(matches!(vault(&server, "alice").unlock("wrong password").await, Err(E2eError::Tampered)));
    let on_b = vault(&server, "alice").unlock(PASSWORD).await.unwrap();
    assert_eq!(on_b.user.public, unlocked.user.public);
    let b = device(&server, "alice", &["user"], on_b.keyring.clone());
    b.client().sync(todos);
    reads(&b, todos, "t1", &first).await;
    let second = todo(&format!("{MARKER} from B"));
    b.write(todos, "t2", &second).await.unwrap();
    reads(&a, todos, "t2", &second).await;

    // Messages too: B opens what A publishes sealed on a topic of the space.
    let chat = "users/alice/chat";
    let mut inbox = b.client().subscribe(chat);
    let said = Value::from(format!("{MARKER} said"));
    // At most once: publish until the subscription is in place.
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            a.publish(chat, &said).await.unwrap();
            match tokio::time::timeout(std::time::Duration::from_millis(200), inbox.recv()).await {
                Ok(Some(delivery)) => break delivery,
                Ok(None) => panic!("the subscription ended"),
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("a sealed message arrives");
    assert!(matches!(delivery.data, Value::Binary(_)), "the server routed ciphertext");
    assert_eq!(b.open_message(&delivery).unwrap(), said);

    // A ciphertext moved to another record (here by a device, as a hostile
    // server could) is reported with its collection and key, the rest reads on.
    let Some(Value::Binary(sealed)) = b.client().get(todos, "t1") else { panic!("t1 is an envelope") };
    b.client().write(todos, "moved", Value::Binary(sealed)).await.unwrap();
    let readout = eventually("the moved record arrives", || async {
        let readout = a.entries(todos);
        (!readout.unreadable.is_empty()).then_some(readout)
    })
    .await;
    assert_eq!(readout.values.len(), 2);
    assert_eq!(readout.unreadable[0].key, "moved");
    assert_eq!(readout.unreadable[0].error, E2eError::Tampered);

    // Device C lost the password: the recovery code opens the vault and sets a new one.
    let on_c = vault(&server, "alice").restore(&recovery_code, "a brand new password", CHEAP).await.unwrap();
    let c = device(&server, "alice", &["user"], on_c.keyring.clone());
    c.client().sync(todos);
    reads(&c, todos, "t1", &first).await;
    reads(&c, todos, "t2", &second).await;
    assert!(vault(&server, "alice").unlock(PASSWORD).await.is_err(), "the old password is replaced");
    assert!(vault(&server, "alice").unlock("a brand new password").await.is_ok());

    // Control: a plaintext write IS found by the search, so zero hits below mean something.
    a.client().write("plain/alice", "control", Value::from("CONTROL-plaintext-4e1d")).await.unwrap();
    settled(&a).await;
    settled(&b).await;
    assert!(backing.holds(b"CONTROL-plaintext-4e1d").await, "the search sees what the store holds");

    // The server never held plaintext, a password, a recovery code, a KEK or a key.
    let items = vault(&server, "alice").items().await.unwrap();
    let by_password: PassphraseWrap = wrap::from_bytes(&items[MASTER_BY_PASSWORD]).unwrap();
    let kek = by_password.params.derive(b"a brand new password", &by_password.salt).unwrap();
    let master =
        by_password.open(b"a brand new password", &purpose(&["vault-master", "alice", "password"]).unwrap()).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the marker", MARKER.as_bytes().to_vec()),
        ("the password", PASSWORD.as_bytes().to_vec()),
        ("the new password", b"a brand new password".to_vec()),
        ("the recovery code", recovery_code.as_bytes().to_vec()),
        ("the recovery code, compact", recovery_code.replace('-', "").into_bytes()),
        ("the data key", key.secret().to_vec()),
        ("the data key in base64", b64(key.secret())),
        ("the private key", unlocked.user.secret_bytes().to_vec()),
        ("the password's KEK", kek.to_vec()),
        ("the master key", master.to_vec()),
    ];
    for (what, bytes) in &secrets {
        assert!(!backing.holds(bytes).await, "the store holds {what}");
    }
    let replica = std::fs::read(&state).unwrap();
    assert!(find(&replica, b"users/alice/todos"), "the state file is the replica");
    assert!(!find(&replica, MARKER.as_bytes()), "the device's replica holds plaintext");
    unlocked.keyring = Keyring::new();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_2_transfer_by_recovery_secret_qr_payload_and_passphrase() {
    for backing in backings("mode_2_transfer_by_recovery_secret_qr_payload_and_passphrase").await {
        mode_2(&backing).await;
        backing.clean_up().await;
    }
}

async fn mode_2(backing: &Backing) {
    let server = server_on(backing).await;
    let notes = "users/alice/notes";
    let mut keyring = Keyring::new();
    let key = keyring.create_space("users/alice").unwrap().clone();
    let a = device(&server, "alice", &["user"], keyring.clone());
    let first = todo(&format!("{MARKER} mode 2"));
    a.write(notes, "n1", &first).await.unwrap();
    settled(&a).await;

    // The three ways to carry the key to another device; none involves the server.
    let secret = export_secret("users/alice", &key).unwrap();
    let scanned = qr_payload("users/alice", &key).unwrap();
    let exported = export_space(&keyring, "users/alice", "a shared passphrase", CHEAP).unwrap();
    assert!(import_space("users/alice", &exported, "wrong").is_err());
    // A collection no space covers is refused, never written in clear.
    assert_eq!(
        a.write("users/bob/notes", "n", &first).await.unwrap_err(),
        E2eError::NoKey { name: "users/bob/notes".into() }
    );
    let mut by_secret = Keyring::new();
    by_secret.insert("users/alice", import_secret("users/alice", &secret.to_lowercase()).unwrap()).unwrap();
    let mut by_qr = Keyring::new();
    let (space, scanned_key) = from_qr_payload(&scanned).unwrap();
    by_qr.insert(&space, scanned_key).unwrap();
    let mut by_passphrase = Keyring::new();
    for key in import_space("users/alice", &exported, "a shared passphrase").unwrap() {
        by_passphrase.insert("users/alice", key).unwrap();
    }
    let mut devices = Vec::new();
    for ring in [by_secret, by_qr, by_passphrase] {
        let other = device(&server, "alice", &["user"], ring);
        other.client().sync(notes);
        reads(&other, notes, "n1", &first).await;
        devices.push(other);
    }
    let reply = todo(&format!("{MARKER} reply"));
    devices[2].write(notes, "n2", &reply).await.unwrap();
    a.client().sync(notes);
    reads(&a, notes, "n2", &reply).await;
    settled(&devices[2]).await;
    for (what, bytes) in [("the marker", MARKER.as_bytes().to_vec()), ("the key", key.secret().to_vec())] {
        assert!(!backing.holds(&bytes).await, "the store holds {what}");
    }
    assert!(!backing.holds(secret.as_bytes()).await, "the store holds the recovery secret");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_with_a_second_user_and_removal_with_rotation() {
    for backing in backings("sharing_with_a_second_user_and_removal_with_rotation").await {
        sharing(&backing).await;
        backing.clean_up().await;
    }
}

async fn sharing(backing: &Backing) {
    let server = server_on(backing).await;
    let (space, todos) = ("orgs/acme", "orgs/acme/todos");
    let roles = &["user", "member"];
    // Each user enrols (their key pair lives in their vault) and publishes their public key.
    let mut people = Vec::new();
    for sub in ["alice", "bob", "carol"] {
        let (unlocked, _code) = vault(&server, sub).enrol(&format!("{sub}'s password"), CHEAP).await.unwrap();
        let mut ring = Keyring::new();
        if sub == "alice" {
            ring.create_space(space).unwrap();
        }
        let client = device(&server, sub, roles, ring);
        client.publish_public_key("e2e-keys", sub, &unlocked.user).await.unwrap();
        client.client().sync(&grants_collection(space));
        client.client().sync(todos);
        people.push((sub, unlocked, client));
    }
    let (alice, bob, carol) = (&people[0], &people[1], &people[2]);
    for other in ["bob", "carol"] {
        alice.2.client().sync(&directory_collection("e2e-keys", other));
    }
    let public_of = |sub: &'static str| async move {
        eventually(&format!("{sub}'s public key"), || async { alice.2.public_key_of("e2e-keys", sub).unwrap() }).await
    };
    let (bob_key, carol_key) = (public_of("bob").await, public_of("carol").await);
    assert_eq!(bob_key, bob.1.user.public);

    // Alice grants version 1 to both; both read her record.
    alice.2.grant(space, "bob", &bob_key).await.unwrap();
    alice.2.grant(space, "carol", &carol_key).await.unwrap();
    let before = todo(&format!("{MARKER} before removal"));
    alice.2.write(todos, "old", &before).await.unwrap();
    for (sub, unlocked, client) in [bob, carol] {
        eventually(&format!("{sub} accepts the grant"), || async {
            let (added, failed) = client.accept_grants(space, &unlocked.user, sub);
            assert!(failed.is_empty(), "{failed:?}");
            (!added.is_empty() || client.keyring().current(space).is_some()).then_some(())
        })
        .await;
        reads(client, todos, "old", &before).await;
    }
    // A grant is sealed to its recipient: carol cannot open bob's.
    let bobs = carol.2.client().get(&grants_collection(space), "1/bob").unwrap();
    let Value::Binary(bobs) = bobs else { panic!("a grant is binary") };
    let bobs: syncgate_client::e2e::Grant = wrap::from_bytes(&bobs).unwrap();
    assert_eq!(bobs.open(space, &carol.1.user, "carol").unwrap_err(), E2eError::Tampered);

    // Carol is removed: a new version, granted to bob only. Her rules still let
    // her read the space (the worst case): the new writes stay closed to her.
    let version = alice.2.rotate(space, &[("bob".to_string(), bob_key)]).await.unwrap();
    assert_eq!(version, 2);
    let after = todo(&format!("{MARKER} after removal"));
    alice.2.write(todos, "new", &after).await.unwrap();
    eventually("bob accepts version 2", || async {
        bob.2.accept_grants(space, &bob.1.user, "bob");
        bob.2.keyring().space(space).and_then(|k| k.version(2)).map(drop)
    })
    .await;
    reads(&bob.2, todos, "new", &after).await;
    reads(&bob.2, todos, "old", &before).await;
    // Bob keeps the granted keys in his own vault: his next device unlocks and reads.
    let granted: Vec<_> = bob.2.keyring().space(space).unwrap().all().cloned().collect();
    for key in &granted {
        vault(&server, "bob").store_key(&bob.1, space, key).await.unwrap();
    }
    let on_bobs_phone = vault(&server, "bob").unlock("bob's password").await.unwrap();
    let phone = device(&server, "bob", roles, on_bobs_phone.keyring);
    phone.client().sync(todos);
    reads(&phone, todos, "new", &after).await;
    reads(&phone, todos, "old", &before).await;
    let readout = eventually("carol has the new record, unreadable", || async {
        carol.2.accept_grants(space, &carol.1.user, "carol");
        let readout = carol.2.entries(todos);
        (!readout.unreadable.is_empty()).then_some(readout)
    })
    .await;
    assert_eq!(readout.values.get("old"), Some(&before), "old records keep their old version");
    assert!(!readout.values.contains_key("new"));
    assert_eq!(readout.unreadable[0].key, "new");
    assert_eq!(readout.unreadable[0].error, E2eError::UnknownKey { space: space.into(), version: 2 });
    // Resealing closes the old records too: rewritten under version 2.
    assert_eq!(alice.2.reseal(todos).await.unwrap(), 1, "only the record of version 1");
    assert_eq!(alice.2.reseal(todos).await.unwrap(), 0);
    eventually("carol loses the old record too", || async {
        let readout = carol.2.entries(todos);
        (readout.values.is_empty() && readout.unreadable.len() == 2).then_some(())
    })
    .await;
    reads(&bob.2, todos, "old", &before).await;
    settled(&alice.2).await;
    let new_key = alice.2.keyring().current(space).unwrap().clone();
    assert!(!backing.holds(MARKER.as_bytes()).await, "the store holds a marker");
    assert!(!backing.holds(new_key.secret()).await, "the store holds the rotated key");
    server.stop().await;
}
