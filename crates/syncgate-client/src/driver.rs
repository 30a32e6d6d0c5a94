//! The client's background task: connect, authenticate, refresh, replay, reconnect.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use fastwebsockets::{Frame, Payload, Role};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use super::link::{Incoming, Internal, Link, read_loop, with_id};
use super::persist::StateFile;
use super::{ClientConfig, ClientError, ClientEvent, Command, Local, Reply, Settled, TokenRequest, transport};
use syncgate_proto::protocol::codes::{CloseAction, close};
use syncgate_proto::protocol::{ClientMessage, OpInput, ServerMessage, encoded_len};
use syncgate_proto::time::unix_secs;
use syncgate_proto::values::{ValueLimits, check_value};

/// Room left in a replay batch for the `OP_BATCH` map around its ops.
const BATCH_OVERHEAD: usize = 64;

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

pub(crate) struct Driver {
    pub(super) config: ClientConfig,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: mpsc::UnboundedSender<ClientEvent>,
    pub(super) local: Arc<Mutex<Local>>,
    pub(super) wake: Arc<Notify>,
    /// Where the replica is saved, if anywhere.
    pub(super) file: Option<Arc<StateFile>>,
    /// App requests waiting for an authenticated connection.
    pub(super) waiting: VecDeque<(ClientMessage, Reply)>,
    pub(super) next_id: u64,
    /// Replay is held back until then, after a retryable refusal.
    pub(super) replay_after: Option<Instant>,
    /// Retryable refusals in a row (for the replay backoff).
    pub(super) replay_failures: u32,
    /// Connection attempts so far: attempt `n` goes to URL `n` modulo the
    /// URLs configured, so a dead node's clients move to the next one.
    attempts: usize,
}

