//! The per-connection actor: one task owns the socket's write side and the
//! [`Session`]; a reader task owns the read side.
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so it never sits in a
//! `select!`: the reader task decodes messages and hands them over a small
//! bounded channel (which also gives back-pressure). The actor selects over
//! that channel, the outbound queue, the completions of its work, the
//! session's next deadline and shutdown, and is the only writer, so pongs and
//! close frames never interleave with messages.
//!
//! The actor never waits on a verification, a commit or a scan: they run as
//! tasks ([`work`]) whose completions come back as events, so pings, deliveries,
//! expiry and shutdown are never held up behind an identity provider or a disk.
//!
//! | module | what |
//! | --- | --- |
//! | this one | the actor: its loop, socket writes, leaving on close |
//! | `frames` | the write side: frames batched into one write per burst |
//! | `reader` | the reader task: frames → reassembled, decoded messages |
//! | `work` | effects carried out, work started as tasks and their completions |
//! | `completion` | what comes back from that work, and what a scan starts from and reads |
//! | `syncing` | scans started, their pages sent, changes passed through the sync streams |
//! | `waits` | what the loop waits on besides traffic, set up once per connection |

mod completion;
mod frames;
mod reader;
mod syncing;
mod waits;
mod work;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use fastwebsockets::{Frame, Payload};
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};

use crate::client_stream::ClientStream;
use crate::ip_slots::SlotGuard;
use crate::node::Node;
use crate::protocol::codes::close;
use crate::protocol::{ClientMessage, DecodeError, ServerMessage, encode_server};
use crate::registry::{CloseOrder, CloseSlot};
use crate::rules::Policy;
use crate::send_queue::{Outbound, SendQueue, SendQueueReceiver};
use crate::session::{Effect, Session};
use crate::sync_streams::SyncStreams;

use completion::Completion;
use frames::{BATCH_BYTES, FrameWriter};
use reader::{AuthGate, ReaderEvent, read_loop};
use waits::{Outside, SessionTimer, Signal, Sources};

/// Writes one connection may have in flight before it stops reading (back-pressure).
const MAX_WRITES_IN_FLIGHT: usize = 16;

/// Why writing stops ([`Actor::before_writing`]).
enum Ending {
    /// Send this close frame.
    Close(u16, String),
    /// Stop without one.
    Stop,
}

/// Whether the actor goes on after an effect.
enum Flow {
    Continue,
    /// A close frame was sent (or the socket broke): stop.
    Stop,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) async fn serve<S>(io: S, node: Arc<Node>, query_token: Option<String>, peer: SocketAddr, pending: SlotGuard)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(io);
    let read = ClientStream::new(read);
    let (tx, rx) = mpsc::channel(8);
    let gate = Arc::new(AuthGate::default());
    let mut reader = tokio::spawn(read_loop(read, tx, node.config.limits, gate.clone()));
    let mut policy = node.watch_policy();
    let current = policy.borrow_and_update().clone();
    let anonymous = node.config.authenticator.anonymous();
    let mut session_config = node.config.session;
    session_config.revalidate_every = node.config.authenticator.revalidate_every();
    session_config.max_message_bytes = node.config.limits.max_frame_bytes;
    let now = node.config.clock.now_ms();
    let (session, effects) = Session::open(session_config, now, current, anonymous, query_token);
    let close_slot = Arc::new(CloseSlot::default());
    let capacity = node.config.limits.outbound_queue;
    let (queue, outbound, overflow) = SendQueue::new(node.connection_id(), capacity);
    let mut actor = Actor {
        node: node.clone(),
        session,
        ws: FrameWriter::new(write),
        peer,
        gate,
        queue,
        streams: SyncStreams::new(node.config.limits.outbound_queue),
        tasks: JoinSet::new(),
        held: VecDeque::new(),
        writes_in_flight: 0,
        close_slot: close_slot.clone(),
        pending: Some(pending),
        counted_as: "unauthenticated",
    };
    node.metrics.connection("unauthenticated", 1);
    let queues = Queues { inbound: rx, outbound, overflow, policy, close_slot };
    // Every line this connection logs carries its id and, once known, its `sub` (never a token).
    let span = tracing::info_span!("connection", conn = actor.queue.id(), sub = tracing::field::Empty);
    let sent_close = actor.run(effects, queues).instrument(span).await;
    actor.leave_everything().await;
    node.metrics.connection(actor.counted_as, -1);
    node.registry.unregister(actor.queue.id());
    if sent_close {
        // Let the peer read our close and answer before the socket drops,
        // so the kernel does not reset it with our close still unread.
        let _ = timeout(node.config.timeouts.close_linger, &mut reader).await;
    }
    reader.abort();
}

