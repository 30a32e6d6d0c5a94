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
//! Events: `change` (`data: {"collection", "records": [{key, value, hlc}], "cursor"}`),
//! `reset` (`data: {}`: drop what you mirrored, the full state follows),
//! `error` (`data: {code, message}`, then the stream ends), and a `: keepalive`
//! comment every 15 s.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::Body;
use crate::cursor::Cursor;
use crate::node::Node;

/// How often an idle feed sends a comment, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Starts a feed of `collection` (access already checked).
pub(super) fn changes(request: &Request<Incoming>, node: Arc<Node>, collection: String) -> Response<Body> {
    let since = match super::since(request) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    let (events, stream) = mpsc::channel::<Bytes>(8);
    node.tracker.spawn(follow(node.clone(), collection, since, events));
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        stream.recv().await.map(|event| (Ok::<_, Infallible>(Frame::data(event)), stream))
    });
    let mut response = Response::new(StreamBody::new(body).boxed());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Scans from the cursor and sends what it finds, again on every wake-up,
/// until the consumer goes away or the server shuts down.
async fn follow(node: Arc<Node>, collection: String, since: Option<Cursor>, events: mpsc::Sender<Bytes>) {
    // The hub only wakes the feed; what is sent is read from the store. The
    // listener lets the collection go when this task ends, however it ends.
    let listener = node.hub.listen(&collection);
    if let Err(e) = node.feed_ready(&collection).await {
        let _ = events.send(event("error", None, &json!({"code": "unavailable", "message": e.to_string()}))).await;
        return;
    }
    let page_bytes = node.config.limits.sync_page_bytes;
    let mut cursor = since;
    loop {
        let snapshot = match node.collections.snapshot(&collection, cursor, page_bytes).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let _ =
                    events.send(event("error", None, &json!({"code": "unavailable", "message": e.to_string()}))).await;
                break;
            }
        };
        if snapshot.reset && events.send(event("reset", None, &json!({}))).await.is_err() {
            break;
        }
        let mut gone = false;
        for (records, position) in snapshot.pages {
            if records.is_empty() {
                continue;
            }
            let id = node.collections.cursor(position);
            let data = json!({ "collection": collection, "records": records, "cursor": id });
            if events.send(event("change", Some(&id), &data)).await.is_err() {
                gone = true;
                break;
            }
        }
        if gone {
            break;
        }
        cursor = Some(Cursor::new(node.collections.epoch(), snapshot.cursor));
        tokio::select! {
            _ = listener.changed() => {}
            _ = tokio::time::sleep(KEEPALIVE) => {
                if events.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                    break;
                }
            }
            _ = events.closed() => break,
            _ = node.shutdown.cancelled() => break,
        }
    }
}

/// One SSE event. `data` is one line of JSON (JSON escapes newlines).
fn event(name: &str, id: Option<&str>, data: &serde_json::Value) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Bytes::from(format!("event: {name}\n{id}data: {data}\n\n"))
}
