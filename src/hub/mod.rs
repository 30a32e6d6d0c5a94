//! This node's fan-out: which local connections follow which topics and
//! collections (and who is present on a topic, `presence`), and the node-level interest that brings other nodes'
//! messages here over the [`Backplane`].
//!
//! Delivery never waits: a message is encoded once and its shared bytes are
//! offered to each subscriber's [`SendQueue`] (a full one closes its connection
//! with 4200). A collection's `CHANGE`s pass through its [`FeedOrder`], so
//! watchers get them in commit order, once, whatever order commits finish or
//! messages arrive in; a gap the backplane never fills sends the watchers to
//! the store to catch up.

mod order;
mod presence;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, OnceCell, mpsc, oneshot};

pub use self::order::{ChangeNotice, FeedOrder, MAX_HELD, Step};
use self::presence::PresenceEvent;
use crate::backplane::{Backplane, BackplaneError, Subject};
use crate::send_queue::{ConnId, Outbound, SendQueue, SharedChange};

/// How long a gap in a collection's chain may stay open before its watchers
/// catch up from the store: long enough for commits finishing out of order,
/// short enough that a lost message is a blip.
pub const GAP_GRACE: Duration = Duration::from_millis(500);

/// Subscribers of one topic, and whether this node's interest in it is established.
#[derive(Default)]
struct Topic {
    /// A std mutex: held while offering to send queues, which never waits; that
    /// lock is what orders a topic's messages.
    subscribers: Mutex<Vec<SendQueue>>,
    interest: OnceCell<()>,
}

/// Watchers of one collection and the order of its changes.
#[derive(Default)]
struct Feed {
    /// A std mutex: offering never waits.
    state: Mutex<FeedState>,
    interest: OnceCell<()>,
}

#[derive(Default)]
struct FeedState {
    watchers: Vec<SendQueue>,
    /// Change feeds that only want to be woken (they read from the store).
    listeners: Vec<(u64, Arc<Notify>)>,
    /// Counts the wake-ups: listeners woken by one change see one number, and
    /// can share the store read that follows it.
    wakes: Arc<AtomicU64>,
    order: FeedOrder,
}

impl FeedState {
    fn is_empty(&self) -> bool {
        self.watchers.is_empty() && self.listeners.is_empty()
    }

    fn wake_listeners(&self) {
        if self.listeners.is_empty() {
            return;
        }
        self.wakes.fetch_add(1, Ordering::Release);
        for (_, notify) in &self.listeners {
            notify.notify_one();
        }
    }
}

/// Wakes its holder (an SSE change feed) whenever its collection changes or
/// may have lost a change; the collection stays followed by this node while
/// it lives, and is let go when it is dropped, however its holder ends.
pub struct ChangeListener {
    hub: Arc<Hub>,
    collection: String,
    id: u64,
    notify: Arc<Notify>,
    wakes: Arc<AtomicU64>,
}

impl ChangeListener {
    /// Returns once the collection changed since the last call (at once if
    /// it already had), with the number of the latest wake-up: listeners
    /// woken by one change get one number.
    pub async fn changed(&self) -> u64 {
        self.notify.notified().await;
        self.wakes.load(Ordering::Acquire)
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.hub.forget(&self.collection, |state| state.listeners.retain(|(id, _)| *id != self.id));
    }
}

/// A change of node-level interest, carried out one at a time so a subject's
/// `interest` and `drop_interest` never overtake each other.
enum InterestChange {
    Want(Subject, oneshot::Sender<Result<(), BackplaneError>>),
    Drop(Subject),
}

/// The local fan-out of one node.
pub struct Hub {
    topics: DashMap<String, Arc<Topic>>,
    feeds: DashMap<String, Arc<Feed>>,
    backplane: Arc<dyn Backplane>,
    interest: mpsc::UnboundedSender<InterestChange>,
    gap_grace: Duration,
    presence: presence::Presence,
    /// Resyncs sent so far: each gets the next number, its round.
    resync_rounds: AtomicU64,
    /// Numbers the change listeners.
    listener_ids: AtomicU64,
    /// This node's id, in the presence events it sends.
    node_id: String,
}

impl Hub {
    /// A hub over `backplane`.
    /// Must be called within a Tokio runtime (it starts the interest task).
    pub fn new(backplane: Arc<dyn Backplane>) -> Arc<Self> {
        Self::for_node(backplane, "local")
    }

