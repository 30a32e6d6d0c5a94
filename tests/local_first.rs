//! Local-first correctness at the edges: storage faults, oversized outboxes,
//! rate limits, restarts, restores, tombstone collection and hostile clocks.
//! Each test drives the real server (and the real Rust client where a client
//! is involved) over real sockets.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, Record, ServerMessage};
use syncgate::store::{Durability, MemoryStore, SqliteStore, Store};
use syncgate_client::{Backoff, Client, ClientConfig, ClientEvent};
use tokio::sync::mpsc::UnboundedReceiver;

fn client_config(url: String, sub: &'static str) -> ClientConfig {
    ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(40), max: Duration::from_millis(200) },
        ..ClientConfig::new(url).with_token_provider(move |_| async move { Ok(Some(token(sub, &["user"]))) })
    }
}

fn with_store(store: Arc<dyn Store>) -> ServerConfig {
    ServerConfig { store, ..jwt_config() }
}

fn op(id: &str, key: &str, value: impl Into<Value>, hlc: String) -> OpInput {
    OpInput::Op(RawOp { op_id: Value::from(id), collection: "c".into(), key: key.into(), value: value.into(), hlc })
}

async fn write(ws: &mut RawWs, id: u64, ops: Vec<OpInput>) -> Vec<(bool, Option<String>)> {
    ws.send(&ClientMessage::OpBatch { id, ops }).await;
    loop {
        match ws.msg().await {
            ServerMessage::OpResult { id: got, results } if got == id => {
                return results.into_iter().map(|r| (r.ok, r.code)).collect();
            }
            ServerMessage::Change { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
}

async fn sync(ws: &mut RawWs, id: u64, since: Option<String>) -> (Vec<Record>, String, bool) {
    ws.send(&ClientMessage::Sync { id, collection: "c".into(), since }).await;
    loop {
        match ws.msg().await {
            ServerMessage::SyncData { id: got, records, cursor, reset, .. } if got == id => {
                return (records, cursor, reset);
            }
            ServerMessage::Change { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// The visible records of a snapshot (tombstones left out).
fn visible(records: &[Record]) -> BTreeMap<String, Value> {
    records.iter().filter(|r| !r.value.is_nil()).map(|r| (r.key.clone(), r.value.clone())).collect()
}

async fn settled(events: &mut UnboundedReceiver<ClientEvent>, n: usize) -> Vec<Option<String>> {
    let mut outcomes = Vec::new();
    while outcomes.len() < n {
        let seen = until(events, |e| matches!(e, ClientEvent::OpSettled { .. })).await;
        if let Some(ClientEvent::OpSettled { rejected, .. }) = seen.last() {
            outcomes.push(rejected.clone());
        }
    }
    outcomes
}

// ---- The client.

#[tokio::test]
async fn a_write_refused_as_unavailable_stays_queued_and_lands_after_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    let server = TestServer::start(with_store(store.clone())).await;
    store.inject_commit_failure(true);
    let (client, mut events) = Client::connect(client_config(server.url(), "alice")).unwrap();
    client.write("c", "k", Value::from("mine")).await.unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::OpRetrying { code, .. } if code == "unavailable")).await;
    assert_eq!(client.pending(), 1, "a temporary refusal is not a rollback");
    assert_eq!(client.get("c", "k"), Some(Value::from("mine")), "and the write stays visible");
    store.inject_commit_failure(false);
    assert_eq!(settled(&mut events, 1).await, [None], "retried and accepted once the disk is back");
    assert_eq!(store.get("c", "k").await.unwrap().map(|r| r.value), Some(Value::from("mine")));
    assert_eq!(client.pending(), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_outbox_larger_than_one_message_replays_completely() {
    let server = TestServer::start(jwt_config()).await;
    let addr = server.addr;
    server.stop().await;
    let (client, mut events) = Client::connect(client_config(format!("ws://{addr}/ws"), "alice")).unwrap();
    // Five values of 250 KiB: 1.25 MB of ops against a 1 MiB message limit.
    for i in 0..5u8 {
        client.write("c", &format!("big-{i}"), Value::Binary(vec![i; 250 * 1024])).await.unwrap();
    }
    // And one that no server would take: settled locally as invalid, without blocking the rest.
    client.write("c", "huge", Value::Binary(vec![9; 300 * 1024])).await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let server = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), with_store(store.clone())).await;
    let mut outcomes = settled(&mut events, 6).await;
    outcomes.sort();
    assert_eq!(outcomes, [None, None, None, None, None, Some("invalid".to_string())]);
    for i in 0..5u8 {
        assert_eq!(
            store.get("c", &format!("big-{i}")).await.unwrap().map(|r| r.value),
            Some(Value::Binary(vec![i; 250 * 1024]))
        );
    }
    assert_eq!(client.get("c", "huge"), None, "the refused write is rolled back");
    server.stop().await;
}

#[tokio::test]
async fn a_replay_batch_right_after_the_syncs_is_paced_not_refused() {
    let mut config = jwt_config();
    // AUTH and two SYNCs use the burst; the replay batch right after them waits
    // for its turn (before pacing it was refused as rate_limited and sent again).
    config.session.messages_per_second = 20;
    config.session.message_burst = 3;
    let server = TestServer::start(config).await;
    let addr = server.addr;
    server.stop().await;
    let (client, mut events) = Client::connect(client_config(format!("ws://{addr}/ws"), "alice")).unwrap();
    client.sync("c");
    client.sync("d");
    client.write("c", "k", Value::from(1)).await.unwrap();
    let mut config = jwt_config();
    config.session.messages_per_second = 20;
    config.session.message_burst = 3;
    let server = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), config).await;
    let seen = until(&mut events, |e| matches!(e, ClientEvent::OpSettled { .. })).await;
    assert!(
        !seen.iter().any(|e| matches!(e, ClientEvent::Error(m) if m.contains("rate_limited"))),
        "paced within the announced rate, nothing was refused: {seen:?}"
    );
    assert!(matches!(seen.last(), Some(ClientEvent::OpSettled { rejected: None, .. })));
    assert_eq!(client.pending(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_client_restarted_offline_shows_its_data_and_resumes_by_delta() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("replica.msgpack");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = TestServer::start(with_store(store.clone())).await;
    let addr = server.addr;
    let mut writer = RawWs::authed(addr, &token("w", &[])).await;
    let t = now() * 1000;
    let ops = (0..50).map(|i| op(&format!("o{i}"), &format!("k{i:02}"), i, format!("{t}:{i}:w"))).collect();
    write(&mut writer, 1, ops).await;
    {
        let config = ClientConfig { state_path: Some(state.clone()), ..client_config(server.url(), "alice") };
        let (client, mut events) = Client::connect(config).unwrap();
        client.sync("c");
        let seen = until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
        assert!(matches!(seen.last(), Some(ClientEvent::Synced { records: 50, reset: false, .. })));
        client.write("c", "mine", Value::from("offline edit")).await.unwrap();
        until(&mut events, |e| matches!(e, ClientEvent::OpSettled { .. })).await;
        client.close().await;
    }
    server.stop().await;
    // The app restarts with the server down: its data is there.
    let config = ClientConfig { state_path: Some(state.clone()), ..client_config(format!("ws://{addr}/ws"), "alice") };
    let (client, mut events) = Client::connect(config).unwrap();
    assert_eq!(client.records("c").len(), 51, "a restarted app shows its data offline");
    client.sync("c");
    let server = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), with_store(store.clone())).await;
    let mut writer = RawWs::authed(addr, &token("w", &[])).await;
    write(&mut writer, 2, vec![op("late", "k99", 99, format!("{}:0:w", now() * 1000))]).await;
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    match seen.last() {
        Some(ClientEvent::Synced { records, reset: false, .. }) => {
            assert!(*records <= 1, "a delta from the saved cursor, not a snapshot of 52 records: {records}");
        }
        other => panic!("{other:?}"),
    }
    eventually("the new record", || async { client.get("c", "k99").map(|_| ()) }).await;
    assert_eq!(client.records("c").len(), 52);
    server.stop().await;
}

#[tokio::test]
async fn synced_fires_after_the_last_page() {
    let mut config = jwt_config();
    config.limits.sync_page_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &[])).await;
    let t = now() * 1000;
    let ops = (0..40)
        .map(|i| op(&format!("o{i}"), &format!("k{i:02}"), Value::Binary(vec![1; 8 * 1024]), format!("{t}:{i}:w")));
    write(&mut writer, 1, ops.collect()).await;
    let (client, mut events) = Client::connect(client_config(server.url(), "alice")).unwrap();
    client.sync("c");
    until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    assert_eq!(client.records("c").len(), 40, "every page had arrived when Synced fired");
    server.stop().await;
}

