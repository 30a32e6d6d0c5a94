//! The reference's `--workload messages`: after the handshake it answers
//! what `bench fanout` and `bench ops` send, with the least work the
//! transport allows, so that their p99s have a ceiling measured in the same
//! invocation.
//!
//! - `SUB` adds the connection to the topic and answers `OK`.
//! - `PUB` encodes one `MESSAGE` (the same fields as syncgate's, `from` the
//!   reference's subject), offers it to every subscriber's queue and answers
//!   `OK`. A full queue (1,024 messages, syncgate's default) drops that
//!   subscriber from the topic, where syncgate closes it with 4200: the
//!   bench then counts its messages as missing.
//! - `OP_BATCH` answers `OP_RESULT` with every op accepted; nothing is stored.
//!
//! Messages are decoded with syncgate-proto's decoder, as syncgate does, so
//! the ratio measures what syncgate does beyond decoding. Each connection has
//! a reader task and a writer task (as syncgate's reader and actor); the
//! writer formats every frame already queued into one buffer and writes it
//! once (as syncgate's `FrameWriter`), without which the reference would
//! pay one `write` per delivery and be no ceiling at all.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, after_handshake_split, upgrade};
use syncgate_proto::protocol::{
    ClientMessage, DecodeLimits, OpInput, OpOutcome, ServerMessage, decode_client, encode_server,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::reference::Answers;

/// Messages queued for one connection before it is dropped from its topics
/// (syncgate's default `--outbound-queue`).
const QUEUE: usize = 1024;
/// Bytes gathered into one write at most (as syncgate's writer).
const BATCH_BYTES: usize = 256 * 1024;
/// Longest header of an unmasked server frame.
const MAX_HEAD: usize = 14;
/// The `from` of every `MESSAGE`: the subject the reference acknowledges.
pub(super) const SUBJECT: &str = "reference";

/// A subscriber: its connection's number and its queue.
type Subscriber = (u64, mpsc::Sender<Bytes>);

/// Who is subscribed to what, shared by every connection.
#[derive(Default)]
pub(super) struct Topics {
    /// Topic → the queues of its subscribers, by connection.
    /// A std mutex: nothing awaits while it is held.
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    /// The next connection's number.
    next_conn: AtomicU64,
}

impl Topics {
    fn join(&self, topic: String, conn: u64, queue: mpsc::Sender<Bytes>) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        let queues = subscribers.entry(topic).or_default();
        if !queues.iter().any(|(c, _)| *c == conn) {
            queues.push((conn, queue));
        }
    }

    /// Offers `message` to every subscriber of `topic`; a full or closed queue leaves the topic.
    fn offer(&self, topic: &str, message: &Bytes) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queues) = subscribers.get_mut(topic) {
            queues.retain(|(_, queue)| queue.try_send(message.clone()).is_ok());
        }
    }

    fn leave_all(&self, conn: u64) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|_, queues| {
            queues.retain(|(c, _)| *c != conn);
            !queues.is_empty()
        });
    }
}

/// Serves one upgraded connection: the handshake, then `SUB`, `PUB` and `OP_BATCH`.
pub(super) async fn answer(
    socket: upgrade::UpgradeFut,
    answers: &Answers,
    topics: &Topics,
) -> Result<(), WebSocketError> {
    // Nothing has been read yet, so no byte is lost by taking the stream back.
    let (read, write) = tokio::io::split(socket.await?.into_inner());
    let (mut reader, _) = after_handshake_split(read, tokio::io::sink(), Role::Server);
    // Pings and closes are answered through the writer, not by the reader's half.
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    let (queue, queued) = mpsc::channel(QUEUE);
    tokio::spawn(write_frames(write, queued));
    let conn = topics.next_conn.fetch_add(1, Ordering::Relaxed);
    let result = read_messages(&mut reader, answers, topics, conn, &queue).await;
    topics.leave_all(conn);
    result
}

async fn read_messages<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut fastwebsockets::WebSocketRead<R>,
    answers: &Answers,
    topics: &Topics,
    conn: u64,
    queue: &mpsc::Sender<Bytes>,
) -> Result<(), WebSocketError> {
    let reply = async |bytes: Bytes| queue.send(bytes).await.map_err(|_| WebSocketError::ConnectionClosed);
    reply(answers.required.clone()).await?;
    let mut authenticated = false;
    loop {
        let frame = reader.read_frame(&mut |_| async { Ok::<(), Infallible>(()) }).await?;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => {}
            OpCode::Close => return Ok(()),
            _ => continue,
        }
        if !authenticated {
            if !answers.accepts(&frame.payload) {
                return reply(answers.fail.clone()).await;
            }
            authenticated = true;
            reply(answers.ack.clone()).await?;
            continue;
        }
        match decode_client(&frame.payload, DecodeLimits::default()) {
            Ok(ClientMessage::Sub { id, topic }) => {
                topics.join(topic, conn, queue.clone());
                reply(encode_server(&ServerMessage::Ok { id })).await?;
            }
            Ok(ClientMessage::Pub { id, topic, data }) => {
                let message = ServerMessage::Message { topic: topic.clone(), data, from: SUBJECT.into() };
                topics.offer(&topic, &encode_server(&message));
                reply(encode_server(&ServerMessage::Ok { id })).await?;
            }
            Ok(ClientMessage::OpBatch { id, ops }) => {
                reply(encode_server(&all_accepted(id, ops))).await?;
            }
            _ => {}
        }
    }
}

