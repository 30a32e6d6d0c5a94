//! The end-to-end encryption vectors (`proto/e2e-vectors.json`, made by an
//! independent implementation, `scripts/e2e_vectors.py`): this client seals
//! byte for byte what they say, opens what they hold, and refuses every
//! tampered case with the error they name.

use std::collections::BTreeMap;

use data_encoding::HEXLOWER;
use serde_json::Value as Json;
use syncgate_client::e2e::envelope::{self, Binding, Kind};
use syncgate_client::e2e::recovery::{export_secret, from_qr_payload, import_secret, parse_recovery_code, qr_payload};
use syncgate_client::e2e::wrap::{self, KdfParams, KeyWrap, PassphraseWrap, purpose};
use syncgate_client::e2e::{DataKey, E2eError, Grant, Keyring, UserKeys};

fn vectors() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/e2e-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(v: &Json) -> Vec<u8> {
    HEXLOWER.decode(v.as_str().unwrap().as_bytes()).unwrap()
}

fn key32(v: &Json) -> [u8; 32] {
    hex(v).try_into().unwrap()
}

fn text(v: &Json) -> &str {
    v.as_str().unwrap()
}

fn kind(v: &Json) -> Kind {
    match text(v) {
        "record" => Kind::Record,
        "message" => Kind::Message,
        other => panic!("unknown kind {other}"),
    }
}

fn parts(v: &Json) -> Vec<u8> {
    let parts: Vec<&str> = v.as_array().unwrap().iter().map(text).collect();
    purpose(&parts).unwrap()
}

#[test]
fn envelopes_seal_and_open_byte_for_byte() {
    let all = vectors();
    for case in all["envelopes"].as_array().unwrap() {
        let name = text(&case["name"]);
        let version = case["keyVersion"].as_u64().unwrap() as u32;
        let key = DataKey::from_bytes(version, key32(&case["dataKey"]));
        let binding = Binding {
            kind: kind(&case["kind"]),
            space: text(&case["space"]),
            place: text(&case["place"]),
            key: text(&case["key"]),
        };
        assert_eq!(envelope::associated_data(&binding, version).unwrap(), hex(&case["aad"]), "{name}: aad");
        let plaintext = hex(&case["plaintext"]);
        let value = rmpv::decode::read_value(&mut plaintext.as_slice()).unwrap();
        let nonce: [u8; 12] = hex(&case["nonce"]).try_into().unwrap();
        let sealed = envelope::seal_with_nonce(&key, &binding, &value, &nonce).unwrap();
        assert_eq!(HEXLOWER.encode(&sealed), text(&case["envelope"]), "{name}: envelope");
        assert_eq!(envelope::open(&key, &binding, &sealed).unwrap(), value, "{name}: opens");
        let fresh = envelope::seal(&key, &binding, &value).unwrap();
        assert_ne!(fresh, sealed, "{name}: a random nonce each time");
        assert_eq!(envelope::open(&key, &binding, &fresh).unwrap(), value);
    }
}

#[test]
fn tampered_envelopes_are_refused_with_the_named_error() {
    let all = vectors();
    for case in all["tampered"].as_array().unwrap() {
        let name = text(&case["name"]);
        let version = case["keyVersion"].as_u64().unwrap() as u32;
        let key = DataKey::from_bytes(version, key32(&case["dataKey"]));
        let binding = Binding {
            kind: kind(&case["kind"]),
            space: text(&case["space"]),
            place: text(&case["place"]),
            key: text(&case["key"]),
        };
        let got = envelope::open(&key, &binding, &hex(&case["envelope"]));
        let expected = text(&case["error"]);
        let matches = matches!(
            (&got, expected),
            (Err(E2eError::Tampered), "tampered")
                | (Err(E2eError::UnknownKey { .. }), "unknown_key")
                | (Err(E2eError::Malformed(_)), "malformed")
        );
        assert!(matches, "{name}: expected {expected}, got {got:?}");
    }
}

#[test]
fn argon2id_derives_what_the_vectors_say() {
    for case in vectors()["argon2id"].as_array().unwrap() {
        let params = KdfParams {
            m: case["m"].as_u64().unwrap() as u32,
            t: case["t"].as_u64().unwrap() as u32,
            p: case["p"].as_u64().unwrap() as u32,
        };
        let out = params.derive(text(&case["password"]).as_bytes(), &hex(&case["salt"])).unwrap();
        assert_eq!(HEXLOWER.encode(out.as_ref()), text(&case["output"]));
    }
}

