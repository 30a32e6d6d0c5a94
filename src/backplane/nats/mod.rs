//! Nodes connected through NATS (`--backplane nats://…`).
//!
//! One NATS connection per node, with echo off (a node never hears its own
//! publications). Every message is sealed in an [`envelope`](super::envelope)
//! on a subject of [`Subjects`], so names cannot steer it and, with a cluster
//! secret, nobody without the secret can forge one.
//!
//! - **Interest** is one NATS subscription per subject, forwarded by a task
//!   into the node's bounded inbound queue; `async-nats` sends the
//!   subscriptions again after every reconnect, so interests survive an
//!   outage. `interest` flushes (a subscription exists on the server only
//!   after a round trip); during an outage it is recorded and takes effect
//!   on recovery, so a `SUB` or `SYNC` is served locally meanwhile.
//! - **Publishing never waits**: sealed messages go into a bounded queue that
//!   one task hands to NATS in order (per-publisher order). When NATS is down
//!   that queue fills and further publications are dropped (at most once).
//! - **Control** has its own subject, subscription and queue, and each node
//!   acknowledges a control message on the sender's reply subject once it has
//!   carried it out. Control envelopes older than [`CONTROL_FRESHNESS`] or
//!   seen before (origin and sequence) are ignored: a captured kick cannot be
//!   replayed later.
//! - **Losses**: every reconnect after the first connection and every slow
//!   consumer the client reports yields [`Inbound::Lost`](super::Inbound::Lost): the node then
//!   catches collections up from the store and re-reads revocations.
//!
//! This module connects, publishes and subscribes; `receive` opens what
//! arrives (connection events, subject messages, control, announcements).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod receive;

use super::envelope::{Kind, Refused, Sealer};
use super::inlet::{INBOUND_QUEUE, Inlet};
use super::subjects::Subjects;
use super::{
    Announcement, Backplane, BackplaneError, BackplaneFuture, BackplaneStats, CONTROL_ACK_WAIT, Control,
    ControlDelivery, Inlets, Subject, wire,
};

/// Sealed publications waiting for NATS before newer ones are dropped.
const OUTBOX: usize = 64 * 1024;
/// Control messages waiting for the node.
const CONTROL_QUEUE: usize = 1024;
/// How old (or how far in the future, by the sender's clock) a control
/// message or announcement may be.
pub const CONTROL_FRESHNESS: Duration = Duration::from_secs(60);
/// Control messages remembered to ignore a replay.
const SEEN_CONTROL: usize = 4096;
/// How long `interest` and `drop_interest` wait for the server's round trip.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// How to reach NATS and who this node is.
#[derive(Clone)]
pub struct NatsOptions {
    /// `nats://[user:password@ | token@]host:port[,…]`.
    pub url: String,
    /// The subject prefix every node of the deployment shares.
    pub cluster: String,
    /// The HMAC key of every envelope; `None` sends and accepts unsigned ones.
    pub secret: Option<Vec<u8>>,
    /// A NATS credentials file (NKey seed and user JWT).
    pub creds: Option<PathBuf>,
    /// This node's id (the envelopes' origin).
    pub node_id: String,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &host_of(&self.url))
            .field("cluster", &self.cluster)
            .field("signed", &self.secret.is_some())
            .field("creds", &self.creds)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// The host part of a NATS URL, without credentials (for messages and logs).
pub fn host_of(url: &str) -> String {
    let hosts = url.split(',').map(|server| {
        let server = server.trim();
        let rest = server.split_once("://").map_or(server, |(_, rest)| rest);
        rest.rsplit_once('@').map_or(rest, |(_, host)| host)
    });
    hosts.collect::<Vec<_>>().join(",")
}

/// What the receiving tasks share.
struct Shared {
    subjects: Subjects,
    sealer: Sealer,
    node_id: String,
    seq: AtomicU64,
    inlet: Arc<Inlet>,
    control: mpsc::Sender<ControlDelivery>,
    connected: AtomicBool,
    ever_connected: AtomicBool,
    stats: BackplaneStats,
    /// When a refused envelope was last logged: refusals are logged once a minute.
    last_refusal_log: Mutex<Option<std::time::Instant>>,
    /// Control messages already carried out, by origin and sequence.
    seen_control: Mutex<SeenControl>,
}

