//! The key vault (`/vault/{sub}/…` on the public listener): per user, the
//! wraps an end-to-end encrypting client needs on a new device (its master
//! key wrapped under the password and under the recovery code, its X25519
//! private key and its space keys wrapped under the master key). The server
//! stores bytes it cannot open: it never receives a password, a recovery
//! code, a key-encryption key or a plaintext key (`proto/E2E.md`).
//!
//! | route | does |
//! | --- | --- |
//! | `GET /vault/{sub}` | every item: `{"items": {name: base64}}` |
//! | `PUT /vault/{sub}/{item}` `{"value": base64}` | stores (replaces) one item |
//! | `DELETE /vault/{sub}/{item}` | deletes one item |
//!
//! Path segments are percent-encoded (an item name may hold `/`). Requests
//! authenticate with a bearer token like `/api/…` (the failed-authentication
//! limit applies), reach only the caller's own `sub`, need the rules' `read`
//! (GET) or `write` (PUT, DELETE) on `vault/{sub}/{item}` (`vault/{sub}` for
//! the listing), and are limited like authentications: at most
//! `--auth-failures-per-minute` per minute per address and per identity, so
//! a stolen token cannot be used to pull wraps at speed. Items are records of
//! the collection `vault/{sub}` in the configured store (memory, SQLite or
//! Postgres), stamped by the server's clock; that collection is reserved:
//! `SYNC`, `OP_BATCH` and `/api/collections` refuse it, so the vault's limit
//! cannot be bypassed.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use rmpv::Value;
use serde::Deserialize;
use serde_json::json;

use super::{Body, authenticate, error, json_response, read_body, refused};
use crate::node::Node;
use crate::protocol::RawOp;
use crate::requests::{RequestError, check_name, check_value};
use crate::rules::{Access, Action};

/// The collection prefix the vault keeps its items under.
pub(crate) const VAULT_PREFIX: &str = "vault";

/// Whether `collection` is the vault's, reachable only through `/vault/`.
pub(crate) fn is_vault_collection(collection: &str) -> bool {
    collection == VAULT_PREFIX || collection.strip_prefix(VAULT_PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

#[derive(Deserialize)]
struct PutBody {
    value: String,
}

/// Answers one `/vault/…` request.
pub(crate) async fn handle(request: Request<Incoming>, peer: SocketAddr, node: Arc<Node>) -> Response<Body> {
    let over_budget = |whose: &str| {
        node.metrics.refused("vault_rate");
        refused(RequestError::RateLimitedAs(format!("more vault requests from this {whose} than allowed per minute")))
    };
    if !node.vault_budgets.address(peer.ip()) {
        return over_budget("address");
    }
    let (identity, access) = match authenticate(&request, peer, &node).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !node.vault_budgets.identity(&identity.sub) {
        return over_budget("identity");
    }
    let Some((sub, item)) = vault_path(request.uri().path()) else {
        return error(StatusCode::BAD_REQUEST, "invalid", "a path segment is not percent-encoded UTF-8".into());
    };
    if sub != identity.sub {
        return refused(RequestError::Forbidden("a vault is reachable by its own sub only".into()));
    }
    let collection = format!("{VAULT_PREFIX}/{sub}");
    match (request.method().clone(), item) {
        (Method::GET, None) => list(&node, &access, &collection).await,
        (Method::PUT, Some(item)) => {
            if let Err(refusal) = allowed(&access, Action::Write, &collection, &item) {
                return refused(refusal);
            }
            let body: PutBody = match read_body(request, &node).await {
                Ok(body) => body,
                Err(response) => return *response,
            };
            match BASE64.decode(body.value) {
                Err(e) => refused(RequestError::Invalid(format!("value is not base64: {e}"))),
                Ok(bytes) => put(&node, &collection, item, Value::Binary(bytes)).await,
            }
        }
        (Method::DELETE, Some(item)) => match allowed(&access, Action::Write, &collection, &item) {
            Err(refusal) => refused(refusal),
            Ok(()) => put(&node, &collection, item, Value::Nil).await,
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such vault route".into()),
    }
}

/// `(sub, item)` of `/vault/{sub}[/{item}]`, each percent-decoded (an item
/// name may hold an encoded `/`); `None` when a segment is not UTF-8.
fn vault_path(path: &str) -> Option<(String, Option<String>)> {
    let decode = |segment: &str| percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned());
    let rest = path.strip_prefix("/vault/")?;
    match rest.split_once('/') {
        Some((sub, item)) => Some((decode(sub)?, Some(decode(item)?))),
        None => Some((decode(rest)?, None)),
    }
}

/// The rules' verdict on `item` of the vault `collection`.
fn allowed(access: &Access, action: Action, collection: &str, item: &str) -> Result<(), RequestError> {
    check_name("vault item", item)?;
    if !access.allows(action, &format!("{collection}/{item}")) {
        return Err(RequestError::Forbidden(format!(
            "not allowed to {} {collection}/{item}",
            match action {
                Action::Read => "read",
                Action::Write => "write",
            }
        )));
    }
    Ok(())
}

async fn list(node: &Node, access: &Access, collection: &str) -> Response<Body> {
    if let Err(refusal) = check_name("vault", collection) {
        return refused(refusal);
    }
    if !access.allows(Action::Read, collection) {
        return refused(RequestError::Forbidden(format!("not allowed to read {collection}")));
    }
    let snapshot = match node.collections.snapshot(collection, None, node.config.limits.sync_page_bytes).await {
        Ok(snapshot) => snapshot,
        Err(e) => return refused(RequestError::Unavailable(e.to_string())),
    };
    let mut items = serde_json::Map::new();
    for record in snapshot.pages.into_iter().flat_map(|(records, _)| records) {
        if let Value::Binary(bytes) = record.value {
            items.insert(record.key, json!(BASE64.encode(bytes)));
        }
    }
    json_response(StatusCode::OK, &json!({ "items": items }))
}

async fn put(node: &Node, collection: &str, item: String, value: Value) -> Response<Body> {
    if let Err(refusal) = check_value("value", &value, node.config.session.request_limits()) {
        return refused(refusal);
    }
    let hlc = node.collections.clock().tick(crate::clock::unix_ms()).to_string();
    let op = RawOp { op_id: Value::Nil, collection: collection.to_string(), key: item, value, hlc };
    let outcome = node.commit(vec![op]).await.into_iter().next();
    node.metrics.op(outcome.as_ref().and_then(|o| o.code.as_deref()));
    match outcome {
        Some(outcome) if outcome.ok => json_response(StatusCode::OK, &json!({ "ok": true })),
        Some(outcome) => {
            let code = outcome.code.unwrap_or_else(|| "unavailable".into());
            let status = if code == "unavailable" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
            error(status, &code, outcome.message.unwrap_or_default())
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store gave no outcome".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_sub_and_item_then_decode() {
        assert_eq!(vault_path("/vault/alice"), Some(("alice".into(), None)));
        assert_eq!(
            vault_path("/vault/auth0%3Aalice/keys%2F1%2Forgs%2Facme"),
            Some(("auth0:alice".into(), Some("keys/1/orgs/acme".into())))
        );
        assert_eq!(vault_path("/vault/alice/%FF"), None);
        assert!(is_vault_collection("vault/alice") && is_vault_collection("vault"));
        assert!(!is_vault_collection("vaults/alice") && !is_vault_collection("users/vault"));
    }
}
