//! `/readyz`: ready while the store commits and the server is not draining;
//! not ready while the store cannot commit or during the drain before shutdown.

mod common;

use std::sync::Arc;

use common::idp::http;
use common::{RawWs, TestServer, eventually, jwt_config, token};
use syncgate::ServerConfig;
use syncgate::store::{Durability, SqliteStore};

#[tokio::test]
async fn readiness_follows_the_stores_ability_to_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    let config = ServerConfig { store: store.clone(), admin_token: Some("admin-secret".into()), ..jwt_config() };
    let server = TestServer::start(config).await;
    assert_eq!(http(server.addr, "GET", "/readyz", None, None).await, (200, "ready\n".into()));
    store.inject_commit_failure(true);
    let (status, body) = eventually("/readyz turns 503 while commits fail", || async {
        let answer = http(server.addr, "GET", "/readyz", None, None).await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(status, 503);
    // The public answer says what is down, not the store's own error text; the admin surface has the detail.
    assert_eq!(body, "not ready: the store is unavailable\n");
    let (status, detail) = http(server.addr, "GET", "/admin/readyz", Some("admin-secret"), None).await;
    assert_eq!(status, 503);
    assert!(detail.contains("cannot commit") && detail.contains("injected"), "{detail}");
    assert_eq!(http(server.addr, "GET", "/healthz", None, None).await.0, 200, "liveness is not readiness");
    store.inject_commit_failure(false);
    eventually("/readyz recovers", || async {
        (http(server.addr, "GET", "/readyz", None, None).await.0 == 200).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_draining_server_is_not_ready_but_still_serves_its_connections() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    server.node.drain();
    let (status, body) = http(server.addr, "GET", "/readyz", None, None).await;
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
    ws.send(&syncgate::protocol::ClientMessage::Ping { id: Some(1) }).await;
    ws.msg_where(|m| matches!(m, syncgate::protocol::ServerMessage::Pong { id: Some(1) })).await;
    server.shutdown.cancel();
    assert_eq!(ws.close_code().await, 1001, "then the shutdown closes it");
    server.handle.await.unwrap().unwrap();
}

/// A backplane that reports itself disconnected while `down` is set.
struct Flaky {
    inner: syncgate::backplane::MemoryBackplane,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl syncgate::backplane::Backplane for Flaky {
    fn interest<'a>(&'a self, s: &'a syncgate::backplane::Subject) -> syncgate::backplane::BackplaneFuture<'a, ()> {
        self.inner.interest(s)
    }
    fn drop_interest<'a>(
        &'a self,
        s: &'a syncgate::backplane::Subject,
    ) -> syncgate::backplane::BackplaneFuture<'a, ()> {
        self.inner.drop_interest(s)
    }
    fn publish(&self, s: &syncgate::backplane::Subject, payload: bytes::Bytes) {
        self.inner.publish(s, payload)
    }
    fn control(&self, c: syncgate::backplane::Control) -> syncgate::backplane::BackplaneFuture<'_, usize> {
        self.inner.control(c)
    }
    fn announce(&self, announcement: &syncgate::backplane::Announcement) {
        self.inner.announce(announcement)
    }
    fn inbound(&self) -> Option<syncgate::backplane::Inlets> {
        self.inner.inbound()
    }
    fn is_connected(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_backplane_outage_leaves_the_node_ready_and_says_so() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backplane = Arc::new(Flaky { inner: syncgate::backplane::MemoryBackplane::standalone(), down: down.clone() });
    let server = TestServer::start(ServerConfig { backplane, ..jwt_config() }).await;
    assert_eq!(http(server.addr, "GET", "/readyz", None, None).await, (200, "ready\n".into()));
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        http(server.addr, "GET", "/readyz", None, None).await,
        (200, "ready (the backplane is down: serving this node's clients only)\n".into()),
        "one NATS outage must not take every node out of the balancer"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_ready_requires_backplane_an_outage_makes_the_node_not_ready() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backplane = Arc::new(Flaky { inner: syncgate::backplane::MemoryBackplane::standalone(), down: down.clone() });
    let config = ServerConfig { backplane, ready_requires_backplane: true, ..jwt_config() };
    let server = TestServer::start(config).await;
    assert_eq!(http(server.addr, "GET", "/readyz", None, None).await.0, 200);
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        http(server.addr, "GET", "/readyz", None, None).await,
        (503, "not ready: the backplane is down\n".into())
    );
    server.stop().await;
}
