//! The key vault's endpoints (`/vault/{sub}/…`): a bearer token is
//! required, a caller reaches only its own vault, the rules decide, the
//! vault's collection is refused to `SYNC` and ops, and requests are limited
//! per minute like authentications.

mod common;

use std::sync::Arc;

use common::idp::http;
use common::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::MemoryStore;

/// Users may do anything, so what refuses the vault's collection over the
/// WebSocket is its reservation, not the rules; guests are denied the vault.
const RULES: &str = r#"
[[rules]]
roles = ["user", "guest"]
resource = "**"
actions = ["read", "write"]

[[rules]]
roles = ["guest"]
resource = "vault/**"
actions = ["read", "write"]
effect = "deny"
"#;

#[tokio::test]
async fn the_vault_answers_only_its_owner_within_the_rules_and_the_rate() {
    let mut config = ServerConfig { store: Arc::new(MemoryStore::new()), ..jwt_config() };
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config.auth_failures_per_minute = 8;
    let server = TestServer::start(config).await;
    let alice = token("alice", &["user"]);
    let body = r#"{"value": "AAEC"}"#;
    assert_eq!(http(server.addr, "GET", "/vault/alice", None, None).await.0, 401);
    assert_eq!(http(server.addr, "PUT", "/vault/alice/x", Some(&alice), Some(body)).await.0, 200);
    let (status, listing) = http(server.addr, "GET", "/vault/alice", Some(&alice), None).await;
    assert_eq!((status, listing.as_str()), (200, r#"{"items":{"x":"AAEC"}}"#));
    assert_eq!(http(server.addr, "GET", "/vault/bob", Some(&alice), None).await.0, 403, "another's vault");
    let guest = token("guest", &["guest"]);
    assert_eq!(http(server.addr, "GET", "/vault/guest", Some(&guest), None).await.0, 403, "the rules decide");
    assert_eq!(http(server.addr, "PUT", "/vault/alice/y", Some(&alice), Some("{\"value\": \"%%\"}")).await.0, 400);

    // The vault's collection is reachable through /vault/ only.
    let mut ws = RawWs::authed(server.addr, &alice).await;
    ws.send(&ClientMessage::Sync { id: 1, collection: "vault/alice".into(), since: None }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { code, .. } if code == "forbidden"));
    let op = RawOp {
        op_id: Value::from(1),
        collection: "vault/alice".into(),
        key: "x".into(),
        value: Value::Nil,
        hlc: format!("{}:0:n", syncgate::clock::unix_ms()),
    };
    ws.send(&ClientMessage::OpBatch { id: 2, ops: vec![OpInput::Op(op)] }).await;
    let ServerMessage::OpResult { results, .. } = ws.msg().await else { panic!("an OP_RESULT") };
    assert_eq!(results[0].code.as_deref(), Some("forbidden"));

    // Eight requests a minute per address (and per identity): six were spent above.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(http(server.addr, "GET", "/vault/alice", Some(&alice), None).await.0);
    }
    assert_eq!(statuses, [200, 200, 429]);
    server.stop().await;
}