struct Actor<S> {
    node: Arc<Node>,
    session: Session,
    ws: FrameWriter<WriteHalf<S>>,
    peer: SocketAddr,
    /// Tells the reader whether the session is authenticated (it lifts the
    /// pre-auth size limit), after every verification.
    gate: Arc<AuthGate>,
    /// This connection's outbound queue, as handed to the hub's topics and feeds.
    queue: SendQueue,
    /// The collections it follows: what was delivered, what waits behind a scan.
    streams: SyncStreams<Bytes>,
    /// Verifications, commits and scans in flight; their results come back through `join_next`.
    tasks: JoinSet<Completion>,
    /// Messages that arrived during a verification, processed after it in order.
    held: VecDeque<Result<ClientMessage, DecodeError>>,
    /// `OP_BATCH`es being committed.
    writes_in_flight: usize,
    /// Handed to the registry so the admin API can close this connection.
    close_slot: Arc<CloseSlot>,
    /// The per-IP unauthenticated slot, given back once authenticated.
    pending: Option<SlotGuard>,
    /// The state this connection is counted under in the `connections` gauge.
    counted_as: &'static str,
}

/// Everything the actor waits on besides timers.
struct Queues {
    inbound: mpsc::Receiver<ReaderEvent>,
    outbound: SendQueueReceiver,
    overflow: CancellationToken,
    policy: watch::Receiver<Arc<Policy>>,
    close_slot: Arc<CloseSlot>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Actor<S> {
    /// Runs until the connection ends; returns whether a close frame was sent.
    /// What it waits on besides traffic is set up once ([`waits`]).
    async fn run(&mut self, first: Vec<Effect>, queues: Queues) -> bool {
        self.gate.verdict(self.session.identity().is_some());
        if self.session.identity().is_some() {
            self.pending = None;
        }
        self.count_state();
        if let Flow::Stop = Box::pin(self.apply(first)).await {
            return true;
        }
        let Queues { mut inbound, mut outbound, overflow, policy, close_slot } = queues;
        let sources = Sources { shutdown: self.node.shutdown.clone(), overflow, close_slot };
        let mut outside = sources.wait(Some(policy));
        let mut timer = SessionTimer::new();
        loop {
            // Messages held during a verification go first, once it is over.
            if !self.session.is_verifying()
                && let Some(message) = self.held.pop_front()
            {
                let effects = self.session.on_message(message, self.now());
                if let Flow::Stop = Box::pin(self.apply(effects)).await {
                    return true;
                }
                continue;
            }
            timer.arm(self.session.next_deadline(), |at| self.instant_at(at));
            // Stop reading while messages are held or too many writes are in flight: the
            // bounded channel then pushes back on the client.
            let reading = self.held.is_empty() && self.writes_in_flight < MAX_WRITES_IN_FLIGHT;
            let effects = tokio::select! {
                biased;
                event = &mut outside => match event {
                    Outside::Ending(Signal::Shutdown) => {
                        return self.close(close::GOING_AWAY, "server shutting down").await;
                    }
                    Outside::Ending(Signal::Overflow) => {
                        info!(peer = %self.peer, "slow consumer: outbound queue overflowed");
                        return self.close(close::SLOW_CONSUMER, "slow consumer").await;
                    }
                    Outside::Ending(Signal::Close(CloseOrder::Close { code, reason })) => {
                        info!(peer = %self.peer, code, %reason, "closed by the server");
                        return self.close(code, &reason).await;
                    }
                    Outside::Policy(policy, next) => {
                        outside = sources.wait(Some(next));
                        self.session.on_policy(policy)
                    }
                    Outside::PolicyGone => {
                        outside = sources.wait(None);
                        continue;
                    }
                },
                // Timers come before traffic: a client that keeps its queues full must
                // still be expired, revalidated, pinged and timed out on time.
                () = timer.fired(), if timer.is_armed() => {
                    timer.disarm();
                    self.session.on_timer(self.now())
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(completion) => match Box::pin(self.complete(completion)).await {
                        Flow::Continue => continue,
                        Flow::Stop => return true,
                    },
                    Err(e) => {
                        debug!(peer = %self.peer, error = %e, "connection task failed");
                        return self.close(close::GOING_AWAY, "internal error").await;
                    }
                },
                item = outbound.recv() => match self.deliver_burst(item, &mut outbound).await {
                    Flow::Continue => continue,
                    Flow::Stop => return true,
                },
                event = inbound.recv(), if reading => match event {
                    None => return false,
                    Some(ReaderEvent::Message(message)) if self.session.holds(&message) => {
                        self.held.push_back(*message);
                        continue;
                    }
                    Some(ReaderEvent::Message(message)) => {
                        self.node.metrics.message_in(kind_of(&message));
                        self.session.on_message(*message, self.now())
                    }
                    Some(ReaderEvent::Ping(payload)) => {
                        let (answer, effects) = self.session.on_ping(self.now());
                        if answer && self.write(Frame::pong(Payload::Borrowed(&payload))).await.is_err() {
                            return false;
                        }
                        effects
                    }
                    Some(ReaderEvent::Activity) => {
                        self.session.on_activity(self.now());
                        continue;
                    }
                    Some(ReaderEvent::PeerClosed(code)) => {
                        debug!(peer = %self.peer, ?code, "peer closed");
                        return self.close(close::NORMAL, "").await;
                    }
                    Some(ReaderEvent::Fatal(e)) => return self.close(e.code, e.reason).await,
                },
            };
            // Carrying out effects and completions takes futures several times the
            // size of the wait above; boxed, they are allocated while they run
            // instead of being part of every idle connection's task.
            if let Flow::Stop = Box::pin(self.apply(effects)).await {
                return true;
            }
        }
    }

    /// "Now" from the server's clock.
    fn now(&self) -> u64 {
        self.node.config.clock.now_ms()
    }

    /// The tokio instant of a deadline given in the server clock's milliseconds.
    fn instant_at(&self, deadline_ms: u64) -> Instant {
        Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(self.now()))
    }