/// The `OP_RESULT` accepting every op of batch `id`.
fn all_accepted(id: u64, ops: Vec<OpInput>) -> ServerMessage {
    let results = ops
        .into_iter()
        .map(|op| OpOutcome {
            op_id: match op {
                OpInput::Op(raw) => raw.op_id,
                OpInput::Invalid { op_id, .. } => op_id,
            },
            ok: true,
            code: None,
            message: None,
        })
        .collect();
    ServerMessage::OpResult { id, results }
}

/// Writes every frame queued so far with one `write`, until every sender is
/// gone (the reader ended and the connection left its topics), then closes.
async fn write_frames<W: AsyncWrite + Unpin>(mut sink: W, mut queued: mpsc::Receiver<Bytes>) {
    let mut buffer = Vec::new();
    while let Some(first) = queued.recv().await {
        push(&mut buffer, Frame::binary(Payload::Borrowed(&first)));
        while buffer.len() < BATCH_BYTES {
            let Ok(next) = queued.try_recv() else { break };
            push(&mut buffer, Frame::binary(Payload::Borrowed(&next)));
        }
        if sink.write_all(&buffer).await.is_err() {
            return;
        }
        buffer.clear();
    }
    push(&mut buffer, Frame::close(1000, b""));
    let _ = sink.write_all(&buffer).await;
    let _ = sink.shutdown().await;
}

/// Appends `frame`, header and payload, to `buffer`.
fn push(buffer: &mut Vec<u8>, mut frame: Frame<'_>) {
    let mut head = [0u8; MAX_HEAD];
    let size = frame.fmt_head(&mut head);
    buffer.extend_from_slice(&head[..size]);
    buffer.extend_from_slice(&frame.payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;
    use syncgate_proto::protocol::RawOp;

    #[test]
    fn every_op_is_accepted_under_its_own_id() {
        let op = |id: &str| {
            OpInput::Op(RawOp {
                op_id: Value::from(id),
                collection: "c".into(),
                key: "k".into(),
                value: Value::Nil,
                hlc: "1:0:n".into(),
            })
        };
        let invalid = OpInput::Invalid { op_id: Value::from(7), reason: "no key".into() };
        let ServerMessage::OpResult { id, results } = all_accepted(3, vec![op("a"), invalid, op("b")]) else {
            panic!("an OP_RESULT")
        };
        assert_eq!(id, 3);
        let ids: Vec<Value> = results.iter().map(|r| r.op_id.clone()).collect();
        assert_eq!(ids, [Value::from("a"), Value::from(7), Value::from("b")]);
        assert!(results.iter().all(|r| r.ok && r.code.is_none()));
    }

    #[tokio::test]
    async fn a_full_queue_leaves_the_topic_and_the_others_still_receive() {
        let topics = Topics::default();
        let (slow, _slow_rx) = mpsc::channel(1);
        let (fast, mut fast_rx) = mpsc::channel(8);
        topics.join("t".into(), 1, slow);
        topics.join("t".into(), 2, fast);
        for n in 0..3u8 {
            topics.offer("t", &Bytes::from(vec![n]));
        }
        let mut got = Vec::new();
        while let Ok(b) = fast_rx.try_recv() {
            got.push(b[0]);
        }
        assert_eq!(got, [0, 1, 2]);
        let subscribers = topics.subscribers.lock().unwrap();
        assert_eq!(subscribers["t"].iter().map(|(c, _)| *c).collect::<Vec<_>>(), [2], "the slow one left");
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_one_buffer_and_a_close_ends_them() {
        let (queue, queued) = mpsc::channel(4);
        queue.send(Bytes::from_static(b"one")).await.unwrap();
        queue.send(Bytes::from_static(b"two")).await.unwrap();
        drop(queue);
        let mut out = Vec::new();
        write_frames(&mut out, queued).await;
        assert_eq!(out, [&[0x82, 3][..], b"one", &[0x82, 3], b"two", &[0x88, 2, 0x03, 0xe8]].concat());
    }
}
