//! Session behaviour over real sockets: the handshake rules, malformed and
//! oversized input, timeouts, expiry, refresh, concurrency and shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fastwebsockets::{Frame, OpCode, Payload};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::auth::{AnonymousAuthenticator, Identity, StaticTokenVerifier};
use syncgate::protocol::{ClientMessage, ServerMessage};

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

#[tokio::test]
async fn nothing_but_auth_and_ping_before_auth_ack() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { protocol_version: 1 }));
    ws.send(&ClientMessage::Ping { id: Some(3) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(3) });
    ws.send(&ClientMessage::Sub { id: 1, topic: "t".into() }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "not_authenticated"));
    assert_eq!(ws.close_code().await, 4001);

    for early in [
        map(vec![("type", Value::from("NOPE"))]),
        map(vec![("type", Value::from("PUB")), ("id", Value::from(1)), ("topic", Value::from("t"))]),
    ] {
        let mut ws = RawWs::connect("/ws", server.addr).await;
        ws.msg().await;
        ws.send_value(&early).await;
        assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "not_authenticated"));
        assert_eq!(ws.close_code().await, 4001);
    }
    server.stop().await;
}

#[tokio::test]
async fn auth_without_a_usable_token() {
    let server = TestServer::start(jwt_config()).await;
    for (auth, code) in [
        (map(vec![("type", Value::from("AUTH"))]), "token_missing"),
        (map(vec![("type", Value::from("AUTH")), ("token", Value::from(""))]), "token_missing"),
        (map(vec![("type", Value::from("AUTH")), ("token", Value::from(42))]), "token_malformed"),
    ] {
        let mut ws = RawWs::connect("/ws", server.addr).await;
        ws.msg().await;
        ws.send_value(&auth).await;
        assert!(matches!(ws.msg().await, ServerMessage::AuthFail { code: ref got, .. } if got == code), "{auth}");
        assert_eq!(ws.close_code().await, 4001);
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_frames_close_with_4000_before_and_after_auth() {
    let server = TestServer::start(jwt_config()).await;
    let bad: Vec<Box<dyn Fn() -> Vec<u8>>> = vec![
        Box::new(|| vec![0xc1]),
        Box::new(|| vec![0x93, 1, 2, 3]),
        Box::new(|| vec![0x81, 0xa4, b't', b'y', b'p', b'e']),
        Box::new(|| vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0x05]),
        Box::new(|| vec![0xdb, 0xff, 0xff, 0xff, 0xff]),
        // Deep nesting, within the pre-auth size limit (an AUTH with the longest token).
        Box::new(|| [vec![0x91u8; 16_000], vec![1]].concat()),
    ];
    for make in &bad {
        let mut ws = RawWs::connect("/ws", server.addr).await;
        ws.msg().await;
        ws.send_bytes(&make()).await;
        assert_eq!(ws.close_code().await, 4000, "pre-auth {:?}", &make()[..make().len().min(8)]);

        let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
        ws.send_bytes(&make()).await;
        assert_eq!(ws.close_code().await, 4000, "post-auth");
    }
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send_text("{\"type\":\"PING\"}").await;
    assert_eq!(ws.close_code().await, 4000);
    server.stop().await;
}

#[tokio::test]
async fn unknown_types_and_bad_fields_after_auth_are_answered() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send_value(&map(vec![("type", Value::from("WHAT")), ("id", Value::from(7)), ("extra", Value::from(1))])).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(7), ref code, .. } if code == "unknown_type"));
    ws.send_value(&map(vec![("type", Value::from("SUB")), ("id", Value::from(8))])).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(8), ref code, .. } if code == "invalid"));
    ws.send_value(&map(vec![("type", Value::from("PING")), ("id", Value::from(9)), ("ignored", Value::from("x"))]))
        .await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(9) });
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let mut config = jwt_config();
    config.limits.max_frame_bytes = 64 * 1024;
    config.limits.max_preauth_frame_bytes = 8 * 1024;
    let server = TestServer::start(config).await;

    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send_bytes(&vec![0x80; 9 * 1024]).await;
    assert_eq!(ws.close_code().await, 1009, "pre-auth limit");

    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    let pad = "x".repeat(32 * 1024);
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(1) });
    ws.send_value(&map(vec![
        ("type", Value::from("PING")),
        ("id", Value::from(2)),
        ("pad", Value::from(pad.as_str())),
    ]))
    .await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(2) }, "32 KiB is fine after auth");
    ws.send_bytes(&vec![0x80; 2 * 1024 * 1024]).await;
    assert_eq!(ws.close_code().await, 1009);

    // Many small fragments may not add up past the limit either.
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send_frame(Frame::new(false, OpCode::Binary, None, Payload::Owned(vec![0x80; 16 * 1024]))).await;
    for _ in 0..5 {
        ws.send_frame(Frame::new(false, OpCode::Continuation, None, Payload::Owned(vec![0; 16 * 1024]))).await;
    }
    assert_eq!(ws.close_code().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn auth_timeout_closes_with_4008() {
    let mut config = jwt_config();
    config.session.auth_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&ClientMessage::Ping { id: None }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: None });
    assert_eq!(ws.close_code().await, 4008, "a PING does not extend the auth timeout");
    server.stop().await;
}

#[tokio::test]
async fn expiry_sends_token_expiring_then_closes_with_4100() {
    let mut config = jwt_config();
    config.session.expiry_notice = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let exp = now() + 2;
    let mut ws = RawWs::authed(server.addr, &hs256(json!({"sub": "alice", "exp": exp}))).await;
    assert_eq!(ws.msg().await, ServerMessage::TokenExpiring { expires_at: exp });
    assert_eq!(ws.close_code().await, 4100);
    server.stop().await;
}