/// Control messages carried out lately, by origin and sequence, oldest first.
#[derive(Default)]
struct SeenControl {
    set: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

/// A node's handle on NATS.
pub struct NatsBackplane {
    client: Client,
    shared: Arc<Shared>,
    outbox: mpsc::Sender<(String, Bytes)>,
    subscriptions: tokio::sync::Mutex<HashMap<Subject, (CancellationToken, tokio::task::JoinHandle<()>)>>,
    inbound: Mutex<Option<Inlets>>,
    stop: CancellationToken,
}

impl NatsBackplane {
    /// Connects to NATS, or says in one line why it cannot.
    pub async fn connect(options: NatsOptions) -> Result<Self, BackplaneError> {
        let subjects = Subjects::new(&options.cluster).map_err(BackplaneError)?;
        let (inlet, messages) = Inlet::new(INBOUND_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let shared = Arc::new(Shared {
            subjects,
            sealer: Sealer::new(options.secret.as_deref()),
            node_id: options.node_id.clone(),
            seq: AtomicU64::new(0),
            inlet,
            control: control_tx,
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            stats: BackplaneStats::default(),
            last_refusal_log: Mutex::new(None),
            seen_control: Mutex::default(),
        });
        let host = host_of(&options.url);
        let mut connect = ConnectOptions::new()
            .name(format!("syncgate {}", options.node_id))
            .no_echo()
            // Replies (and round-trip probes) stay under the cluster's prefix,
            // so the nodes' NATS user needs `<cluster>.>` and nothing else.
            .custom_inbox_prefix(shared.subjects.inbox())
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(10))
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 250).min(2000)))
            .event_callback({
                let shared = shared.clone();
                move |event| {
                    let shared = shared.clone();
                    async move { shared.on_event(event) }
                }
            });
        if let Some(creds) = &options.creds {
            connect = connect
                .credentials_file(creds)
                .await
                .map_err(|e| BackplaneError(format!("--backplane-creds {}: {e}", creds.display())))?;
        }
        let client = connect
            .connect(options.url.as_str())
            .await
            .map_err(|e| BackplaneError(format!("NATS at {host} does not answer: {e}")))?;
        // (`ever_connected` is set by the first `Connected` event, which is
        // this connection's: only later ones are reconnects.)
        shared.connected.store(true, Ordering::Release);
        shared.stats.connected.set(1);
        let stop = CancellationToken::new();
        for (subject, kind) in
            [(shared.subjects.control(), Kind::Control), (shared.subjects.nodes(), Kind::Announcement)]
        {
            let subscriber = client.subscribe(subject).await.map_err(|e| BackplaneError(e.to_string()))?;
            tokio::spawn(receive::receive_cluster_messages(
                client.clone(),
                shared.clone(),
                subscriber,
                kind,
                stop.clone(),
            ));
        }
        flush(&client).await.map_err(|e| BackplaneError(format!("NATS at {host}: {e}")))?;
        let (outbox, queued) = mpsc::channel(OUTBOX);
        tokio::spawn(send_in_order(client.clone(), queued, stop.clone()));
        info!(nats = %host, cluster = %options.cluster, signed = shared.sealer.is_signed(), "backplane connected");
        Ok(Self {
            client,
            shared,
            outbox,
            subscriptions: tokio::sync::Mutex::default(),
            inbound: Mutex::new(Some(Inlets { messages, control: control_rx })),
            stop,
        })
    }

    fn seal(&self, subject: &str, kind: Kind, body: &[u8]) -> Bytes {
        let shared = &self.shared;
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        Bytes::from(shared.sealer.seal(subject, kind, crate::clock::unix_ms(), seq, &shared.node_id, body))
    }

    fn send(&self, subject: String, payload: Bytes) {
        if self.outbox.try_send((subject, payload)).is_err() {
            self.shared.stats.dropped.inc();
        }
    }
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits for a round trip to the server, so every subscription and
/// unsubscription sent before is in place there. (`Client::flush` only
/// writes the buffer out.) A request to a subject nobody listens on is
/// answered by the server itself, "no responders", after everything this
/// connection sent before it.
async fn flush(client: &Client) -> Result<(), String> {
    // Under the cluster's inbox prefix, like every subject this node uses.
    let probe = format!("{}.probe", client.new_inbox());
    match tokio::time::timeout(FLUSH_WAIT, client.request(probe, Bytes::new())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {FLUSH_WAIT:?}")),
    }
}

