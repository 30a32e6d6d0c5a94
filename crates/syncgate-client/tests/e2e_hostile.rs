//! Bytes from a hostile server or a corrupted store never panic the client:
//! random and mutated envelopes, wraps, grants, vault items and typed
//! strings are refused with an error (and a wrap that asks Argon2id for more
//! memory than the bound is refused before anything is allocated).

use std::collections::BTreeMap;

use rmpv::Value;
use syncgate_client::e2e::envelope::{self, Binding, Kind};
use syncgate_client::e2e::recovery::{from_qr_payload, import_secret, parse_recovery_code};
use syncgate_client::e2e::vault::{self, MASTER_BY_PASSWORD};
use syncgate_client::e2e::wrap::{self, KdfParams, KeyWrap, PassphraseWrap};
use syncgate_client::e2e::{DataKey, E2eError, Grant, UserKeys};

const CHEAP: KdfParams = KdfParams { m: 64, t: 1, p: 1 };

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..=max);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// `bytes` with one to three random bytes changed, cut or extended.
fn mutate(rng: &mut fastrand::Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.usize(1..=3) {
        match rng.u8(0..3) {
            0 if !out.is_empty() => {
                let at = rng.usize(..out.len());
                out[at] ^= 1 << rng.u8(0..8);
            }
            1 if !out.is_empty() => out.truncate(rng.usize(..out.len())),
            _ => out.push(rng.u8(..)),
        }
    }
    out
}

#[test]
fn random_and_mutated_envelopes_are_refused_never_opened_or_panicking() {
    let mut rng = fastrand::Rng::with_seed(27);
    let key = DataKey::generate(1);
    let binding = Binding { kind: Kind::Record, space: "users/alice", place: "users/alice/todos", key: "t1" };
    let sealed = envelope::seal(&key, &binding, &Value::from("secret")).unwrap();
    for _ in 0..20_000 {
        let input = if rng.bool() { random_bytes(&mut rng, 80) } else { mutate(&mut rng, &sealed) };
        if input == sealed {
            continue;
        }
        match envelope::open(&key, &binding, &input) {
            Err(E2eError::Tampered | E2eError::Malformed(_) | E2eError::UnknownKey { .. }) => {}
            other => panic!("{input:02x?} gave {other:?}"),
        }
    }
}

#[test]
fn random_and_mutated_wraps_grants_and_vaults_are_refused() {
    let mut rng = fastrand::Rng::with_seed(2727);
    let me = UserKeys::generate();
    let key = DataKey::generate(3);
    let grant = wrap::to_bytes(&Grant::seal("orgs/acme", &key, &me.public, "me").unwrap());
    let key_wrap = wrap::to_bytes(&KeyWrap::seal(&[5; 32], b"p", b"material").unwrap());
    let pass_wrap = wrap::to_bytes(&PassphraseWrap::seal(b"pw", CHEAP, b"p", b"material").unwrap());
    let enrolment = vault::enrol("alice", "pw", CHEAP).unwrap();
    let items: BTreeMap<String, Vec<u8>> = enrolment.items.iter().cloned().collect();
    let (grant_parsed, key_wrap_parsed): (Grant, KeyWrap) =
        (wrap::from_bytes(&grant).unwrap(), wrap::from_bytes(&key_wrap).unwrap());
    for round in 0..2_000 {
        // A mutation that still parses to the same wrap (bytes appended after
        // the map) opens; any other must not.
        if let Ok(parsed) = wrap::from_bytes::<Grant>(&mutate(&mut rng, &grant)) {
            assert!(parsed == grant_parsed || parsed.open("orgs/acme", &me, "me").is_err(), "{parsed:?}");
        }
        if let Ok(parsed) = wrap::from_bytes::<KeyWrap>(&mutate(&mut rng, &key_wrap)) {
            assert!(parsed == key_wrap_parsed || parsed.open(&[5; 32], b"p").is_err(), "{parsed:?}");
        }
        if round % 10 == 0 {
            // Argon2id runs per attempt: fewer rounds, with the vault's own items mutated.
            let p = mutate(&mut rng, &pass_wrap);
            if let Ok(parsed) = wrap::from_bytes::<PassphraseWrap>(&p) {
                let _ = parsed.open(b"pw", b"p");
            }
            let mut hostile = items.clone();
            let name = ["master/password", "identity"][rng.usize(0..2)];
            hostile.insert(name.to_string(), mutate(&mut rng, &items[name]));
            let _ = vault::unlock_with_password("alice", "pw", &hostile);
        }
        let _ = wrap::from_bytes::<Grant>(&random_bytes(&mut rng, 120));
    }
}

#[test]
fn a_vault_asking_for_unbounded_memory_is_refused_before_allocating() {
    let enrolment = vault::enrol("alice", "pw", CHEAP).unwrap();
    let mut items: BTreeMap<String, Vec<u8>> = enrolment.items.iter().cloned().collect();
    let mut greedy: PassphraseWrap = wrap::from_bytes(&items[MASTER_BY_PASSWORD]).unwrap();
    greedy.params.m = u32::MAX;
    items.insert(MASTER_BY_PASSWORD.into(), wrap::to_bytes(&greedy));
    assert!(matches!(vault::unlock_with_password("alice", "pw", &items), Err(E2eError::Invalid(_))));
}

#[test]
fn random_typed_strings_are_refused() {
    let mut rng = fastrand::Rng::with_seed(72);
    let alphabet: Vec<char> = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcxyz-:/ IiLlOoUu!é".chars().collect();
    for _ in 0..20_000 {
        let typed: String = (0..rng.usize(0..90)).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
        assert!(import_secret("users/alice", &typed).is_err());
        assert!(parse_recovery_code("alice", &typed).is_err());
        assert!(from_qr_payload(&format!("syncgate-key:1:{typed}")).is_err());
    }
}
