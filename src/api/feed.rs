//! The change feed: `GET /api/collections/{name}/changes?since=CURSOR`, as
//! Server-Sent Events.
//!
//! The feed reads from the store, never from a live-only bus: it scans from
//! its cursor, sends what it found, and scans again whenever the hub says the
//! collection changed (or a change may have been lost). Each event's `id` is
//! the cursor after it, so a consumer that reconnects with `Last-Event-ID`
//! (or `?since=`) continues exactly where it stopped: nothing is lost and
//! nothing repeats. A cursor that cannot be resumed (another epoch, older than
//! the tombstone horizon) gets a `reset` event, then the whole collection.
//!
//! A feed lives like a WebSocket session: it is registered with the node, so
//! an administrator's disconnect or revocation ends it and
//! `/admin/connections` counts it; it ends when its token expires (with the
//! leeway), when a rules reload takes its read access away, and, in
//! introspection mode, when revalidation finds the token no longer active.
//! The response carries `Connection: close`, so the connection (and its
//! slot) goes with the feed. An identity and an address hold a bounded number
//! of feeds (429 past it), and a consumer that takes nothing for the write
//! timeout loses its feed. Feeds woken by one change at one position share
//! the store read and the rendering of its events.
//!
//! Events: `change` (`data: {"collection", "records": [{key, value, hlc}], "cursor"}`),
//! `reset` (`data: {}`: drop what you mirrored, the full state follows),
//! `error` (`data: {code, message}`, then the stream ends: `token_expired`,
//! `forbidden`, `unavailable`), and a `: keepalive` comment every 15 s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::Body;
use crate::auth::Identity;
use crate::cursor::Cursor;
use crate::feed_slots::TooManyFeeds;
use crate::node::Trigger;
use crate::node::{Lapsed, Node};
use crate::protocol::Record;
use crate::registry::{CloseOrder, CloseSlot};
use crate::requests::{Reading, RequestError, check_read};
use crate::send_queue::ConnId;

/// How often an idle feed sends a comment, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Who follows a feed: what its lifecycle is checked against.
pub(super) struct Follower {
    /// The verified identity.
    pub(super) identity: Identity,
    /// The bearer token, for revalidation.
    pub(super) token: String,
    /// The client's address (failed revalidations count against it).
    pub(super) peer: SocketAddr,
}

/// Starts a feed of `collection` (access already checked).
pub(super) fn changes(
    request: &Request<Incoming>,
    node: Arc<Node>,
    follower: Follower,
    collection: String,
) -> Response<Body> {
    let since = match super::since(request) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    let slot = match node.feed_slots.take(&follower.identity.sub, follower.peer.ip()) {
        Ok(slot) => slot,
        Err(too_many) => {
            node.metrics.refused("feeds");
            let message = match too_many {
                TooManyFeeds::Identity(n) => format!("at most {n} change feeds per identity"),
                TooManyFeeds::Address(n) => format!("at most {n} change feeds per address"),
            };
            return super::refused(RequestError::RateLimitedAs(message));
        }
    };
    let (events, stream) = mpsc::channel::<Bytes>(8);
    let following = node.clone();
    node.tracker.spawn(async move {
        follow(following, follower, collection, since, events).await;
        drop(slot);
    });
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        stream.recv().await.map(|event| (Ok::<_, Infallible>(Frame::data(event)), stream))
    });
    let mut response = Response::new(StreamBody::new(body).boxed());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a feed ended on the server's side: its `error` event.
struct Ended {
    code: &'static str,
    message: String,
}

