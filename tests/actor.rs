//! The connection actor never waits on I/O inline: a slow identity provider
//! or a slow commit holds up neither pings nor deliveries, and deadlines hold
//! however busy the socket is (driven with `tokio::time::pause()`, no sleeping).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::raw::{self, Event};
use common::stores::Hooked;
use common::*;
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::auth::{IntrospectSettings, IntrospectShape, Introspector};
use syncgate::http_client::HttpClient;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::store::MemoryStore;
use tokio::io::AsyncWriteExt;

fn op(id: &str, collection: &str, key: &str) -> OpInput {
    OpInput::Op(RawOp {
        op_id: Value::from(id),
        collection: collection.into(),
        key: key.into(),
        value: Value::from(1),
        hlc: format!("{}:0:w", now() * 1000),
    })
}

/// Well below the 3 s the provider or the disk takes: proof that nothing waited on them.
const PROMPTLY: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn a_slow_identity_provider_holds_up_neither_pings_nor_deliveries() {
    let idp = Idp::start().await;
    idp.answer("first", json!({"active": true, "sub": "u1"}));
    idp.answer("second", json!({"active": true, "sub": "u1"}));
    let settings = IntrospectSettings {
        url: idp.introspect_url(),
        bearer: "internal".into(),
        cache_ttl: Duration::from_secs(60),
        cache_max_entries: 100,
        form: false,
        shape: IntrospectShape::Rfc7662,
        fail_open: false,
        leeway_secs: 0,
    };
    let introspector = Introspector::new(settings, HttpClient::new(Duration::from_secs(10)).unwrap());
    let server =
        TestServer::start(ServerConfig { authenticator: Arc::new(introspector), ..ServerConfig::default() }).await;
    let mut ws = RawWs::authed(server.addr, "first").await;
    ws.send(&ClientMessage::Sync { id: 1, collection: "feed".into(), since: None }).await;
    assert!(matches!(ws.msg().await, ServerMessage::SyncData { .. }));
    // From now on the provider takes 3 s; the refresh below waits on it.
    idp.state.stall_ms.store(3000, Ordering::SeqCst);
    ws.send(&ClientMessage::Auth { token: Some("second".into()) }).await;
    let started = Instant::now();
    ws.send(&ClientMessage::Ping { id: Some(7) }).await;
    ws.msg_where(|m| matches!(m, ServerMessage::Pong { id: Some(7) })).await;
    assert!(started.elapsed() < PROMPTLY, "PONG took {:?} behind a verification", started.elapsed());
    // "first" is cached: this writer does not wait on the provider.
    let mut writer = RawWs::authed(server.addr, "first").await;
    writer.send(&ClientMessage::OpBatch { id: 1, ops: vec![op("o1", "feed", "k")] }).await;
    ws.msg_where(|m| matches!(m, ServerMessage::Change { .. })).await;
    assert!(started.elapsed() < PROMPTLY * 2, "a CHANGE waited {:?} behind a verification", started.elapsed());
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { .. }), "and the refresh completes");
    server.stop().await;
}

