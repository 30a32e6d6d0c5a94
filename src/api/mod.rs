//! The server API over HTTP (`/api/…` on the public listener), for an app's
//! own backend: publish to a topic, write and read a collection, and follow a
//! collection's changes as Server-Sent Events ([`feed`]).
//!
//! A backend is just another identity: it presents a bearer token that the
//! configured authenticator verifies (a service JWT, the static token, an
//! introspected token), the failed-authentication limit applies, and the
//! rules decide with its roles. Bodies are JSON or MessagePack (by
//! `Content-Type`), bounded by `--max-frame-bytes`; answers are JSON, errors
//! `{code, message}` with the protocol's codes.
//!
//! | route | does |
//! | --- | --- |
//! | `POST /api/publish {topic, data}` | a `PUB` from the token's `sub` |
//! | `POST /api/collections/{name}/ops {ops: [{key, value, hlc?, opId?}]}` | an `OP_BATCH`; an op without `hlc` is stamped by the server's clock |
//! | `GET /api/collections/{name}?since=CURSOR` | one page of records after the cursor, the cursor after it, `more`, `reset` |
//! | `GET /api/collections/{name}/changes?since=CURSOR` | the change feed ([`feed`]) |

mod feed;

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
use crate::node::Shared;
use crate::protocol::{AuthFailCode, OpOutcome, RawOp, ServerMessage, encode_server, encoded_len};
use crate::request_error::RequestError;
use crate::rules::{Access, Action, valid_resource};

/// A response body: whole (JSON) or streamed (the change feed).
pub(crate) type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Answers one `/api/…` request.
pub(crate) async fn handle(request: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    let (identity, access) = match authenticate(&request, peer, &shared).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (request.method().clone(), segments.as_slice()) {
        (Method::POST, ["publish"]) => publish(request, &shared, &identity, &access).await,
        (Method::POST, ["collections", name @ .., "ops"]) if !name.is_empty() => {
            let name = name.join("/");
            write_ops(request, &shared, &access, &name).await
        }
        (Method::GET, ["collections", name @ .., "changes"]) if !name.is_empty() => {
            let name = name.join("/");
            match readable(&access, &name) {
                Err(response) => *response,
                Ok(()) => feed::changes(&request, shared, name),
            }
        }
        (Method::GET, ["collections", name @ ..]) if !name.is_empty() => {
            let name = name.join("/");
            read_page(&request, &shared, &access, &name).await
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API route".into()),
    }
}

/// Verifies the bearer token like an `AUTH`, with the same failure limit, revocations and rules.
async fn authenticate(
    request: &Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(Identity, Access), Box<Response<Body>>> {
    let ip = peer.ip();
    if shared.auth_failures.is_blocked(ip) {
        shared.config.metrics.refused("auth_failures");
        return Err(Box::new(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed authentications".into(),
        )));
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Err(Box::new(auth_error(&AuthError::new(
            AuthFailCode::TokenMissing,
            "send Authorization: Bearer <token>",
        ))));
    };
    if !shared.auth_failures.try_reserve(ip) {
        return Err(Box::new(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed authentications".into(),
        )));
    }
    let verifier = shared.config.authenticator.verify(token, shared.config.clock.now_secs());
    let result = match tokio::time::timeout(shared.config.timeouts.verify, verifier).await {
        Ok(result) => result,
        Err(_) => Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "token verification timed out")),
    };
    if result.is_ok() || result.as_ref().is_err_and(|e| e.code == AuthFailCode::IntrospectionUnavailable) {
        shared.auth_failures.refund(ip);
    }
    let identity = result.map_err(|e| Box::new(auth_error(&e)))?;
    if shared.config.revocations.is_revoked(&identity, shared.config.clock.now_secs()) {
        return Err(Box::new(auth_error(&AuthError::new(AuthFailCode::Forbidden, "the token has been revoked"))));
    }
    let access = shared.config.policy.current().access_for(&identity);
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
        RequestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn refused(refusal: RequestError) -> Response<Body> {
    error(status_of(&refusal), refusal.code(), refusal.to_string())
}

fn readable(access: &Access, name: &str) -> Result<(), Box<Response<Body>>> {
    valid_resource(name).map_err(|why| Box::new(refused(RequestError::Invalid(format!("collection {why}")))))?;
    if !access.allows(Action::Read, name) {
        return Err(Box::new(refused(RequestError::Forbidden(format!("not allowed to read {name:?}")))));
    }
    Ok(())
}

/// An absent field: nil (for `value`, a delete).
fn nil() -> Value {
    Value::Nil
}

#[derive(Deserialize)]
struct PublishBody {
    topic: String,
    #[serde(default = "nil")]
    data: Value,
}