// ---- The server.

#[tokio::test]
async fn cursors_of_another_epoch_or_never_issued_get_the_full_state() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("w", &[])).await;
    write(&mut ws, 1, vec![op("a", "k", 1, format!("{}:0:w", now() * 1000))]).await;
    let (_, cursor, _) = sync(&mut ws, 2, None).await;
    let parsed: syncgate::cursor::Cursor = cursor.parse().unwrap();
    let (delta, _, reset) = sync(&mut ws, 3, Some(cursor.clone())).await;
    assert!(delta.is_empty() && !reset, "a cursor of this store resumes");
    let other_epoch = syncgate::cursor::Cursor::new(parsed.epoch ^ 1, parsed.position).to_string();
    let never_issued = syncgate::cursor::Cursor::new(parsed.epoch, 999_999).to_string();
    for since in [other_epoch, never_issued, "999999".to_string()] {
        let (records, _, reset) = sync(&mut ws, 4, Some(since.clone())).await;
        assert!(reset, "{since}: must be answered with the full state");
        assert_eq!(records.len(), 1, "{since}");
    }
    ws.send(&ClientMessage::Sync { id: 5, collection: "c".into(), since: Some("yesterday".into()) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(5), code, .. } if code == "invalid"));
    server.stop().await;
}

#[tokio::test]
async fn after_a_restore_a_client_holding_a_newer_cursor_ends_with_exactly_the_restored_state() {
    let dir = tempfile::tempdir().unwrap();
    let (live, restored, backup) = (dir.path().join("live"), dir.path().join("restored"), dir.path().join("b.sgdb"));
    let server = TestServer::start(with_store(Arc::new(SqliteStore::open(&live, Durability::Full).unwrap()))).await;
    let addr = server.addr;
    let (client, mut events) = Client::connect(client_config(server.url(), "alice")).unwrap();
    client.sync("c");
    until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    client.write("c", "before", Value::from(1)).await.unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::OpSettled { rejected: None, .. })).await;
    syncgate::store::sqlite_backup(&live, &backup).unwrap();
    client.write("c", "after", Value::from(2)).await.unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::OpSettled { rejected: None, .. })).await;
    eventually("the client saw its write confirmed", || async { client.get("c", "after").map(|_| ()) }).await;
    server.stop().await;
    syncgate::store::sqlite_restore(&restored, &backup).unwrap();
    let store = Arc::new(SqliteStore::open(&restored, Durability::Full).unwrap());
    let server = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), with_store(store)).await;
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    assert!(matches!(seen.last(), Some(ClientEvent::Synced { reset: true, .. })), "the old epoch's cursor resets");
    let mut ws = RawWs::authed(addr, &token("r", &[])).await;
    let (fresh, _, _) = sync(&mut ws, 1, None).await;
    assert_eq!(client.records("c"), visible(&fresh), "exactly the restored state");
    assert_eq!(client.get("c", "after"), None);
    server.stop().await;
}

