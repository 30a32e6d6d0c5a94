//! Two nodes in one process, sharing a store and a memory backplane: what one
//! node's connections do reaches the other's, and a `CHANGE` lost between
//! the store and the other node's hub is recovered from the store, so a
//! reader sees every change once and in order.

mod common;

use common::nodes::{Lossy, changed_keys, put};

use std::sync::Arc;

use common::{RawWs, TestServer, jwt_config, token};
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::backplane::{Backplane, MemoryBus};
use syncgate::protocol::{ClientMessage, ServerMessage};
use syncgate::store::{MemoryStore, Store};

/// Two servers on one store; node A's backplane is `a`, node B's is `b`.
async fn two_nodes(a: Arc<dyn Backplane>, b: Arc<dyn Backplane>) -> (TestServer, TestServer) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let node = |backplane| ServerConfig { store: store.clone(), backplane, ..jwt_config() };
    (TestServer::start(node(a)).await, TestServer::start(node(b)).await)
}

async fn synced_reader(server: &TestServer) -> RawWs {
    let mut reader = RawWs::authed(server.addr, &token("reader", &[])).await;
    reader.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    reader.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    reader
}

#[tokio::test]
async fn publications_and_changes_cross_nodes() {
    let bus = MemoryBus::new();
    let (a, b) = two_nodes(Arc::new(bus.node()), Arc::new(bus.node())).await;
    let mut subscriber = RawWs::authed(b.addr, &token("s", &[])).await;
    subscriber.send(&ClientMessage::Sub { id: 1, topic: "room".into() }).await;
    subscriber.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    let mut reader = synced_reader(&b).await;
    let mut writer = RawWs::authed(a.addr, &token("w", &[])).await;
    writer.send(&ClientMessage::Pub { id: 2, topic: "room".into(), data: Value::from("hi") }).await;
    let message = subscriber.msg_where(|m| matches!(m, ServerMessage::Message { .. })).await;
    assert!(matches!(message, ServerMessage::Message { ref from, .. } if from == "w"), "{message:?}");
    for n in 1..=3 {
        writer.send(&put(n)).await;
    }
    assert_eq!(changed_keys(&mut reader, 3).await, ["k1", "k2", "k3"], "a write on A reaches a reader on B");
    a.stop().await;
    b.stop().await;
}

/// The `CHANGE` of k2 never reaches node B; k3's shows the gap (its `prev`
/// is k2's position), so B's reader catches up from the store.
#[tokio::test]
async fn a_lost_change_is_recovered_from_the_store_once_and_in_order() {
    let bus = MemoryBus::new();
    let lossy = Lossy::new(bus.node(), vec![2]);
    let (a, b) = two_nodes(Arc::new(lossy), Arc::new(bus.node())).await;
    let mut reader = synced_reader(&b).await;
    let mut writer = RawWs::authed(a.addr, &token("w", &[])).await;
    for n in 1..=4 {
        writer.send(&put(n)).await;
        writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    }
    assert_eq!(changed_keys(&mut reader, 4).await, ["k1", "k2", "k3", "k4"], "every change once, in order");
    assert_eq!(
        reader.recv_within(std::time::Duration::from_millis(800)).await,
        common::Recv::Timeout,
        "no duplicate follows"
    );
    a.stop().await;
    b.stop().await;
}

/// Node B's inbound queue holds one message: a burst overflows it, the loss
/// is announced, and B's reader catches up (the last change too, though
/// nothing follows it).
#[tokio::test]
async fn an_overflowing_node_catches_its_readers_up() {
    let bus = MemoryBus::new();
    let (a, b) = two_nodes(Arc::new(bus.node()), Arc::new(bus.node_with_queue(1))).await;
    let mut reader = synced_reader(&b).await;
    let mut writer = RawWs::authed(a.addr, &token("w", &[])).await;
    for n in 1..=40 {
        writer.send(&put(n)).await;
    }
    let keys = changed_keys(&mut reader, 40).await;
    let expected: Vec<String> = (1..=40).map(|n| format!("k{n}")).collect();
    assert_eq!(keys, expected, "every change once, in commit order");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_admin_disconnect_reaches_every_node() {
    let bus = MemoryBus::new();
    let admin = |backplane| ServerConfig { backplane, admin_token: Some("admin-secret".into()), ..jwt_config() };
    let a = TestServer::start(admin(Arc::new(bus.node()))).await;
    let b = TestServer::start(admin(Arc::new(bus.node()))).await;
    let mut victim = RawWs::authed(b.addr, &token("mallory", &[])).await;
    let response =
        common::idp::http(a.addr, "POST", "/admin/disconnect", Some("admin-secret"), Some(r#"{"sub":"mallory"}"#))
            .await;
    assert_eq!(
        response,
        (200, r#"{"disconnected":0,"nodesAcknowledged":1}"#.into()),
        "nobody to close on node A itself; node B acknowledged"
    );
    assert_eq!(victim.close_code().await, 4003, "closed on the other node too");
    a.stop().await;
    b.stop().await;
}
