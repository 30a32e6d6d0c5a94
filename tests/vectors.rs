//! The MessagePack interop vectors of `proto/vectors.json`, checked against
//! the Rust codec: every client vector decodes to its message and re-encodes
//! to the same bytes, every server message encodes to exactly its bytes. The
//! TypeScript client checks the same file, so the two cannot drift apart.
//! `SYNCGATE_WRITE_VECTORS=1` rewrites the hex from the decoded forms.

use rmpv::Value;
use serde_json::Value as Json;
use syncgate::protocol::{DecodeLimits, ServerMessage, decode_client, encode_client, encode_server};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/vectors.json");

/// JSON → MessagePack value, keeping map key order.
fn to_msgpack(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::F64(f),
            _ => unreachable!("a JSON number is u64, i64 or f64"),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(to_msgpack).collect()),
        Json::Object(map) => Value::Map(map.iter().map(|(k, v)| (Value::from(k.as_str()), to_msgpack(v))).collect()),
    }
}

fn encode(json: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &to_msgpack(json)).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn every_vector_round_trips_through_the_rust_codec() {
    let mut doc: Json = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let write = std::env::var_os("SYNCGATE_WRITE_VECTORS").is_some();
    for side in ["client", "server"] {
        for vector in doc[side].as_array_mut().unwrap() {
            let name = vector["name"].as_str().unwrap().to_string();
            let bytes = encode(&vector["message"]);
            if side == "client" {
                let decoded = decode_client(&bytes, DecodeLimits::default())
                    .unwrap_or_else(|e| panic!("{name}: the server does not decode it: {e}"));
                assert_eq!(&encode_client(&decoded)[..], &bytes[..], "{name}: the Rust client encodes it differently");
            } else {
                let message: ServerMessage = serde_json::from_value(vector["message"].clone())
                    .unwrap_or_else(|e| panic!("{name}: not a server message: {e}"));
                assert_eq!(hex(&encode_server(&message)), hex(&bytes), "{name}: the server encodes it differently");
                let back: ServerMessage = rmp_serde::from_slice(&bytes).unwrap();
                assert_eq!(back, message, "{name}");
            }
            if write {
                vector["hex"] = Json::from(hex(&bytes));
            } else {
                assert_eq!(vector["hex"].as_str().unwrap(), hex(&bytes), "{name}: proto/vectors.json is stale");
            }
        }
    }
    if write {
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
}

/// The `lww` cases: what a store answers, and what the Rust client's replica
/// keeps, when a record meets a write (the TypeScript client checks the same).
#[tokio::test]
async fn last_writer_wins_cases_hold_on_the_store_and_the_rust_replica() {
    use syncgate::hlc::Hlc;
    use syncgate::protocol::Record;
    use syncgate::store::{Applied, MemoryStore, Store, Write};
    use syncgate_client::Replica;

    let doc: Json = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let cases = doc["lww"]["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    let side = |case: &Json, which: &str| {
        let bytes: Vec<u8> =
            case[which]["value"].as_str().unwrap().split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
        let value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        assert_eq!(syncgate::hlc::encode_value(&value), bytes, "values are given in their canonical encoding");
        (case[which]["hlc"].as_str().unwrap().to_string(), value)
    };
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let ((current_hlc, current), (incoming_hlc, incoming)) = (side(case, "current"), side(case, "incoming"));
        let write = |hlc: &str, value: &Value| Write {
            collection: "c".into(),
            key: "k".into(),
            value: value.clone(),
            hlc: hlc.parse::<Hlc>().unwrap(),
        };
        let store = MemoryStore::new();
        store.apply(&[write(&current_hlc, &current)]).await.unwrap();
        let outcome = store.apply(&[write(&incoming_hlc, &incoming)]).await.unwrap()[0];
        let server = match outcome {
            Applied::Stored { .. } => "stored",
            Applied::Superseded => "superseded",
            Applied::Conflict => "refused",
            Applied::Stale => "stale",
        };
        assert_eq!(server, case["server"].as_str().unwrap(), "{name}: the store");
        let held = store.get("c", "k").await.unwrap().unwrap().value;
        let expected = if server == "stored" { &incoming } else { &current };
        assert_eq!(&held, expected, "{name}: the store holds the winner");

        let mut replica = Replica::new("reader");
        let record = |hlc: &str, value: &Value| Record { key: "k".into(), value: value.clone(), hlc: hlc.into() };
        replica.merge("c", &[record(&current_hlc, &current)], 0);
        replica.merge("c", &[record(&incoming_hlc, &incoming)], 0);
        let replica_kept = replica.records("c").get("k").cloned().unwrap_or(Value::Nil);
        let expected = if case["replica"] == "replaces" { &incoming } else { &current };
        assert_eq!(&replica_kept, expected, "{name}: the Rust replica");
    }
}

