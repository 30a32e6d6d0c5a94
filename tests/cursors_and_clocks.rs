//! Cursors that reset only when a delete may really have been missed, and a
//! server clock that agrees with the drift it accepts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::idp::http;
use common::{RawWs, TestServer, jwt_config, now, token};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::backplane::MemoryBus;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::store::{MemoryStore, Store, Write};

fn write(collection: &str, key: &str, value: Value, n: u64) -> Write {
    Write {
        collection: collection.into(),
        key: key.into(),
        value,
        hlc: format!("{}:0:w", now() * 1000 - 100_000 + n).parse().unwrap(),
    }
}

/// Collects every tombstone written so far.
async fn collect(store: &MemoryStore) {
    assert!(store.collect_tombstones(now() * 1000 + 1).await.unwrap() > 0);
}

/// Paging through a collection over HTTP finishes, even after a tombstone
/// elsewhere was collected (before: every page's cursor lay below the
/// horizon, so page 2 was answered with `reset` and page 1 again, forever).
#[tokio::test]
async fn paging_over_http_finishes_after_a_collection() {
    let store = Arc::new(MemoryStore::new());
    let mut config = ServerConfig { store: store.clone(), ..jwt_config() };
    config.limits.sync_page_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    for n in 0..20 {
        store.apply(&[write("c", &format!("k{n:02}"), Value::Binary(vec![1; 8000]), n)]).await.unwrap();
    }
    store.apply(&[write("other", "x", Value::from(1), 30)]).await.unwrap();
    store.apply(&[write("other", "x", Value::Nil, 31)]).await.unwrap();
    collect(&store).await;
    let bearer = token("backend", &[]);
    let (mut keys, mut since, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        pages += 1;
        assert!(pages <= 10, "paging never finishes");
        let path = if since.is_empty() {
            "/api/collections/c".to_string()
        } else {
            format!("/api/collections/c?since={since}")
        };
        let (status, body) = http(server.addr, "GET", &path, Some(&bearer), None).await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["reset"], json!(pages == 0), "page {pages} of a healthy cursor is no reset");
        keys.extend(page["records"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()));
        since = page["cursor"].as_str().unwrap().to_string();
        if page["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(keys.len(), 20, "every record once: {keys:?}");
    assert!(pages > 2, "it did page");
    server.stop().await;
}

/// A reader that synced an empty store (cursor at position 0) resets when a
/// delete it never saw is collected later.
#[tokio::test]
async fn a_cursor_at_zero_resets_after_a_collection() {
    let store = Arc::new(MemoryStore::new());
    let server = TestServer::start(ServerConfig { store: store.clone(), ..jwt_config() }).await;
    let mut reader = RawWs::authed(server.addr, &token("reader", &[])).await;
    reader.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    let ServerMessage::SyncData { cursor, .. } =
        reader.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await
    else {
        unreachable!()
    };
    store.apply(&[write("c", "k", Value::from(1), 1)]).await.unwrap();
    store.apply(&[write("c", "k", Value::Nil, 2)]).await.unwrap();
    collect(&store).await;
    let mut later = RawWs::authed(server.addr, &token("reader", &[])).await;
    later.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: Some(cursor) }).await;
    let answer = later.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    assert!(matches!(answer, ServerMessage::SyncData { reset: true, .. }), "{answer:?}");
    server.stop().await;
}

/// A catch-up from a position the horizon has passed cannot be a delta: the
/// connection is closed (1001) so the client resyncs and gets `reset`.
#[tokio::test]
async fn a_catch_up_below_the_horizon_makes_the_client_resync() {
    let bus = MemoryBus::new();
    let store = Arc::new(MemoryStore::new());
    let drop_both = common::nodes::Lossy::new(bus.node(), vec![1, 2]);
    let a =
        TestServer::start(ServerConfig { store: store.clone(), backplane: Arc::new(drop_both), ..jwt_config() }).await;
    let mut b_config = ServerConfig { store: store.clone(), backplane: Arc::new(bus.node()), ..jwt_config() };
    b_config.position_check = Duration::from_millis(300);
    let b = TestServer::start(b_config).await;
    let mut reader = RawWs::authed(b.addr, &token("reader", &[])).await;
    reader.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    reader.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    let mut writer = RawWs::authed(a.addr, &token("writer", &[])).await;
    for (n, value) in [(1u64, Value::from(1)), (2, Value::Nil)] {
        let op = RawOp {
            op_id: Value::from(n),
            collection: "c".into(),
            key: "k".into(),
            value,
            hlc: format!("{}:{n}:w", now() * 1000 - 100_000),
        };
        writer.send(&ClientMessage::OpBatch { id: n, ops: vec![OpInput::Op(op)] }).await;
        writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    }
    collect(&store).await;
    assert_eq!(reader.close_code().await, 1001, "the reader must resync from scratch");
    a.stop().await;
    b.stop().await;
}

/// With `--max-clock-drift 300`, a write stamped 120 s ahead is accepted, and
/// a server-stamped write that follows it still wins (the server's clock
/// absorbed the stamp when it was accepted).
#[tokio::test]
async fn a_server_stamped_write_never_sorts_before_an_accepted_one() {
    let mut config = jwt_config();
    config.max_clock_drift = Duration::from_secs(300);
    let server = TestServer::start(config).await;
    let mut device = RawWs::authed(server.addr, &token("device", &[])).await;
    let ahead = RawOp {
        op_id: Value::from(1),
        collection: "c".into(),
        key: "k".into(),
        value: Value::from("from the future"),
        hlc: format!("{}:0:device", now() * 1000 + 120_000),
    };
    device.send(&ClientMessage::OpBatch { id: 1, ops: vec![OpInput::Op(ahead)] }).await;
    let result = device.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    assert!(matches!(result, ServerMessage::OpResult { ref results, .. } if results[0].ok), "{result:?}");
    let bearer = token("backend", &[]);
    let body = json!({"ops": [{"key": "k", "value": "server"}]}).to_string();
    assert_eq!(http(server.addr, "POST", "/api/collections/c/ops", Some(&bearer), Some(&body)).await.0, 200);
    let (_, page) = http(server.addr, "GET", "/api/collections/c", Some(&bearer), None).await;
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["records"][0]["value"], json!("server"), "{page}");
    server.stop().await;
}
