//! The Rust client an app embeds.
//!
//! [`Client::connect`] starts a background task that owns the connection: it
//! asks the app's [`TokenProvider`] for a token on every `AUTH_REQUIRED` and
//! before expiry (in-band refresh), reconnects with jittered exponential
//! backoff according to the close code (4001: fetch a new token; 4100:
//! refresh; 4003 and "fix the client" codes: stop and report; 1001/4008 and
//! the rest: retry), and reports [`ClientEvent`]s the app can observe.

mod backoff;
mod driver;
mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use backoff::Backoff;

use crate::protocol::{ClientMessage, ServerMessage};

/// Why the client asks for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRequest {
    /// A fresh connection is authenticating.
    Connect,
    /// The current token expires soon (or expired): a newer one is needed.
    Refresh,
    /// The server refused the last token (4001): do not return it again.
    Rejected,
}

/// The future a [`TokenProvider`] returns: a token, `None` for "signed out", or an error.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;

/// Supplies tokens; called on every `AUTH_REQUIRED` and before expiry.
pub trait TokenProvider: Send + Sync + 'static {
    /// Returns the token to present.
    fn token(&self, why: TokenRequest) -> TokenFuture<'_>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn(TokenRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>, String>> + Send + 'static,
{
    fn token(&self, why: TokenRequest) -> TokenFuture<'_> {
        Box::pin(self(why))
    }
}

/// How the client connects.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws` or `wss://…`.
    pub url: String,
    /// Where tokens come from; `None` for servers in auth mode `none`.
    pub token_provider: Option<Arc<dyn TokenProvider>>,
    /// TLS settings for `wss://` (roots to trust).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// How long before `expiresAt` the client refreshes its token.
    pub refresh_before: Duration,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// Requests queued while disconnected, at most.
    pub max_queued_requests: usize,
}

impl ClientConfig {
    /// A configuration for `url` with no token provider and default timings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token_provider: None,
            tls: None,
            backoff: Backoff::default(),
            refresh_before: Duration::from_secs(30),
            max_message_bytes: 16 * 1024 * 1024,
            max_queued_requests: 1024,
        }
    }

    /// Sets the token provider.
    pub fn with_token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token_provider = Some(Arc::new(provider));
        self
    }
}

/// What happens to the connection, for the app to observe.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection attempt starts (`attempt` counts failures since the last success).
    Connecting {
        /// Attempt number, from 0.
        attempt: u32,
    },
    /// Authenticated (`AUTH_ACK`).
    Connected {
        /// The identity's subject.
        sub: String,
        /// The identity's roles.
        roles: Vec<String>,
        /// When the session ends unless refreshed (Unix seconds).
        expires_at: Option<u64>,
    },
    /// An in-band refresh succeeded.
    Refreshed {
        /// The new expiry (Unix seconds).
        expires_at: Option<u64>,
    },
    /// The connection ended; the client will retry unless `Stopped` follows.
    Disconnected {
        /// The close code, if the server sent one.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
    },
    /// Something went wrong (connect failure, token provider error).
    Error(String),
    /// The client gave up: a terminal close code, no token, or `close()`.
    Stopped {
        /// The close code that stopped it, if any.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
    /// A message that answers no request (`MESSAGE`, `CHANGE`, `ERROR` without id).
    Message(ServerMessage),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work (bad URL, wss without TLS settings).
    #[error("configuration: {0}")]
    Config(String),
    /// A network or handshake failure.
    #[error("connection: {0}")]
    Io(String),
    /// The connection dropped before the answer came.
    #[error("disconnected before the answer")]
    Disconnected,
    /// The client has stopped (terminal close or `close()`).
    #[error("the client has stopped")]
    Stopped,
    /// Too many requests are queued while disconnected.
    #[error("too many queued requests")]
    Busy,
}

pub(crate) type Reply = oneshot::Sender<Result<ServerMessage, ClientError>>;

pub(crate) enum Command {
    Request(ClientMessage, Reply),
    Close,
}

/// A handle to a running client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    /// Starts connecting in the background; events arrive on the receiver.
    pub fn connect(config: ClientConfig) -> (Client, mpsc::UnboundedReceiver<ClientEvent>) {
        let (commands, command_rx) = mpsc::channel(256);
        let (events, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(driver::Driver::new(config, command_rx, events).run());
        (Client { commands }, event_rx)
    }

    /// Sends a request and waits for its answer; the id is assigned here.
    /// While disconnected the request waits for the next authenticated
    /// connection (up to `max_queued_requests`).
    pub async fn request(&self, message: ClientMessage) -> Result<ServerMessage, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Request(message, reply)).await.map_err(|_| ClientError::Stopped)?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Round-trips a `PING`.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(ClientMessage::Ping { id: None }).await? {
            ServerMessage::Pong { .. } => Ok(()),
            other => Err(ClientError::Io(format!("unexpected answer to PING: {other:?}"))),
        }
    }

    /// Closes the connection (1000) and stops reconnecting.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}
