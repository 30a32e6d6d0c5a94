//! One test per limit, against the real server, with raw sockets where a
//! well-behaved client cannot produce the input.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::ip_slots::PerIpLimits;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Completes a WebSocket upgrade by hand and returns the raw socket.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    common::raw::upgrade(addr, "/ws").await
}

/// Reads server frames until a close frame; returns its code (None if the socket just ended).
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // Walk unmasked server frames.
            let mut i = 0;
            while i + 2 <= buf.len() {
                let opcode = buf[i] & 0x0f;
                let (len, header) = match buf[i + 1] & 0x7f {
                    126 if i + 4 <= buf.len() => (u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize, 4),
                    127 if i + 10 <= buf.len() => {
                        (u64::from_be_bytes(buf[i + 2..i + 10].try_into().unwrap()) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => break,
                };
                if i + header + len > buf.len() {
                    break;
                }
                if opcode == 8 {
                    return;
                }
                i += header + len;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither closed nor answered");
    let position = (0..buf.len().saturating_sub(3)).find(|&i| buf[i] == 0x88)?;
    Some(u16::from_be_bytes([buf[position + 2], buf[position + 3]]))
}

#[tokio::test]
async fn a_4_gib_length_prefix_is_refused_without_allocating() {
    let server = TestServer::start(jwt_config()).await;
    let mut tcp = raw_upgrade(server.addr).await;
    // FIN+binary, masked, 64-bit length 2^32, mask key, and no payload.
    tcp.write_all(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, Some(1009));
    server.stop().await;
}

#[tokio::test]
async fn unmasked_client_frames_close_with_1002() {
    let server = TestServer::start(jwt_config()).await;
    let mut tcp = raw_upgrade(server.addr).await;
    // A well-formed PING message, but without the mask bit.
    let ping = syncgate::protocol::encode_client(&ClientMessage::Ping { id: Some(1) });
    let mut frame = vec![0x82, ping.len() as u8];
    frame.extend_from_slice(&ping);
    tcp.write_all(&frame).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, Some(1002), "an unmasked frame is refused");
    server.stop().await;
}

#[tokio::test]
async fn half_sent_and_oversized_http_heads_are_cut_off() {
    let mut config = jwt_config();
    config.timeouts.header_read = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web").await.unwrap();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "slowloris connection was closed");

    let mut big = TcpStream::connect(server.addr).await.unwrap();
    let header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(header.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(!text.starts_with("HTTP/1.1 200"), "a 64 KiB header is not served: {text}");
    server.stop().await;
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let mut config = jwt_config();
    config.limits.per_ip = PerIpLimits { connections: 3, unauthenticated: 2 };
    let server = TestServer::start(config).await;
    let _a = RawWs::authed(server.addr, &token("a", &[])).await;
    let _b = RawWs::connect("/ws", server.addr).await;
    let _c = RawWs::connect("/ws", server.addr).await;
    assert!(RawWs::try_connect("/ws", server.addr).await.is_err(), "a fourth connection from the IP is refused");
    drop(_a);
    // Once _a's slot is back, a third socket passes the per-IP cap but not the unauthenticated one.
    eventually("only two unauthenticated sockets per IP (429)", || async {
        RawWs::try_connect("/ws", server.addr).await.err().filter(|e| e.contains("429"))
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn message_floods_get_rate_limited_then_closed() {
    let mut config = jwt_config();
    config.session.messages_per_second = 20;
    config.session.message_burst = 10;
    let server = TestServer::start(config).await;
    let mut ws = RawWs::authed(server.addr, &token("flood", &[])).await;
    for i in 0..200 {
        if ws.try_send(&ClientMessage::Ping { id: Some(i) }).await.is_err() {
            break;
        }
    }
    // A flooding client goes on sending after the server's close (it has not read it yet).
    // The server must read on until the client's close: dropping the socket with unread
    // bytes resets it, and the reset can destroy the close frame before the client reads it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 200..300 {
        ws.try_send(&ClientMessage::Ping { id: Some(i) }).await.expect("the server reset the connection");
        tokio::task::yield_now().await;
    }
    let (mut limited, mut code) = (0, None);
    loop {
        match ws.recv().await {
            Recv::Msg(ServerMessage::Error { code, .. }) if code == "rate_limited" => limited += 1,
            Recv::Msg(_) => {}
            Recv::Close(c, _) => {
                code = Some(c);
                break;
            }
            _ => break,
        }
    }
    assert!(limited > 0, "rate_limited errors came first");
    assert_eq!(code, Some(4029));
    server.stop().await;
}

#[tokio::test]
async fn oversized_values_are_invalid() {
    let mut config = jwt_config();
    config.session.max_value_bytes = 1024;
    let server = TestServer::start(config).await;
    let mut ws = RawWs::authed(server.addr, &token("v", &[])).await;
    ws.send(&ClientMessage::Pub { id: 1, topic: "t".into(), data: Value::Binary(vec![0; 2048]) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(1), ref code, .. } if code == "invalid"));
    let op = |id: &str, size| {
        OpInput::Op(RawOp {
            op_id: Value::from(id),
            collection: "c".into(),
            key: id.into(),
            value: Value::Binary(vec![0; size]),
            hlc: format!("{}:0:n", now() * 1000),
        })
    };
    ws.send(&ClientMessage::OpBatch { id: 2, ops: vec![op("big", 2048), op("small", 10)] }).await;
    match ws.msg().await {
        ServerMessage::OpResult { results, .. } => {
            assert_eq!(
                results.iter().map(|r| (r.ok, r.code.clone())).collect::<Vec<_>>(),
                [(false, Some("invalid".into())), (true, None)]
            );
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn thousands_of_idle_unauthenticated_sockets_do_not_starve_real_users() {
    let mut config = jwt_config();
    config.limits.per_ip = PerIpLimits { connections: 10_000, unauthenticated: 10_000 };
    config.session.auth_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(raw_upgrade(server.addr).await);
    }
    let mut users = Vec::new();
    for i in 0..50 {
        let addr = server.addr;
        users.push(tokio::spawn(async move {
            let mut ws = RawWs::authed(addr, &token(&format!("user-{i}"), &[])).await;
            let op = OpInput::Op(RawOp {
                op_id: Value::from(1),
                collection: format!("u/{i}"),
                key: "k".into(),
                value: Value::from(i),
                hlc: format!("{}:0:n{i}", now() * 1000),
            });
            ws.send(&ClientMessage::OpBatch { id: 1, ops: vec![op] }).await;
            matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { ref results, .. } if results[0].ok)
        }));
    }
    for user in users {
        assert!(tokio::time::timeout(Duration::from_secs(20), user).await.unwrap().unwrap());
    }
    assert_eq!(idle.len(), 2000);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_batches_and_names_are_bounded() {
    let mut config = jwt_config();
    config.session.max_subscriptions = 3;
    config.session.max_batch_ops = 5;
    let server = TestServer::start(config).await;
    let mut ws = RawWs::authed(server.addr, &token("limits", &[])).await;
    for (id, topic) in ["a", "b", "c"].iter().enumerate() {
        ws.send(&ClientMessage::Sub { id: id as u64, topic: topic.to_string() }).await;
        assert_eq!(ws.msg().await, ServerMessage::Ok { id: id as u64 });
    }
    ws.send(&ClientMessage::Sync { id: 10, collection: "d".into(), since: None }).await;
    assert!(
        matches!(ws.msg().await, ServerMessage::Error { id: Some(10), ref code, .. } if code == "too_many_subscriptions")
    );

    let op = |key: String| {
        OpInput::Op(RawOp {
            op_id: Value::from(1),
            collection: "c".into(),
            key,
            value: Value::Nil,
            hlc: format!("{}:0:n", now() * 1000),
        })
    };
    ws.send(&ClientMessage::OpBatch { id: 11, ops: (0..6).map(|i| op(format!("k{i}"))).collect() }).await;
    assert!(
        matches!(ws.msg().await, ServerMessage::Error { id: Some(11), ref code, .. } if code == "invalid"),
        "more ops than the batch limit"
    );

    ws.send(&ClientMessage::OpBatch { id: 12, ops: vec![op("k".repeat(257)), op("k".repeat(256))] }).await;
    match ws.msg().await {
        ServerMessage::OpResult { results, .. } => {
            assert_eq!(results.iter().map(|r| r.ok).collect::<Vec<_>>(), [false, true])
        }
        other => panic!("{other:?}"),
    }
    ws.send(&ClientMessage::Pub { id: 13, topic: "t".repeat(257), data: Value::Nil }).await;
    assert!(
        matches!(ws.msg().await, ServerMessage::Error { id: Some(13), ref code, .. } if code == "invalid"),
        "topic longer than 256 bytes"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_first_message_after_auth_ack_gets_the_authenticated_size_limit() {
    // The reader must not still be waiting under the 64 KiB pre-auth limit it chose before
    // the verdict: a client may send a large message the moment AUTH_ACK arrives.
    let server = TestServer::start(jwt_config()).await;
    for i in 0..5 {
        let mut ws = RawWs::authed(server.addr, &token(&format!("big-{i}"), &[])).await;
        ws.send(&ClientMessage::Pub { id: 1, topic: "t".into(), data: Value::Binary(vec![7; 200 * 1024]) }).await;
        assert_eq!(ws.msg().await, ServerMessage::Ok { id: 1 });
    }
    server.stop().await;
}
