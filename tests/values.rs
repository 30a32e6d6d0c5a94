//! What a value may be, on every surface: string map keys only, no
//! extension types, at most 16 levels deep, within the size bound. A value
//! outside the rule is refused as `invalid` (the op alone, or the request)
//! over the socket and the HTTP API alike, the connection stays, and a bad
//! value that is already stored never breaks a reader: the HTTP API and the
//! change feed list it as unreadable and serve the rest.

mod common;

use std::sync::Arc;

use common::idp::http;
use common::sse::Feed;
use common::{RawWs, TestServer, jwt_config, now, token};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::store::{MemoryStore, Store, Write};

fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
}

fn poisons() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a map with an array key",
            Value::Map(vec![(Value::Array(vec![Value::from(1), Value::from(2)]), Value::from("x"))]),
        ),
        ("a map with an integer key", Value::Map(vec![(Value::from(1), Value::from("boom"))])),
        ("an extension type", Value::Ext(42, vec![1, 2, 3])),
        ("29 levels deep", nested(29)),
    ]
}

fn op(n: usize, value: Value) -> OpInput {
    OpInput::Op(RawOp {
        op_id: Value::from(n as u64),
        collection: "c".into(),
        key: format!("k{n}"),
        value,
        hlc: format!("{}:{n}:device", now() * 1000),
    })
}

#[tokio::test]
async fn bad_values_are_refused_one_by_one_over_the_socket() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    for (n, (what, poison)) in poisons().into_iter().enumerate() {
        let id = n as u64 + 1;
        let batch = vec![op(0, Value::from("fine")), op(1, poison.clone()), op(2, nested(16))];
        ws.send(&ClientMessage::OpBatch { id, ops: batch }).await;
        let ServerMessage::OpResult { results, .. } =
            ws.msg_where(|m| matches!(m, ServerMessage::OpResult { id: i, .. } if *i == id)).await
        else {
            unreachable!()
        };
        let summary: Vec<_> = results.iter().map(|r| (r.ok, r.code.as_deref())).collect();
        assert_eq!(summary, [(true, None), (false, Some("invalid")), (true, None)], "{what}: {results:?}");
        ws.send(&ClientMessage::Pub { id: 100 + id, topic: "t".into(), data: poison.clone() }).await;
        let answer = ws.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(i), .. } if *i == 100 + id)).await;
        assert!(matches!(answer, ServerMessage::Error { ref code, .. } if code == "invalid"), "{what}: {answer:?}");
        let join = ClientMessage::SubPresent { id: 200 + id, topic: "room".into(), presence: true, info: Some(poison) };
        ws.send(&join).await;
        let answer = ws.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(i), .. } if *i == 200 + id)).await;
        assert!(matches!(answer, ServerMessage::Error { ref code, .. } if code == "invalid"), "{what}: {answer:?}");
    }
    ws.send(&ClientMessage::Ping { id: Some(7) }).await;
    assert_eq!(ws.msg_where(|m| matches!(m, ServerMessage::Pong { .. })).await, ServerMessage::Pong { id: Some(7) });
    server.stop().await;
}

