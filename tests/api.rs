//! The server API (`/api/…`) against a real server: publish, writes ordered
//! by last-writer-wins against clients' offline writes, refusals with their
//! codes, and the resumable change feed (Server-Sent Events).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::idp::http;
use common::sse::Feed;
use common::{RawWs, TestServer, jwt_config, now, token};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::rules::{Policy, RuleSet};

const RULES: &str = r#"
[[rules]]
roles = ["service"]
resource = "**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "rooms/*"
actions = ["read"]
"#;

fn config() -> ServerConfig {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config
}

fn service() -> String {
    token("backend", &["service"])
}

async fn post(addr: SocketAddr, path: &str, bearer: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(addr, "POST", path, Some(bearer), Some(&body.to_string())).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}")))
}

#[tokio::test]
async fn a_backend_publish_reaches_websocket_subscribers() {
    let server = TestServer::start(config()).await;
    let mut subscriber = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    subscriber.send(&ClientMessage::Sub { id: 1, topic: "rooms/lobby".into() }).await;
    subscriber.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    let (status, body) =
        post(server.addr, "/api/publish", &service(), &json!({"topic": "rooms/lobby", "data": {"text": "hi"}})).await;
    assert_eq!(status, 200, "{body}");
    let message = subscriber.msg_where(|m| matches!(m, ServerMessage::Message { .. })).await;
    let ServerMessage::Message { topic, data, from } = message else { unreachable!() };
    assert_eq!((topic.as_str(), from.as_str()), ("rooms/lobby", "backend"));
    assert_eq!(data, Value::Map(vec![(Value::from("text"), Value::from("hi"))]));
    server.stop().await;
}

/// The API's write is stamped by the server's clock; a client's offline
/// write stamped earlier loses to it, on the server and in every snapshot.
#[tokio::test]
async fn a_backend_write_and_an_older_offline_write_resolve_by_last_writer_wins() {
    let server = TestServer::start(config()).await;
    let (status, body) =
        post(server.addr, "/api/collections/todos/ops", &service(), &json!({"ops": [{"key": "k", "value": "api"}]}))
            .await;
    assert_eq!((status, &body["results"][0]["ok"]), (200, &json!(true)), "{body}");
    let mut device = RawWs::authed(server.addr, &token("device", &["service"])).await;
    let offline = RawOp {
        op_id: Value::from("o1"),
        collection: "todos".into(),
        key: "k".into(),
        value: Value::from("offline"),
        hlc: format!("{}:0:device", (now() - 3600) * 1000),
    };
    device.send(&ClientMessage::OpBatch { id: 1, ops: vec![OpInput::Op(offline)] }).await;
    device.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    let (status, page) = http(server.addr, "GET", "/api/collections/todos", Some(&service()), None).await;
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!((status, &page["records"][0]["value"]), (200, &json!("api")), "{page}");
    device.send(&ClientMessage::Sync { id: 2, collection: "todos".into(), since: None }).await;
    let synced = device.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    let ServerMessage::SyncData { records, .. } = synced else { unreachable!() };
    assert_eq!(records[0].value, Value::from("api"), "the replica shows the same winner");
    server.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_protocols_codes_and_statuses() {
    let mut config = config();
    config.auth_failures_per_minute = 3;
    config.limits.max_frame_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    let user = token("alice", &["user"]);
    let (status, body) = post(server.addr, "/api/publish", &user, &json!({"topic": "rooms/lobby", "data": 1})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "read-only users may not publish");
    let (status, body) =
        post(server.addr, "/api/collections/todos/ops", &user, &json!({"ops": [{"key": "k", "value": 1}]})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, text) = http(server.addr, "POST", "/api/publish", Some(&service()), Some("{not json")).await;
    assert_eq!(status, 400, "{text}");
    let big = json!({"topic": "rooms/lobby", "data": "x".repeat(100 * 1024)});
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&service()), Some(&big.to_string())).await.0, 413);
    let (status, text) = http(server.addr, "POST", "/api/publish", None, Some("{}")).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("token_missing"), "{text}");
    for _ in 0..3 {
        let (status, body) = post(server.addr, "/api/publish", "not-a-token", &json!({"topic": "t"})).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("token_malformed")), "{body}");
    }
    let (status, body) = post(server.addr, "/api/publish", &service(), &json!({"topic": "rooms/lobby"})).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "the failure limit holds for everyone");
    server.stop().await;
}

async fn write_batch(addr: SocketAddr, from: usize, count: usize) {
    let ops: Vec<_> = (from..from + count).map(|n| json!({"key": format!("k{n:04}"), "value": n})).collect();
    let (status, body) = post(addr, "/api/collections/mirror/ops", &service(), &json!({ "ops": ops })).await;
    assert_eq!(status, 200, "{body}");
}

/// Reads change events until `until` keys were seen in all; returns the last event id.
async fn consume(feed: &mut Feed, seen: &mut HashMap<String, usize>, until: usize) -> String {
    let mut last = String::new();
    while seen.len() < until {
        let (event, id, data) = feed.next().await;
        assert_eq!(event, "change", "{data}");
        for record in data["records"].as_array().unwrap() {
            *seen.entry(record["key"].as_str().unwrap().to_string()).or_default() += 1;
        }
        last = id.expect("a change carries its cursor as id");
    }
    last
}

#[tokio::test]
async fn the_change_feed_resumes_with_last_event_id_and_delivers_each_change_once() {
    let server = TestServer::start(config()).await;
    let path = "/api/collections/mirror/changes";
    let mut seen = HashMap::new();
    for batch in 0..3 {
        write_batch(server.addr, batch * 100, 100).await;
    }
    let mut feed = Feed::open(server.addr, path, &service(), None).await;
    consume(&mut feed, &mut seen, 300).await;
    // Live: written while the consumer is connected.
    for batch in 3..5 {
        write_batch(server.addr, batch * 100, 100).await;
    }
    let last = consume(&mut feed, &mut seen, 500).await;
    drop(feed);
    // Written while the consumer is away; it resumes from the last id it saw.
    for batch in 5..10 {
        write_batch(server.addr, batch * 100, 100).await;
    }
    let mut feed = Feed::open(server.addr, path, &service(), Some(&last)).await;
    consume(&mut feed, &mut seen, 1000).await;
    assert_eq!(seen.len(), 1000);
    assert!(seen.values().all(|&n| n == 1), "every change exactly once");
    drop(feed);

    let mut stale = Feed::open(server.addr, &format!("{path}?since=1:5"), &service(), None).await;
    assert_eq!(stale.next().await.0, "reset", "a cursor of another epoch starts over");
    let (event, _, data) = stale.next().await;
    assert_eq!((event.as_str(), data["records"].as_array().unwrap().len()), ("change", 1000), "then the full state");
    server.stop().await;
}