/// Hands sealed publications to NATS one at a time, in order.
async fn send_in_order(client: Client, mut queued: mpsc::Receiver<(String, Bytes)>, stop: CancellationToken) {
    loop {
        let (subject, payload) = tokio::select! {
            _ = stop.cancelled() => return,
            next = queued.recv() => match next { Some(next) => next, None => return },
        };
        if let Err(e) = client.publish(subject, payload).await {
            warn!(error = %e, "a backplane publication was lost");
        }
    }
}

impl Backplane for NatsBackplane {
    fn interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        Box::pin(async move {
            let mut subscriptions = self.subscriptions.lock().await;
            if subscriptions.contains_key(subject) {
                return Ok(());
            }
            let nats_subject = self.shared.subjects.of(subject);
            let subscriber = self.client.subscribe(nats_subject).await.map_err(|e| BackplaneError(e.to_string()))?;
            let stop = CancellationToken::new();
            let task = tokio::spawn(receive::forward(self.shared.clone(), subscriber, subject.clone(), stop.clone()));
            subscriptions.insert(subject.clone(), (stop, task));
            drop(subscriptions);
            // In place on the server only after a round trip; during an outage
            // the subscription is sent again when NATS is back.
            if self.is_connected()
                && let Err(e) = flush(&self.client).await
            {
                warn!(error = %e, "backplane interest recorded; it takes effect when NATS answers");
            }
            Ok(())
        })
    }

    fn drop_interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        Box::pin(async move {
            let Some((stop, task)) = self.subscriptions.lock().await.remove(subject) else { return Ok(()) };
            stop.cancel();
            let _ = task.await;
            if self.is_connected() {
                let _ = flush(&self.client).await;
            }
            Ok(())
        })
    }

    fn publish(&self, subject: &Subject, payload: Bytes) {
        let kind = match subject {
            Subject::Topic(_) => Kind::Topic,
            Subject::Changes(_) => Kind::Changes,
            Subject::Presence(_) => Kind::Presence,
        };
        let nats_subject = self.shared.subjects.of(subject);
        let sealed = self.seal(&nats_subject, kind, &payload);
        self.send(nats_subject, sealed);
    }

    fn control(&self, control: Control) -> BackplaneFuture<'_, usize> {
        Box::pin(async move {
            if !self.is_connected() {
                return Err(BackplaneError("NATS is unreachable".into()));
            }
            let inbox = self.client.new_inbox();
            let unique = inbox.rsplit('.').next().unwrap_or(&inbox);
            let reply = format!("{}.{unique}", self.shared.subjects.acks(&self.shared.node_id));
            // (The acknowledgements come on a subject of the sender's own, not
            // an inbox, so receivers can check where they are sending them.)
            let mut acks = self.client.subscribe(reply.clone()).await.map_err(|e| BackplaneError(e.to_string()))?;
            let subject = self.shared.subjects.control();
            let sealed = self.seal(&subject, Kind::Control, &wire::encode_control(&control));
            self.client
                .publish_with_reply(subject, reply.clone(), sealed)
                .await
                .map_err(|e| BackplaneError(e.to_string()))?;
            flush(&self.client).await.map_err(BackplaneError)?;
            let deadline = tokio::time::Instant::now() + CONTROL_ACK_WAIT;
            let mut acknowledged = HashSet::new();
            while let Ok(Some(ack)) = tokio::time::timeout_at(deadline, acks.next()).await {
                match self.shared.sealer.open(&reply, &ack.payload) {
                    Ok(opened) if opened.kind == Kind::ControlAck => {
                        acknowledged.insert(opened.origin.to_string());
                    }
                    Ok(_) => self.shared.refused(&reply, Refused::Malformed),
                    Err(why) => self.shared.refused(&reply, why),
                }
            }
            let _ = acks.unsubscribe().await;
            Ok(acknowledged.len())
        })
    }

    fn announce(&self, announcement: &Announcement) {
        let subject = self.shared.subjects.nodes();
        // A node announces itself: under the id its envelopes carry.
        let announcement = Announcement { node_id: self.shared.node_id.clone(), ..announcement.clone() };
        let sealed = self.seal(&subject, Kind::Announcement, &wire::encode_announcement(&announcement));
        self.send(subject, sealed);
    }

    fn inbound(&self) -> Option<Inlets> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    fn stats(&self) -> BackplaneStats {
        self.shared.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_shown_without_credentials() {
        assert_eq!(host_of("nats://user:pw@10.0.0.1:4222"), "10.0.0.1:4222");
        assert_eq!(host_of("nats://tok@a:1,nats://b:2"), "a:1,b:2");
        assert_eq!(host_of("localhost:4222"), "localhost:4222");
    }
}
