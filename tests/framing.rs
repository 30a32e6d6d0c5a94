//! Client frames cut anywhere by TCP arrive whole and in order.
//!
//! Between messages the server drops fastwebsockets' read buffer and waits
//! with a small read-ahead of its own (`src/client_stream.rs`), so every way
//! the bytes of a frame can be split across reads must still give back the
//! same messages: a header cut in two, a frame larger than the read-ahead and
//! than fastwebsockets' 8 KiB buffer, the next frame's first bytes arriving
//! with the previous one, and fragmented messages.

mod common;

use std::time::Duration;

use common::raw::{Event, authed, frame, masked_binary};
use common::*;
use rmpv::Value;
use syncgate::protocol::{ClientMessage, ServerMessage, encode_client};
use tokio::io::AsyncWriteExt;

/// The stream a client sends: a subscription, pings, a 20 KB publication and
/// a publication split into two fragments.
fn conversation() -> Vec<u8> {
    let mut bytes = frame(&ClientMessage::Sub { id: 1, topic: "t".into() });
    for id in 10..14 {
        bytes.extend(frame(&ClientMessage::Ping { id: Some(id) }));
    }
    let big = Value::Binary(vec![7; 20_000]);
    bytes.extend(frame(&ClientMessage::Pub { id: 2, topic: "t".into(), data: big }));
    bytes.extend(frame(&ClientMessage::Ping { id: Some(14) }));
    let fragmented =
        encode_client(&ClientMessage::Pub { id: 3, topic: "t".into(), data: Value::String("in two".into()) });
    let (first, second) = fragmented.split_at(fragmented.len() / 2);
    let mut opening = masked_binary(first);
    opening[0] = 0x02; // binary, not final
    let mut closing = masked_binary(second);
    closing[0] = 0x80; // continuation, final
    bytes.extend(opening);
    bytes.extend(closing);
    bytes.extend(frame(&ClientMessage::Ping { id: Some(15) }));
    bytes
}

/// What the server answers to [`conversation`], in order.
fn expected() -> Vec<ServerMessage> {
    let mut answers = vec![ServerMessage::Ok { id: 1 }];
    answers.extend((10..14).map(|id| ServerMessage::Pong { id: Some(id) }));
    answers.push(ServerMessage::Message { topic: "t".into(), data: Value::Binary(vec![7; 20_000]), from: "u1".into() });
    answers.push(ServerMessage::Ok { id: 2 });
    answers.push(ServerMessage::Pong { id: Some(14) });
    answers.push(ServerMessage::Message { topic: "t".into(), data: Value::String("in two".into()), from: "u1".into() });
    answers.push(ServerMessage::Ok { id: 3 });
    answers.push(ServerMessage::Pong { id: Some(15) });
    answers
}

#[tokio::test]
async fn frames_cut_at_any_boundary_arrive_whole_and_in_order() {
    let server = TestServer::start(jwt_config()).await;
    // 1 and 2 cut every header; 255–257 straddle the read-ahead; 9000 straddles the 8 KiB buffer.
    for piece in [1, 2, 5, 255, 256, 257, 1000, 9000, usize::MAX] {
        let (mut reader, mut write) = authed(server.addr, &token("u1", &["user"])).await;
        let bytes = conversation();
        for chunk in bytes.chunks(piece.min(bytes.len())) {
            write.write_all(chunk).await.unwrap();
            write.flush().await.unwrap();
            // Let the server read each piece on its own for the small cuts.
            if piece < 300 && chunk.len() == piece {
                tokio::task::yield_now().await;
            }
        }
        let mut answers = Vec::new();
        while answers.len() < expected().len() {
            match reader.next(Duration::from_secs(10)).await {
                Some(Event::Msg(message)) => answers.push(message),
                other => panic!("pieces of {piece} bytes: expected a message, got {other:?} after {answers:?}"),
            }
        }
        // A publication's OK and its own MESSAGE may come in either order.
        let sorted = |mut list: Vec<ServerMessage>| {
            list.sort_by_key(|m| format!("{m:?}"));
            list
        };
        assert_eq!(sorted(answers.clone()), sorted(expected()), "pieces of {piece} bytes");
        let pongs: Vec<_> = answers.iter().filter(|m| matches!(m, ServerMessage::Pong { .. })).collect();
        let in_order: Vec<_> = (10..16).map(|id| ServerMessage::Pong { id: Some(id) }).collect();
        assert_eq!(pongs, in_order.iter().collect::<Vec<_>>(), "pieces of {piece} bytes");
    }
    server.stop().await;
}

/// What fastwebsockets must keep doing for the frame scanner to stay in
/// step with it (the crate is pinned; this is the check to run on an
/// upgrade): 200 frames in one write, then a message in three fragments
/// with a WebSocket ping between the first two, then a last request. Every
/// answer comes back, in order, and the connection stays open.
#[tokio::test]
async fn pipelined_frames_and_a_ping_between_fragments_stay_in_step() {
    let server = TestServer::start(jwt_config()).await;
    let (mut reader, mut write) = authed(server.addr, &token("u1", &["user"])).await;
    let mut bytes = Vec::new();
    for id in 0..200 {
        bytes.extend(frame(&ClientMessage::Ping { id: Some(id) }));
    }
    let message = encode_client(&ClientMessage::Ping { id: Some(200) });
    let third = message.len() / 3;
    let parts = [&message[..third], &message[third..2 * third], &message[2 * third..]];
    for (n, part) in parts.iter().enumerate() {
        let mut fragment = masked_binary(part);
        fragment[0] = match n {
            0 => 0x02, // binary, not final
            2 => 0x80, // continuation, final
            _ => 0x00, // continuation, not final
        };
        bytes.extend(fragment);
        if n == 0 {
            let mut ping = masked_binary(b"between");
            ping[0] = 0x89; // ping, final: control frames may come between fragments
            bytes.extend(ping);
        }
    }
    bytes.extend(frame(&ClientMessage::Ping { id: Some(201) }));
    write.write_all(&bytes).await.unwrap();
    let mut pongs = Vec::new();
    while pongs.len() < 202 {
        match reader.next(Duration::from_secs(10)).await {
            Some(Event::Msg(ServerMessage::Pong { id: Some(id) })) => pongs.push(id),
            Some(Event::Other) => {}
            other => panic!("expected a PONG, got {other:?} after {} of them", pongs.len()),
        }
    }
    assert_eq!(pongs, (0..202).collect::<Vec<u64>>(), "every request answered, in order");
    server.stop().await;
}