#[tokio::test]
async fn refresh_extends_the_session_for_the_same_subject() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &hs256(json!({"sub": "alice", "exp": now() + 2}))).await;
    assert!(matches!(ws.msg().await, ServerMessage::TokenExpiring { .. }));
    let later = now() + 3600;
    ws.send(&ClientMessage::Auth { token: Some(hs256(json!({"sub": "alice", "exp": later, "roles": ["admin"]}))) })
        .await;
    match ws.msg().await {
        ServerMessage::AuthAck { sub, roles, expires_at, .. } => {
            assert_eq!((sub.as_str(), roles, expires_at), ("alice", vec!["admin".to_string()], Some(later)));
        }
        other => panic!("{other:?}"),
    }
    // Past the first token's expiry the session is still alive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(1) });
    server.stop().await;
}

#[tokio::test]
async fn refresh_for_another_subject_or_with_a_bad_token_ends_the_session() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send(&ClientMessage::Auth { token: Some(token("bob", &[])) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "forbidden"));
    assert_eq!(ws.close_code().await, 4003);

    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send(&ClientMessage::Auth { token: Some("garbage".into()) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "token_malformed"));
    assert_eq!(ws.close_code().await, 4001);

    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    ws.send(&ClientMessage::Auth { token: Some(hs256(json!({"sub": "alice", "exp": now() - 3600}))) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "token_expired"));
    assert_eq!(ws.close_code().await, 4100);
    server.stop().await;
}

#[tokio::test]
async fn static_token_mode_compares_the_secret() {
    let config = ServerConfig {
        authenticator: Arc::new(StaticTokenVerifier::new(
            "family-secret",
            Identity::new("homelab", vec!["user".into()]),
        )),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = RawWs::authed(server.addr, "family-secret").await;
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(1) });
    assert_eq!(RawWs::refused(server.addr, "family-secreT").await, ("token_invalid".into(), 4001));
    assert_eq!(RawWs::refused(server.addr, "family-secret-and-more").await, ("token_invalid".into(), 4001));
    let mut ws = RawWs::connect("/ws?token=family-secret", server.addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { ref sub, .. } if sub == "homelab"));
    server.stop().await;
}

#[tokio::test]
async fn mode_none_acknowledges_at_once_with_the_anonymous_roles() {
    let config = ServerConfig {
        authenticator: Arc::new(AnonymousAuthenticator { roles: vec!["guest".into()] }),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    assert_eq!(
        identity_of(ws.msg().await),
        ("anonymous".to_string(), vec!["guest".to_string()], None),
        "AUTH_ACK {{sub, roles, expiresAt}}"
    );
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(1) });
    server.stop().await;
}

#[tokio::test]
async fn silent_clients_are_pinged_and_dropped() {
    let mut config = jwt_config();
    config.session.ping_interval = Duration::from_millis(100);
    config.session.idle_timeout = Duration::from_millis(400);
    let server = TestServer::start(config).await;
    // RawWs only answers pings while it reads: reading keeps it alive.
    let mut alive = RawWs::authed(server.addr, &token("alice", &[])).await;
    assert_eq!(alive.recv_within(Duration::from_millis(900)).await, Recv::Timeout, "a client that answers pings stays");
    // A raw TCP peer that completed the upgrade and then went silent is closed.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    silent.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent peer was disconnected");
    // 0x88 = FIN + close opcode; a close frame was sent before the socket went.
    assert!(seen.windows(2).any(|w| w[0] == 0x88), "a close frame was sent");
    server.stop().await;
}

#[tokio::test]
async fn five_hundred_concurrent_handshakes() {
    let server = TestServer::start(jwt_config()).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for i in 0..500 {
        tasks.push(tokio::spawn(async move {
            let sub = format!("user-{i}");
            let mut ws = RawWs::authed(addr, &token(&sub, &["user"])).await;
            ws.send(&ClientMessage::Ping { id: Some(i) }).await;
            assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(i) });
            ws
        }));
    }
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.unwrap());
    }
    assert_eq!(sockets.len(), 500);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_with_1001() {
    let server = TestServer::start(jwt_config()).await;
    let mut a = RawWs::authed(server.addr, &token("alice", &[])).await;
    let mut b = RawWs::connect("/ws", server.addr).await;
    b.msg().await;
    server.shutdown.cancel();
    assert_eq!(a.close_code().await, 1001);
    assert_eq!(b.close_code().await, 1001);
    let addr = server.addr;
    server.handle.await.unwrap().unwrap();
    assert!(RawWs::try_connect("/ws", addr).await.is_err(), "the listener is gone after shutdown");
}

#[tokio::test]
async fn the_connection_cap_refuses_extra_sockets() {
    let mut config = jwt_config();
    config.limits.max_connections = 2;
    let server = TestServer::start(config).await;
    let _a = RawWs::authed(server.addr, &token("a", &[])).await;
    let _b = RawWs::authed(server.addr, &token("b", &[])).await;
    assert!(RawWs::try_connect("/ws", server.addr).await.is_err(), "a third socket is refused");
    drop(_a);
    let mut c =
        eventually("the freed slot takes a new socket", || async { RawWs::try_connect("/ws", server.addr).await.ok() })
            .await;
    assert!(matches!(c.msg().await, ServerMessage::AuthRequired { .. }));
    c.send(&ClientMessage::Auth { token: Some(token("c", &[])) }).await;
    assert!(matches!(c.msg().await, ServerMessage::AuthAck { .. }), "the new socket works");
    server.stop().await;
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let server = TestServer::start(jwt_config()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (path, status) in [("/healthz", "200"), ("/nope", "404"), ("/ws", "426")] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {response}");
    }
    server.stop().await;
}
