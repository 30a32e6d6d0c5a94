//! RBAC over real sockets: isolation between users, per-op results,
//! re-evaluation after a refresh or a rules reload, and slow consumers.

mod common;

use std::time::Duration;

use common::*;
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::rules::{Policy, RuleSet};

const RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "users/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "rooms/*"
actions = ["read"]

[[rules]]
roles = ["writer"]
resource = "rooms/*"
actions = ["write"]

[[rules]]
roles = ["*"]
resource = "rooms/locked"
actions = ["read", "write"]
effect = "deny"

[[rules]]
roles = ["member"]
resource = "orgs/{orgId}/**"
actions = ["read", "write"]
"#;

fn config() -> ServerConfig {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config
}

fn op(id: &str, collection: &str, key: &str, value: impl Into<Value>, hlc: &str) -> OpInput {
    OpInput::Op(RawOp {
        op_id: Value::from(id),
        collection: collection.into(),
        key: key.into(),
        value: value.into(),
        hlc: hlc.into(),
    })
}

fn hlc(offset_ms: i64, node: &str) -> String {
    format!("{}:0:{node}", (now() as i64 * 1000 + offset_ms) as u64)
}

async fn request(ws: &mut RawWs, message: ClientMessage) -> ServerMessage {
    ws.send(&message).await;
    ws.msg().await
}

fn is_forbidden(m: &ServerMessage, want: u64) -> bool {
    matches!(m, ServerMessage::Error { id: Some(id), code, .. } if *id == want && code == "forbidden")
}

#[tokio::test]
async fn users_cannot_touch_each_others_resources() {
    let server = TestServer::start(config()).await;
    let mut alice = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    let mut bob = RawWs::authed(server.addr, &token("bob", &["user"])).await;

    assert!(is_forbidden(&request(&mut alice, ClientMessage::Sub { id: 1, topic: "users/bob/inbox".into() }).await, 1));
    assert!(is_forbidden(
        &request(&mut alice, ClientMessage::Pub { id: 2, topic: "users/bob/inbox".into(), data: Value::from("hi") })
            .await,
        2
    ));
    assert!(is_forbidden(
        &request(&mut alice, ClientMessage::Sync { id: 3, collection: "users/bob/todos".into(), since: None }).await,
        3
    ));
    let written = request(
        &mut alice,
        ClientMessage::OpBatch { id: 4, ops: vec![op("a1", "users/bob/todos", "k", "x", &hlc(0, "alice"))] },
    )
    .await;
    assert!(
        matches!(written, ServerMessage::OpResult { id: 4, ref results } if results.len() == 1 && !results[0].ok && results[0].code.as_deref() == Some("forbidden"))
    );

    assert_eq!(
        request(&mut bob, ClientMessage::Sub { id: 1, topic: "users/bob/inbox".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert_eq!(
        request(&mut bob, ClientMessage::Pub { id: 2, topic: "users/bob/inbox".into(), data: Value::from("note") })
            .await,
        ServerMessage::Ok { id: 2 }
    );
    assert_eq!(
        bob.msg().await,
        ServerMessage::Message { topic: "users/bob/inbox".into(), data: Value::from("note"), from: "bob".into() }
    );
    let written = request(
        &mut bob,
        ClientMessage::OpBatch { id: 3, ops: vec![op("b1", "users/bob/todos", "k", "mine", &hlc(0, "bob"))] },
    )
    .await;
    assert!(matches!(written, ServerMessage::OpResult { ref results, .. } if results[0].ok));
    match request(&mut bob, ClientMessage::Sync { id: 4, collection: "users/bob/todos".into(), since: None }).await {
        ServerMessage::SyncData { id: 4, records, .. } => assert_eq!(records[0].value, Value::from("mine")),
        other => panic!("{other:?}"),
    }
    // Nothing alice tried reached bob's data.
    assert!(alice.recv_within(Duration::from_millis(200)).await == Recv::Timeout);
    server.stop().await;
}

#[tokio::test]
async fn roles_deny_and_claims_decide() {
    let server = TestServer::start(config()).await;
    let mut reader = RawWs::authed(server.addr, &token("r", &["user"])).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &["user", "writer"])).await;
    assert_eq!(
        request(&mut reader, ClientMessage::Sub { id: 1, topic: "rooms/lobby".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert!(is_forbidden(
        &request(&mut reader, ClientMessage::Pub { id: 2, topic: "rooms/lobby".into(), data: Value::Nil }).await,
        2
    ));
    assert_eq!(
        request(&mut writer, ClientMessage::Pub { id: 3, topic: "rooms/lobby".into(), data: Value::from(1) }).await,
        ServerMessage::Ok { id: 3 }
    );
    assert_eq!(
        reader.msg().await,
        ServerMessage::Message { topic: "rooms/lobby".into(), data: Value::from(1), from: "w".into() }
    );
    assert!(
        is_forbidden(
            &request(&mut writer, ClientMessage::Pub { id: 4, topic: "rooms/locked".into(), data: Value::Nil }).await,
            4
        ),
        "deny wins"
    );
    assert!(
        is_forbidden(&request(&mut reader, ClientMessage::Sub { id: 5, topic: "rooms/a/b".into() }).await, 5),
        "'*' is one segment"
    );

    let org = hs256(json!({"sub": "m", "roles": ["member"], "orgId": "acme", "exp": now() + 600}));
    let mut member = RawWs::authed(server.addr, &org).await;
    assert_eq!(
        request(&mut member, ClientMessage::Sub { id: 1, topic: "orgs/acme/news".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert!(is_forbidden(
        &request(&mut member, ClientMessage::Sub { id: 2, topic: "orgs/globex/news".into() }).await,
        2
    ));
    // A crafted claim never widens access.
    let crafted = hs256(json!({"sub": "x", "roles": ["member"], "orgId": "*", "exp": now() + 600}));
    let mut crafty = RawWs::authed(server.addr, &crafted).await;
    assert!(is_forbidden(&request(&mut crafty, ClientMessage::Sub { id: 1, topic: "orgs/acme/news".into() }).await, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_mixed_batch_applies_exactly_the_allowed_ops() {
    let server = TestServer::start(config()).await;
    let mut alice = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    let ops = vec![
        op("1", "users/alice/todos", "a", "one", &hlc(0, "alice")),
        op("2", "users/bob/todos", "b", "nope", &hlc(0, "alice")),
        op("3", "users/alice/todos", "c", "three", "garbage-hlc"),
        op("4", "users/alice/todos", "d", "four", &hlc(3_600_000, "alice")),
        OpInput::Invalid { op_id: Value::from("5"), reason: "missing key".into() },
        op("6", "users/alice/notes", "e", Value::Nil, &hlc(1, "alice")),
    ];
    let ServerMessage::OpResult { id: 1, results } = request(&mut alice, ClientMessage::OpBatch { id: 1, ops }).await
    else {
        panic!()
    };
    let summary: Vec<_> =
        results.iter().map(|r| (r.op_id.as_str().unwrap().to_string(), r.ok, r.code.clone())).collect();
    assert_eq!(
        summary,
        [
            ("1".into(), true, None),
            ("2".into(), false, Some("forbidden".into())),
            ("3".into(), false, Some("invalid".into())),
            ("4".into(), false, Some("clock_skew".into())),
            ("5".into(), false, Some("invalid".into())),
            ("6".into(), true, None),
        ]
    );
    let ServerMessage::SyncData { records, .. } =
        request(&mut alice, ClientMessage::Sync { id: 2, collection: "users/alice/todos".into(), since: None }).await
    else {
        panic!()
    };
    assert_eq!(records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["a"]);
    server.stop().await;
}

#[tokio::test]
async fn a_refresh_that_drops_a_role_ends_only_those_subscriptions() {
    let server = TestServer::start(config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &["user", "member"])).await;
    let with_org = hs256(json!({"sub": "alice", "roles": ["user", "member"], "orgId": "acme", "exp": now() + 600}));
    ws.send(&ClientMessage::Auth { token: Some(with_org) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { .. }));
    assert_eq!(
        request(&mut ws, ClientMessage::Sub { id: 1, topic: "orgs/acme/news".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert_eq!(
        request(&mut ws, ClientMessage::Sub { id: 2, topic: "rooms/lobby".into() }).await,
        ServerMessage::Ok { id: 2 }
    );
    assert!(matches!(
        request(&mut ws, ClientMessage::Sync { id: 3, collection: "orgs/acme/docs".into(), since: None }).await,
        ServerMessage::SyncData { .. }
    ));

    ws.send(&ClientMessage::Auth { token: Some(token("alice", &["user"])) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { ref roles, .. } if roles == &["user"]));
    let mut ended = vec![];
    for _ in 0..2 {
        match ws.msg().await {
            ServerMessage::Error { id: Some(id), code, .. } if code == "forbidden" => ended.push(id),
            other => panic!("{other:?}"),
        }
    }
    ended.sort();
    assert_eq!(ended, [1, 3], "the org subscription and sync end; the lobby stays");

    let mut publisher = RawWs::authed(server.addr, &token("p", &["writer", "member"])).await;
    assert_eq!(
        request(
            &mut publisher,
            ClientMessage::Pub { id: 1, topic: "rooms/lobby".into(), data: Value::from("still here") }
        )
        .await,
        ServerMessage::Ok { id: 1 }
    );
    assert!(matches!(ws.msg().await, ServerMessage::Message { ref data, .. } if *data == Value::from("still here")));
    ws.send(&ClientMessage::Ping { id: Some(9) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(9) }, "the connection stays");
    server.stop().await;
}

#[tokio::test]
async fn a_rules_reload_re_evaluates_live_subscriptions() {
    let server = TestServer::start(config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    assert_eq!(
        request(&mut ws, ClientMessage::Sub { id: 1, topic: "rooms/lobby".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert_eq!(
        request(&mut ws, ClientMessage::Sub { id: 2, topic: "users/alice/inbox".into() }).await,
        ServerMessage::Ok { id: 2 }
    );
    let narrower = RULES
        .replace("resource = \"rooms/*\"\nactions = [\"read\"]", "resource = \"rooms/staff\"\nactions = [\"read\"]");
    server.node.set_policy(Policy::with_rules(RuleSet::parse(&narrower).unwrap()));
    assert!(is_forbidden(&ws.msg().await, 1));
    ws.send(&ClientMessage::Ping { id: Some(3) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(3) });
    server.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_gets_4200_while_fast_ones_keep_receiving() {
    let mut config = config();
    config.limits.outbound_queue = 8;
    let server = TestServer::start(config).await;
    let mut slow = RawWs::authed(server.addr, &token("slow", &["user"])).await;
    let mut fast = RawWs::authed(server.addr, &token("fast", &["user"])).await;
    let mut publisher = RawWs::authed(server.addr, &token("pub", &["writer"])).await;
    for ws in [&mut slow, &mut fast] {
        assert_eq!(
            request(ws, ClientMessage::Sub { id: 1, topic: "rooms/firehose".into() }).await,
            ServerMessage::Ok { id: 1 }
        );
    }
    let big = Value::Binary(vec![7; 60 * 1024]);
    let count = 300u64;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < count {
            match fast.msg().await {
                ServerMessage::Message { .. } => got += 1,
                other => panic!("{other:?}"),
            }
        }
        got
    });
    // The slow subscriber reads nothing while 18 MB are published.
    for i in 0..count {
        publisher.send(&ClientMessage::Pub { id: i, topic: "rooms/firehose".into(), data: big.clone() }).await;
        assert_eq!(publisher.msg().await, ServerMessage::Ok { id: i });
    }
    assert_eq!(reader.await.unwrap(), count, "the fast subscriber got everything");
    assert_eq!(slow.close_code().await, 4200);
    server.stop().await;
}

#[tokio::test]
async fn without_rules_everything_is_allowed() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("anyone", &[])).await;
    assert_eq!(
        request(&mut ws, ClientMessage::Sub { id: 1, topic: "any/thing".into() }).await,
        ServerMessage::Ok { id: 1 }
    );
    assert!(
        matches!(request(&mut ws, ClientMessage::Sub { id: 2, topic: "bad//topic".into() }).await, ServerMessage::Error { ref code, .. } if code == "invalid")
    );
    server.stop().await;
}
