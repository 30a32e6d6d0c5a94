//! The reader task: frames in, reassembled and decoded messages out to the actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fastwebsockets::{Role, WebSocketError};
use tokio::io::AsyncRead;
use tokio::sync::{Notify, mpsc};

use crate::assembler::{Assembled, Assembler, FrameError};
use crate::client_stream::{ClientStream, StreamWatch};
use crate::config::Limits;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, DecodeError, DecodeLimits, decode_client};

/// What the reader task hands to the actor. Kept to 32 bytes (the message
/// boxed): the channel's first block of 32 slots is allocated with it, for
/// every connection, idle or not.
pub(super) enum ReaderEvent {
    /// A decoded (or undecodable) protocol message.
    Message(Box<Result<ClientMessage, DecodeError>>),
    /// A WebSocket ping to answer.
    Ping(Box<[u8]>),
    /// A pong or other sign of life.
    Activity,
    /// The peer sent a close frame.
    PeerClosed(Option<u16>),
    /// The frame stream broke; send this close and stop.
    Fatal(FrameError),
}

/// The actor's verdicts on this connection's tokens, as the reader needs
/// them: whether the session is authenticated (which lifts the pre-auth size
/// limit), and a count to wait on after handing over an `AUTH`.
#[derive(Debug, Default)]
pub(super) struct AuthGate {
    authenticated: AtomicBool,
    verdicts: AtomicU64,
    verdict: Notify,
}

impl AuthGate {
    /// Records a verification's outcome and wakes a reader waiting for it.
    pub(super) fn verdict(&self, authenticated: bool) {
        self.authenticated.store(authenticated, Ordering::Release);
        self.verdicts.fetch_add(1, Ordering::AcqRel);
        self.verdict.notify_one();
    }

    fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// Waits for a verdict after the `seen`-th.
    async fn after(&self, seen: u64) {
        while self.verdicts.load(Ordering::Acquire) <= seen {
            self.verdict.notified().await;
        }
    }
}

/// How a run of frames ended.
enum Burst {
    /// Every byte read was parsed: wait for more without a buffer.
    Drained,
    /// The connection's frames are over (`Some`: with this close to send).
    Over(Option<FrameError>),
    /// The peer's close was handed to the actor: nothing more is read.
    PeerClosed,
}

/// The reader task's state.
struct Reader<R> {
    read: ClientStream<R>,
    /// `read`'s watch, kept apart: it is read while fastwebsockets borrows `read`.
    watch: Arc<StreamWatch>,
    tx: mpsc::Sender<ReaderEvent>,
    gate: Arc<AuthGate>,
    assembler: Assembler,
    max_frame_bytes: usize,
    preauth_max: usize,
    decode_limits: DecodeLimits,
    /// Frames parsed so far; once the stream has read nothing beyond them,
    /// fastwebsockets' buffer is empty.
    parsed: u64,
}

