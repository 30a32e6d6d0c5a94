//! The second security pass: one test per finding, against a real server.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Event};
use common::*;
use serde_json::json;
use syncgate::protocol::{ClientMessage, ServerMessage};
use tokio::io::AsyncWriteExt;

/// A client that never lets its inbound queue empty (a flood of PINGs, its
/// pongs read as fast as they come) is still closed with 4100 at `exp`, and
/// is answered nothing after it.
#[tokio::test]
async fn a_session_cannot_outlive_its_token_by_keeping_the_socket_busy() {
    let mut config = jwt_config();
    config.session.messages_per_second = 0;
    let server = TestServer::start(config).await;
    let exp = now() + 3;
    let (mut reader, mut write) = raw::authed(server.addr, &hs256(json!({"sub": "busy", "exp": exp}))).await;
    let pings: Vec<u8> = (0..200).flat_map(|i| raw::frame(&ClientMessage::Ping { id: Some(i) })).collect();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if write.write_all(&pings).await.is_err() {
                return;
            }
        }
    });
    let mut closed = None;
    let mut pongs_after_exp = 0;
    let limit = Instant::now() + Duration::from_secs(15);
    while Instant::now() < limit {
        match reader.next(Duration::from_secs(15)).await {
            Some(Event::Close(code)) => {
                closed = Some(code);
                break;
            }
            Some(Event::Msg(ServerMessage::Pong { .. })) if now() > exp => pongs_after_exp += 1,
            Some(_) => {}
            None => break,
        }
    }
    flood.abort();
    assert_eq!(closed, Some(4100), "the session must end at exp however busy the socket is");
    // One second of slack: `now()` has one-second resolution.
    assert!(pongs_after_exp < 5_000, "requests were served long after expiry ({pongs_after_exp} pongs)");
    server.stop().await;
}
