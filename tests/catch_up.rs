//! Catching up after a lost change: one store scan per feed rather than one
//! per watcher, and a lost *last* change noticed by the position check,
//! though no later change reveals the gap.

mod common;

use common::nodes::{Lossy, changed_keys, put};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::stores::Hooked;
use common::{RawWs, Recv, TestServer, jwt_config, token};
use syncgate::ServerConfig;
use syncgate::backplane::MemoryBus;
use syncgate::protocol::{ClientMessage, ServerMessage};
use syncgate::store::{MemoryStore, Store};

async fn synced_reader(server: &TestServer, n: usize) -> RawWs {
    let mut reader = RawWs::authed(server.addr, &token(&format!("reader-{n}"), &[])).await;
    reader.send(&ClientMessage::Sync { id: 1, collection: "c".into(), since: None }).await;
    reader.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await;
    reader
}

/// 1,000 readers on node B follow `c`; the `CHANGE` of k2 never reaches B,
/// so k3's reveals a gap and every reader must catch up. The store is read a
/// handful of times, not a thousand, and every reader still gets k1..k4 once
/// and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_catch_up_with_a_handful_of_scans() {
    const READERS: usize = 1000;
    let bus = MemoryBus::new();
    let scans = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let mut hooked = Hooked::around(Arc::new(MemoryStore::new()));
    let (scanned, on) = (scans.clone(), counting.clone());
    hooked.before_scan = Arc::new(move |_| {
        if on.load(Ordering::SeqCst) {
            scanned.fetch_add(1, Ordering::SeqCst);
        }
    });
    let store: Arc<dyn Store> = Arc::new(hooked);
    let lossy = Lossy::new(bus.node(), vec![2]);
    let a = TestServer::start(ServerConfig { store: store.clone(), backplane: Arc::new(lossy), ..jwt_config() }).await;
    let mut b_config = ServerConfig { store: store.clone(), backplane: Arc::new(bus.node()), ..jwt_config() };
    b_config.limits.max_connections = READERS + 16;
    let b = TestServer::start(b_config).await;
    let mut readers = Vec::with_capacity(READERS);
    for n in 0..READERS {
        readers.push(synced_reader(&b, n).await);
    }
    counting.store(true, Ordering::SeqCst);
    let mut writer = RawWs::authed(a.addr, &token("w", &[])).await;
    for n in 1..=4 {
        writer.send(&put(n)).await;
        writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    }
    for reader in &mut readers {
        assert_eq!(changed_keys(reader, 4).await, ["k1", "k2", "k3", "k4"], "every change once, in order");
    }
    let scans = scans.load(Ordering::SeqCst);
    assert!((1..=5).contains(&scans), "{scans} store scans for {READERS} watchers of one feed");
    assert_eq!(readers[0].recv_within(Duration::from_millis(300)).await, Recv::Timeout, "no duplicate follows");
    a.stop().await;
    b.stop().await;
}

/// The `CHANGE` of the last write never reaches node B and nothing follows
/// it to reveal the gap: B's position check notices the feed is behind the
/// store, and the reader gets the change within the check interval.
#[tokio::test]
async fn a_lost_last_change_arrives_by_the_position_check() {
    let bus = MemoryBus::new();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let lossy = Lossy::new(bus.node(), vec![3]);
    let a = TestServer::start(ServerConfig { store: store.clone(), backplane: Arc::new(lossy), ..jwt_config() }).await;
    let mut b_config = ServerConfig { store: store.clone(), backplane: Arc::new(bus.node()), ..jwt_config() };
    b_config.position_check = Duration::from_millis(300);
    let b = TestServer::start(b_config).await;
    let mut reader = synced_reader(&b, 0).await;
    let mut writer = RawWs::authed(a.addr, &token("w", &[])).await;
    for n in 1..=3 {
        writer.send(&put(n)).await;
        writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    }
    assert_eq!(changed_keys(&mut reader, 2).await, ["k1", "k2"]);
    // Within a check interval and the gap grace (0.3 s + 0.5 s), with room for a slow machine.
    let last = tokio::time::timeout(Duration::from_secs(5), changed_keys(&mut reader, 1)).await;
    assert_eq!(last.expect("the lost last change never arrived"), ["k3"]);
    assert_eq!(reader.recv_within(Duration::from_millis(800)).await, Recv::Timeout, "and only once");
    a.stop().await;
    b.stop().await;
}