/// Reads frames, reassembles and decodes messages, and hands them to the actor.
pub(super) async fn read_loop<R>(
    read: ClientStream<R>,
    tx: mpsc::Sender<ReaderEvent>,
    limits: Limits,
    gate: Arc<AuthGate>,
) where
    R: AsyncRead + Unpin,
{
    let preauth_max = limits.max_preauth_frame_bytes.min(limits.max_frame_bytes);
    let mut reader = Reader {
        watch: read.watch(),
        read,
        tx,
        gate,
        assembler: Assembler::new(preauth_max),
        max_frame_bytes: limits.max_frame_bytes,
        preauth_max,
        decode_limits: DecodeLimits { max_depth: limits.max_nesting_depth },
        parsed: 0,
    };
    let fatal = loop {
        // Between messages fastwebsockets' 8 KiB read buffer is dropped and the
        // wait holds only the stream's small read-ahead; the frames are read by
        // a boxed future that exists only while they arrive. An idle
        // connection's task holds neither.
        match reader.read.wait_for_bytes().await {
            Ok(0) => break None,
            Ok(_) => {}
            Err(_) if reader.watch.unmasked() => break Some(UNMASKED),
            Err(_) => break None,
        }
        match Box::pin(reader.burst()).await {
            Burst::Drained => {}
            Burst::Over(fatal) => break fatal,
            Burst::PeerClosed => return,
        }
    };
    if let Some(e) = fatal {
        let _ = reader.tx.send(ReaderEvent::Fatal(e)).await;
    }
    // Keep reading (and discarding) until the peer closes, so that our close
    // frame is read rather than lost to a reset; the actor bounds this in time.
    // The buffer lives on the heap and only now: an array here would be part of
    // every idle connection's task.
    let _ = tokio::io::copy(&mut reader.read, &mut tokio::io::sink()).await;
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads frames until every byte read has been parsed.
    async fn burst(&mut self) -> Burst {
        let (mut ws, _) = fastwebsockets::after_handshake_split(&mut self.read, tokio::io::sink(), Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        loop {
            // Unauthenticated peers are held to the small pre-auth limit, per frame and in total.
            let max = if self.gate.authenticated() { self.max_frame_bytes } else { self.preauth_max };
            self.assembler.set_max_message_bytes(max);
            ws.set_max_message_size(max.saturating_add(1));
            let frame = match ws.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await {
                Ok(frame) => frame,
                Err(_) if self.watch.unmasked() => return Burst::Over(Some(UNMASKED)),
                Err(e) => return Burst::Over(frame_error(e)),
            };
            self.parsed += 1;
            let event = match self.assembler.push(frame.fin, frame.opcode, &frame.payload) {
                Ok(None) => None,
                Ok(Some(Assembled::Binary(payload))) => {
                    Some(ReaderEvent::Message(Box::new(decode_client(payload.as_ref(), self.decode_limits))))
                }
                Ok(Some(Assembled::Text)) => Some(ReaderEvent::Message(Box::new(Err(DecodeError::Malformed(
                    "text messages are not part of the protocol".into(),
                ))))),
                Ok(Some(Assembled::Ping(payload))) => Some(ReaderEvent::Ping(payload.into())),
                Ok(Some(Assembled::Pong)) => Some(ReaderEvent::Activity),
                Ok(Some(Assembled::Close { code })) => {
                    // The peer's close ends the conversation: nothing after it is read, so the
                    // socket can drop at once without a reset.
                    let _ = self.tx.send(ReaderEvent::PeerClosed(code)).await;
                    return Burst::PeerClosed;
                }
                Err(e) => return Burst::Over(Some(e)),
            };
            if let Some(event) = event {
                hand_over(&self.tx, &self.gate, event).await;
            }
            drop(frame);
            if self.watch.ends_after(self.parsed) {
                return Burst::Drained;
            }
        }
    }
}

/// Gives a message to the actor. Once the actor has stopped (it sent its
/// close), frames are parsed and dropped until the peer's close arrives:
/// dropping the socket with unread bytes would reset it and the peer could
/// lose our close frame. The actor bounds this in time.
async fn hand_over(tx: &mpsc::Sender<ReaderEvent>, gate: &AuthGate, event: ReaderEvent) {
    // A client may send its first message as soon as AUTH_ACK arrives, so the next
    // frame must not be read under the pre-auth limit chosen before the verdict.
    let is_auth =
        matches!(&event, ReaderEvent::Message(message) if matches!(**message, Ok(ClientMessage::Auth { .. })));
    let awaits_verdict = is_auth && !gate.authenticated();
    let seen = gate.verdicts.load(Ordering::Acquire);
    if !tx.is_closed() && tx.send(event).await.is_ok() && awaits_verdict {
        tokio::select! {
            _ = gate.after(seen) => {}
            _ = tx.closed() => {}
        }
    }
}

/// The close for a client that sent an unmasked frame.
const UNMASKED: FrameError = FrameError { code: close::PROTOCOL_ERROR, reason: "client frames must be masked" };

/// Maps a transport error to the close to send (`None`: the peer is gone).
fn frame_error(e: WebSocketError) -> Option<FrameError> {
    let (code, reason) = match e {
        WebSocketError::FrameTooLarge => (close::MESSAGE_TOO_BIG, "message larger than the limit"),
        WebSocketError::InvalidUTF8 => (close::MALFORMED, "text messages are not part of the protocol"),
        WebSocketError::IoError(_) | WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed => return None,
        _ => (close::PROTOCOL_ERROR, "WebSocket protocol error"),
    };
    Some(FrameError { code, reason })
}
