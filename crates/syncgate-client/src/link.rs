//! One connection of the client: its write side, what is in flight on it,
//! and the reader task that decodes the server's messages.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::Reply;
use crate::pacer::Pacer;
use syncgate_proto::assembler::{Assembled, Assembler};
use syncgate_proto::protocol::{ClientMessage, ServerMessage, SessionLimits, encode_client};

/// The limits assumed of a server that announces none (those of syncgate's defaults).
pub(crate) const DEFAULT_LIMITS: SessionLimits = SessionLimits {
    max_message_bytes: 1024 * 1024,
    max_value_bytes: 256 * 1024,
    max_batch_ops: 1000,
    max_value_depth: syncgate_proto::values::MAX_VALUE_DEPTH as u64,
    messages_per_second: 0,
    message_burst: 0,
};

/// What the client's reader hands to the driver: messages decoded as `M`
/// (typed for the driver, raw values for a [`crate::session::Session`]).
pub(crate) enum Incoming<M = ServerMessage> {
    Message(M),
    Ping(Bytes),
    Closed(Option<u16>, String),
    Broken(String),
}

/// Requests the driver makes on its own behalf, by request id.
pub(crate) enum Internal {
    /// A `SUB` for this topic (kept while the subscription lives, for revocations).
    Sub(String),
    /// A `SYNC` of this collection (kept while it lives); `full` when it was
    /// sent without a cursor, so its answer is the whole state.
    Sync(String, bool),
    /// An `OP_BATCH` replaying the outbox.
    Replay,
}

/// A snapshot arriving in pages: what has come so far.
#[derive(Debug, Default)]
pub(crate) struct Paging {
    pub(crate) records: usize,
    pub(crate) reset: bool,
}

/// The write side of one connection and what is in flight on it.
pub(crate) struct Link<S> {
    writer: WebSocketWrite<WriteHalf<S>>,
    pub(crate) pending: HashMap<u64, Reply>,
    pub(crate) internal: HashMap<u64, Internal>,
    pub(crate) topics: HashSet<String>,
    pub(crate) syncs: HashSet<String>,
    /// Collections whose snapshot is still arriving in pages.
    pub(crate) paging: HashMap<String, Paging>,
    /// Whether a replay batch is in flight (one at a time).
    pub(crate) replaying: bool,
    /// What the server announced in `AUTH_ACK`.
    pub(crate) limits: SessionLimits,
    /// Keeps messages within the announced rate.
    pacer: Pacer,
}

impl<S: AsyncWrite + Unpin> Link<S> {
    pub(crate) fn new(writer: WebSocketWrite<WriteHalf<S>>) -> Self {
        Self {
            writer,
            pending: HashMap::new(),
            internal: HashMap::new(),
            topics: HashSet::new(),
            syncs: HashSet::new(),
            paging: HashMap::new(),
            replaying: false,
            limits: DEFAULT_LIMITS,
            pacer: Pacer::default(),
        }
    }

    /// Takes the limits an `AUTH_ACK` announced: sizes for batches, the
    /// message rate for pacing.
    pub(crate) fn set_limits(&mut self, limits: SessionLimits) {
        self.pacer.set_limits(limits.messages_per_second, limits.message_burst);
        self.limits = limits;
    }

    /// Sends a message when the pacer gives it its turn.
    pub(crate) async fn send(&mut self, message: &ClientMessage) -> Result<(), ()> {
        let wait = self.pacer.take(std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let bytes = encode_client(message);
        self.write(Frame::binary(Payload::Borrowed(&bytes))).await
    }

    pub(crate) async fn write(&mut self, frame: Frame<'_>) -> Result<(), ()> {
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.writer.write_frame(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// Gives a request the id the driver chose.
pub(crate) fn with_id(message: ClientMessage, new: u64) -> ClientMessage {
    use ClientMessage as M;
    match message {
        M::Ping { .. } => M::Ping { id: Some(new) },
        M::Sub { topic, .. } => M::Sub { id: new, topic },
        M::SubPresent { topic, presence, info, .. } => M::SubPresent { id: new, topic, presence, info },
        M::Presence { topic, after, .. } => M::Presence { id: new, topic, after },
        M::Unsub { topic, .. } => M::Unsub { id: new, topic },
        M::Pub { topic, data, .. } => M::Pub { id: new, topic, data },
        M::OpBatch { ops, .. } => M::OpBatch { id: new, ops },
        M::Sync { collection, since, .. } => M::Sync { id: new, collection, since },
        M::Unsync { collection, .. } => M::Unsync { id: new, collection },
        auth @ M::Auth { .. } => auth,
    }
}

/// Reads frames and hands decoded server messages to the driver.
pub(crate) async fn read_loop<S: AsyncRead + Unpin>(read: ReadHalf<S>, tx: mpsc::Sender<Incoming>, max: usize) {
    read_messages(read, tx, max, |bytes| rmp_serde::from_slice::<ServerMessage>(bytes).map_err(|e| e.to_string())).await
}

/// Reads frames and hands each whole binary message, decoded by `decode`, to `tx`.
pub(crate) async fn read_messages<S, M>(
    mut read: ReadHalf<S>,
    tx: mpsc::Sender<Incoming<M>>,
    max: usize,
    decode: impl Fn(&[u8]) -> Result<M, String>,
) where
    S: AsyncRead + Unpin,
{
    let (mut ws, _) = fastwebsockets::after_handshake_split(&mut read, tokio::io::sink(), Role::Client);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(max.saturating_add(1));
    let mut assembler = Assembler::new(max);
    loop {
        let frame = match ws.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await {
            Ok(frame) => frame,
            Err(e) => {
                let _ = tx.send(Incoming::Broken(e.to_string())).await;
                return;
            }
        };
        let reason = if frame.opcode == OpCode::Close && frame.payload.len() > 2 {
            String::from_utf8_lossy(&frame.payload[2..]).into_owned()
        } else {
            String::new()
        };
        let event = match assembler.push(frame.fin, frame.opcode, &frame.payload) {
            Ok(None) | Ok(Some(Assembled::Pong)) => continue,
            Ok(Some(Assembled::Binary(bytes))) => match decode(&bytes) {
                Ok(message) => Incoming::Message(message),
                Err(e) => Incoming::Broken(format!("undecodable server message: {e}")),
            },
            Ok(Some(Assembled::Text)) => Incoming::Broken("the server sent a text message".into()),
            Ok(Some(Assembled::Ping(payload))) => Incoming::Ping(Bytes::copy_from_slice(payload)),
            Ok(Some(Assembled::Close { code })) => Incoming::Closed(code, reason),
            Err(e) => Incoming::Broken(e.to_string()),
        };
        let last = matches!(event, Incoming::Closed(..) | Incoming::Broken(_));
        if tx.send(event).await.is_err() || last {
            return;
        }
    }
}