#[tokio::test]
async fn a_write_older_than_a_collected_tombstone_cannot_resurrect_it() {
    let store = Arc::new(MemoryStore::new());
    let server = TestServer::start(with_store(store.clone())).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &[])).await;
    let t0 = now() * 1000 - 10_000;
    write(&mut writer, 1, vec![op("set", "k", "v", format!("{t0}:0:w"))]).await;
    write(&mut writer, 2, vec![op("del", "k", Value::Nil, format!("{}:0:w", t0 + 1000))]).await;
    let (client, mut events) = Client::connect(client_config(server.url(), "reader")).unwrap();
    client.sync("c");
    until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    assert_eq!(client.get("c", "k"), None, "the reader holds the tombstone");
    assert_eq!(store.collect_tombstones(t0 + 2000).await.unwrap(), 1);
    let late = write(&mut writer, 3, vec![op("late", "k", "zombie", format!("{}:0:offline", t0 + 500))]).await;
    assert_eq!(late, [(false, Some("stale".to_string()))], "an op older than the collected delete is refused");
    let mut fresh = RawWs::authed(server.addr, &token("r", &[])).await;
    let (records, _, _) = sync(&mut fresh, 1, None).await;
    assert!(visible(&records).is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.records("c"), visible(&records), "every replica shows the same state");
    server.stop().await;
}

#[tokio::test]
async fn a_saturated_counter_is_refused_and_no_clock_freezes() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("w", &[])).await;
    let ahead = now() * 1000 + 59_000;
    let refused = write(&mut ws, 1, vec![op("evil", "k", "x", format!("{ahead}:4294967295:evil"))]).await;
    assert_eq!(refused, [(false, Some("invalid".to_string()))], "counters are 16-bit");
    // A full 16-bit counter within the drift bound is accepted, and a client that sees
    // it keeps issuing strictly increasing stamps: a later edit still wins.
    assert!(write(&mut ws, 2, vec![op("max", "k", "x", format!("{ahead}:65535:peer"))]).await[0].0);
    let (client, mut events) = Client::connect(client_config(server.url(), "alice")).unwrap();
    client.sync("c");
    until(&mut events, |e| matches!(e, ClientEvent::Synced { .. })).await;
    client.write("c", "k", Value::from("first edit")).await.unwrap();
    client.write("c", "k", Value::from("a")).await.unwrap();
    assert_eq!(client.get("c", "k"), Some(Value::from("a")), "the user's later edit wins locally");
    settled(&mut events, 2).await;
    let (records, _, _) = sync(&mut ws, 3, None).await;
    assert_eq!(visible(&records)["k"], Value::from("a"), "and on the server");
    server.stop().await;
}
