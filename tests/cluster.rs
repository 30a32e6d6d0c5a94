//! Three `syncgate serve` processes on one Postgres schema and one NATS
//! (`SYNCGATE_TEST_POSTGRES`, `SYNCGATE_TEST_NATS`): collections, pub/sub,
//! presence and control behave as one system whichever node a client lands on.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Follower, State, lww, write_run};
use common::{RawWs, token};
use rmpv::Value;
use syncgate::protocol::{ClientMessage, ServerMessage};

#[tokio::test]
async fn writers_on_two_nodes_and_readers_on_a_third_end_with_the_store_state() {
    let Some((postgres, nats)) = Cluster::services("writers_on_two_nodes_and_readers_on_a_third") else { return };
    let cluster = Cluster::start(&postgres, &nats, 3, &[]);
    cluster.wait_until_formed().await;
    let mut live = Follower::start(cluster.addr(2), "race", None, State::new()).await;
    let early = Follower::start(cluster.addr(2), "race", None, State::new()).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let first = tokio::join!(write_run(a, "wa", 15), write_run(b, "wb", 15));
    // The late reader left after the first half and comes back with its cursor.
    let (left_at, held) = (early.cursor.clone(), early.state.clone());
    drop(early);
    let second = tokio::join!(write_run(a, "wa2", 15), write_run(b, "wb2", 15));
    let acked: Vec<_> = [first.0, first.1, second.0, second.1].into_iter().flatten().collect();
    assert!(acked.len() >= 100, "the writers were acknowledged: {}", acked.len());
    let expected = lww(&acked);
    live.until(&expected).await;
    let mut late = Follower::start(cluster.addr(2), "race", Some(left_at), held).await;
    late.until(&expected).await;
    // And what a fresh reader of another node reads is the same.
    let fresh = Follower::start(cluster.addr(0), "race", None, State::new()).await;
    assert_eq!(fresh.state, expected, "the store holds the last writer's value of every key");
}

#[tokio::test]
async fn publications_rules_and_presence_span_the_nodes() {
    let Some((postgres, nats)) = Cluster::services("publications_rules_and_presence_span_the_nodes") else { return };
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "[[rules]]\nroles = [\"user\"]\nresource = \"chat/**\"\nactions = [\"read\", \"write\"]\n\n\
         [[rules]]\nroles = [\"admin\"]\nresource = \"secret/**\"\nactions = [\"read\", \"write\"]\n",
    )
    .unwrap();
    let cluster = Cluster::start(&postgres, &nats, 3, &["--rules", rules.path().to_str().unwrap()]);
    cluster.wait_until_formed().await;
    // A subscriber on C hears A's publications, in order, from their publisher.
    let mut listener = RawWs::authed(cluster.addr(2), &token("carol", &["user"])).await;
    listener.send(&ClientMessage::SubPresent { id: 1, topic: "chat/room".into(), presence: true, info: None }).await;
    listener.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    let mut publisher = RawWs::authed(cluster.addr(0), &token("alice", &["user"])).await;
    for n in 0..20u64 {
        publisher.send(&ClientMessage::Pub { id: 10 + n, topic: "chat/room".into(), data: Value::from(n) }).await;
    }
    for n in 0..20u64 {
        match listener.msg_where(|m| matches!(m, ServerMessage::Message { .. })).await {
            ServerMessage::Message { data, from, .. } => {
                assert_eq!(data, Value::from(n), "in publication order");
                assert_eq!(from, "alice", "from its publisher");
            }
            _ => unreachable!(),
        }
    }
    // A topic the rules deny is denied on every node.
    for i in 0..3 {
        let mut ws = RawWs::authed(cluster.addr(i), &token("mallory", &["user"])).await;
        ws.send(&ClientMessage::Sub { id: 1, topic: "secret/plans".into() }).await;
        let answer = ws.msg_where(|m| matches!(m, ServerMessage::Error { .. } | ServerMessage::Ok { .. })).await;
        assert!(matches!(answer, ServerMessage::Error { ref code, .. } if code == "forbidden"), "node {i}: {answer:?}");
    }
    // Presence on C lists the members on A and B too.
    let mut on_a = RawWs::authed(cluster.addr(0), &token("amy", &["user"])).await;
    on_a.send(&ClientMessage::SubPresent { id: 1, topic: "chat/room".into(), presence: true, info: None }).await;
    let mut on_b = RawWs::authed(cluster.addr(1), &token("bob", &["user"])).await;
    on_b.send(&ClientMessage::SubPresent { id: 1, topic: "chat/room".into(), presence: true, info: None }).await;
    on_b.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        listener.send(&ClientMessage::Presence { id: 50, topic: "chat/room".into(), after: None }).await;
        let subs = match listener.msg_where(|m| matches!(m, ServerMessage::PresenceState { .. })).await {
            ServerMessage::PresenceState { members, .. } => {
                let mut subs: Vec<String> = members.into_iter().map(|m| m.sub).collect();
                subs.sort();
                subs
            }
            _ => unreachable!(),
        };
        if subs == ["amy", "bob", "carol"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "C never listed the members of every node: {subs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B dies: its member leaves on C within three announcement intervals.
    let mut cluster = cluster;
    cluster.nodes[1].kill();
    let left = tokio::time::timeout(
        Duration::from_secs(12),
        listener.msg_where(|m| matches!(m, ServerMessage::PresenceLeave { sub, .. } if sub == "bob")),
    )
    .await;
    assert!(left.is_ok(), "the member of a killed node was announced as left");
}

#[tokio::test]
async fn a_kick_or_a_revocation_on_one_node_closes_connections_on_the_others() {
    let Some((postgres, nats)) = Cluster::services("a_kick_or_a_revocation_on_one_node_closes") else { return };
    let cluster = Cluster::start(&postgres, &nats, 3, &[]);
    cluster.wait_until_formed().await;
    let mut victim = RawWs::authed(cluster.addr(2), &token("mallory", &[])).await;
    let (status, body) = cluster.admin(0, "POST", "/admin/disconnect", Some(r#"{"sub":"mallory"}"#)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"disconnected":0,"nodesAcknowledged":2}"#),
        "both other nodes acted within 1 s"
    );
    assert_eq!(victim.close_code().await, 4003, "closed on node C");
    let revoked = common::hs256(serde_json::json!({"sub": "eve", "jti": "stolen", "exp": common::now() + 600}));
    let mut thief = RawWs::authed(cluster.addr(2), &revoked).await;
    let (status, body) = cluster.admin(0, "POST", "/admin/revoke", Some(r#"{"jti":"stolen"}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""nodesAcknowledged":2"#), "{body}");
    assert_eq!(thief.close_code().await, 4003, "the revoked token's connection on C is closed");
    let refused = RawWs::refused(cluster.addr(1), &revoked).await;
    assert_eq!(refused, ("forbidden".into(), 4003), "and node B refuses the token from now on");
}
