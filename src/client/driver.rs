//! The client's background task: connect, authenticate, refresh, reconnect.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::{ClientConfig, ClientError, ClientEvent, Command, Reply, TokenRequest, transport};
use crate::assembler::{Assembled, Assembler};
use crate::clock::unix_secs;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, ServerMessage, encode_client};

/// What the client's reader hands to the driver.
enum Incoming {
    Message(ServerMessage),
    Ping(Bytes),
    Closed(Option<u16>, String),
    Broken(String),
}

/// How one connection ended.
enum End {
    /// The server closed (or the link broke) after `connected` or not.
    Closed { code: Option<u16>, reason: String, connected: bool },
    /// Connecting failed.
    Failed(String),
    /// The token provider had no token: the app is signed out.
    NoToken(String),
    /// The app called `close()`.
    UserClosed,
}

pub(crate) struct Driver {
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<ClientEvent>,
    /// Requests waiting for an authenticated connection.
    waiting: VecDeque<(ClientMessage, Reply)>,
    next_id: u64,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<ClientEvent>,
    ) -> Self {
        Self { config, commands, events, waiting: VecDeque::new(), next_id: 1 }
    }

    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
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
        let ws = match transport::open(&self.config.url, self.config.tls.as_ref()).await {
            Ok(ws) => ws,
            Err(ClientError::Config(e)) => return End::NoToken(e),
            Err(e) => return End::Failed(e.to_string()),
        };
        let (read, write) = tokio::io::split(ws.into_inner());
        let (_, writer) = fastwebsockets::after_handshake_split(tokio::io::empty(), write, Role::Client);
        let (tx, mut incoming) = mpsc::channel(64);
        let reader = tokio::spawn(read_loop(read, tx, self.config.max_message_bytes));
        let mut link = Link { writer, pending: HashMap::new() };
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
        loop {
            tokio::select! {
                event = incoming.recv() => match event {
                    None => return End::Closed { code: None, reason: "connection lost".into(), connected },
                    Some(Incoming::Broken(e)) => return End::Closed { code: None, reason: e, connected },
                    Some(Incoming::Ping(payload)) => {
                        if link.write(Frame::pong(Payload::Borrowed(&payload))).await.is_err() {
                            return End::Closed { code: None, reason: "write failed".into(), connected };
                        }
                    }
                    Some(Incoming::Closed(code, reason)) => {
                        let _ = link.write(Frame::close(code.unwrap_or(close::NORMAL), b"")).await;
                        let reason = auth_fail.take().map_or(reason.clone(), |m| if reason.is_empty() { m } else { format!("{reason}: {m}") });
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
                                return End::Closed { code: None, reason: "write failed".into(), connected };
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
                            }
                        }
                        ServerMessage::AuthFail { code, message } => auth_fail = Some(format!("{code}: {message}")),
                        ServerMessage::TokenExpiring { .. } => refresh_at = Some(Instant::now()),
                        other => self.answer(link, other),
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
                _ = sleep_until_opt(refresh_at) => {
                    refresh_at = None;
                    match self.token(TokenRequest::Refresh).await {
                        Ok(token) => {
                            if link.send(&ClientMessage::Auth { token: Some(token) }).await.is_err() {
                                return End::Closed { code: None, reason: "write failed".into(), connected };
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

    fn refresh_instant(&self, expires_at: u64) -> Instant {
        let left = expires_at.saturating_sub(unix_secs());
        let lead = self.config.refresh_before.as_secs();
        // Refresh `refresh_before` ahead, or halfway through a shorter life.
        let wait = if left > lead { left - lead } else { left / 2 };
        Instant::now() + std::time::Duration::from_secs(wait)
    }

    async fn dispatch<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>, message: ClientMessage, reply: Reply) {
        let id = self.next_id;
        self.next_id += 1;
        let message = with_id(message, id);
        if link.send(&message).await.is_err() {
            let _ = reply.send(Err(ClientError::Disconnected));
            return;
        }
        link.pending.insert(id, reply);
    }

    /// Routes an answer to its request, or reports an unsolicited message.
    fn answer<S>(&self, link: &mut Link<S>, message: ServerMessage) {
        let id = match &message {
            ServerMessage::Pong { id } | ServerMessage::Error { id, .. } => *id,
            ServerMessage::Ok { id } | ServerMessage::OpResult { id, .. } | ServerMessage::SyncData { id, .. } => {
                Some(*id)
            }
            _ => None,
        };
        match id.and_then(|id| link.pending.remove(&id)) {
            Some(reply) => {
                let _ = reply.send(Ok(message));
            }
            None => self.emit(ClientEvent::Message(message)),
        }
    }
}

/// The write side of one connection and its requests in flight.
struct Link<S> {
    writer: WebSocketWrite<WriteHalf<S>>,
    pending: HashMap<u64, Reply>,
}

impl<S: AsyncWrite + Unpin> Link<S> {
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
