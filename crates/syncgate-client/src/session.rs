//! One connection as it is: no token provider, no reconnect, no replica.
//!
//! [`crate::Client`] hides the protocol behind events and a replica, which is
//! what an app wants. A tool that must show every message the server sends,
//! and choose every message it sends (`syncgate connect`, a smoke test in a
//! deploy script), wants the opposite: this. It shares the client's transport
//! (`ws://`, `wss://`, the handshake check) and frame reader, so using it from
//! a shell also exercises the crate's connection code.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, Payload, Role, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rmpv::Value;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ClientError;
use crate::link::{Incoming, read_messages};
use syncgate_proto::protocol::{ClientMessage, encode_client};

/// How long one frame may take to write before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server did next.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// One server message, as the MessagePack value it was sent as (unknown
    /// types and fields included).
    Message(Value),
    /// The connection ended: the server's close code (echoed back to it), or
    /// `None` when it broke without a close frame.
    Closed {
        /// The close code, if a close frame arrived.
        code: Option<u16>,
        /// The close reason, or what broke.
        reason: String,
    },
}

/// An open WebSocket to a syncgate server.
pub struct Session {
    writer: WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>,
    incoming: mpsc::Receiver<Incoming<Value>>,
    /// Reads frames on its own task: fastwebsockets' `read_frame` is not cancel-safe.
    reader: JoinHandle<()>,
}

impl Session {
    /// Connects to `url` (`ws://…/ws` or `wss://…` with `tls`) and upgrades;
    /// a server message over `max_message_bytes` ends the session.
    pub async fn open(
        url: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        max_message_bytes: usize,
    ) -> Result<Self, ClientError> {
        let ws = crate::transport::open(url, tls, None).await?;
        let (read, write) = tokio::io::split(ws.into_inner());
        let (_, writer) = fastwebsockets::after_handshake_split(tokio::io::empty(), write, Role::Client);
        let (tx, incoming) = mpsc::channel(64);
        let decode = |bytes: &[u8]| rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| e.to_string());
        let reader = tokio::spawn(read_messages(read, tx, max_message_bytes, decode));
        Ok(Self { writer, incoming, reader })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        let bytes = encode_client(message);
        self.write(Frame::binary(Payload::Borrowed(&bytes))).await
    }

    /// Starts a close with `code` (1000: normal); the server's answer comes
    /// from [`Session::next`] as [`SessionEvent::Closed`].
    pub async fn close(&mut self, code: u16) -> Result<(), ClientError> {
        self.write(Frame::close(code, b"")).await
    }

    /// Waits for the next server message or the end of the connection;
    /// answers pings on the way.
    pub async fn next(&mut self) -> SessionEvent {
        loop {
            match self.incoming.recv().await {
                None => return SessionEvent::Closed { code: None, reason: "connection closed".into() },
                Some(Incoming::Message(value)) => return SessionEvent::Message(value),
                Some(Incoming::Ping(payload)) => {
                    if let Err(e) = self.write(Frame::pong(Payload::Borrowed(&payload))).await {
                        return SessionEvent::Closed { code: None, reason: e.to_string() };
                    }
                }
                Some(Incoming::Closed(code, reason)) => {
                    // Complete the closing handshake; the peer may be gone already.
                    let _ = self.write(Frame::close(code.unwrap_or(1000), b"")).await;
                    return SessionEvent::Closed { code, reason };
                }
                Some(Incoming::Broken(reason)) => return SessionEvent::Closed { code: None, reason },
            }
        }
    }

    async fn write(&mut self, frame: Frame<'_>) -> Result<(), ClientError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_frame(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Io(e.to_string())),
            Err(_) => Err(ClientError::Io("the server does not read (write timed out)".into())),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