    /// Delivers `first` and whatever else is queued already (up to a batch),
    /// then writes them all at once.
    async fn deliver_burst(&mut self, first: Outbound, outbound: &mut SendQueueReceiver) -> Flow {
        // One reading of the clock for the burst: its writes are gathered now
        // and go out together (a reading per delivery was a tenth of its cost).
        // The deadline, close orders and a due revalidation are looked at once
        // for it: with one `now` they give the same answer for each of its
        // messages, and a close order that comes during it is seen at the next turn.
        if let Err(ending) = self.before_writing(self.now()) {
            return self.end_writing(ending).await;
        }
        let (mut next, mut flow, mut drained, mut messages) = (Some(first), Flow::Continue, 0u32, 0u64);
        while let Some(item) = next.take() {
            drained += 1;
            flow = match item {
                // Gathered without a future per message: most of a burst is publications.
                Outbound::Message(bytes) => {
                    messages += 1;
                    self.gather(&bytes)
                }
                Outbound::Change(change) => self.deliver_change(change).await,
                Outbound::Resync { collection, round } => self.resync(collection, round),
            };
            if let Flow::Continue = flow
                && self.ws.pending() < BATCH_BYTES
            {
                next = outbound.try_recv();
            }
        }
        self.node.metrics.deliveries.inc_by(messages);
        self.node.metrics.outbound_burst.observe(f64::from(drained));
        match flow {
            Flow::Continue => match self.write_pending().await {
                Ok(()) => Flow::Continue,
                Err(()) => Flow::Stop,
            },
            Flow::Stop => Flow::Stop,
        }
    }

    /// Leaves every topic and feed when the connection ends.
    async fn leave_everything(&mut self) {
        let id = self.queue.id();
        let topics: Vec<String> = self.session.topics().map(str::to_string).collect();
        for topic in topics {
            self.node.hub.leave(&topic, id);
            self.node.hub.unsubscribe(&topic, id);
        }
        for collection in self.session.synced() {
            self.node.hub.unwatch(collection, id);
        }
    }

