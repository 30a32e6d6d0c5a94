//! The reader task: frames in, reassembled and decoded messages out to the actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fastwebsockets::{Role, WebSocketError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use crate::assembler::{Assembled, Assembler, FrameError};
use crate::config::Limits;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, DecodeError, DecodeLimits, decode_client};

/// What the reader task hands to the actor.
pub(super) enum Inbound {
    /// A decoded (or undecodable) protocol message.
    Message(Result<ClientMessage, DecodeError>),
    /// A WebSocket ping to answer.
    Ping(Bytes),
    /// A pong or other sign of life.
    Activity,
    /// The peer sent a close frame.
    PeerClosed(Option<u16>),
    /// The frame stream broke; send this close and stop.
    Fatal(FrameError),
}

/// Reads frames, reassembles and decodes messages, and hands them to the actor.
pub(super) async fn read_loop<R>(
    mut read: R,
    tx: mpsc::Sender<Inbound>,
    limits: Limits,
    mut authenticated: watch::Receiver<bool>,
    unmasked: Arc<AtomicBool>,
) where
    R: AsyncRead + Unpin,
{
    let decode_limits = DecodeLimits { max_depth: limits.max_nesting_depth };
    let preauth_max = limits.max_preauth_frame_bytes.min(limits.max_frame_bytes);
    let fatal = {
        let (mut ws, _) = fastwebsockets::after_handshake_split(&mut read, tokio::io::sink(), Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        let mut assembler = Assembler::new(preauth_max);
        loop {
            // Unauthenticated peers are held to the small pre-auth limit, per frame and in total.
            let max = if *authenticated.borrow_and_update() { limits.max_frame_bytes } else { preauth_max };
            assembler.set_max_message_bytes(max);
            ws.set_max_message_size(max.saturating_add(1));
            let frame = match ws.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await {
                Ok(frame) => frame,
                Err(_) if unmasked.load(Ordering::Relaxed) => {
                    break Some(FrameError { code: close::PROTOCOL_ERROR, reason: "client frames must be masked" });
                }
                Err(e) => break frame_error(e),
            };
            let event = match assembler.push(frame.fin, frame.opcode, &frame.payload) {
                Ok(None) => continue,
                Ok(Some(Assembled::Binary(payload))) => {
                    Inbound::Message(decode_client(payload.as_ref(), decode_limits))
                }
                Ok(Some(Assembled::Text)) => {
                    Inbound::Message(Err(DecodeError::Malformed("text messages are not part of the protocol".into())))
                }
                Ok(Some(Assembled::Ping(payload))) => Inbound::Ping(Bytes::copy_from_slice(payload)),
                Ok(Some(Assembled::Pong)) => Inbound::Activity,
                Ok(Some(Assembled::Close { code })) => {
                    // The peer's close ends the conversation: nothing after it is read, so the
                    // socket can drop at once without a reset.
                    let _ = tx.send(Inbound::PeerClosed(code)).await;
                    return;
                }
                Err(e) => break Some(e),
            };
            // A client may send its first message as soon as AUTH_ACK arrives, so the next
            // frame must not be read under the pre-auth limit chosen before the verdict.
            let awaits_verdict = matches!(event, Inbound::Message(Ok(ClientMessage::Auth { .. })))
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
    };
    if let Some(e) = fatal {
        let _ = tx.send(Inbound::Fatal(e)).await;
    }
    // Keep reading (and discarding) until the peer closes, so that our close
    // frame is read rather than lost to a reset; the actor bounds this in time.
    let mut sink = [0u8; 16 * 1024];
    while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
}

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