    /// A hub over `backplane` for node `node_id` (named in its presence events).
    pub fn for_node(backplane: Arc<dyn Backplane>, node_id: &str) -> Arc<Self> {
        let (interest, changes) = mpsc::unbounded_channel();
        tokio::spawn(keep_interest(backplane.clone(), changes));
        Arc::new(Self {
            topics: DashMap::new(),
            feeds: DashMap::new(),
            backplane,
            interest,
            gap_grace: GAP_GRACE,
            presence: presence::Presence::default(),
            resync_rounds: AtomicU64::new(0),
            listener_ids: AtomicU64::new(0),
            node_id: node_id.to_string(),
        })
    }

    /// The backplane this hub publishes on.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// Adds `subscriber` to `topic` (subscribing twice is one subscription).
    /// Deliveries may start at once; [`Hub::topic_ready`] waits for other nodes' messages.
    pub fn subscribe(&self, topic: &str, subscriber: SendQueue) {
        // The entry guard is held while pushing so an emptied topic cannot be
        // removed in between (lock order: shard, then topic; as in unsubscribe).
        let entry = self.topics.entry(topic.to_string()).or_default();
        let mut subscribers = entry.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if !subscribers.iter().any(|s| s.id() == subscriber.id()) {
            subscribers.push(subscriber);
        }
    }

    /// Waits until this node receives other nodes' publications on `topic`.
    pub async fn topic_ready(&self, topic: &str) -> Result<(), BackplaneError> {
        let Some(entry) = self.topics.get(topic).map(|t| t.value().clone()) else { return Ok(()) };
        entry
            .interest
            .get_or_try_init(|| async {
                // Presence on a topic travels beside its publications.
                self.want(Subject::Topic(topic.to_string())).await?;
                self.want(Subject::Presence(topic.to_string())).await
            })
            .await
            .map(|_| ())
    }