/// The `presence` vectors go through the codec like the others.
#[test]
fn presence_vectors_round_trip_through_the_rust_codec() {
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for vector in doc["presence"]["client"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let bytes = encode(&vector["message"]);
        assert_eq!(vector["hex"].as_str().unwrap(), hex(&bytes), "{name}: stale hex");
        let decoded = decode_client(&bytes, DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&encode_client(&decoded)[..], &bytes[..], "{name}: the Rust client encodes it differently");
    }
    for vector in doc["presence"]["server"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let message: ServerMessage = serde_json::from_value(vector["message"].clone()).unwrap();
        assert_eq!(
            vector["hex"].as_str().unwrap(),
            hex(&encode_server(&message)),
            "{name}: the server encodes it differently"
        );
    }
}

/// HLC text: what parses, to what, its canonical form, and the order.
#[test]
fn hlc_vectors_parse_format_and_order_alike() {
    use syncgate::hlc::{Hlc, MAX_MILLIS};
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let hlc = &doc["hlc"];
    assert_eq!(hlc["maxMillis"].as_u64(), Some(MAX_MILLIS));
    for case in hlc["parse"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let parsed = text.parse::<Hlc>();
        if case["ok"] == true {
            let stamp = parsed.unwrap_or_else(|e| panic!("{text:?} must parse: {e}"));
            assert_eq!(Some(stamp.millis), case["millis"].as_u64(), "{text:?}");
            assert_eq!(Some(u64::from(stamp.counter)), case["counter"].as_u64(), "{text:?}");
            assert_eq!(Some(stamp.node.as_str()), case["node"].as_str(), "{text:?}");
            assert_eq!(Some(stamp.to_string().as_str()), case["format"].as_str(), "{text:?}");
        } else {
            assert!(parsed.is_err(), "{text:?} must not parse ({})", case["why"]);
        }
    }
    let order: Vec<Hlc> =
        hlc["order"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().parse().unwrap()).collect();
    for (i, a) in order.iter().enumerate() {
        for (j, b) in order.iter().enumerate() {
            assert_eq!(a.cmp(b), i.cmp(&j), "{a} against {b}");
        }
    }
}

/// The close-code actions and the final/retryable op codes of the Rust table.
#[test]
fn close_and_op_code_vectors_match_the_rust_tables() {
    use syncgate::protocol::codes::{CloseAction, error};
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for case in doc["closeCodes"]["cases"].as_array().unwrap() {
        let code = case["code"].as_u64().map(|c| u16::try_from(c).unwrap());
        let expected = match case["action"].as_str().unwrap() {
            "stop" => CloseAction::Stop,
            "new_token" => CloseAction::NewToken,
            "refresh_token" => CloseAction::RefreshToken,
            "back_off" => CloseAction::BackOff,
            "resync" => CloseAction::Resync,
            "reconnect" => CloseAction::Reconnect,
            other => panic!("unknown action {other}"),
        };
        assert_eq!(CloseAction::for_code(code), expected, "close code {code:?}");
    }
    for code in doc["opCodes"]["final"].as_array().unwrap() {
        assert!(error::is_final_op_code(code.as_str().unwrap()), "{code} is final");
    }
    for code in doc["opCodes"]["retryable"].as_array().unwrap() {
        assert!(!error::is_final_op_code(code.as_str().unwrap()), "{code} is retryable");
    }
}
