//! The client's background task: connect, authenticate, refresh, replay, reconnect.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use super::{ClientConfig, ClientError, ClientEvent, Command, Delivery, Local, Reply, TokenRequest, transport};
use crate::assembler::{Assembled, Assembler};
use crate::clock::unix_secs;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, OpOutcome, ServerMessage, encode_client};

/// What the client's reader hands to the driver.
enum Incoming {
    Message(ServerMessage),
    Ping(Bytes),
    Closed(Option<u16>, String),
    Broken(String),
}

/// How one connection ended.
enum End {
    /// The server closed (or the link broke), after authenticating or not.
    Closed { code: Option<u16>, reason: String, connected: bool },
    /// Connecting failed.
    Failed(String),
    /// The token provider had no token (signed out), or the configuration cannot work.
    NoToken(String),
    /// The app called `close()`.
    UserClosed,
}

/// Requests the driver makes on its own behalf, by request id.
enum Internal {
    /// A `SUB` for this topic (kept while the subscription lives, for revocations).
    Sub(String),
    /// A `SYNC` of this collection (kept while it lives).
    Sync(String),
    /// An `OP_BATCH` replaying the outbox.
    Replay,
}

pub(crate) struct Driver {
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<ClientEvent>,
    local: Arc<Mutex<Local>>,
    wake: Arc<Notify>,
    /// App requests waiting for an authenticated connection.
    waiting: VecDeque<(ClientMessage, Reply)>,
    next_id: u64,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<ClientEvent>,
        local: Arc<Mutex<Local>>,
        wake: Arc<Notify>,
    ) -> Self {
        Self { config, commands, events, local, wake, waiting: VecDeque::new(), next_id: 1 }
    }

    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut why = TokenRequest::Connect;
        loop {
            self.emit(ClientEvent::Connecting { attempt });
            match self.connection(why).await {
                End::UserClosed => return self.stop(Some(close::NORMAL), "closed by the app"),
                End::NoToken(reason) => return self.stop(None, &reason),
                End::Failed(error) => {
                    self.emit(ClientEvent::Error(error.clone()));
                    // Keep `why`: a token that was rejected or expired still is.
                    self.emit(ClientEvent::Disconnected { code: None, reason: error });
                }
                End::Closed { code, reason, connected } => {
                    self.emit(ClientEvent::Disconnected { code, reason: reason.clone() });
                    why = match code {
                        Some(close::FORBIDDEN | close::MALFORMED | close::MESSAGE_TOO_BIG | close::PROTOCOL_ERROR) => {
                            return self.stop(code, &reason);
                        }
                        Some(close::UNAUTHORIZED) => TokenRequest::Rejected,
                        Some(close::TOKEN_EXPIRED) => TokenRequest::Refresh,
                        _ => TokenRequest::Connect,
                    };
                    if connected {
                        attempt = 0;
                    }
                }
            }
            let delay = self.config.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            if !self.wait(delay).await {
                return self.stop(Some(close::NORMAL), "closed by the app");
            }
        }
    }

    fn stop(&mut self, code: Option<u16>, reason: &str) {
        for (_, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
        self.emit(ClientEvent::Stopped { code, reason: reason.to_string() });
    }

    /// Sleeps for `delay` while queueing requests; false if the app closed.
    async fn wait(&mut self, delay: std::time::Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return false,
                    Some(Command::Request(message, reply)) => self.queue(message, reply),
                },
            }
        }
    }

    fn queue(&mut self, message: ClientMessage, reply: Reply) {
        if self.waiting.len() >= self.config.max_queued_requests {
            let _ = reply.send(Err(ClientError::Busy));
        } else {
            self.waiting.push_back((message, reply));
        }
    }

    async fn token(&self, why: TokenRequest) -> Result<String, End> {
        let Some(provider) = &self.config.token_provider else {
            return Err(End::NoToken("the server requires a token and no token provider is set".into()));
        };
        match provider.token(why).await {
            Ok(Some(token)) => Ok(token),
            Ok(None) => Err(End::NoToken("the token provider returned no token (signed out)".into())),
            Err(e) => Err(End::Failed(format!("token provider: {e}"))),
        }
    }

    /// Runs one connection from handshake to close.
    async fn connection(&mut self, why: TokenRequest) -> End {
        let ws = match transport::open(&self.config.url, self.config.tls.as_ref(), None).await {
            Ok(ws) => ws,
            Err(ClientError::Config(e)) => return End::NoToken(e),
            Err(e) => return End::Failed(e.to_string()),
        };
        let (read, write) = tokio::io::split(ws.into_inner());
        let (_, writer) = fastwebsockets::after_handshake_split(tokio::io::empty(), write, Role::Client);
        let (tx, mut incoming) = mpsc::channel(64);
        let reader = tokio::spawn(read_loop(read, tx, self.config.max_message_bytes));
        let mut link = Link::new(writer);
        let end = self.converse(&mut link, &mut incoming, why).await;
        for (_, reply) in link.pending.drain() {
            let _ = reply.send(Err(ClientError::Disconnected));
        }
        reader.abort();
        end
    }

    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        incoming: &mut mpsc::Receiver<Incoming>,
        mut why: TokenRequest,
    ) -> End {
        let mut connected = false;
        let mut refresh_at: Option<Instant> = None;
        let mut auth_fail: Option<String> = None;
        let wake = self.wake.clone();
        let broken = |connected| End::Closed { code: None, reason: "write failed".into(), connected };
        loop {
            tokio::select! {
                event = incoming.recv() => match event {
                    None => return End::Closed { code: None, reason: "connection lost".into(), connected },
                    Some(Incoming::Broken(e)) => return End::Closed { code: None, reason: e, connected },
                    Some(Incoming::Ping(payload)) => {
                        if link.write(Frame::pong(Payload::Borrowed(&payload))).await.is_err() {
                            return broken(connected);
                        }
                    }
                    Some(Incoming::Closed(code, reason)) => {
                        let _ = link.write(Frame::close(code.unwrap_or(close::NORMAL), b"")).await;
                        let reason = match auth_fail.take() {
                            Some(m) if reason.is_empty() => m,
                            Some(m) => format!("{reason}: {m}"),
                            None => reason,
                        };
                        return End::Closed { code, reason, connected };
                    }
                    Some(Incoming::Message(message)) => match message {
                        ServerMessage::AuthRequired { .. } => {
                            let token = match self.token(why).await {
                                Ok(token) => token,
                                Err(end) => {
                                    let _ = link.write(Frame::close(close::NORMAL, b"no token")).await;
                                    return end;
                                }
                            };
                            if link.send(&ClientMessage::Auth { token: Some(token) }).await.is_err() {
                                return broken(connected);
                            }
                        }
                        ServerMessage::AuthAck { sub, roles, expires_at } => {
                            refresh_at = expires_at.map(|exp| self.refresh_instant(exp));
                            if connected {
                                self.emit(ClientEvent::Refreshed { expires_at });
                            } else {
                                connected = true;
                                why = TokenRequest::Refresh;
                                self.emit(ClientEvent::Connected { sub, roles, expires_at });
                                while let Some((message, reply)) = self.waiting.pop_front() {
                                    self.dispatch(link, message, reply).await;
                                }
                                if self.resume(link).await.is_err() {
                                    return broken(connected);
                                }
                            }
                        }
                        ServerMessage::AuthFail { code, message } => auth_fail = Some(format!("{code}: {message}")),
                        ServerMessage::TokenExpiring { .. } => refresh_at = Some(Instant::now()),
                        other => {
                            if self.answer(link, other).await.is_err() {
                                return broken(connected);
                            }
                        }
                    },
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        let _ = link.write(Frame::close(close::NORMAL, b"")).await;
                        return End::UserClosed;
                    }
                    Some(Command::Request(message, reply)) => {
                        if connected {
                            self.dispatch(link, message, reply).await;
                        } else {
                            self.queue(message, reply);
                        }
                    }
                },
                _ = wake.notified(), if connected => {
                    if self.resume(link).await.is_err() {
                        return broken(connected);
                    }
                }
                _ = sleep_until_opt(refresh_at) => {
                    refresh_at = None;
                    match self.token(TokenRequest::Refresh).await {
                        Ok(token) => {
                            if link.send(&ClientMessage::Auth { token: Some(token) }).await.is_err() {
                                return broken(connected);
                            }
                        }
                        // Keep the session until it expires; the provider may recover.
                        Err(End::Failed(e)) => {
                            self.emit(ClientEvent::Error(e));
                            refresh_at = Some(Instant::now() + std::time::Duration::from_secs(1));
                        }
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Brings the link in line with the local state: subscribe, sync, replay.
    async fn resume<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) -> Result<(), ()> {
        let (topics, syncs) = {
            let local = self.local();
            let topics: Vec<String> = local.topics.keys().filter(|t| !link.topics.contains(*t)).cloned().collect();
            let syncs: Vec<(String, Option<String>)> = local
                .synced
                .iter()
                .filter(|c| !link.syncs.contains(*c))
                .map(|c| (c.clone(), local.replica.cursor(c)))
                .collect();
            (topics, syncs)
        };
        for topic in topics {
            let id = self.fresh_id();
            link.topics.insert(topic.clone());
            link.internal.insert(id, Internal::Sub(topic.clone()));
            link.send(&ClientMessage::Sub { id, topic }).await?;
        }
        for (collection, since) in syncs {
            let id = self.fresh_id();
            link.syncs.insert(collection.clone());
            link.internal.insert(id, Internal::Sync(collection.clone()));
            link.send(&ClientMessage::Sync { id, collection, since }).await?;
        }
        self.replay(link).await
    }

    /// Sends the next bounded batch of the outbox, one batch in flight at a time.
    async fn replay<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) -> Result<(), ()> {
        if link.replaying {
            return Ok(());
        }
        let ops: Vec<_> =
            self.local().replica.outbox().iter().take(self.config.replay_batch.max(1)).map(|op| op.to_wire()).collect();
        if ops.is_empty() {
            return Ok(());
        }
        let id = self.fresh_id();
        link.replaying = true;
        link.internal.insert(id, Internal::Replay);
        link.send(&ClientMessage::OpBatch { id, ops }).await
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn refresh_instant(&self, expires_at: u64) -> Instant {
        let left = expires_at.saturating_sub(unix_secs());
        let lead = self.config.refresh_before.as_secs();
        // Refresh `refresh_before` ahead, or halfway through a shorter life.
        let wait = if left > lead { left - lead } else { left / 2 };
        Instant::now() + std::time::Duration::from_secs(wait)
    }

    async fn dispatch<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, message: ClientMessage, reply: Reply) {
        let id = self.fresh_id();
        let message = with_id(message, id);
        if link.send(&message).await.is_err() {
            let _ = reply.send(Err(ClientError::Disconnected));
            return;
        }
        link.pending.insert(id, reply);
    }

    /// Handles a message that is not part of the handshake.
    async fn answer<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, message: ServerMessage) -> Result<(), ()> {
        let id = match &message {
            ServerMessage::Pong { id } | ServerMessage::Error { id, .. } => *id,
            ServerMessage::Ok { id } | ServerMessage::OpResult { id, .. } | ServerMessage::SyncData { id, .. } => {
                Some(*id)
            }
            ServerMessage::Message { topic, data, from } => {
                self.deliver(Delivery { topic: topic.clone(), data: data.clone(), from: from.clone() });
                return Ok(());
            }
            ServerMessage::Change { collection, records, cursor } => {
                let keys = records.iter().map(|r| r.key.clone()).collect();
                let mut local = self.local();
                local.replica.merge(collection, records);
                local.replica.set_cursor(collection, cursor.clone());
                drop(local);
                self.emit(ClientEvent::Changed { collection: collection.clone(), keys });
                return Ok(());
            }
            _ => None,
        };
        if let Some(id) = id
            && link.internal.contains_key(&id)
        {
            return self.internal_answer(link, id, message).await;
        }
        match id.and_then(|id| link.pending.remove(&id)) {
            Some(reply) => {
                let _ = reply.send(Ok(message));
            }
            None => self.emit(ClientEvent::Message(message)),
        }
        Ok(())
    }

    async fn internal_answer<S: AsyncWrite + Unpin>(
        &mut self,
        link: &mut Link<S>,
        id: u64,
        message: ServerMessage,
    ) -> Result<(), ()> {
        match (link.internal.get(&id), message) {
            (Some(Internal::Replay), ServerMessage::OpResult { results, .. }) => {
                link.internal.remove(&id);
                link.replaying = false;
                self.settle(&results);
                self.replay(link).await?;
            }
            (Some(Internal::Sync(_)), ServerMessage::SyncData { collection, records, cursor, reset, .. }) => {
                let mut local = self.local();
                if reset {
                    local.replica.reset(&collection);
                }
                local.replica.merge(&collection, &records);
                local.replica.set_cursor(&collection, cursor);
                drop(local);
                self.emit(ClientEvent::Synced { collection });
            }
            (Some(Internal::Sub(_) | Internal::Sync(_)), ServerMessage::Error { code, message, .. }) => {
                let name = match link.internal.remove(&id) {
                    Some(Internal::Sub(topic)) => {
                        link.topics.remove(&topic);
                        self.local().topics.remove(&topic);
                        topic
                    }
                    Some(Internal::Sync(collection)) => {
                        link.syncs.remove(&collection);
                        self.local().synced.remove(&collection);
                        collection
                    }
                    _ => String::new(),
                };
                self.emit(ClientEvent::SubscriptionEnded { name, code, message });
            }
            (Some(Internal::Replay), ServerMessage::Error { message, .. }) => {
                // The whole batch was refused (not per op): keep it queued for the next connection.
                link.internal.remove(&id);
                self.emit(ClientEvent::Error(format!("replay refused: {message}")));
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies op results to the replica, saves the outbox, and reports each op.
    fn settle(&mut self, results: &[OpOutcome]) {
        let mut local = self.local();
        let settled = local.replica.settle(results);
        let saved = self.config.outbox_path.as_ref().map(|path| local.replica.save_outbox(path));
        drop(local);
        if let Some(Err(e)) = saved {
            self.emit(ClientEvent::Error(format!("cannot save the outbox: {e}")));
        }
        for s in settled {
            self.emit(ClientEvent::OpSettled {
                op_id: s.op.op_id,
                collection: s.op.collection,
                key: s.op.key,
                rejected: s.rejected,
                message: s.message,
            });
        }
    }

    fn deliver(&self, delivery: Delivery) {
        let sender = self.local().topics.get(&delivery.topic).cloned();
        if let Some(sender) = sender
            && sender.try_send(delivery).is_err()
        {
            self.emit(ClientEvent::Error("a topic subscriber is not keeping up; a delivery was dropped".into()));
        }
    }
}

/// The write side of one connection and what is in flight on it.
struct Link<S> {
    writer: WebSocketWrite<WriteHalf<S>>,
    pending: HashMap<u64, Reply>,
    internal: HashMap<u64, Internal>,
    topics: HashSet<String>,
    syncs: HashSet<String>,
    replaying: bool,
}

impl<S: AsyncWrite + Unpin> Link<S> {
    fn new(writer: WebSocketWrite<WriteHalf<S>>) -> Self {
        Self {
            writer,
            pending: HashMap::new(),
            internal: HashMap::new(),
            topics: HashSet::new(),
            syncs: HashSet::new(),
            replaying: false,
        }
    }

    async fn send(&mut self, message: &ClientMessage) -> Result<(), ()> {
        let bytes = encode_client(message);
        self.write(Frame::binary(Payload::Borrowed(&bytes))).await
    }

    async fn write(&mut self, frame: Frame<'_>) -> Result<(), ()> {
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.writer.write_frame(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// Gives a request the id the driver chose.
fn with_id(message: ClientMessage, new: u64) -> ClientMessage {
    use ClientMessage as M;
    match message {
        M::Ping { .. } => M::Ping { id: Some(new) },
        M::Sub { topic, .. } => M::Sub { id: new, topic },
        M::Unsub { topic, .. } => M::Unsub { id: new, topic },
        M::Pub { topic, data, .. } => M::Pub { id: new, topic, data },
        M::OpBatch { ops, .. } => M::OpBatch { id: new, ops },
        M::Sync { collection, since, .. } => M::Sync { id: new, collection, since },
        M::Unsync { collection, .. } => M::Unsync { id: new, collection },
        auth @ M::Auth { .. } => auth,
    }
}

async fn read_loop<S: AsyncRead + Unpin>(mut read: ReadHalf<S>, tx: mpsc::Sender<Incoming>, max: usize) {
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
            Ok(Some(Assembled::Binary(bytes))) => match rmp_serde::from_slice::<ServerMessage>(&bytes) {
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
