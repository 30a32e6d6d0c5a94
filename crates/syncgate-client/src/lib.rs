//! The Rust client an app embeds.
//!
//! [`Client::connect`] starts a background task that owns the connection: it
//! asks the app's [`TokenProvider`] for a token on every `AUTH_REQUIRED` and
//! before expiry (in-band refresh), reconnects with jittered exponential
//! backoff according to the close code (the one table,
//! [`syncgate_proto::protocol::codes::CloseAction`]: 4001 fetch a new token, 4100
//! refresh, 4029 back off longer, 4003 and the "fix the client" codes stop and
//! report, the rest retry), and reports [`ClientEvent`]s the app can observe.
//!
//! With [`ClientConfig::state_path`], the whole replica (records, cursors,
//! outbox) lives in one file saved atomically: a write is on disk before
//! [`Client::write`] returns, and a restarted app shows its data offline and
//! resumes each sync with a delta.
//!
//! [`session::Session`] is the other end of the scale: one connection, every
//! server message as it came, nothing done behind the caller's back (for
//! tools such as `syncgate connect`).
//!
//! With [`e2e`], values are sealed on the device before they are stamped and
//! queued (AES-256-GCM, keys per space), so the replica, the outbox and the
//! server hold ciphertext; [`e2e::VaultClient`] keeps the wrapped keys of a
//! user on the server for their other devices.

mod answers;
mod backoff;
mod driver;
pub mod e2e;
mod link;
mod pacer;
mod persist;
pub mod replica;
pub mod session;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmpv::Value;
use tokio::sync::{Notify, mpsc, oneshot};

pub use backoff::Backoff;
pub use replica::{PendingOp, Replica, SettleReport, Settled};

use persist::StateFile;

use syncgate_proto::protocol::{ClientMessage, Member, ServerMessage};

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
    /// Further URLs of the same deployment (other nodes of a cluster): each
    /// reconnect tries the next one, `url` first.
    pub fallback_urls: Vec<String>,
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
    /// This client's node id in its hybrid logical clock (unique per device).
    pub node_id: String,
    /// Where the replica (records, cursors, outbox) is saved, so data and
    /// writes survive an app restart. A saved node id replaces `node_id`.
    pub state_path: Option<PathBuf>,
    /// Ops per replayed `OP_BATCH` at most (batches are also cut to the
    /// server's message size, announced in `AUTH_ACK`).
    pub replay_batch: usize,
    /// Deliveries buffered per topic subscription before they are dropped (reported as an error).
    pub subscription_buffer: usize,
}