async fn publish(request: Request<Incoming>, shared: &Shared, identity: &Identity, access: &Access) -> Response<Body> {
    let body: PublishBody = match read_body(request, shared).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let max_value = shared.config.session.max_value_bytes;
    if let Err(why) = valid_resource(&body.topic) {
        return refused(RequestError::Invalid(format!("topic {why}")));
    }
    if !access.allows(Action::Write, &body.topic) {
        return refused(RequestError::Forbidden(format!("not allowed to publish to {:?}", body.topic)));
    }
    if encoded_len(&body.data) > max_value {
        return refused(RequestError::Invalid(format!("data is larger than {max_value} bytes")));
    }
    let message = encode_server(&ServerMessage::Message {
        topic: body.topic.clone(),
        data: body.data,
        from: identity.sub.clone(),
    });
    let delivered = shared.hub.publish(&body.topic, message);
    json_response(StatusCode::OK, &json!({ "ok": true, "deliveredHere": delivered }))
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

async fn write_ops(request: Request<Incoming>, shared: &Shared, access: &Access, name: &str) -> Response<Body> {
    if let Err(why) = valid_resource(name) {
        return refused(RequestError::Invalid(format!("collection {why}")));
    }
    if !access.allows(Action::Write, name) {
        return refused(RequestError::Forbidden(format!("not allowed to write to {name:?}")));
    }
    let body: OpsBody = match read_body(request, shared).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let max_ops = shared.config.session.max_batch_ops;
    if body.ops.len() > max_ops {
        return refused(RequestError::Invalid(format!("at most {max_ops} ops per batch")));
    }
    let now = crate::clock::unix_ms();
    let clock = shared.collections.clock();
    let max_value = shared.config.session.max_value_bytes;
    let mut outcomes: Vec<Option<OpOutcome>> = Vec::with_capacity(body.ops.len());
    let mut ops = Vec::new();
    for op in body.ops {
        if encoded_len(&op.value) > max_value {
            let refusal = RequestError::Invalid(format!("value is larger than {max_value} bytes"));
            outcomes.push(Some(refusal.rejection(op.op_id)));
            continue;
        }
        // A write without a timestamp is stamped now, after everything the server has seen.
        let hlc = op.hlc.unwrap_or_else(|| clock.tick(now).to_string());
        ops.push(RawOp { op_id: op.op_id, collection: name.to_string(), key: op.key, value: op.value, hlc });
        outcomes.push(None);
    }
    let mut applied = shared.collections.apply(ops, now).await.into_iter();
    let results: Vec<OpOutcome> = outcomes.into_iter().filter_map(|o| o.or_else(|| applied.next())).collect();
    for result in &results {
        shared.config.metrics.op(result.code.as_deref());
    }
    json_response(StatusCode::OK, &json!({ "results": results }))
}

async fn read_page(request: &Request<Incoming>, shared: &Shared, access: &Access, name: &str) -> Response<Body> {
    if let Err(response) = readable(access, name) {
        return *response;
    }
    let since = match since(request) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    match shared.collections.snapshot(name, since, shared.config.limits.sync_page_bytes).await {
        Err(e) => refused(RequestError::Unavailable(e.to_string())),
        Ok(snapshot) => {
            let more = snapshot.pages.len() > 1;
            let (records, cursor) = snapshot.pages.into_iter().next().unwrap_or_default();
            json_response(
                StatusCode::OK,
                &json!({
                    "records": records,
                    "cursor": shared.collections.cursor(cursor),
                    "more": more,
                    "reset": snapshot.reset,
                }),
            )
        }
    }
}

/// The `since` cursor of the query string (or `Last-Event-ID`), if any.
pub(super) fn since(request: &Request<Incoming>) -> Result<Option<Cursor>, Box<Response<Body>>> {
    let from_query = request
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "since").map(|(_, v)| v.into_owned()));
    let from_header = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match from_header.or(from_query).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<Cursor>()
            .map(Some)
            .map_err(|_| Box::new(refused(RequestError::Invalid("`since` is not a cursor this server issued".into())))),
    }
}

/// Reads a JSON or MessagePack body (by `Content-Type`), bounded by `--max-frame-bytes`.
async fn read_body<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
    shared: &Shared,
) -> Result<T, Box<Response<Body>>> {
    let msgpack =
        request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("msgpack"));
    let limit = shared.config.limits.max_frame_bytes;
    let bytes = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|_| {
            Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, "invalid", format!("the body is larger than {limit} bytes")))
        })?
        .to_bytes();
    let parsed = if msgpack {
        rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid", format!("bad body: {e}"))))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json_response(status, &json!({ "code": code, "message": message }))
}