/// Refused tokens in a row (closes with 4001, each after asking the token
/// provider for a new one) after which the client stops, as the TypeScript and
/// Python clients do.
pub(crate) const MAX_REFUSED_TOKENS: u32 = 3;

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<ClientEvent>,
        local: Arc<Mutex<Local>>,
        wake: Arc<Notify>,
        file: Option<Arc<StateFile>>,
    ) -> Self {
        Self {
            config,
            commands,
            events,
            local,
            wake,
            file,
            waiting: VecDeque::new(),
            next_id: 1,
            replay_after: None,
            replay_failures: 0,
            attempts: 0,
        }
    }

    pub(super) fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    pub(super) fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        // Closes with 4029 in a row.
        let mut rate_limited = 0u32;
        // Tokens refused (4001) in a row without an AUTH_ACK between them.
        let mut refused = 0u32;
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
                    if connected {
                        attempt = 0;
                        refused = 0;
                    }
                    if code != Some(close::RATE_LIMITED) {
                        rate_limited = 0;
                    }
                    why = match CloseAction::for_code(code) {
                        CloseAction::Stop => return self.stop(code, &reason),
                        CloseAction::NewToken => {
                            // A token source that keeps producing refused tokens
                            // would retry forever, and every attempt counts against
                            // the server's per-address limit (locking out others).
                            refused += 1;
                            if refused >= MAX_REFUSED_TOKENS {
                                let why = format!("{MAX_REFUSED_TOKENS} tokens in a row were refused ({reason})");
                                return self.stop(code, &why);
                            }
                            TokenRequest::Rejected
                        }
                        CloseAction::RefreshToken => TokenRequest::Refresh,
                        CloseAction::BackOff => {
                            // Rate-limited: start well up the backoff curve, and
                            // higher after each 4029 in a row.
                            attempt = attempt.max(4 + rate_limited);
                            rate_limited = rate_limited.saturating_add(1);
                            TokenRequest::Connect
                        }
                        CloseAction::Resync | CloseAction::Reconnect => TokenRequest::Connect,
                    };
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
        let url = self.config.url_for(self.attempts).to_string();
        self.attempts = self.attempts.wrapping_add(1);
        let ws = match transport::open(&url, self.config.tls.as_ref(), None).await {
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
                        ServerMessage::AuthAck { sub, roles, expires_at, limits } => {
                            refresh_at = expires_at.map(|exp| self.refresh_instant(exp));
                            if let Some(limits) = limits {
                                link.set_limits(limits);
                            }
                            if connected {
                                self.emit(ClientEvent::Refreshed { expires_at });
                            } else {
                                connected = true;
                                self.replay_after = None;
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
                _ = sleep_until_opt(self.replay_after), if connected => {
                    self.replay_after = None;
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
            let topics: Vec<(String, Option<Option<rmpv::Value>>)> = local
                .topics
                .keys()
                .filter(|t| !link.topics.contains(*t))
                .map(|t| (t.clone(), local.presence.get(t).cloned()))
                .collect();
            let syncs: Vec<(String, Option<String>)> = local
                .synced
                .iter()
                .filter(|c| !link.syncs.contains(*c))
                .map(|c| (c.clone(), local.replica.cursor(c)))
                .collect();
            (topics, syncs)
        };
        for (topic, presence) in topics {
            let id = self.fresh_id();
            link.topics.insert(topic.clone());
            link.internal.insert(id, Internal::Sub(topic.clone()));
            let message = match presence {
                Some(info) => ClientMessage::SubPresent { id, topic, presence: true, info },
                None => ClientMessage::Sub { id, topic },
            };
            link.send(&message).await?;
        }
        for (collection, since) in syncs {
            let id = self.fresh_id();
            link.syncs.insert(collection.clone());
            link.internal.insert(id, Internal::Sync(collection.clone(), since.is_none()));
            link.send(&ClientMessage::Sync { id, collection, since }).await?;
        }
        self.replay(link).await
    }

    /// Sends the next batch of the outbox, one batch in flight at a time,
    /// bounded by count and by the server's message size; an op that could
    /// never fit is refused locally (`invalid`) instead of blocking the others.
    pub(super) async fn replay<S: AsyncWrite + Unpin>(&mut self, link: &mut Link<S>) -> Result<(), ()> {
        if link.replaying || self.replay_after.is_some_and(|at| at > Instant::now()) {
            return Ok(());
        }
        let limits = link.limits;
        let budget = usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX).saturating_sub(BATCH_OVERHEAD);
        let max_value = usize::try_from(limits.max_value_bytes).unwrap_or(usize::MAX);
        let max_ops =
            self.config.replay_batch.max(1).min(usize::try_from(limits.max_batch_ops).unwrap_or(usize::MAX).max(1));
        let (ops, refused) = {
            let mut local = self.local();
            let (mut ops, mut bytes, mut too_big) = (Vec::new(), 0, Vec::new());
            let value_limits = ValueLimits {
                max_bytes: max_value,
                max_depth: usize::try_from(limits.max_value_depth).unwrap_or(usize::MAX),
            };
            for op in local.replica.outbox() {
                if ops.len() >= max_ops {
                    break;
                }
                let wire = op.to_wire();
                let size = op_size(&wire);
                if size > budget || encoded_len(&op.value) > max_value {
                    too_big.push((op.op_id.clone(), format!(
                        "the op ({size} bytes) is larger than the server accepts (messages {} bytes, values {} bytes)",
                        limits.max_message_bytes, limits.max_value_bytes
                    )));
                    continue;
                }
                // A value the server's value rule refuses would be refused anyway: settle it here.
                if let Err(why) = check_value(&op.value, value_limits) {
                    too_big.push((op.op_id.clone(), format!("the value {why}")));
                    continue;
                }
                if bytes + size > budget {
                    break;
                }
                bytes += size;
                ops.push(wire);
            }
            let refused: Vec<Settled> = too_big
                .into_iter()
                .filter_map(|(op_id, why)| {
                    local.replica.refuse_locally(&op_id, syncgate_proto::protocol::codes::error::INVALID, why)
                })
                .collect();
            (ops, refused)
        };
        if !refused.is_empty() {
            self.report(refused);
            self.persist();
        }
        if ops.is_empty() {
            return Ok(());
        }
        let id = self.fresh_id();
        link.replaying = true;
        link.internal.insert(id, Internal::Replay);
        link.send(&ClientMessage::OpBatch { id, ops }).await
    }

    /// Holds replay (and the renewal of subscriptions and syncs) back for the
    /// next backoff delay, after a retryable refusal.
    pub(super) fn retry_later(&mut self) {
        self.replay_after = Some(Instant::now() + self.config.backoff.delay(self.replay_failures));
        self.replay_failures = self.replay_failures.saturating_add(1);
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
}

/// The encoded size of one op in a batch.
fn op_size(op: &OpInput) -> usize {
    rmp_serde::to_vec_named(op).map_or(usize::MAX, |bytes| bytes.len())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
