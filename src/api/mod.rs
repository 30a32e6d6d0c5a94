//! The server API over HTTP (`/api/…` on the public listener), for an app's
//! own backend: publish to a topic, write and read a collection, and follow a
//! collection's changes as Server-Sent Events ([`feed`]).
//!
//! A backend is just another identity: it presents a bearer token that the
//! configured authenticator verifies (a service JWT, the static token, an
//! introspected token), the failed-authentication limit applies, and the
//! rules decide with its roles. Bodies are JSON or MessagePack (by
//! `Content-Type`), bounded by `--max-frame-bytes` and by the time allowed to
//! send them; answers are JSON, errors `{code, message}` with the protocol's
//! codes. Requests spend the socket's message rate, per address and per
//! identity (429 `rate_limited` past it).
//!
//! | route | does |
//! | --- | --- |
//! | `POST /api/publish[?topic=T] {topic?, data}` | a `PUB` from the token's `sub` (with `?topic=` the rights are checked before the body is read) |
//! | `POST /api/collections/{name}/ops {ops: [{key, value, hlc?, opId?}]}` | an `OP_BATCH`; an op without `hlc` is stamped by the server's clock |
//! | `GET /api/collections/{name}?since=CURSOR` | one page of records after the cursor, the cursor after it, `more`, `reset` |
//! | `GET /api/collections/{name}/changes?since=CURSOR` | the change feed ([`feed`]) |
//!
//! The key vault of end-to-end encryption (`/vault/…`) shares the authentication and
//! body handling here; its routes are in [`vault`].

mod feed;
pub(crate) mod vault;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rmpv::Value;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthError, Identity, bearer_token};
use crate::cursor::Cursor;
use crate::node::{ApiOp, AuthRefusal, Node};
use crate::protocol::{AuthFailCode, Record};
use crate::requests::{Reading, RequestError, check_publish, check_read, check_writable, parse_since};
use crate::rules::{Access, Action};

