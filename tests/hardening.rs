//! Limits that hold on every surface: the admin API has its own
//! failed-authentication counter and a small connection limit, WebSocket
//! pings count against the message rate, and the HTTP API has request
//! budgets and reads no body it would refuse.

mod common;

use std::time::Duration;

use common::idp::http;
use common::raw::{Event, FrameReader, masked_binary, upgrade};
use common::{TestServer, jwt_config};
use syncgate::node::Node;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-secret";

#[tokio::test]
async fn bad_user_tokens_do_not_lock_the_operator_out() {
    let mut config = jwt_config();
    config.admin_token = Some(ADMIN.into());
    config.auth_failures_per_minute = 5;
    let server = TestServer::start(config).await;
    for _ in 0..10 {
        http(server.addr, "POST", "/api/publish", Some("not-a-token"), Some("{}")).await;
    }
    assert_eq!(http(server.addr, "POST", "/api/publish", Some("not-a-token"), Some("{}")).await.0, 429);
    let (status, body) = http(server.addr, "GET", "/admin/connections", Some(ADMIN), None).await;
    assert_eq!(status, 200, "the admin API keeps its own count: {body}");
    server.stop().await;
}

#[tokio::test]
async fn the_admin_listener_holds_a_bounded_number_of_connections() {
    let (public, admin) =
        (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let admin_addr = admin.local_addr().unwrap();
    let mut config = jwt_config();
    config.admin_token = Some(ADMIN.into());
    let shutdown = CancellationToken::new();
    let node = Node::open(config, shutdown.clone()).await.unwrap();
    let server = tokio::spawn(syncgate::server::serve(public, Some(admin), node));
    let mut idle = Vec::new();
    for _ in 0..syncgate::server::ADMIN_MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(admin_addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut extra, &mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection past the limit is closed at once: {read:?}");
    drop(idle);
    let answer = common::eventually("a slot is free again", || async {
        let (status, _) = http(admin_addr, "GET", "/admin/connections", Some(ADMIN), None).await;
        (status == 200).then_some(())
    });
    answer.await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn pings_count_against_the_message_rate() {
    let mut config = jwt_config();
    config.session.messages_per_second = 10;
    config.session.message_burst = 20;
    let server = TestServer::start(config).await;
    let (read, mut write) = upgrade(server.addr, "/ws").await.into_split();
    let mut reader = FrameReader::new(read);
    reader.next(Duration::from_secs(5)).await;
    let mut ping = masked_binary(b"hi");
    ping[0] = 0x89;
    let burst: Vec<u8> = std::iter::repeat_n(ping, 500).flatten().collect();
    write.write_all(&burst).await.unwrap();
    let (mut pongs, mut code) = (0, None);
    while let Some(event) = reader.next(Duration::from_secs(5)).await {
        match event {
            Event::Close(c) => {
                code = Some(c);
                break;
            }
            Event::Other => pongs += 1,
            Event::Msg(_) => {}
        }
    }
    assert_eq!(code, Some(4029), "a ping flood is rate-limited like a message flood");
    assert!(pongs <= 45, "{pongs} of 500 pings answered");
    server.stop().await;
}

const READ_ONLY: &str = r#"
[[rules]]
roles = ["reader"]
resource = "rooms/*"
actions = ["read"]

[[rules]]
roles = ["writer"]
resource = "rooms/*"
actions = ["read", "write"]
"#;

fn api_config() -> syncgate::ServerConfig {
    let mut config = jwt_config();
    config.policy = syncgate::rules::Policy::with_rules(syncgate::rules::RuleSet::parse(READ_ONLY).unwrap());
    config.session.messages_per_second = 5;
    config.session.message_burst = 10;
    config.timeouts.body_read = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn the_http_api_spends_the_sockets_message_rate() {
    let server = TestServer::start(api_config()).await;
    let bearer = common::token("backend", &["writer"]);
    let mut statuses = Vec::new();
    for n in 0..30 {
        let body = format!(r#"{{"topic": "rooms/lobby", "data": {n}}}"#);
        statuses.push(http(server.addr, "POST", "/api/publish", Some(&bearer), Some(&body)).await.0);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(statuses.iter().take(10).all(|s| *s == 200), "the burst passes: {statuses:?}");
    assert!(limited >= 15, "then the rate holds: {statuses:?}");
    server.stop().await;
}

/// Sends a request head announcing a 1 MB body and none of it; returns the
/// status line the server answers with, if any, within `limit`.
async fn answer_to_an_unsent_body(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: &str,
    limit: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(limit, tcp.read(&mut answer)).await.ok()?.ok()?;
    String::from_utf8_lossy(&answer[..n]).lines().next().map(str::to_string)
}

#[tokio::test]
async fn publish_rights_are_checked_before_the_body_and_a_trickle_times_out() {
    let server = TestServer::start(api_config()).await;
    let reader = common::token("mallory", &["reader"]);
    let quick = Duration::from_millis(500);
    let status = answer_to_an_unsent_body(server.addr, "/api/publish", &reader, quick).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 403 Forbidden"), "no write right anywhere: refused before the body");
    let writer = common::token("backend", &["writer"]);
    let status = answer_to_an_unsent_body(server.addr, "/api/publish?topic=admin/alerts", &writer, quick).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 403 Forbidden"), "the query's topic is checked before the body");
    let status =
        answer_to_an_unsent_body(server.addr, "/api/publish?topic=rooms/lobby", &writer, Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"), "a body that never comes ends the request");
    let (status, text) =
        http(server.addr, "POST", "/api/publish?topic=rooms/lobby", Some(&writer), Some(r#"{"data": "hi"}"#)).await;
    assert_eq!(status, 200, "{text}");
    server.stop().await;
}
