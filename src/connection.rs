//! The per-connection actor: one task owns the socket's write side and the
//! [`Session`]; a reader task owns the read side.
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so it never sits in a
//! `select!`: the reader task decodes messages and hands them over a small
//! bounded channel (which also gives back-pressure). The actor selects over
//! that channel, the session's next deadline and shutdown, and is the only
//! writer, so pongs and close frames never interleave with messages.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::assembler::{Assembled, Assembler, FrameError};
use crate::auth::AuthError;
use crate::clock::{unix_ms, unix_secs};
use crate::config::Limits;
use crate::limits::SlotGuard;
use crate::mask::MaskCheck;
use crate::outbox::{Outbound, Outbox};
use crate::protocol::codes::{close, error};
use crate::protocol::{
    AuthFailCode, ClientMessage, DecodeError, DecodeLimits, ServerMessage, decode_client, encode_server,
};
use crate::registry::Control;
use crate::rules::Policy;
use crate::server::Shared;
use crate::session::{Effect, Session};

/// What the reader task hands to the actor.
enum Inbound {
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

/// Whether the actor goes on after an effect.
enum Flow {
    Continue,
    /// A close frame was sent (or the socket broke): stop.
    Stop,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) async fn serve<S>(
    io: S,
    shared: Arc<Shared>,
    query_token: Option<String>,
    peer: SocketAddr,
    pending: SlotGuard,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(io);
    let unmasked = Arc::new(AtomicBool::new(false));
    let read = MaskCheck::new(read, unmasked.clone());
    // The halves are built separately: the writer with a dummy reader, the
    // reader (in its task) with a dummy writer, so each owns only its side.
    let (_, ws_write) = fastwebsockets::after_handshake_split(tokio::io::empty(), write, Role::Server);
    let (tx, rx) = mpsc::channel(8);
    let (authenticated, auth_verdicts) = watch::channel(false);
    let mut reader = tokio::spawn(read_loop(read, tx, shared.config.limits, auth_verdicts, unmasked));
    let mut policy = shared.config.policy.subscribe();
    let current = policy.borrow_and_update().clone();
    let anonymous = shared.config.authenticator.anonymous();
    let mut session_config = shared.config.session;
    session_config.revalidate_every = shared.config.authenticator.revalidate_every();
    session_config.max_message_bytes = shared.config.limits.max_frame_bytes;
    let (session, effects) = Session::open(session_config, unix_ms(), current, anonymous, query_token);
    let (control_tx, control) = mpsc::channel(4);
    let queue = shared.config.limits.outbound_queue;
    let (outbox, outbound, overflow) = Outbox::new(shared.connection_id(), queue);
    let mut actor = Actor {
        shared: shared.clone(),
        session,
        ws: ws_write,
        peer,
        authenticated,
        outbox,
        sync_cursors: HashMap::new(),
        control: control_tx,
        pending: Some(pending),
    };
    let queues = Queues { inbound: rx, outbound, overflow, policy, control };
    let sent_close = actor.run(effects, queues).await;
    actor.leave_everything().await;
    shared.registry.unregister(actor.outbox.id());
    if sent_close {
        // Let the peer read our close and answer before the socket drops,
        // so the kernel does not reset it with our close still unread.
        let _ = timeout(shared.config.timeouts.close_linger, &mut reader).await;
    }
    reader.abort();
}

struct Actor<S> {
    shared: Arc<Shared>,
    session: Session,
    ws: WebSocketWrite<WriteHalf<S>>,
    peer: SocketAddr,
    /// Tells the reader whether the session is authenticated (it lifts the
    /// pre-auth size limit), after every verification.
    authenticated: watch::Sender<bool>,
    /// This connection's outbound queue, as handed to the broker and feeds.
    outbox: Outbox,
    /// Collection → cursor delivered so far; `CHANGE`s at or below it are already known.
    sync_cursors: HashMap<Arc<str>, u64>,
    /// Handed to the registry so the admin API can close this connection.
    control: mpsc::Sender<Control>,
    /// The per-IP unauthenticated slot, given back once authenticated.
    pending: Option<SlotGuard>,
}

/// Everything the actor waits on besides timers.
struct Queues {
    inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Receiver<Outbound>,
    overflow: CancellationToken,
    policy: watch::Receiver<Arc<Policy>>,
    control: mpsc::Receiver<Control>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Runs until the connection ends; returns whether a close frame was sent.
    async fn run(&mut self, first: Vec<Effect>, mut queues: Queues) -> bool {
        self.authenticated.send_replace(self.session.identity().is_some());
        if self.session.identity().is_some() {
            self.pending = None;
        }
        if let Flow::Stop = self.apply(first).await {
            return true;
        }
        let shutdown = self.shared.shutdown.clone();
        loop {
            let deadline = self.session.next_deadline().map(instant_at);
            let effects = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return self.close(close::GOING_AWAY, "server shutting down").await;
                }
                _ = queues.overflow.cancelled() => {
                    info!(peer = %self.peer, "slow consumer: outbound queue overflowed");
                    return self.close(close::SLOW_CONSUMER, "slow consumer").await;
                }
                Some(Control::Close { code, reason }) = queues.control.recv() => {
                    info!(peer = %self.peer, code, %reason, "closed by the server");
                    return self.close(code, &reason).await;
                }
                // Timers come before traffic: a client that keeps its queues full must
                // still be expired, revalidated, pinged and timed out on time.
                _ = sleep_until_opt(deadline) => self.session.on_timer(unix_ms()),
                Ok(()) = queues.policy.changed() => {
                    let policy = queues.policy.borrow_and_update().clone();
                    self.session.on_policy(policy)
                }
                Some(item) = queues.outbound.recv() => match self.deliver(item).await {
                    Flow::Continue => continue,
                    Flow::Stop => return true,
                },
                event = queues.inbound.recv() => match event {
                    None => return false,
                    Some(Inbound::Message(message)) => self.session.on_message(message, unix_ms()),
                    Some(Inbound::Ping(payload)) => {
                        self.session.on_activity(unix_ms());
                        if self.write(Frame::pong(Payload::Borrowed(&payload))).await.is_err() {
                            return false;
                        }
                        continue;
                    }
                    Some(Inbound::Activity) => {
                        self.session.on_activity(unix_ms());
                        continue;
                    }
                    Some(Inbound::PeerClosed(code)) => {
                        debug!(peer = %self.peer, ?code, "peer closed");
                        return self.close(close::NORMAL, "").await;
                    }
                    Some(Inbound::Fatal(e)) => return self.close(e.code, e.reason).await,
                },
            };
            if let Flow::Stop = self.apply(effects).await {
                return true;
            }
        }
    }

    /// Carries out effects in order; a verification feeds its result back.
    async fn apply(&mut self, effects: Vec<Effect>) -> Flow {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            let flow = match effect {
                Effect::Send(message) => self.send(&message).await,
                Effect::Verify(token) => {
                    let ip = self.peer.ip();
                    // The failure slot is taken before verifying, so concurrent attempts cannot overshoot it.
                    if !self.shared.auth_failures.try_reserve(ip) {
                        info!(peer = %self.peer, "too many failed authentications");
                        self.close(close::RATE_LIMITED, "too many failed authentications").await;
                        return Flow::Stop;
                    }
                    let result = verify(&self.shared, &token).await;
                    match &result {
                        // Claims are logged with Debug: a `sub` holding a newline cannot forge a log line.
                        Ok(identity) => info!(peer = %self.peer, sub = ?identity.sub, "authenticated"),
                        Err(e) => info!(peer = %self.peer, code = %e.code, "authentication refused"),
                    }
                    // An identity provider outage is not the client's failure.
                    if result.as_ref().is_ok()
                        || result.as_ref().is_err_and(|e| e.code == AuthFailCode::IntrospectionUnavailable)
                    {
                        self.shared.auth_failures.refund(ip);
                    }
                    queue.extend(self.admit(result));
                    if self.session.identity().is_some() {
                        self.pending = None;
                    }
                    self.authenticated.send_replace(self.session.identity().is_some());
                    Flow::Continue
                }
                Effect::Subscribe { id, topic } => {
                    match self.shared.config.broker.subscribe(&topic, self.outbox.clone()).await {
                        Ok(()) => self.send(&ServerMessage::Ok { id }).await,
                        Err(e) => {
                            self.session.forget_subscription(&topic);
                            self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await
                        }
                    }
                }
                Effect::Unsubscribe { topic } => {
                    let _ = self.shared.config.broker.unsubscribe(&topic, self.outbox.id()).await;
                    Flow::Continue
                }
                Effect::Publish { id, topic, data } => {
                    let from = self.session.identity().map(|i| i.sub.clone()).unwrap_or_default();
                    let message = encode_server(&ServerMessage::Message { topic: topic.clone(), data, from });
                    match self.shared.config.broker.publish(&topic, message).await {
                        Ok(_) => self.send(&ServerMessage::Ok { id }).await,
                        Err(e) => self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await,
                    }
                }
                Effect::Write { id, mut results, ops } => {
                    let (slots, ops): (Vec<usize>, Vec<_>) = ops.into_iter().unzip();
                    let outcomes = self.shared.collections.apply(ops, unix_ms()).await;
                    for (slot, outcome) in slots.into_iter().zip(outcomes) {
                        results[slot] = Some(outcome);
                    }
                    self.send(&ServerMessage::OpResult { id, results: results.into_iter().flatten().collect() }).await
                }
                Effect::Sync { id, collection, since } => self.sync(id, collection, since).await,
                Effect::Unsync { collection } => {
                    self.shared.collections.unwatch(&collection, self.outbox.id());
                    self.sync_cursors.remove(collection.as_str());
                    Flow::Continue
                }
                Effect::Ping => match self.write(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""))).await {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Stop,
                },
                Effect::Close { code, reason } => {
                    self.close(code, &reason).await;
                    Flow::Stop
                }
            };
            if let Flow::Stop = flow {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Feeds a verification result to the session and registers the
    /// connection, as one step with the revocation check: an admin revocation
    /// either sees the connection registered (and closes it) or is seen here.
    fn admit(&mut self, result: Result<crate::auth::Identity, AuthError>) -> Vec<Effect> {
        let _admission = self.shared.admission.lock().unwrap_or_else(|e| e.into_inner());
        let result = result.and_then(|identity| {
            if self.shared.config.revocations.is_revoked(&identity, crate::clock::unix_secs()) {
                Err(AuthError::new(AuthFailCode::Forbidden, "the token has been revoked"))
            } else {
                Ok(identity)
            }
        });
        let effects = self.session.on_verified(result, unix_ms());
        if let Some(identity) = self.session.identity() {
            self.shared.registry.register(self.outbox.id(), identity, self.control.clone());
        }
        effects
    }

    /// Answers `SYNC`: watch first, then snapshot, so no change falls between
    /// them. The first page is the `SYNC_DATA`; further pages follow as
    /// `CHANGE`s before any live change (those wait in the outbox and are
    /// skipped when the snapshot covered them).
    async fn sync(&mut self, id: u64, collection: String, since: Option<crate::cursor::Cursor>) -> Flow {
        let collections = &self.shared.collections;
        collections.watch(&collection, self.outbox.clone());
        let page_bytes = self.shared.config.limits.sync_page_bytes;
        let snapshot = match collections.snapshot(&collection, since, page_bytes).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                collections.unwatch(&collection, self.outbox.id());
                self.session.forget_sync(&collection);
                return self.send(&error_reply(id, error::UNAVAILABLE, e.to_string())).await;
            }
        };
        self.sync_cursors.insert(Arc::from(collection.as_str()), snapshot.cursor);
        let page_count = snapshot.pages.len();
        let mut pages = snapshot.pages.into_iter().enumerate();
        let (_, (records, cursor)) = pages.next().unwrap_or_default();
        let first = ServerMessage::SyncData {
            id,
            collection: collection.clone(),
            records,
            cursor: collections.cursor(cursor),
            reset: snapshot.reset,
            more: page_count > 1,
        };
        if let Flow::Stop = self.send(&first).await {
            return Flow::Stop;
        }
        for (n, (records, cursor)) in pages {
            let cursor = self.shared.collections.cursor(cursor);
            let more = n + 1 < page_count;
            let page = ServerMessage::Change { collection: collection.clone(), records, cursor, more };
            if let Flow::Stop = self.send(&page).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Writes a queued publication or change (skipping changes a snapshot already covered).
    async fn deliver(&mut self, item: Outbound) -> Flow {
        let bytes = match item {
            Outbound::Message(bytes) => bytes,
            Outbound::Change { collection, cursor, bytes } => match self.sync_cursors.get_mut(&collection) {
                Some(seen) if cursor > *seen => {
                    *seen = cursor;
                    bytes
                }
                _ => return Flow::Continue,
            },
        };
        self.write_data(&bytes).await
    }

    /// Leaves every topic and feed when the connection ends.
    async fn leave_everything(&mut self) {
        let id = self.outbox.id();
        let topics: Vec<String> = self.session.topics().map(str::to_string).collect();
        for topic in topics {
            let _ = self.shared.config.broker.unsubscribe(&topic, id).await;
        }
        for collection in self.session.synced() {
            self.shared.collections.unwatch(collection, id);
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> Flow {
        self.write_data(&encode_server(message)).await
    }

    /// Writes one protocol message, unless the session's deadline has passed:
    /// then the session closes instead (a long run of writes, such as the
    /// pages of a large `SYNC`, never carries a session past its token).
    async fn write_data(&mut self, bytes: &[u8]) -> Flow {
        let mut out = Vec::new();
        if self.session.close_if_past_deadline(unix_ms(), &mut out) {
            if let Some(Effect::Close { code, reason }) = out.pop() {
                self.close(code, &reason).await;
            }
            return Flow::Stop;
        }
        match self.write(Frame::binary(Payload::Borrowed(bytes))).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    async fn close(&mut self, code: u16, reason: &str) -> bool {
        debug!(peer = %self.peer, code, reason, "closing");
        self.write(Frame::close(code, reason.as_bytes())).await.is_ok()
    }

    /// Writes one frame; a peer that does not read within the write timeout, or
    /// before the session's hard deadline, is dropped.
    async fn write(&mut self, frame: Frame<'_>) -> Result<(), ()> {
        let mut limit = self.shared.config.timeouts.write;
        if let Some(at) = self.session.hard_deadline() {
            limit = limit.min(std::time::Duration::from_millis(at.saturating_sub(unix_ms()).max(1)));
        }
        match timeout(limit, self.ws.write_frame(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(peer = %self.peer, error = %e, "write failed");
                Err(())
            }
            Err(_) => {
                debug!(peer = %self.peer, "write timed out");
                Err(())
            }
        }
    }
}

/// Verifies a token within the verification timeout (failing closed).
async fn verify(shared: &Shared, token: &str) -> Result<crate::auth::Identity, AuthError> {
    let verifier = shared.config.authenticator.verify(token, unix_secs());
    match timeout(shared.config.timeouts.verify, verifier).await {
        Ok(result) => result,
        Err(_) => Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "token verification timed out")),
    }
}

fn error_reply(id: u64, code: &str, message: String) -> ServerMessage {
    ServerMessage::Error { id: Some(id), code: code.into(), message }
}

/// Reads frames, reassembles and decodes messages, and hands them to the actor.
async fn read_loop<R>(
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

fn instant_at(unix_ms_deadline: u64) -> Instant {
    Instant::now() + std::time::Duration::from_millis(unix_ms_deadline.saturating_sub(unix_ms()))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