impl ClientConfig {
    /// A configuration for `url` with no token provider and default timings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            token_provider: None,
            tls: None,
            backoff: Backoff::default(),
            refresh_before: Duration::from_secs(30),
            max_message_bytes: 16 * 1024 * 1024,
            max_queued_requests: 1024,
            node_id: format!("client-{:016x}", fastrand::u64(..)),
            state_path: None,
            replay_batch: 100,
            subscription_buffer: 1024,
        }
    }

    /// Adds further URLs of the same deployment, tried in turn on reconnects.
    pub fn with_fallback_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.fallback_urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The URL of connection attempt `attempt`.
    pub(crate) fn url_for(&self, attempt: usize) -> &str {
        match attempt % (1 + self.fallback_urls.len()) {
            0 => &self.url,
            n => &self.fallback_urls[n - 1],
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
    /// A member joined a topic this client is present on (this client too, once per connection).
    PresenceJoined {
        /// The topic.
        topic: String,
        /// The member's subject.
        sub: String,
        /// The member's connection.
        conn_id: u64,
        /// What the member announced.
        info: Option<Value>,
    },
    /// A member left a topic this client is present on.
    PresenceLeft {
        /// The topic.
        topic: String,
        /// The member's subject.
        sub: String,
        /// The member's connection.
        conn_id: u64,
    },
    /// The client gave up: a terminal close code, no token, or `close()`.
    Stopped {
        /// The close code that stopped it, if any.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
    /// The server refused a local write with a retryable code (`unavailable`,
    /// `rate_limited`, …): it stays queued and visible and is sent again later.
    OpRetrying {
        /// The op's id.
        op_id: String,
        /// The server's code.
        code: String,
    },
    /// A local write left the outbox: accepted, or refused for good and rolled back.
    OpSettled {
        /// The op's id (as returned by [`Client::write`]).
        op_id: String,
        /// Collection of the write.
        collection: String,
        /// Key of the write.
        key: String,
        /// `None` if accepted; else the final code (`forbidden`, `invalid`, `clock_skew`, `stale`).
        rejected: Option<String>,
        /// The server's reason for a rejection.
        message: Option<String>,
    },
    /// A synced collection received its whole snapshot, every page of it
    /// (after every (re)connection).
    Synced {
        /// The collection.
        collection: String,
        /// Records in the snapshot: a delta after a resume, everything after a reset.
        records: usize,
        /// Whether the server sent the full state because the cursor could not be resumed.
        reset: bool,
    },
    /// Records of a synced collection changed on the server.
    Changed {
        /// The collection.
        collection: String,
        /// The keys that changed.
        keys: Vec<String>,
    },
    /// The server ended a subscription or sync (`forbidden`, …); it is not renewed.
    SubscriptionEnded {
        /// The topic or collection.
        name: String,
        /// The error code.
        code: String,
        /// The server's reason.
        message: String,
    },
    /// A message that answers no request (an `ERROR` without id).
    Message(ServerMessage),
}

/// A publication received on a subscribed topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The published value.
    pub data: Value,
    /// The publisher's `sub`.
    pub from: String,
}

/// State shared by the handle and the background task. A std mutex: it is
/// held for in-memory updates only, never across an await.
pub(crate) struct Local {
    pub(crate) replica: Replica,
    /// Bumped on every change of the replica, so saves know what they cover.
    pub(crate) generation: u64,
    pub(crate) synced: BTreeSet<String>,
    pub(crate) topics: HashMap<String, mpsc::Sender<Delivery>>,
    /// Topics this client is present on, with the info it announces.
    pub(crate) presence: HashMap<String, Option<Value>>,
}

/// Opens a raw WebSocket to `url` (`ws://` only), for tools like the load generator.
pub async fn open_socket(
    url: &str,
) -> Result<fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>, ClientError> {
    transport::open(url, None, None).await
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
    /// The server refused the request (`ERROR {code}`).
    #[error("refused ({code}): {message}")]
    Refused {
        /// The protocol's code (`forbidden`, `invalid`, …).
        code: String,
        /// The server's reason.
        message: String,
    },
    /// The server answered something this request cannot be answered with.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The write is queued, visible and sent when connected, but its local
    /// save failed: it lives only in this process until the server
    /// acknowledges it (`ClientEvent::OpSettled` for `op_id`). Not a refusal:
    /// do not write it again.
    #[error("the write {op_id} is queued but could not be saved locally: {reason}")]
    NotSaved {
        /// The queued op.
        op_id: String,
        /// Why the save failed.
        reason: String,
    },
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
    local: Arc<Mutex<Local>>,
    /// Wakes the background task to send new writes, subscriptions and syncs.
    wake: Arc<Notify>,
    file: Option<Arc<StateFile>>,
    subscription_buffer: usize,
}

impl Client {
    /// Starts connecting in the background; events arrive on the receiver.
    ///
    /// With `state_path` set, the replica saved by an earlier run is loaded
    /// (its queued writes are replayed); an unreadable file is an error rather
    /// than a silent loss.
    pub fn connect(config: ClientConfig) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ClientError> {
        let unreadable = |path: &PathBuf, e: String| ClientError::Config(format!("state {}: {e}", path.display()));
        let replica = match &config.state_path {
            None => Replica::new(&config.node_id),
            Some(path) => match StateFile::load(path).map_err(|e| unreadable(path, e.to_string()))? {
                None => Replica::new(&config.node_id),
                Some(bytes) => Replica::from_bytes(&bytes).map_err(|e| unreadable(path, e))?,
            },
        };
        let file = config.state_path.clone().map(|path| Arc::new(StateFile::new(path)));
        let local = Arc::new(Mutex::new(Local {
            replica,
            generation: 0,
            synced: BTreeSet::new(),
            topics: HashMap::new(),
            presence: HashMap::new(),
        }));
        let wake = Arc::new(Notify::new());
        let (commands, command_rx) = mpsc::channel(256);
        let (events, event_rx) = mpsc::unbounded_channel();
        let client = Client {
            commands,
            local: local.clone(),
            wake: wake.clone(),
            file: file.clone(),
            subscription_buffer: config.subscription_buffer,
        };
        tokio::spawn(driver::Driver::new(config, command_rx, events, local, wake, file).run());
        Ok((client, event_rx))
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a record locally (visible at once) and queues it for the server;
    /// `value: nil` deletes. Returns the op id reported later in
    /// [`ClientEvent::OpSettled`]. With `state_path`, the write is on disk
    /// before this returns (saved off the async runtime); if it cannot be
    /// saved it is undone and the error returned.
    pub async fn write(&self, collection: &str, key: &str, value: Value) -> Result<String, ClientError> {
        // A value the protocol's value rule refuses (kinds, depth) is refused here,
        // before it is queued. Its size is judged at replay, against the limits the
        // server announces (a server may take larger values than the default).
        let limits = syncgate_proto::values::ValueLimits {
            max_bytes: usize::MAX,
            max_depth: syncgate_proto::values::MAX_VALUE_DEPTH,
        };
        if let Err(why) = syncgate_proto::values::check_value(&value, limits) {
            return Err(ClientError::Refused { code: "invalid".into(), message: format!("the value {why}") });
        }
        let (op, generation) = {
            let mut local = self.local();
            let op = local.replica.write(collection, key, value, syncgate_proto::time::unix_ms());
            local.generation += 1;
            (op, local.generation)
        };
        // The op is kept whatever the save does: it may already be on its way
        // (a replay can pick it up at once), so discarding it here could leave
        // the app told "failed" about a write the server accepts.
        let saved = match &self.file {
            Some(file) => file.save_through(&self.local, generation).await,
            None => Ok(()),
        };
        self.wake.notify_one();
        match saved {
            Ok(()) => Ok(op.op_id),
            Err(e) => Err(ClientError::NotSaved { op_id: op.op_id, reason: e.to_string() }),
        }
    }

    /// The visible value of a record: the local write if still pending and newest, else the server's.
    pub fn get(&self, collection: &str, key: &str) -> Option<Value> {
        self.local().replica.get(collection, key).cloned()
    }

    /// Every visible record of a collection.
    pub fn records(&self, collection: &str) -> BTreeMap<String, Value> {
        self.local().replica.records(collection)
    }

    /// Writes not yet settled by the server.
    pub fn pending(&self) -> usize {
        self.local().replica.outbox().len()
    }

    /// Keeps `collection` in the local replica, resuming from the last cursor after every reconnect.
    pub fn sync(&self, collection: &str) {
        self.local().synced.insert(collection.to_string());
        self.wake.notify_one();
    }

    /// Subscribes to a topic (renewed after every reconnect); deliveries arrive on the receiver.
    pub fn subscribe(&self, topic: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(self.subscription_buffer.max(1));
        self.local().topics.insert(topic.to_string(), tx);
        self.wake.notify_one();
        rx
    }

    /// Subscribes to a topic and is present on it: the other members see
    /// `PRESENCE_JOIN` with `info`, and this client reports their joins and
    /// leaves as [`ClientEvent::PresenceJoined`] / [`ClientEvent::PresenceLeft`].
    /// Presence is announced again after every reconnect.
    pub fn subscribe_present(&self, topic: &str, info: Option<Value>) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(self.subscription_buffer.max(1));
        let mut local = self.local();
        local.topics.insert(topic.to_string(), tx);
        local.presence.insert(topic.to_string(), info);
        drop(local);
        self.wake.notify_one();
        rx
    }

    /// Who is present on a topic (needs `read` on it), every page of it.
    pub async fn presence(&self, topic: &str) -> Result<Vec<Member>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self.request(ClientMessage::Presence { id: 0, topic: topic.to_string(), after }).await? {
                ServerMessage::PresenceState { members, more, .. } => {
                    after = members.last().map(|m| m.conn_id);
                    all.extend(members);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                ServerMessage::Error { code, message, .. } => return Err(ClientError::Refused { code, message }),
                other => return Err(ClientError::Protocol(format!("unexpected answer to PRESENCE: {other:?}"))),
            }
        }
    }

    /// Publishes to a topic and waits for the server's `OK` (or `ERROR`).
    pub async fn publish(&self, topic: &str, data: Value) -> Result<ServerMessage, ClientError> {
        self.request(ClientMessage::Pub { id: 0, topic: topic.to_string(), data }).await
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
