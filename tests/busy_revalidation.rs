//! A token revoked at the identity provider ends a session within the
//! introspection cache's lifetime and a small bound, however busy the socket:
//! here the client has thirty `SYNC`s of a 1.2 MB collection queued in 4 KiB
//! pages and reads about 4 MB/s through a small receive buffer, so the
//! server spends the whole test writing.

mod common;

use std::time::{Duration, Instant};

use common::idp::Idp;
use common::raw::{Event, FrameReader, frame};
use common::{RawWs, TestServer, now};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_closes_a_busy_session_within_the_cache_ttl() {
    let idp = Idp::start().await;
    idp.answer("writer", json!({"active": true, "sub": "writer", "exp": now() + 600}));
    idp.answer("reader", json!({"active": true, "sub": "reader", "exp": now() + 600}));
    let ttl = Duration::from_secs(1);
    let introspector = common::idp::introspector(&idp, ttl);
    let mut config = ServerConfig { authenticator: introspector, ..ServerConfig::default() };
    config.limits.sync_page_bytes = 4096;
    config.session.messages_per_second = 0;
    let server = TestServer::start(config).await;

    // 150 records of 8 KB, written in batches of 50.
    let mut writer = RawWs::authed(server.addr, "writer").await;
    for batch in 0..3u64 {
        let ops = (0..50u64)
            .map(|n| {
                let k = batch * 50 + n;
                OpInput::Op(RawOp {
                    op_id: Value::from(k),
                    collection: "big".into(),
                    key: format!("k{k:04}"),
                    value: Value::Binary(vec![7; 8000]),
                    hlc: format!("{}:{k}:writer", now() * 1000),
                })
            })
            .collect();
        writer.send(&ClientMessage::OpBatch { id: batch + 1, ops }).await;
        writer.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    }

    let (read, mut write) = common::raw::upgrade_with_small_buffer(server.addr, "/ws", 65536).await.into_split();
    let mut reader = FrameReader::new(read);
    reader.next(Duration::from_secs(5)).await;
    write.write_all(&frame(&ClientMessage::Auth { token: Some("reader".into()) })).await.unwrap();
    let mut syncs = Vec::new();
    for id in 1..=30 {
        syncs.extend(frame(&ClientMessage::Sync { id, collection: "big".into(), since: None }));
    }
    write.write_all(&syncs).await.unwrap();
    // Let the server get busy, then revoke at the identity provider.
    tokio::time::sleep(Duration::from_millis(300)).await;
    idp.answer("reader", json!({"active": false}));
    let revoked = Instant::now();
    let code = loop {
        match reader.next(Duration::from_secs(10)).await {
            Some(Event::Close(code)) => break code,
            Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            None => panic!("the connection ended without a close frame"),
        }
        assert!(revoked.elapsed() < Duration::from_secs(20), "still served long after the revocation");
    };
    let took = revoked.elapsed();
    assert_eq!(code, 4003);
    // Two cache lifetimes (the revocation may land just after a revalidation) and room for a busy machine.
    assert!(took < ttl * 2 + Duration::from_secs(3), "closed {took:?} after the revocation");
    server.stop().await;
}