/// A response body: whole (JSON) or streamed (the change feed).
pub(crate) type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Answers one `/api/…` request.
pub(crate) async fn handle(request: Request<Incoming>, peer: SocketAddr, node: Arc<Node>) -> Response<Body> {
    // The socket's message rate, per address before the token is even looked at, then per identity.
    let over_budget = |whose: &str| {
        node.metrics.refused("api_rate");
        refused(RequestError::RateLimitedAs(format!("more API requests from this {whose} than the rate allows")))
    };
    if !node.api_budgets.address(peer.ip()) {
        return over_budget("address");
    }
    let (identity, access) = match authenticate(&request, peer, &node).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !node.api_budgets.identity(&identity.sub) {
        return over_budget("identity");
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (request.method().clone(), segments.as_slice()) {
        (Method::POST, ["publish"]) => publish(request, &node, &identity, &access).await,
        (Method::POST, ["collections", name @ .., "ops"]) if !name.is_empty() => {
            write_ops(request, &node, &access, &name.join("/")).await
        }
        (Method::GET, ["collections", name @ .., "changes"]) if !name.is_empty() => {
            let name = name.join("/");
            match check_read(&access, Reading::Records, &name) {
                Err(refusal) => refused(refusal),
                Ok(()) => {
                    let token = bearer_token(request.headers()).unwrap_or_default().to_string();
                    let follower = feed::Follower { identity, token, peer };
                    feed::changes(&request, node, follower, name)
                }
            }
        }
        (Method::GET, ["collections", name @ ..]) if !name.is_empty() => {
            let since = match since(&request) {
                Ok(since) => since,
                Err(response) => return *response,
            };
            match node.read_page(&access, &name.join("/"), since).await {
                Err(refusal) => refused(refusal),
                Ok(page) => {
                    let mut body = json!({ "cursor": page.cursor, "more": page.more, "reset": page.reset });
                    render_records(&page.records, &mut body);
                    json_response(StatusCode::OK, &body)
                }
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API route".into()),
    }
}

/// Verifies the bearer token as the node verifies an `AUTH` (the same
/// failure limit, timeout and revocations), and what the rules let it do.
pub(super) async fn authenticate(
    request: &Request<Incoming>,
    peer: SocketAddr,
    node: &Arc<Node>,
) -> Result<(Identity, Access), Box<Response<Body>>> {
    let rate_limited = || {
        node.metrics.refused("auth_failures");
        Box::new(error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many failed authentications".into()))
    };
    if node.auth_failures.is_blocked(peer.ip()) {
        return Err(rate_limited());
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Err(Box::new(auth_error(&AuthError::new(
            AuthFailCode::TokenMissing,
            "send Authorization: Bearer <token>",
        ))));
    };
    let result = match node.authenticate(token.to_string(), peer.ip()).await {
        Err(AuthRefusal::Blocked) => return Err(rate_limited()),
        Err(AuthRefusal::Failed(e)) => Err(e),
        Ok(identity) => Ok(identity),
    };
    let identity = node.admit(result, |admitted| admitted).map_err(|e| Box::new(auth_error(&e)))?;
    let access = node.access_for(&identity);
    Ok((identity, access))
}

fn auth_error(e: &AuthError) -> Response<Body> {
    let status = match e.code {
        AuthFailCode::Forbidden => StatusCode::FORBIDDEN,
        AuthFailCode::IntrospectionUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    error(status, e.code.as_str(), e.message.clone())
}

/// The HTTP status of a refusal.
fn status_of(refusal: &RequestError) -> StatusCode {
    match refusal {
        RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
        RequestError::RateLimited(_) | RequestError::RateLimitedAs(_) => StatusCode::TOO_MANY_REQUESTS,
        RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

pub(super) fn refused(refusal: RequestError) -> Response<Body> {
    error(status_of(&refusal), refusal.code(), refusal.to_string())
}

/// An absent field: nil (for `value`, a delete).
fn nil() -> Value {
    Value::Nil
}

#[derive(Deserialize)]
struct PublishBody {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default = "nil")]
    data: Value,
}

/// `POST /api/publish[?topic=T]`. The rights are checked before the body is
/// read: for the query's topic when it is given, and otherwise at least that
/// the identity may publish somewhere, so a body is never read for nothing.
async fn publish(request: Request<Incoming>, node: &Node, identity: &Identity, access: &Access) -> Response<Body> {
    let topic = query_param(&request, "topic");
    let rights = match &topic {
        Some(topic) => check_publish(access, topic, &Value::Nil, node.config.session.request_limits()),
        None if access.allows_any(Action::Write) => Ok(()),
        None => Err(RequestError::Forbidden("not allowed to publish anywhere".into())),
    };
    if let Err(refusal) = rights {
        return refused(refusal);
    }
    let body: PublishBody = match read_body(request, node).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let topic = match (topic, body.topic) {
        (Some(query), Some(body)) if query != body => {
            return refused(RequestError::Invalid("the query's topic and the body's differ".into()));
        }
        (Some(topic), _) | (None, Some(topic)) => topic,
        (None, None) => {
            return refused(RequestError::Invalid("give the topic (`?topic=` or the body's `topic`)".into()));
        }
    };
    match node.publish(identity, access, &topic, body.data) {
        Err(refusal) => refused(refusal),
        Ok(delivered) => json_response(StatusCode::OK, &json!({ "ok": true, "deliveredHere": delivered })),
    }
}

/// A query parameter, if present and non-empty.
fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpBody {
    key: String,
    #[serde(default = "nil")]
    value: Value,
    #[serde(default)]
    hlc: Option<String>,
    #[serde(default = "nil")]
    op_id: Value,
}

#[derive(Deserialize)]
struct OpsBody {
    ops: Vec<OpBody>,
}

async fn write_ops(request: Request<Incoming>, node: &Node, access: &Access, name: &str) -> Response<Body> {
    // Rights first: a body is not read for a collection the identity may not write.
    if let Err(refusal) = check_writable(access, name) {
        return refused(refusal);
    }
    let body: OpsBody = match read_body(request, node).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let ops =
        body.ops.into_iter().map(|op| ApiOp { op_id: op.op_id, key: op.key, value: op.value, hlc: op.hlc }).collect();
    match node.write(access, name, ops).await {
        Err(refusal) => refused(refusal),
        Ok(results) => json_response(StatusCode::OK, &json!({ "results": results })),
    }
}

/// The `since` cursor of the query string (or `Last-Event-ID`), if any.
pub(super) fn since(request: &Request<Incoming>) -> Result<Option<Cursor>, Box<Response<Body>>> {
    let from_query = request
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "since").map(|(_, v)| v.into_owned()));
    let from_header = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    parse_since(from_header.or(from_query).as_deref()).map_err(|refusal| Box::new(refused(refusal)))
}

/// Reads a JSON or MessagePack body (by `Content-Type`), bounded by `--max-frame-bytes`.
pub(super) async fn read_body<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
    node: &Node,
) -> Result<T, Box<Response<Body>>> {
    let msgpack =
        request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("msgpack"));
    let limit = node.config.limits.max_frame_bytes;
    let within = node.config.timeouts.body_read;
    let bytes = match tokio::time::timeout(within, Limited::new(request.into_body(), limit).collect()).await {
        Err(_) => {
            let message = format!("the body did not arrive within {} s", within.as_secs_f64());
            return Err(Box::new(error(StatusCode::REQUEST_TIMEOUT, "invalid", message)));
        }
        Ok(Err(_)) => {
            let message = format!("the body is larger than {limit} bytes");
            return Err(Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, "invalid", message)));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let parsed = if msgpack {
        rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid", format!("bad body: {e}"))))
}

/// Puts `records` into `body` as JSON (`records`), fallibly: a record whose
/// value JSON cannot show (one stored before values were checked: a map with
/// a non-string key, say) is listed under `unreadable` with its key, `hlc`
/// and why, and the others are served.
pub(super) fn render_records(records: &[Record], body: &mut serde_json::Value) {
    let (mut shown, mut unreadable) = (Vec::with_capacity(records.len()), Vec::new());
    for record in records {
        match serde_json::to_value(record) {
            Ok(value) => shown.push(value),
            Err(e) => unreadable.push(json!({ "key": record.key, "hlc": record.hlc, "error": e.to_string() })),
        }
    }
    body["records"] = serde_json::Value::Array(shown);
    if !unreadable.is_empty() {
        tracing::warn!(records = unreadable.len(), "stored values that JSON cannot show were left out");
        body["unreadable"] = serde_json::Value::Array(unreadable);
    }
}

pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json_response(status, &json!({ "code": code, "message": message }))
}
