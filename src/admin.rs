//! The admin HTTP API on the server's listener: kick, revoke, inspect.
//!
//! Absent (404) unless `--admin-token` is set; every request must carry
//! `Authorization: Bearer <admin token>` (the scheme in any case), compared in
//! constant time. A wrong credential counts against the client IP's failed
//! admin authentications (a counter of its own: bad user tokens on the public
//! API never lock the operator out): past the limit the API answers 429.
//! Requests are logged by method and path only, never with credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::bearer_token;
use crate::backplane::BackplaneError;
use crate::node::Node;
use crate::store::Revoked;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Answers a request under `/admin/`.
pub(crate) async fn handle(request: Request<Incoming>, peer: SocketAddr, node: Arc<Node>) -> Response<Full<Bytes>> {
    let Some(expected) = &node.config.admin_token else {
        return reply(StatusCode::NOT_FOUND, json!({"error": "not found"}));
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if node.admin_failures.is_blocked(peer.ip()) {
        tracing::debug!(%peer, %method, %path, "admin request refused: too many failed authentications");
        return reply(StatusCode::TOO_MANY_REQUESTS, json!({"error": "too many failed authentications; retry later"}));
    }
    let presented = bearer_token(request.headers()).unwrap_or("");
    let ok: bool = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())).into();
    if !ok {
        node.admin_failures.record_failure(peer.ip());
        tracing::info!(%peer, %method, %path, "admin request refused: bad credentials");
        let mut response = reply(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
        response.headers_mut().insert(WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return response;
    }
    tracing::info!(%method, %path, "admin request");
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(node.metrics.encode())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        (Method::GET, "/admin/readyz") => match node.readiness().await {
            Ok(ready) => reply(
                StatusCode::OK,
                json!({"ready": true, "backplane": if ready.backplane_down { "down" } else { "up" }}),
            ),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "reason": why.detail})),
        },
        (Method::GET, "/admin/nodes") => reply(StatusCode::OK, json!({"nodes": node.nodes()})),
        (Method::GET, "/admin/connections") => {
            let (total, by_sub) = node.registry.counts();
            reply(StatusCode::OK, json!({"connections": total, "bySub": by_sub}))
        }
        (Method::POST, "/admin/disconnect") => {
            #[derive(Deserialize)]
            struct Body {
                sub: String,
            }
            let body: Body = match read_json(request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let acted = node.disconnect(&body.sub).await;
            tracing::info!(sub = ?body.sub, disconnected = acted.closed, "admin disconnect");
            answer(acted.propagated, json!({"disconnected": acted.closed}))
        }
        (Method::POST, "/admin/revoke") => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Body {
                jti: Option<String>,
                sub: Option<String>,
                issued_before: Option<u64>,
            }
            let body: Body = match read_json(request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let revoked = match (body.jti, body.sub, body.issued_before) {
                (Some(jti), None, None) => Revoked::Jti(jti),
                (None, Some(sub), Some(issued_before)) => Revoked::Subject { sub, issued_before },
                _ => {
                    let usage = "send {\"jti\": …} or {\"sub\": …, \"issuedBefore\": <unix seconds>}";
                    return reply(StatusCode::BAD_REQUEST, json!({ "error": usage }));
                }
            };
            match node.revoke(revoked).await {
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": e.to_string()})),
                Ok(acted) => {
                    tracing::info!(disconnected = acted.closed, "admin revoke");
                    answer(acted.propagated, json!({"revoked": true, "disconnected": acted.closed}))
                }
            }
        }
        (_, "/admin/connections" | "/admin/nodes" | "/admin/disconnect" | "/admin/revoke" | "/admin/readyz") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method not allowed"}))
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// 200 with what was done and how many other nodes acknowledged it within
/// a second (`nodesAcknowledged`), or 503 when it was done on this node but
/// the other nodes could not be told.
fn answer(propagated: Result<usize, BackplaneError>, mut done: serde_json::Value) -> Response<Full<Bytes>> {
    match propagated {
        Ok(acknowledged) => {
            done["nodesAcknowledged"] = json!(acknowledged);
            reply(StatusCode::OK, done)
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin action not sent to the other nodes");
            done["error"] = json!(format!("done on this node only: {e}"));
            reply(StatusCode::SERVICE_UNAVAILABLE, done)
        }
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(request: Request<Incoming>) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| reply(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "body too large or unreadable"})))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| reply(StatusCode::BAD_REQUEST, json!({"error": format!("bad JSON: {e}")})))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}