    /// Removes connection `id` from `topic` (a no-op if absent).
    pub fn unsubscribe(&self, topic: &str, id: ConnId) {
        let removed = self.topics.remove_if(topic, |_, t| {
            let mut subscribers = t.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|s| s.id() != id);
            subscribers.is_empty()
        });
        if let Some((name, topic)) = removed
            && topic.interest.initialized()
        {
            let _ = self.interest.send(InterestChange::Drop(Subject::Presence(name.clone())));
            let _ = self.interest.send(InterestChange::Drop(Subject::Topic(name)));
        }
    }

    /// Makes `queue`'s connection (subject `sub`) present on `topic`; every
    /// member hears `PRESENCE_JOIN` when that changes anything (a first join,
    /// or new `info`). Returns whether it did.
    pub fn join(&self, topic: &str, queue: SendQueue, sub: String, info: Option<rmpv::Value>) -> bool {
        let conn_id = queue.id();
        let joined = self.presence.join(topic, queue, sub.clone(), info.clone());
        if joined && self.backplane.has_peers() {
            let event = PresenceEvent::Join { node: self.node_id.clone(), conn_id, sub, info };
            self.backplane.publish(&Subject::Presence(topic.to_string()), event.encode());
        }
        joined
    }

    /// Connection `id` is no longer present on `topic` (a no-op if it was not); the others hear `PRESENCE_LEAVE`.
    pub fn leave(&self, topic: &str, id: ConnId) {
        if let Some(sub) = self.presence.leave(topic, id)
            && self.backplane.has_peers()
        {
            let event = PresenceEvent::Leave { node: self.node_id.clone(), conn_id: id, sub };
            self.backplane.publish(&Subject::Presence(topic.to_string()), event.encode());
        }
    }

    /// Another node's presence event on `topic`.
    pub fn receive_presence(&self, topic: &str, payload: &[u8]) {
        match PresenceEvent::decode(payload) {
            Some(event) => self.presence.receive(topic, event),
            None => tracing::warn!(topic, "a malformed presence event from the backplane was dropped"),
        }
    }

    /// Repeats this node's members to the other nodes (every announcement interval).
    pub fn refresh_presence(&self) {
        if !self.backplane.has_peers() {
            return;
        }
        for (topic, list) in self.presence.local_lists(&self.node_id) {
            self.backplane.publish(&Subject::Presence(topic), list.encode());
        }
    }

    /// Announces as left the other nodes' members not repeated for `after`.
    pub fn expire_presence(&self, after: Duration) {
        self.presence.expire(after, None);
    }

    /// Node `node` is gone: its members leave.
    pub fn node_gone(&self, node: &str) {
        self.presence.expire(Duration::ZERO, Some(node));
    }

    /// A page of the members present on `topic` (on every node) after
    /// connection `after`, in connection order, and whether more follow.
    pub fn members(&self, topic: &str, after: Option<ConnId>) -> (Vec<crate::protocol::Member>, bool) {
        self.presence.members(topic, after)
    }

    /// Delivers an encoded `MESSAGE` to this node's subscribers of `topic`; returns how many were offered it.
    pub fn deliver(&self, topic: &str, message: Bytes) -> usize {
        // Clone the Arc out so no shard lock is held while delivering.
        let Some(target) = self.topics.get(topic).map(|t| t.value().clone()) else { return 0 };
        let subscribers = target.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.iter().filter(|s| s.offer(Outbound::Message(message.clone()))).count()
    }

    /// Publishes on `topic`: to this node's subscribers, then to the other nodes. Never waits.
    pub fn publish(&self, topic: &str, message: Bytes) -> usize {
        let delivered = self.deliver(topic, message.clone());
        if self.backplane.has_peers() {
            self.backplane.publish(&Subject::Topic(topic.to_string()), message);
        }
        delivered
    }

    /// Starts sending `CHANGE`s of `collection` to `queue`. Call before
    /// reading a snapshot, then await [`Hub::feed_ready`] before the read, so
    /// nothing falls between the snapshot and the stream.
    pub fn watch(&self, collection: &str, queue: SendQueue) {
        let entry = self.feeds.entry(collection.to_string()).or_default();
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.watchers.iter().any(|w| w.id() == queue.id()) {
            state.watchers.push(queue);
        }
    }

    /// Waits until `collection`'s feed follows the store: this node's interest
    /// is established and the chain's starting position is known. `position`
    /// reads the store's position (`Store::last_seq`); it is called once per
    /// feed, after the interest began, so a commit after that read reaches
    /// the feed as a message.
    pub async fn feed_ready<F, P>(self: &Arc<Self>, collection: &str, position: F) -> Result<(), BackplaneError>
    where
        F: FnOnce() -> P,
        P: Future<Output = Result<u64, crate::store::StoreError>>,
    {
        let Some(feed) = self.feeds.get(collection).map(|f| f.value().clone()) else { return Ok(()) };
        feed.interest
            .get_or_try_init(|| async {
                self.want(Subject::Changes(collection.to_string())).await?;
                let position = match position().await {
                    Ok(position) => Some(position),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the store's position; watchers will catch up");
                        None
                    }
                };
                let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
                let steps = state.order.start(position);
                self.carry_out(&feed, &state, collection, steps);
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Stops sending `CHANGE`s of `collection` to connection `id`.
    pub fn unwatch(&self, collection: &str, id: ConnId) {
        self.forget(collection, |state| state.watchers.retain(|w| w.id() != id));
    }

    /// A listener woken whenever `collection` changes (see [`ChangeListener`]);
    /// await [`Hub::feed_ready`] before reading the store the first time.
    pub fn listen(self: &Arc<Self>, collection: &str) -> ChangeListener {
        let (id, notify) = (self.listener_ids.fetch_add(1, Ordering::Relaxed), Arc::new(Notify::new()));
        let entry = self.feeds.entry(collection.to_string()).or_default();
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        state.listeners.push((id, notify.clone()));
        let wakes = state.wakes.clone();
        drop(state);
        ChangeListener { hub: self.clone(), collection: collection.to_string(), id, notify, wakes }
    }

    /// Removes a watcher or listener of `collection` (`remove`); the feed
    /// goes, with this node's interest, once nobody is left.
    fn forget(&self, collection: &str, remove: impl FnOnce(&mut FeedState)) {
        let removed = self.feeds.remove_if(collection, |_, feed| {
            let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
            remove(&mut state);
            state.is_empty()
        });
        if let Some((name, feed)) = removed
            && feed.interest.initialized()
        {
            let _ = self.interest.send(InterestChange::Drop(Subject::Changes(name)));
        }
    }

    /// Whether a change of `collection` would reach anyone (a watcher here, or
    /// possibly another node): when not, a commit need not encode it.
    pub fn wants_changes(&self, collection: &str) -> bool {
        self.feeds.contains_key(collection) || self.backplane.has_peers()
    }

    /// A commit of this node changed `collection`: its watchers here and on other nodes get the change.
    pub fn committed(self: &Arc<Self>, collection: &str, notice: ChangeNotice) {
        if self.backplane.has_peers() {
            self.backplane.publish(&Subject::Changes(collection.to_string()), notice.to_payload());
        }
        self.receive_change(collection, notice);
    }

    /// A change of `collection` arrived (from this node or another).
    pub fn receive_change(self: &Arc<Self>, collection: &str, notice: ChangeNotice) {
        let Some(feed) = self.feeds.get(collection).map(|f| f.value().clone()) else { return };
        let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
        let steps = state.order.receive(notice);
        self.carry_out(&feed, &state, collection, steps);
    }

    /// The collections followed here whose feeds have started, with the
    /// position each has delivered up to (`None`: not known yet).
    pub fn followed(&self) -> Vec<(String, Option<u64>)> {
        self.feeds
            .iter()
            .filter(|f| f.value().interest.initialized())
            .map(|f| {
                let delivered = f.value().state.lock().unwrap_or_else(|e| e.into_inner()).order.delivered();
                (f.key().clone(), delivered)
            })
            .collect()
    }

    /// The store holds `collection` at `position`: if its feed has not
    /// delivered that far, a change was lost on its way (the last one of a
    /// run, which no later change reveals) and the watchers catch up.
    pub fn check_position(self: &Arc<Self>, collection: &str, position: u64) {
        let Some(feed) = self.feeds.get(collection).map(|f| f.value().clone()) else { return };
        let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
        let steps = state.order.behind(position);
        if !steps.is_empty() {
            tracing::info!(collection, position, "a feed was behind the store; its watchers catch up");
        }
        self.carry_out(&feed, &state, collection, steps);
    }

    /// Messages may have been lost: every feed's watchers catch up from the store.
    pub fn lost(self: &Arc<Self>) {
        let feeds: Vec<(String, Arc<Feed>)> = self.feeds.iter().map(|f| (f.key().clone(), f.value().clone())).collect();
        for (collection, feed) in feeds {
            let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
            let steps = state.order.lost();
            self.carry_out(&feed, &state, &collection, steps);
        }
    }

    /// Delivers and arranges what a feed's order decided, under the lock the
    /// order was decided under, so the steps of one feed never interleave.
    fn carry_out(self: &Arc<Self>, feed: &Arc<Feed>, state: &FeedState, collection: &str, steps: Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let name: Arc<str> = Arc::from(collection);
        for step in steps {
            match step {
                Step::Deliver(notice) => {
                    let change =
                        Arc::new(SharedChange { collection: name.clone(), cursor: notice.last, bytes: notice.change });
                    for watcher in &state.watchers {
                        watcher.offer(Outbound::Change(change.clone()));
                    }
                    state.wake_listeners();
                }
                Step::Resync => {
                    let round = self.resync_rounds.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(collection, round, "a change never arrived; watchers catch up from the store");
                    for watcher in &state.watchers {
                        watcher.offer(Outbound::Resync { collection: name.clone(), round });
                    }
                    state.wake_listeners();
                }
                Step::ArmGapTimer(timer) => {
                    let (hub, feed, collection) = (self.clone(), feed.clone(), collection.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(hub.gap_grace).await;
                        let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
                        let steps = state.order.gap_expired(timer);
                        hub.carry_out(&feed, &state, &collection, steps);
                    });
                }
            }
        }
    }

    async fn want(&self, subject: Subject) -> Result<(), BackplaneError> {
        let (reply, answer) = oneshot::channel();
        self.interest
            .send(InterestChange::Want(subject, reply))
            .map_err(|_| BackplaneError("the interest task has stopped".into()))?;
        answer.await.map_err(|_| BackplaneError("the interest task has stopped".into()))?
    }
}