/// A store whose commits to collection `slow` take 3 s, and whose scans of
/// collection `slow-scan` take half a second.
fn slow_disk() -> Arc<Hooked> {
    let mut store = Hooked::around(Arc::new(MemoryStore::new()));
    store.before_apply = Box::new(|writes| {
        let slow = writes.iter().any(|w| w.collection == "slow");
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Ok(())
        })
    });
    // Scans run on the blocking pool: sleeping here stalls no connection.
    store.before_scan = Arc::new(|collection| {
        if collection == "slow-scan" {
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    Arc::new(store)
}

#[tokio::test]
async fn a_slow_commit_holds_up_neither_pings_nor_other_deliveries() {
    let store = slow_disk();
    let server = TestServer::start(ServerConfig { store, ..jwt_config() }).await;
    let mut ws = RawWs::authed(server.addr, &token("a", &[])).await;
    ws.send(&ClientMessage::Sync { id: 1, collection: "other".into(), since: None }).await;
    assert!(matches!(ws.msg().await, ServerMessage::SyncData { .. }));
    ws.send(&ClientMessage::OpBatch { id: 2, ops: vec![op("slow-1", "slow", "k")] }).await;
    let started = Instant::now();
    ws.send(&ClientMessage::Ping { id: Some(3) }).await;
    ws.msg_where(|m| matches!(m, ServerMessage::Pong { id: Some(3) })).await;
    assert!(started.elapsed() < PROMPTLY, "PONG took {:?} behind a commit", started.elapsed());
    let mut writer = RawWs::authed(server.addr, &token("b", &[])).await;
    writer.send(&ClientMessage::OpBatch { id: 1, ops: vec![op("o1", "other", "k")] }).await;
    let change = ws.msg_where(|m| matches!(m, ServerMessage::Change { .. } | ServerMessage::OpResult { .. })).await;
    assert!(
        matches!(&change, ServerMessage::Change { collection, .. } if collection == "other"),
        "the other collection's CHANGE comes while the slow commit is in flight, not after it: {change:?}"
    );
    assert!(started.elapsed() < PROMPTLY * 2);
    assert!(matches!(ws.msg().await, ServerMessage::OpResult { id: 2, results } if results[0].ok));
    server.stop().await;
}

/// Time is paused once the socket is busy, then moved past the token's expiry:
/// the session ends with 4100 at once, however full its inbound queue is.
#[tokio::test]
async fn a_client_that_keeps_the_queue_full_is_expired_under_paused_time() {
    let mut config = jwt_config();
    config.session.messages_per_second = 0;
    config.clock = Arc::new(syncgate::clock::MonotonicClock::new());
    let server = TestServer::start(config).await;
    let (mut reader, mut write) = raw::authed(server.addr, &hs256(json!({"sub": "busy", "exp": now() + 3600}))).await;
    let pings: Vec<u8> = (0..100).flat_map(|i| raw::frame(&ClientMessage::Ping { id: Some(i) })).collect();
    let flood = tokio::spawn(async move { while write.write_all(&pings).await.is_ok() {} });
    // The flood is running: the runtime never idles, so time moves only when told.
    for _ in 0..20 {
        assert!(matches!(reader.next(Duration::from_secs(10)).await, Some(Event::Msg(ServerMessage::Pong { .. }))));
    }
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3601)).await;
    let code = loop {
        match reader.next(Duration::from_secs(30)).await {
            Some(Event::Close(code)) => break Some(code),
            Some(_) => continue,
            None => break None,
        }
    };
    flood.abort();
    assert_eq!(code, Some(4100), "the session ends at exp, under paused time, with no sleeping");
    tokio::time::resume();
    server.stop().await;
}

/// A SYNC whose snapshot is still being read when the client UNSYNCs is
/// answered all the same, and nothing of the ended following is streamed.
#[tokio::test]
async fn every_sync_is_answered_even_when_unsynced_before_its_snapshot() {
    let store = slow_disk();
    let server = TestServer::start(ServerConfig { store, ..jwt_config() }).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &[])).await;
    writer.send(&ClientMessage::OpBatch { id: 1, ops: vec![op("o1", "slow-scan", "k")] }).await;
    writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    let mut ws = RawWs::authed(server.addr, &token("r", &[])).await;
    ws.send(&ClientMessage::Sync { id: 1, collection: "slow-scan".into(), since: None }).await;
    ws.send(&ClientMessage::Unsync { id: 2, collection: "slow-scan".into() }).await;
    let mut answered = Vec::new();
    while answered.len() < 2 {
        match ws.msg().await {
            ServerMessage::SyncData { id, .. } | ServerMessage::Ok { id } => answered.push(id),
            other => panic!("{other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [1, 2], "both requests answered");
    writer.send(&ClientMessage::OpBatch { id: 2, ops: vec![op("o2", "slow-scan", "k2")] }).await;
    writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    assert_eq!(ws.recv_within(Duration::from_millis(300)).await, Recv::Timeout, "no CHANGE after UNSYNC");
    server.stop().await;
}