impl Ended {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Scans from the cursor and sends what it finds, again on every wake-up,
/// until the consumer goes away, the server shuts down, or the feed's
/// identity may no longer read (see the module doc).
async fn follow(
    node: Arc<Node>,
    follower: Follower,
    collection: String,
    since: Option<Cursor>,
    events: mpsc::Sender<Bytes>,
) {
    let lease = Lease::take(&node, &follower.identity);
    let ended = match lease {
        Err(ended) => Some(ended),
        Ok(lease) => run(&node, &follower, &lease, &collection, since, &events).await,
    };
    if let Some(Ended { code, message }) = ended {
        tracing::debug!(code, %message, "change feed ended");
        let _ = events.send(event("error", None, &json!({ "code": code, "message": message }))).await;
    }
}

/// The feed's loop; `Some` when the server ended it.
async fn run(
    node: &Arc<Node>,
    follower: &Follower,
    lease: &Lease,
    collection: &str,
    since: Option<Cursor>,
    events: &mpsc::Sender<Bytes>,
) -> Option<Ended> {
    // The hub only wakes the feed; what is sent is read from the store. The
    // listener lets the collection go when this task ends, however it ends.
    let listener = node.hub.listen(collection);
    if let Err(e) = node.feed_ready(collection).await {
        return Some(Ended::new("unavailable", e.to_string()));
    }
    let mut policy = node.watch_policy();
    let expires = expiry(node, &follower.identity);
    tokio::pin!(expires);
    let every = node.config.authenticator.revalidate_every();
    let mut revalidation = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
    revalidation.reset();
    let within = node.config.timeouts.write;
    // The first read is the feed's own (from the consumer's cursor); every
    // later one is shared with the feeds woken by the same change at the
    // same position, and so is the rendering of its events.
    let mut read = Read::Own(since);
    loop {
        let found = match read {
            Read::Own(since) => {
                node.collections.snapshot(collection, since, node.config.limits.sync_page_bytes).await.map(|s| {
                    let pages: Vec<_> = s.pages.into_iter().filter(|(records, _)| !records.is_empty()).collect();
                    let after = Cursor::with_horizon(node.collections.epoch(), s.cursor, s.horizon);
                    (s.reset, render_events(node, collection, &pages, s.horizon), after)
                })
            }
            Read::Shared(since, wake) => {
                node.catch_up(Arc::from(collection), since, Trigger::Wake(wake)).await.map(|shared| {
                    let horizon = shared.horizon;
                    let events = shared.events(|pages| render_events(node, collection, pages, horizon)).to_vec();
                    (shared.reset, events, Cursor::with_horizon(node.collections.epoch(), shared.cursor, horizon))
                })
            }
        };
        let (reset, pages, position) = match found {
            Ok(found) => found,
            Err(e) => return Some(Ended::new("unavailable", e.to_string())),
        };
        if reset && !send_within(events, event("reset", None, &json!({})), within).await {
            return None;
        }
        for page in pages {
            if !send_within(events, page, within).await {
                return None;
            }
        }
        loop {
            tokio::select! {
                wake = listener.changed() => {
                    read = Read::Shared(position, wake);
                    break;
                }
                order = lease.close_slot.recv() => {
                    let CloseOrder::Close { reason, .. } = order;
                    return Some(Ended::new("forbidden", reason));
                }
                _ = &mut expires => return Some(Ended::new("token_expired", "the token has expired")),
                Ok(()) = policy.changed() => {
                    let access = policy.borrow_and_update().access_for(&follower.identity);
                    if let Err(refusal) = check_read(&access, Reading::Records, collection) {
                        return Some(Ended::new("forbidden", refusal.to_string()));
                    }
                }
                _ = revalidation.tick(), if every.is_some() => {
                    if let Some(ended) = revalidate(node, follower).await {
                        return Some(ended);
                    }
                }
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if !send_within(events, Bytes::from_static(b": keepalive\n\n"), within).await {
                        return None;
                    }
                }
                _ = events.closed() => return None,
                _ = node.shutdown.cancelled() => return None,
            }
        }
    }
}

/// Which read a feed does next.
#[derive(Clone, Copy)]
enum Read {
    /// From the consumer's cursor, alone.
    Own(Option<Cursor>),
    /// From a cursor, shared with the feeds woken by the same wake-up.
    Shared(Cursor, u64),
}

/// The SSE `change` events of `pages`.
fn render_events(node: &Node, collection: &str, pages: &[(Vec<Record>, u64)], horizon: u64) -> Vec<Bytes> {
    pages
        .iter()
        .map(|(records, position)| {
            let id = node.collections.cursor_under(*position, horizon);
            let mut data = json!({ "collection": collection, "cursor": id });
            super::render_records(records, &mut data);
            event("change", Some(&id), &data)
        })
        .collect()
}

/// Hands an event to the response within `within`; false when the consumer
/// is gone or has not taken anything for that long (it does not read: the
/// feed ends rather than hold what it would pile up).
async fn send_within(events: &mpsc::Sender<Bytes>, event: Bytes, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, events.send(event)).await, Ok(Ok(())))
}

/// When the feed's token stops being valid: its `exp` plus the leeway (never, without `exp`).
async fn expiry(node: &Node, identity: &Identity) {
    match identity.expires_at {
        None => std::future::pending().await,
        Some(exp) => {
            let ends_at_ms = exp.saturating_mul(1000).saturating_add(node.config.session.leeway.as_millis() as u64);
            let left = ends_at_ms.saturating_sub(node.config.clock.now_ms());
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
    }
}

/// Verifies the feed's token again (introspection mode): an identity
/// provider that no longer admits it, or a revocation, ends the feed; an
/// unreachable provider does not (as for a WebSocket session).
async fn revalidate(node: &Arc<Node>, follower: &Follower) -> Option<Ended> {
    let checked = node.revalidate(follower.token.clone(), follower.peer.ip(), &follower.identity.sub).await;
    match checked {
        Ok(()) => None,
        Err(Lapsed::Expired) => Some(Ended::new("token_expired", "the token has expired")),
        Err(Lapsed::Inactive(why)) => Some(Ended::new("forbidden", why)),
    }
}

/// A feed's place in the node's registry, given back when the feed ends.
struct Lease {
    node: Arc<Node>,
    id: ConnId,
    close_slot: Arc<CloseSlot>,
}

impl Lease {
    /// Registers the feed, then checks revocations: a revocation applied
    /// before the check is seen by it, one applied after finds the feed
    /// registered and closes it.
    fn take(node: &Arc<Node>, identity: &Identity) -> Result<Self, Ended> {
        let (id, close_slot) = (node.connection_id(), Arc::new(CloseSlot::default()));
        node.registry.register(id, identity, close_slot.clone());
        let lease = Self { node: node.clone(), id, close_slot };
        match node.admit(Ok(identity.clone()), |admitted| admitted) {
            Ok(_) => Ok(lease),
            Err(e) => Err(Ended::new("forbidden", e.message)),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.node.registry.unregister(self.id);
    }
}

/// One SSE event. `data` is one line of JSON (JSON escapes newlines).
fn event(name: &str, id: Option<&str>, data: &serde_json::Value) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Bytes::from(format!("event: {name}\n{id}data: {data}\n\n"))
}
