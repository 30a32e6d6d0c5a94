//! Presence: `SUB {presence: true}` announces a member and streams joins and
//! leaves; `PRESENCE` answers the members; both need `read`; a member that
//! goes away (even without a goodbye) leaves.

mod common;

use common::{RawWs, TestServer, jwt_config, token};
use rmpv::Value;
use syncgate::protocol::{ClientMessage, ServerMessage};
use syncgate::rules::{Policy, RuleSet};

const RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "rooms/*"
actions = ["read", "write"]
"#;

async fn present(ws: &mut RawWs, id: u64, topic: &str, info: Option<Value>) {
    ws.send(&ClientMessage::SubPresent { id, topic: topic.into(), presence: true, info }).await;
    ws.msg_where(|m| matches!(m, ServerMessage::Ok { id: got } if *got == id)).await;
}

async fn next_presence(ws: &mut RawWs) -> ServerMessage {
    ws.msg_where(|m| matches!(m, ServerMessage::PresenceJoin { .. } | ServerMessage::PresenceLeave { .. })).await
}

async fn members(ws: &mut RawWs, id: u64, topic: &str) -> Vec<String> {
    ws.send(&ClientMessage::Presence { id, topic: topic.into(), after: None }).await;
    match ws.msg_where(|m| matches!(m, ServerMessage::PresenceState { .. } | ServerMessage::Error { .. })).await {
        ServerMessage::PresenceState { members, .. } => {
            let mut subs: Vec<String> = members.into_iter().map(|m| m.sub).collect();
            subs.sort();
            subs
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn members_see_each_other_join_and_leave() {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    let server = TestServer::start(config).await;
    let mut alice = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    let mut bob = RawWs::authed(server.addr, &token("bob", &["user"])).await;
    present(&mut alice, 1, "rooms/lobby", None).await;
    assert!(matches!(next_presence(&mut alice).await, ServerMessage::PresenceJoin { ref sub, .. } if sub == "alice"));
    present(&mut bob, 1, "rooms/lobby", Some(Value::from("typing"))).await;
    match next_presence(&mut alice).await {
        ServerMessage::PresenceJoin { sub, info, .. } => {
            assert_eq!((sub.as_str(), info), ("bob", Some(Value::from("typing"))))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(members(&mut bob, 2, "rooms/lobby").await, ["alice", "bob"]);
    bob.send(&ClientMessage::Unsub { id: 3, topic: "rooms/lobby".into() }).await;
    assert!(matches!(next_presence(&mut alice).await, ServerMessage::PresenceLeave { ref sub, .. } if sub == "bob"));
    assert_eq!(members(&mut alice, 2, "rooms/lobby").await, ["alice"]);

    // A member that vanishes without a goodbye leaves too.
    let mut carol = RawWs::authed(server.addr, &token("carol", &["user"])).await;
    present(&mut carol, 1, "rooms/lobby", None).await;
    assert!(matches!(next_presence(&mut alice).await, ServerMessage::PresenceJoin { ref sub, .. } if sub == "carol"));
    drop(carol);
    assert!(matches!(next_presence(&mut alice).await, ServerMessage::PresenceLeave { ref sub, .. } if sub == "carol"));
    assert_eq!(members(&mut alice, 3, "rooms/lobby").await, ["alice"]);
    server.stop().await;
}

#[tokio::test]
async fn presence_needs_read_on_the_topic() {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    let server = TestServer::start(config).await;
    let mut guest = RawWs::authed(server.addr, &token("mallory", &["guest"])).await;
    guest.send(&ClientMessage::SubPresent { id: 1, topic: "rooms/lobby".into(), presence: true, info: None }).await;
    let refused = guest.msg_where(|m| matches!(m, ServerMessage::Error { .. })).await;
    assert!(matches!(refused, ServerMessage::Error { ref code, .. } if code == "forbidden"), "{refused:?}");
    guest.send(&ClientMessage::Presence { id: 2, topic: "rooms/lobby".into(), after: None }).await;
    let refused = guest.msg_where(|m| matches!(m, ServerMessage::Error { .. })).await;
    assert!(matches!(refused, ServerMessage::Error { ref code, .. } if code == "forbidden"), "{refused:?}");
    server.stop().await;
}

/// The Rust client: present on a topic, it reports others' joins and leaves,
/// and answers who is there.
#[tokio::test]
async fn the_rust_client_is_present_and_sees_others() {
    use syncgate_client::{Client, ClientConfig, ClientEvent};
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    let server = TestServer::start(config).await;
    let alice_token = token("alice", &["user"]);
    let client_config = ClientConfig::new(server.url()).with_token_provider(move |_| {
        let token = alice_token.clone();
        async move { Ok(Some(token)) }
    });
    let (client, mut events) = Client::connect(client_config).unwrap();
    let _messages = client.subscribe_present("rooms/lobby", Some(Value::from("online")));
    common::until(&mut events, |e| matches!(e, ClientEvent::PresenceJoined { sub, .. } if sub == "alice")).await;
    let mut bob = RawWs::authed(server.addr, &token("bob", &["user"])).await;
    present(&mut bob, 1, "rooms/lobby", None).await;
    common::until(&mut events, |e| matches!(e, ClientEvent::PresenceJoined { sub, .. } if sub == "bob")).await;
    let mut here: Vec<(String, Option<Value>)> =
        client.presence("rooms/lobby").await.unwrap().into_iter().map(|m| (m.sub, m.info)).collect();
    here.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(here, [("alice".to_string(), Some(Value::from("online"))), ("bob".to_string(), None)]);
    drop(bob);
    common::until(&mut events, |e| matches!(e, ClientEvent::PresenceLeft { sub, .. } if sub == "bob")).await;
    client.close().await;
    server.stop().await;
}

const READ_ONLY_RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "rooms/*"
actions = ["read", "write"]

[[rules]]
roles = ["reader"]
resource = "rooms/*"
actions = ["read"]
"#;

/// A read-only member may be present but not announce anything to the
/// others; a re-join that changes nothing is no news; announcements are
/// rate-limited per connection.
#[tokio::test]
async fn presence_info_is_a_write_and_only_news_is_broadcast() {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(READ_ONLY_RULES).unwrap());
    let server = TestServer::start(config).await;
    let mut alice = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    present(&mut alice, 1, "rooms/lobby", None).await;
    next_presence(&mut alice).await;
    let mut reader = RawWs::authed(server.addr, &token("mallory", &["reader"])).await;
    let notice = Value::from("SYSTEM NOTICE: log in again at https://evil.example");
    reader
        .send(&ClientMessage::SubPresent { id: 1, topic: "rooms/lobby".into(), presence: true, info: Some(notice) })
        .await;
    let refused = reader.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(1), .. })).await;
    assert!(matches!(refused, ServerMessage::Error { ref code, .. } if code == "forbidden"), "{refused:?}");
    present(&mut reader, 2, "rooms/lobby", None).await;
    assert!(matches!(next_presence(&mut alice).await, ServerMessage::PresenceJoin { ref sub, .. } if sub == "mallory"));
    for id in 3..8 {
        present(&mut reader, id, "rooms/lobby", None).await;
    }
    let mut bob = RawWs::authed(server.addr, &token("bob", &["user"])).await;
    present(&mut bob, 1, "rooms/lobby", Some(Value::from("typing"))).await;
    match next_presence(&mut alice).await {
        ServerMessage::PresenceJoin { sub, .. } => assert_eq!(sub, "bob", "five re-joins of mallory were no news"),
        other => panic!("{other:?}"),
    }
    bob.send(&ClientMessage::SubPresent {
        id: 2,
        topic: "rooms/lobby".into(),
        presence: true,
        info: Some(Value::from("idle")),
    })
    .await;
    let limited =
        bob.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(2), .. } | ServerMessage::Ok { id: 2 })).await;
    assert!(matches!(limited, ServerMessage::Error { ref code, .. } if code == "rate_limited"), "{limited:?}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    present(&mut bob, 3, "rooms/lobby", Some(Value::from("idle"))).await;
    match next_presence(&mut alice).await {
        ServerMessage::PresenceJoin { sub, info, .. } => {
            assert_eq!((sub.as_str(), info), ("bob", Some(Value::from("idle"))))
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// Sixty members with 1 KB of info each: `PRESENCE_STATE` comes in bounded
/// pages, and the Rust client reads them all.
#[tokio::test]
async fn presence_state_comes_in_bounded_pages() {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    let server = TestServer::start(config).await;
    let mut members = Vec::new();
    for n in 0..60 {
        let mut ws = RawWs::authed(server.addr, &token(&format!("m{n:02}"), &["user"])).await;
        present(&mut ws, 1, "rooms/big", Some(Value::Binary(vec![7; 1000]))).await;
        members.push(ws);
    }
    let watcher = &mut members[0];
    watcher.send(&ClientMessage::Presence { id: 9, topic: "rooms/big".into(), after: None }).await;
    let ServerMessage::PresenceState { members: page, more, .. } =
        watcher.msg_where(|m| matches!(m, ServerMessage::PresenceState { .. })).await
    else {
        unreachable!()
    };
    assert!(more && page.len() < 20, "a bounded first page: {} members, more: {more}", page.len());
    use syncgate_client::{Client, ClientConfig};
    let reader_token = token("counter", &["user"]);
    let client_config = ClientConfig::new(server.url()).with_token_provider(move |_| {
        let token = reader_token.clone();
        async move { Ok(Some(token)) }
    });
    let (client, _events) = Client::connect(client_config).unwrap();
    let all = client.presence("rooms/big").await.unwrap();
    assert_eq!(all.len(), 60, "every page, once each");
    client.close().await;
    server.stop().await;
}
