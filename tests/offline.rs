//! The offline-first client against a real server: queued writes, replay
//! after re-authentication with shrunken roles, per-op rollback, outbox
//! persistence, and pub/sub through the client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::{MemoryStore, Store};
use syncgate_client::{Backoff, Client, ClientConfig, ClientEvent};

const RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "users/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["editor"]
resource = "shared/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "shared/**"
actions = ["read"]

[[rules]]
roles = ["auditor"]
resource = "**"
actions = ["read"]
"#;

fn config(store: Arc<dyn Store>) -> ServerConfig {
    let mut config = ServerConfig { store, ..jwt_config() };
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config
}

fn client_config(url: String, editor: Arc<AtomicBool>) -> ClientConfig {
    let provider = move |_| {
        let roles: &[&str] = if editor.load(Ordering::SeqCst) { &["user", "editor"] } else { &["user"] };
        let token = token("alice", roles);
        async move { Ok(Some(token)) }
    };
    ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200) },
        replay_batch: 50,
        ..ClientConfig::new(url).with_token_provider(provider)
    }
}

#[tokio::test]
async fn offline_writes_replay_and_exactly_the_forbidden_ones_roll_back() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = TestServer::start(config(store.clone())).await;
    let addr = first.addr;
    let editor = Arc::new(AtomicBool::new(true));
    let (alice, mut events) = Client::connect(client_config(first.url(), editor.clone())).unwrap();
    alice.sync("shared/board");
    alice.sync("users/alice/todos");
    until(&mut events, |e| matches!(e, ClientEvent::Synced { collection, .. } if collection == "users/alice/todos"))
        .await;
    // While an editor and online, alice sets a value on the shared board.
    alice.write("shared/board", "title", Value::from("original")).await.unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::OpSettled { rejected: None, .. })).await;

    // Offline: the server goes away; alice keeps writing, and loses the editor role meanwhile.
    first.stop().await;
    until(&mut events, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    editor.store(false, Ordering::SeqCst);
    for i in 0..100 {
        alice.write("users/alice/todos", &format!("todo-{i}"), Value::from(format!("buy {i}"))).await.unwrap();
        alice
            .write("shared/board", if i == 0 { "title" } else { "note" }, Value::from(format!("edit {i}")))
            .await
            .unwrap();
    }
    assert_eq!(alice.pending(), 200);
    assert_eq!(alice.get("shared/board", "title"), Some(Value::from("edit 0")), "offline writes are visible at once");

    // Back online with the new token: replay in bounded batches, each op judged alone.
    let second = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), config(store.clone())).await;
    let mut accepted = 0;
    let mut forbidden = Vec::new();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    assert!(seen.iter().any(|e| matches!(e, ClientEvent::Connected { roles, .. } if roles == &["user"])));
    while accepted + forbidden.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap().unwrap() {
            ClientEvent::OpSettled { rejected: None, collection, .. } => {
                assert_eq!(collection, "users/alice/todos");
                accepted += 1;
            }
            ClientEvent::OpSettled { rejected: Some(code), collection, key, .. } => {
                assert_eq!((collection.as_str(), code.as_str()), ("shared/board", "forbidden"));
                forbidden.push(key);
            }
            _ => {}
        }
    }
    assert_eq!((accepted, forbidden.len()), (100, 100));
    assert_eq!(alice.pending(), 0);
    assert_eq!(alice.get("shared/board", "title"), Some(Value::from("original")), "rolled back to the server's value");
    assert_eq!(alice.get("shared/board", "note"), None, "a rejected create disappears");
    assert_eq!(alice.records("users/alice/todos").len(), 100);

    // A second client sees exactly the accepted writes.
    let auditor = {
        let url = second.url();
        let config = ClientConfig::new(url).with_token_provider(|_| async { Ok(Some(token("audit", &["auditor"]))) });
        let (auditor, mut audit_events) = Client::connect(config).unwrap();
        auditor.sync("users/alice/todos");
        auditor.sync("shared/board");
        // Both snapshots, in whichever order their answers come.
        let mut synced = std::collections::BTreeSet::new();
        while synced.len() < 2 {
            let seen = until(&mut audit_events, |e| matches!(e, ClientEvent::Synced { .. })).await;
            if let Some(ClientEvent::Synced { collection, .. }) = seen.last() {
                synced.insert(collection.clone());
            }
        }
        auditor
    };
    let todos = auditor.records("users/alice/todos");
    assert_eq!(todos.len(), 100);
    assert_eq!(todos["todo-42"], Value::from("buy 42"));
    assert_eq!(
        auditor.records("shared/board").into_iter().collect::<Vec<_>>(),
        [("title".to_string(), Value::from("original"))]
    );
    second.stop().await;
}

#[tokio::test]
async fn the_outbox_survives_an_app_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.msgpack");
    let server = TestServer::start(config(Arc::new(MemoryStore::new()))).await;
    let unreachable = "ws://127.0.0.1:9/ws".to_string();
    {
        let config = ClientConfig {
            state_path: Some(path.clone()),
            ..client_config(unreachable, Arc::new(AtomicBool::new(false)))
        };
        let (offline, _events) = Client::connect(config).unwrap();
        for i in 0..5 {
            offline.write("users/alice/todos", &format!("k{i}"), Value::from(i)).await.unwrap();
        }
        offline.close().await;
    }
    let config = ClientConfig {
        state_path: Some(path.clone()),
        ..client_config(server.url(), Arc::new(AtomicBool::new(false)))
    };
    let (again, mut events) = Client::connect(config).unwrap();
    assert_eq!(again.pending(), 5, "queued writes were loaded from disk");
    for _ in 0..5 {
        until(&mut events, |e| matches!(e, ClientEvent::OpSettled { rejected: None, .. })).await;
    }
    assert_eq!(again.pending(), 0);
    // Another file: the running client may still be saving `path` in the background.
    let damaged = dir.path().join("damaged.msgpack");
    std::fs::write(&damaged, b"not msgpack").unwrap();
    let corrupt =
        Client::connect(ClientConfig { state_path: Some(damaged), ..ClientConfig::new("ws://127.0.0.1:9/ws") });
    assert!(corrupt.is_err(), "an unreadable outbox is an error, not a silent loss");
    server.stop().await;
}

#[tokio::test]
async fn pub_sub_through_the_client_survives_reconnects() {
    let first = TestServer::start(jwt_config()).await;
    let addr = first.addr;
    let make = |url: String, sub: &'static str| ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200) },
        ..ClientConfig::new(url).with_token_provider(move |_| async move { Ok(Some(token(sub, &[]))) })
    };
    let (listener, mut listener_events) = Client::connect(make(first.url(), "listener")).unwrap();
    let mut deliveries = listener.subscribe("rooms/lobby");
    until(&mut listener_events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    let (speaker, _) = Client::connect(make(first.url(), "speaker")).unwrap();
    // The subscription may still be in flight: publish until it is delivered.
    let got = loop {
        speaker.publish("rooms/lobby", Value::from("hello")).await.unwrap();
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), deliveries.recv()).await {
            break d;
        }
    };
    assert_eq!((got.data, got.from.as_str()), (Value::from("hello"), "speaker"));

    first.stop().await;
    until(&mut listener_events, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    let second = TestServer::on(tokio::net::TcpListener::bind(addr).await.unwrap(), jwt_config()).await;
    until(&mut listener_events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    let got = loop {
        if let Ok(syncgate::protocol::ServerMessage::Ok { .. }) =
            speaker.publish("rooms/lobby", Value::from("again")).await
            && let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), deliveries.recv()).await
        {
            break d;
        }
    };
    assert_eq!(got.data, Value::from("again"), "the subscription was renewed after the reconnect");
    second.stop().await;
}

/// A write whose local save fails is reported as what it is: queued and not
/// saved. It stays queued, reaches the server, and the app hears it settle;
/// nothing is rolled back behind the app's back.
#[tokio::test]
async fn a_write_whose_local_save_fails_is_still_queued_and_reported_as_unsaved() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = TestServer::start(config(store.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("replica.msgpack");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let config =
        ClientConfig { state_path: Some(state), ..client_config(server.url(), Arc::new(AtomicBool::new(false))) };
    let (client, mut events) = Client::connect(config).unwrap();
    // The state directory goes away: every save fails from now on.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let unsaved = client.write("users/alice/notes", "n1", Value::from("kept")).await;
    let Err(syncgate_client::ClientError::NotSaved { op_id, .. }) = unsaved else {
        panic!("expected NotSaved, got {unsaved:?}")
    };
    assert_eq!(client.get("users/alice/notes", "n1"), Some(Value::from("kept")), "still visible");
    common::until(
        &mut events,
        |e| matches!(e, ClientEvent::OpSettled { op_id: id, rejected: None, .. } if *id == op_id),
    )
    .await;
    assert_eq!(store.get("users/alice/notes", "n1").await.unwrap().map(|r| r.value), Some(Value::from("kept")));
    client.close().await;
    server.stop().await;
}
