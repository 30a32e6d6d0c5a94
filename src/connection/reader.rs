//! The reader task: frames in, reassembled and decoded messages out to the actor.

use std::sync::Arc;

use fastwebsockets::{Role, WebSocketError};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, watch};

use crate::assembler::{Assembled, Assembler, FrameError};
use crate::client_stream::{ClientStream, StreamWatch};
use crate::config::Limits;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, DecodeError, DecodeLimits, decode_client};

/// What the reader task hands to the actor. Kept to 32 bytes (the message
/// boxed): the channel's first block of 32 slots is allocated with it, for
/// every connection, idle or not.
pub(super) enum Inbound {
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

/// Reads frames, reassembles and decodes messages, and hands them to the actor.
pub(super) async fn read_loop<R>(
    mut read: ClientStream<R>,
    tx: mpsc::Sender<Inbound>,
    limits: Limits,
    mut authenticated: watch::Receiver<bool>,
    watch: Arc<StreamWatch>,
) where
    R: AsyncRead + Unpin,
{
    let decode_limits = DecodeLimits { max_depth: limits.max_nesting_depth };
    let preauth_max = limits.max_preauth_frame_bytes.min(limits.max_frame_bytes);
    let mut assembler = Assembler::new(preauth_max);
    // Frames parsed so far; once the stream has read nothing beyond them, fastwebsockets' buffer is empty.
    let mut parsed = 0;
    let fatal = 'connection: loop {
        // Between messages fastwebsockets' 8 KiB read buffer is dropped and the
        // wait holds only the stream's small read-ahead: an idle connection
        // costs no buffer.
        match read.wait_for_bytes().await {
            Ok(0) => break None,
            Ok(_) => {}
            Err(_) if watch.unmasked() => break Some(UNMASKED),
            Err(_) => break None,
        }
        let (mut ws, _) = fastwebsockets::after_handshake_split(&mut read, tokio::io::sink(), Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        loop {
            // Unauthenticated peers are held to the small pre-auth limit, per frame and in total.
            let max = if *authenticated.borrow_and_update() { limits.max_frame_bytes } else { preauth_max };
            assembler.set_max_message_bytes(max);
            ws.set_max_message_size(max.saturating_add(1));
            let frame = match ws.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await {
                Ok(frame) => frame,
                Err(_) if watch.unmasked() => break 'connection Some(UNMASKED),
                Err(e) => break 'connection frame_error(e),
            };
            parsed += 1;
            let event = match assembler.push(frame.fin, frame.opcode, &frame.payload) {
                Ok(None) => None,
                Ok(Some(Assembled::Binary(payload))) => {
                    Some(Inbound::Message(Box::new(decode_client(payload.as_ref(), decode_limits))))
                }
                Ok(Some(Assembled::Text)) => Some(Inbound::Message(Box::new(Err(DecodeError::Malformed(
                    "text messages are not part of the protocol".into(),
                ))))),
                Ok(Some(Assembled::Ping(payload))) => Some(Inbound::Ping(payload.into())),
                Ok(Some(Assembled::Pong)) => Some(Inbound::Activity),
                Ok(Some(Assembled::Close { code })) => {
                    // The peer's close ends the conversation: nothing after it is read, so the
                    // socket can drop at once without a reset.
                    let _ = tx.send(Inbound::PeerClosed(code)).await;
                    return;
                }
                Err(e) => break 'connection Some(e),
            };
            if let Some(event) = event {
                // A client may send its first message as soon as AUTH_ACK arrives, so the next
                // frame must not be read under the pre-auth limit chosen before the verdict.
                let awaits_verdict = matches!(&event, Inbound::Message(message) if matches!(**message, Ok(ClientMessage::Auth { .. })))
                    && !*authenticated.borrow_and_update();
                if !tx.is_closed() && tx.send(event).await.is_ok() && awaits_verdict {
                    tokio::select! {
                        _ = authenticated.changed() => {}
                        _ = tx.closed() => {}
                    }
                }
                // Once the actor has stopped (it sent its close), frames are parsed and dropped
                // until the peer's close arrives: dropping the socket with unread bytes would
                // reset it and the peer could lose our close frame. The actor bounds this in time.
            }
            drop(frame);
            if watch.ends_after(parsed) {
                break;
            }
        }
    };
    if let Some(e) = fatal {
        let _ = tx.send(Inbound::Fatal(e)).await;
    }
    // Keep reading (and discarding) until the peer closes, so that our close
    // frame is read rather than lost to a reset; the actor bounds this in time.
    // The buffer lives on the heap and only now: an array here would be part of
    // every idle connection's task.
    let _ = tokio::io::copy(&mut read, &mut tokio::io::sink()).await;
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