    /// Moves this connection to the gauge of its current state.
    fn count_state(&mut self) {
        let now = if self.session.identity().is_some() { "authenticated" } else { "unauthenticated" };
        if now != self.counted_as {
            self.node.metrics.connection(self.counted_as, -1);
            self.node.metrics.connection(now, 1);
            self.counted_as = now;
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> Flow {
        let metrics = &self.node.metrics;
        match message {
            ServerMessage::OpResult { results, .. } => {
                for result in results {
                    metrics.op(result.code.as_deref());
                }
            }
            ServerMessage::Error { code, .. } => {
                metrics.errors.get_or_create(&crate::metrics::Code { code: code.clone() }).inc();
            }
            ServerMessage::AuthFail { code, .. } => {
                metrics.auth_failures.get_or_create(&crate::metrics::Code { code: code.clone() }).inc();
            }
            _ => {}
        }
        self.write_data(&encode_server(message)).await
    }

    /// Writes one protocol message, unless the session's deadline has passed:
    /// then the session closes instead (a long run of writes, such as the
    /// pages of a large `SYNC`, never carries a session past its token).
    async fn write_data(&mut self, bytes: &[u8]) -> Flow {
        if let Err(ending) = self.before_writing(self.now()) {
            return self.end_writing(ending).await;
        }
        match self.write(Frame::binary(Payload::Borrowed(bytes))).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    /// Queues a message of a burst ([`Self::deliver_burst`], which looked at
    /// the deadline and close orders for it), to be written with the rest.
    fn gather(&mut self, bytes: &[u8]) -> Flow {
        if self.ws.queue(Frame::binary(Payload::Borrowed(bytes))) { Flow::Continue } else { Flow::Stop }
    }

    /// What is looked at before every data write. A long run of writes
    /// never returns to the actor's loop, so what must not wait for it is
    /// looked at here: the session's hard deadline, an administrator's close
    /// order, a revalidation that is due.
    fn before_writing(&mut self, now: u64) -> Result<(), Ending> {
        let mut out = Vec::new();
        if self.session.close_if_past_deadline(now, &mut out) {
            return Err(match out.pop() {
                Some(Effect::Close { code, reason }) => Ending::Close(code, reason),
                _ => Ending::Stop,
            });
        }
        if let Some(CloseOrder::Close { code, reason }) = self.close_slot.try_take() {
            info!(peer = %self.peer, code, %reason, "closed by the server");
            return Err(Ending::Close(code, reason));
        }
        if let Some(token) = self.session.take_due_revalidation(now) {
            self.revalidate_aside(token);
        }
        Ok(())
    }

    /// Ends the connection as [`Self::before_writing`] decided.
    async fn end_writing(&mut self, ending: Ending) -> Flow {
        if let Ending::Close(code, reason) = ending {
            self.close(code, &reason).await;
        }
        Flow::Stop
    }

    async fn close(&mut self, code: u16, reason: &str) -> bool {
        self.node.metrics.closes.get_or_create(&crate::metrics::CloseCode { code }).inc();
        debug!(peer = %self.peer, code, reason, "closing");
        self.write(Frame::close(code, reason.as_bytes())).await.is_ok()
    }

    /// Writes one frame, after anything queued before it.
    async fn write(&mut self, frame: Frame<'_>) -> Result<(), ()> {
        if !self.ws.queue(frame) {
            debug!(peer = %self.peer, "write after close");
            return Err(());
        }
        self.write_pending().await
    }

    /// Writes the queued frames; a peer that does not read within the write
    /// timeout, or before the session's hard deadline, is dropped.
    async fn write_pending(&mut self) -> Result<(), ()> {
        // Tried once before any timer is set: a socket with room for the
        // bytes takes them at once, and then neither the clock nor the timer
        // wheel is touched (they cost more than the write's own work).
        let mut flush = pin!(self.ws.flush());
        let written = match std::future::poll_fn(|cx| Poll::Ready(flush.as_mut().poll(cx))).await {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => {
                let mut limit = self.node.config.timeouts.write;
                if let Some(at) = self.session.hard_deadline() {
                    let now = self.node.config.clock.now_ms();
                    limit = limit.min(std::time::Duration::from_millis(at.saturating_sub(now).max(1)));
                }
                timeout(limit, flush).await
            }
        };
        match written {
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

/// A client message's type, as the `messages_in` metric names it.
fn kind_of(message: &Result<ClientMessage, DecodeError>) -> &'static str {
    match message {
        Ok(ClientMessage::Auth { .. }) => "AUTH",
        Ok(ClientMessage::Ping { .. }) => "PING",
        Ok(ClientMessage::Sub { .. } | ClientMessage::SubPresent { .. }) => "SUB",
        Ok(ClientMessage::Presence { .. }) => "PRESENCE",
        Ok(ClientMessage::Unsub { .. }) => "UNSUB",
        Ok(ClientMessage::Pub { .. }) => "PUB",
        Ok(ClientMessage::OpBatch { .. }) => "OP_BATCH",
        Ok(ClientMessage::Sync { .. }) => "SYNC",
        Ok(ClientMessage::Unsync { .. }) => "UNSYNC",
        Err(_) => "invalid",
    }
}