#[test]
fn wraps_and_grants_open_and_only_as_made() {
    let all = vectors();
    for case in all["passphraseWraps"].as_array().unwrap() {
        let stored: PassphraseWrap = wrap::from_bytes(&hex(&case["wrap"])).unwrap();
        let purpose = parts(&case["purpose"]);
        let material = stored.open(text(&case["passphrase"]).as_bytes(), &purpose).unwrap();
        assert_eq!(material.as_slice(), hex(&case["material"]).as_slice());
        assert_eq!(stored.open(b"wrong", &purpose), Err(E2eError::Tampered));
    }
    for case in all["keyWraps"].as_array().unwrap() {
        let stored: KeyWrap = wrap::from_bytes(&hex(&case["wrap"])).unwrap();
        let material = stored.open(&key32(&case["wrappingKey"]), &parts(&case["purpose"])).unwrap();
        assert_eq!(material.as_slice(), hex(&case["material"]).as_slice());
        assert_eq!(stored.open(&key32(&case["wrappingKey"]), b"another purpose"), Err(E2eError::Tampered));
    }
    for case in all["grants"].as_array().unwrap() {
        let me = UserKeys::from_secret(key32(&case["recipientSecret"]));
        assert_eq!(me.public.as_bytes().as_slice(), hex(&case["recipientPublic"]).as_slice());
        let grant: Grant = wrap::from_bytes(&hex(&case["grant"])).unwrap();
        let key = grant.open(text(&case["space"]), &me, text(&case["recipientSub"])).unwrap();
        assert_eq!(key.version as u64, case["keyVersion"].as_u64().unwrap());
        assert_eq!(key.secret().as_slice(), hex(&case["dataKey"]).as_slice());
        assert_eq!(grant.open(text(&case["space"]), &me, "mallory").unwrap_err(), E2eError::Tampered);
    }
}

#[test]
fn recovery_strings_match_the_vectors() {
    let all = vectors();
    for case in all["recoverySecrets"].as_array().unwrap() {
        let space = text(&case["space"]);
        let key = DataKey::from_bytes(case["keyVersion"].as_u64().unwrap() as u32, key32(&case["dataKey"]));
        assert_eq!(export_secret(space, &key).unwrap(), text(&case["secret"]));
        assert_eq!(import_secret(space, text(&case["secret"])).unwrap().secret(), key.secret());
        assert_eq!(qr_payload(space, &key).unwrap(), text(&case["qr"]));
        let (scanned_space, scanned) = from_qr_payload(text(&case["qr"])).unwrap();
        assert_eq!((scanned_space.as_str(), scanned.secret()), (space, key.secret()));
    }
    for case in all["recoveryCodes"].as_array().unwrap() {
        let secret = parse_recovery_code(text(&case["sub"]), text(&case["code"])).unwrap();
        assert_eq!(secret.as_slice(), hex(&case["secret"]).as_slice());
    }
}

#[test]
fn a_keyring_opens_every_version_it_holds() {
    let mut ring = Keyring::new();
    let first = ring.create_space("orgs/acme").unwrap().clone();
    let binding = Binding { kind: Kind::Record, space: "orgs/acme", place: "orgs/acme/todos", key: "a" };
    let old = envelope::seal(&first, &binding, &rmpv::Value::from("old")).unwrap();
    let second = ring.rotate("orgs/acme").unwrap().clone();
    let new = envelope::seal(&second, &binding, &rmpv::Value::from("new")).unwrap();
    let versions: BTreeMap<u32, &DataKey> = ring.space("orgs/acme").unwrap().all().map(|k| (k.version, k)).collect();
    for sealed in [old, new] {
        let version = envelope::key_version(&sealed).unwrap();
        assert!(envelope::open(versions[&version], &binding, &sealed).is_ok());
    }
}

#[test]
fn a_vault_made_elsewhere_unlocks_with_its_password_and_its_recovery_code() {
    use syncgate_client::e2e::vault::{unlock_with_password, unlock_with_recovery_code};
    for case in vectors()["vaults"].as_array().unwrap() {
        let items: BTreeMap<String, Vec<u8>> =
            case["items"].as_object().unwrap().iter().map(|(name, value)| (name.clone(), hex(value))).collect();
        let sub = text(&case["sub"]);
        for unlocked in [
            unlock_with_password(sub, text(&case["password"]), &items).unwrap(),
            unlock_with_recovery_code(sub, text(&case["recoveryCode"]), &items).unwrap(),
        ] {
            assert_eq!(unlocked.user.public.as_bytes().as_slice(), hex(&case["identityPublic"]).as_slice());
            assert_eq!(unlocked.user.secret_bytes().as_slice(), hex(&case["identitySecret"]).as_slice());
            for expected in case["spaceKeys"].as_array().unwrap() {
                let version = expected["version"].as_u64().unwrap() as u32;
                let key = unlocked.keyring.space(text(&expected["space"])).and_then(|k| k.version(version)).unwrap();
                assert_eq!(key.secret().as_slice(), hex(&expected["dataKey"]).as_slice());
            }
        }
        assert_eq!(unlock_with_password(sub, "wrong", &items).unwrap_err(), E2eError::Tampered);
    }
}
