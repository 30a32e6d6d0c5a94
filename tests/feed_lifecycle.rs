//! A change feed lives like a WebSocket session: it ends when its token
//! expires, when its token or subject is revoked, when an administrator
//! disconnects its subject, when a rules reload takes its read access away,
//! and when revalidation finds an introspected token no longer active; the
//! admin API counts it among the connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::idp::{Idp, http};
use common::sse::Feed;
use common::{TestServer, hs256, jwt_config, now, token};
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::rules::{Policy, RuleSet};

const ADMIN: &str = "admin-secret";

const RULES: &str = r#"
[[rules]]
roles = ["reader"]
resource = "c"
actions = ["read"]
"#;

const NARROWER: &str = r#"
[[rules]]
roles = ["reader"]
resource = "other"
actions = ["read"]
"#;

fn config() -> ServerConfig {
    let mut config = jwt_config();
    config.admin_token = Some(ADMIN.into());
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config.session.leeway = Duration::ZERO;
    config
}

/// Reads events until the server ends the feed; returns its `error` event's code.
async fn ending(feed: &mut Feed) -> String {
    let mut code = None;
    while let Some((event, _, data)) = feed.next_or_end().await {
        if event == "error" {
            code = data["code"].as_str().map(str::to_string);
        }
    }
    code.expect("an error event before the end")
}

/// Three feeds on a short-lived token fill a server that takes three
/// connections; once the token expires they end, and their connections
/// with them, so a new client gets in.
#[tokio::test]
async fn feeds_end_when_their_token_expires_and_give_their_connections_back() {
    let mut config = config();
    config.limits.max_connections = 3;
    let server = TestServer::start(config).await;
    let short = hs256(json!({"sub": "alice", "roles": ["reader"], "exp": now() + 2}));
    let mut feeds = Vec::new();
    for _ in 0..3 {
        feeds.push(Feed::open(server.addr, "/api/collections/c/changes", &short, None).await);
    }
    for feed in &mut feeds {
        assert_eq!(ending(feed).await, "token_expired");
    }
    let fresh = token("bob", &["reader"]);
    common::eventually("a connection slot is free again", || async {
        (status_of_get(server.addr, "/api/collections/c", &fresh).await == Some(200)).then_some(())
    })
    .await;
    server.stop().await;
}

/// The status of a GET, or `None` when the server closed the connection unanswered (no slot).
async fn status_of_get(addr: std::net::SocketAddr, path: &str, bearer: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn revocations_and_disconnects_end_feeds_and_the_admin_api_counts_them() {
    let server = TestServer::start(config()).await;
    let admin = |path: &'static str, body: serde_json::Value| async move {
        http(server.addr, "POST", path, Some(ADMIN), Some(&body.to_string())).await
    };
    let with_jti = hs256(json!({"sub": "alice", "roles": ["reader"], "exp": now() + 600, "jti": "t-1"}));
    let mut by_jti = Feed::open(server.addr, "/api/collections/c/changes", &with_jti, None).await;
    let mut by_sub = Feed::open(server.addr, "/api/collections/c/changes", &token("bob", &["reader"]), None).await;
    let connections = http(server.addr, "GET", "/admin/connections", Some(ADMIN), None).await.1;
    let connections: serde_json::Value = serde_json::from_str(&connections).unwrap();
    assert_eq!(connections["connections"], json!(2), "feeds are connections: {connections}");
    assert_eq!(admin("/admin/revoke", json!({"jti": "t-1"})).await.0, 200);
    assert_eq!(ending(&mut by_jti).await, "forbidden");
    let (status, body) = admin("/admin/disconnect", json!({"sub": "bob"})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"disconnected":1,"nodesAcknowledged":0}"#));
    assert_eq!(ending(&mut by_sub).await, "forbidden");
    let mut later = Feed::open(server.addr, "/api/collections/c/changes", &token("carol", &["reader"]), None).await;
    let issued_before = now() + 1;
    assert_eq!(admin("/admin/revoke", json!({"sub": "carol", "issuedBefore": issued_before})).await.0, 200);
    assert_eq!(ending(&mut later).await, "forbidden", "a subject revocation ends it too");
    server.stop().await;
}

#[tokio::test]
async fn a_rules_reload_that_takes_read_access_away_ends_the_feed() {
    let server = TestServer::start(config()).await;
    let mut feed = Feed::open(server.addr, "/api/collections/c/changes", &token("alice", &["reader"]), None).await;
    server.node.set_policy(Policy::with_rules(RuleSet::parse(NARROWER).unwrap()));
    assert_eq!(ending(&mut feed).await, "forbidden");
    server.stop().await;
}