#[tokio::test]
async fn the_http_api_holds_values_to_the_same_rule() {
    let server = TestServer::start(jwt_config()).await;
    let bearer = token("backend", &[]);
    let deep = (0..100).fold(json!(1), |inner, _| json!([inner]));
    let body = json!({"ops": [{"key": "a", "value": "fine"}, {"key": "b", "value": deep}, {"key": "c", "opId": {"x": 1}, "value": 1}]});
    let (status, text) =
        http(server.addr, "POST", "/api/collections/c/ops", Some(&bearer), Some(&body.to_string())).await;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let summary: Vec<_> =
        answer["results"].as_array().unwrap().iter().map(|r| (r["ok"].clone(), r["code"].clone())).collect();
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        summary,
        [(json!(true), json!(null)), (json!(false), json!("invalid")), (json!(false), json!("invalid"))]
    );
    let (status, text) = http(
        server.addr,
        "POST",
        "/api/publish",
        Some(&bearer),
        Some(&json!({"topic": "t", "data": (0..40).fold(json!(1), |inner, _| json!({"k": inner}))}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("deeper than 16"), "{text}");
    server.stop().await;
}

/// A value that slipped in before the rule existed (written straight into
/// the store here): the page and the feed serve everything else and list it.
#[tokio::test]
async fn a_stored_value_json_cannot_show_is_listed_not_fatal() {
    let store = Arc::new(MemoryStore::new());
    let config = ServerConfig { store: store.clone(), ..jwt_config() };
    let server = TestServer::start(config).await;
    let hlc = |n: u32| format!("{}:{n}:legacy", now() * 1000).parse().unwrap();
    let poisoned = Value::Map(vec![(Value::Array(vec![Value::from(1)]), Value::from("x"))]);
    let writes = [
        Write { collection: "c".into(), key: "good".into(), value: Value::from(1), hlc: hlc(1) },
        Write { collection: "c".into(), key: "bad".into(), value: poisoned, hlc: hlc(2) },
    ];
    store.apply(&writes).await.unwrap();
    let bearer = token("backend", &[]);
    let (status, text) = http(server.addr, "GET", "/api/collections/c", Some(&bearer), None).await;
    assert_eq!(status, 200, "{text}");
    let page: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["unreadable"][0]["key"], json!("bad"), "{page}");
    let mut feed = Feed::open(server.addr, "/api/collections/c/changes", &bearer, None).await;
    let (event, _, data) = feed.next().await;
    assert_eq!((event.as_str(), &data["unreadable"][0]["key"]), ("change", &json!("bad")), "{data}");
    let (status, _) = http(
        server.addr,
        "POST",
        "/api/collections/c/ops",
        Some(&bearer),
        Some(&json!({"ops": [{"key": "later", "value": 2}]}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    let (event, _, data) = feed.next().await;
    assert_eq!((event.as_str(), &data["records"][0]["key"]), ("change", &json!("later")), "the feed goes on: {data}");
    server.stop().await;
}

/// The Rust client refuses a value outside the rule when it is written, so
/// it is never queued (and never held up a batch).
#[tokio::test]
async fn the_rust_client_refuses_a_bad_value_at_write_time() {
    use syncgate_client::{Client, ClientConfig, ClientError};
    let server = TestServer::start(jwt_config()).await;
    let bearer = token("alice", &[]);
    let config = ClientConfig::new(server.url()).with_token_provider(move |_| {
        let token = bearer.clone();
        async move { Ok(Some(token)) }
    });
    let (client, _events) = Client::connect(config).unwrap();
    let refused = client.write("c", "deep", nested(20)).await;
    assert!(matches!(refused, Err(ClientError::Refused { ref code, .. }) if code == "invalid"), "{refused:?}");
    assert!(matches!(client.write("c", "ext", Value::Ext(3, vec![1])).await, Err(ClientError::Refused { .. })));
    assert!(client.write("c", "fine", nested(16)).await.is_ok());
    assert_eq!(client.get("c", "deep"), None, "nothing of it was kept");
    client.close().await;
    server.stop().await;
}

/// Two backend writes under one `hlc`, values `5` then `2.0` (before: the
/// server kept the greater MessagePack encoding, `2.0`, while a browser that
/// decodes both to numbers kept `5` when syncing and `2` when fresh). A
/// second value under a stamp is now refused, so every replica decides by
/// stamps alone: the syncing reader, a fresh reader and the store agree.
#[tokio::test]
async fn a_reused_stamp_is_refused_and_every_reader_agrees() {
    let server = TestServer::start(jwt_config()).await;
    let mut syncing = RawWs::authed(server.addr, &token("reader", &[])).await;
    syncing.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    syncing.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    let bearer = token("backend", &[]);
    let stamp = format!("{}:0:backend", now() * 1000);
    let write = |value: &str| format!(r#"{{"ops": [{{"key": "k", "value": {value}, "hlc": "{stamp}"}}]}}"#);
    let (status, first) = http(server.addr, "POST", "/api/collections/c/ops", Some(&bearer), Some(&write("5"))).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) =
        http(server.addr, "POST", "/api/collections/c/ops", Some(&bearer), Some(&write("2.0"))).await;
    assert_eq!(status, 200, "{second}");
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["results"][0]["ok"], json!(false), "{second}");
    assert_eq!(second["results"][0]["code"], json!("invalid"), "{second}");
    let same_again = http(server.addr, "POST", "/api/collections/c/ops", Some(&bearer), Some(&write("5"))).await;
    assert!(same_again.1.contains(r#""ok":true"#), "the same write again is harmless: {}", same_again.1);

    let change = syncing.msg_where(|m| matches!(m, ServerMessage::Change { .. })).await;
    let ServerMessage::Change { records, .. } = change else { unreachable!() };
    assert_eq!(records.iter().map(|r| r.value.clone()).collect::<Vec<_>>(), [Value::from(5)]);
    let mut fresh = RawWs::authed(server.addr, &token("fresh", &[])).await;
    fresh.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    let ServerMessage::SyncData { records, .. } =
        fresh.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(records[0].value, Value::from(5), "the first value stays");
    server.stop().await;
}