/// Carries out interest changes one at a time, in the order they were asked for.
async fn keep_interest(backplane: Arc<dyn Backplane>, mut changes: mpsc::UnboundedReceiver<InterestChange>) {
    while let Some(change) = changes.recv().await {
        match change {
            InterestChange::Want(subject, reply) => {
                let _ = reply.send(backplane.interest(&subject).await);
            }
            InterestChange::Drop(subject) => {
                if let Err(e) = backplane.drop_interest(&subject).await {
                    tracing::warn!(error = %e, ?subject, "could not drop interest");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::MemoryBackplane;

    #[tokio::test]
    async fn a_listener_is_woken_by_changes_and_lets_the_collection_go_when_dropped() {
        let hub = Hub::new(Arc::new(MemoryBackplane::standalone()));
        assert!(!hub.wants_changes("c"));
        let listener = hub.listen("c");
        hub.feed_ready("c", || async { Ok(0) }).await.unwrap();
        assert!(hub.wants_changes("c"), "a listened collection is followed");
        hub.committed("c", ChangeNotice { prev: 0, last: 1, change: Bytes::from_static(b"x") });
        tokio::time::timeout(Duration::from_secs(1), listener.changed()).await.expect("woken by the change");
        drop(listener);
        assert!(!hub.wants_changes("c"), "dropping the listener lets the collection go");
    }
}