#[tokio::test]
async fn an_introspected_token_that_turns_inactive_ends_the_feed() {
    let idp = Idp::start().await;
    idp.answer("opaque", json!({"active": true, "sub": "alice", "exp": now() + 600}));
    let introspector = common::idp::introspector(&idp, Duration::from_millis(300));
    let server = TestServer::start(ServerConfig { authenticator: introspector, ..ServerConfig::default() }).await;
    let mut feed = Feed::open(server.addr, "/api/collections/c/changes", "opaque", None).await;
    idp.answer("opaque", json!({"active": false}));
    assert_eq!(ending(&mut feed).await, "forbidden");
    server.stop().await;
}

#[tokio::test]
async fn feeds_are_bounded_per_identity() {
    let mut config = config();
    config.limits.feeds_per_identity = 2;
    let server = TestServer::start(config).await;
    let bearer = token("alice", &["reader"]);
    let _first = Feed::open(server.addr, "/api/collections/c/changes", &bearer, None).await;
    let _second = Feed::open(server.addr, "/api/collections/c/changes", &bearer, None).await;
    let (status, body) = http(server.addr, "GET", "/api/collections/c/changes", Some(&bearer), None).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("at most 2 change feeds per identity"), "{body}");
    let other = Feed::open(server.addr, "/api/collections/c/changes", &token("bob", &["reader"]), None).await;
    drop(other);
    server.stop().await;
}

/// Fifty feeds of one collection, woken by one write: the store is read a
/// handful of times for them, not fifty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_woken_by_one_change_share_the_read() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let scans = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let mut hooked = common::stores::Hooked::around(Arc::new(syncgate::store::MemoryStore::new()));
    let (scanned, on) = (scans.clone(), counting.clone());
    hooked.before_scan = Arc::new(move |_| {
        if on.load(Ordering::SeqCst) {
            scanned.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut config = config();
    config.store = Arc::new(hooked);
    config.limits.feeds_per_identity = 0;
    config.limits.feeds_per_ip = 0;
    let server = TestServer::start(config).await;
    // The writer needs the write right the feeds' rules do not give.
    server.node.set_policy(Policy::allow_all());
    let writer = token("backend", &["reader"]);
    let put = |key: &'static str| {
        let body = json!({"ops": [{"key": key, "value": 1}]}).to_string();
        let writer = writer.clone();
        async move { http(server.addr, "POST", "/api/collections/c/ops", Some(&writer), Some(&body)).await.0 }
    };
    assert_eq!(put("first").await, 200);
    let bearer = token("alice", &["reader"]);
    let mut feeds = Vec::new();
    for _ in 0..50 {
        let mut feed = Feed::open(server.addr, "/api/collections/c/changes", &bearer, None).await;
        // Each feed's own first read is done once it has sent what it found.
        assert_eq!(feed.next().await.2["records"][0]["key"], json!("first"));
        feeds.push(feed);
    }
    counting.store(true, Ordering::SeqCst);
    assert_eq!(put("k").await, 200);
    for feed in &mut feeds {
        let (event, _, data) = feed.next().await;
        assert_eq!((event.as_str(), &data["records"][0]["key"]), ("change", &json!("k")));
    }
    let scans = scans.load(Ordering::SeqCst);
    assert!((1..=5).contains(&scans), "{scans} store reads for 50 feeds woken by one change");
    server.stop().await;
}

/// A consumer that takes nothing loses its feed after the write timeout:
/// the server does not hold what would pile up for it.
#[tokio::test]
async fn a_feed_whose_consumer_does_not_read_ends() {
    use tokio::io::AsyncWriteExt;
    let mut config = config();
    config.policy = Policy::allow_all();
    config.timeouts.write = Duration::from_secs(1);
    config.limits.sync_page_bytes = 65536;
    let server = TestServer::start(config).await;
    let writer = token("backend", &[]);
    // 8 MB: more than the kernel's socket buffers hold for a consumer that does not read.
    for batch in 0..20 {
        let ops: Vec<_> = (0..50).map(|n| json!({"key": format!("k{batch}-{n}"), "value": "x".repeat(8000)})).collect();
        let body = json!({ "ops": ops }).to_string();
        assert_eq!(http(server.addr, "POST", "/api/collections/c/ops", Some(&writer), Some(&body)).await.0, 200);
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/collections/c/changes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token("stalled", &[])
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let feeds = || async {
        let (_, body) = http(server.addr, "GET", "/admin/connections", Some(ADMIN), None).await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["bySub"]["stalled"].as_u64().unwrap_or(0)
    };
    common::eventually("the feed is open", || async { (feeds().await == 1).then_some(()) }).await;
    common::eventually("the stalled feed ended", || async { (feeds().await == 0).then_some(()) }).await;
    drop(stalled);
    server.stop().await;
}
