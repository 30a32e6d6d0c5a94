//! The conformance suite every [`Backplane`] implementation must pass.
//!
//! Call [`run`] from a test with a factory for two fresh nodes on one fresh
//! medium; it panics with a description of the first broken rule.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Backplane, Control, Inbound, Subject};

/// How long a check waits for a message that must arrive.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long a check waits to be satisfied that a message will not arrive.
const SILENCE: Duration = Duration::from_millis(200);

/// Runs every check, each on a fresh pair of nodes from `fresh`.
pub async fn run(fresh: impl Fn() -> (Box<dyn Backplane>, Box<dyn Backplane>)) {
    interest_decides_delivery(fresh()).await;
    a_publisher_keeps_its_order(fresh()).await;
    control_reaches_the_other_nodes(fresh()).await;
    subjects_are_separate(fresh()).await;
    the_inbound_stream_is_taken_once(fresh()).await;
}

async fn next(inbound: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(ARRIVAL, inbound.recv())
        .await
        .expect("a message that must arrive did not")
        .expect("the inbound stream ended")
}

async fn silent(inbound: &mut mpsc::Receiver<Inbound>, what: &str) {
    if let Ok(Some(message)) = tokio::time::timeout(SILENCE, inbound.recv()).await {
        panic!("{what}, but {message:?} arrived");
    }
}

fn message(subject: &Subject, payload: &'static [u8]) -> Inbound {
    Inbound::Message { subject: subject.clone(), payload: Bytes::from_static(payload) }
}

async fn interest_decides_delivery((a, b): (Box<dyn Backplane>, Box<dyn Backplane>)) {
    let (mut a_in, mut b_in) = (a.inbound().unwrap(), b.inbound().unwrap());
    let topic = Subject::Topic("t".into());
    a.publish(&topic, Bytes::from_static(b"before"));
    silent(&mut b_in, "a node without interest receives nothing").await;
    b.interest(&topic).await.unwrap();
    a.interest(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"during"));
    assert_eq!(next(&mut b_in).await, message(&topic, b"during"), "interest brings the message");
    silent(&mut a_in, "a publisher never receives its own message").await;
    b.drop_interest(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"after"));
    silent(&mut b_in, "dropped interest stops delivery").await;
}

async fn a_publisher_keeps_its_order((a, b): (Box<dyn Backplane>, Box<dyn Backplane>)) {
    let mut b_in = b.inbound().unwrap();
    let changes = Subject::Changes("c".into());
    b.interest(&changes).await.unwrap();
    for n in 0..500u32 {
        a.publish(&changes, Bytes::from(n.to_be_bytes().to_vec()));
    }
    for n in 0..500u32 {
        match next(&mut b_in).await {
            Inbound::Message { payload, .. } => assert_eq!(&payload[..], n.to_be_bytes(), "per-publisher order"),
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
}

async fn control_reaches_the_other_nodes((a, b): (Box<dyn Backplane>, Box<dyn Backplane>)) {
    let (mut a_in, mut b_in) = (a.inbound().unwrap(), b.inbound().unwrap());
    let revoke = Control::RevokeSubject { sub: "u1".into(), issued_before: 42 };
    a.control(revoke.clone()).await.unwrap();
    assert_eq!(next(&mut b_in).await, Inbound::Control(revoke), "control needs no interest");
    silent(&mut a_in, "control does not come back to its sender").await;
    b.control(Control::RulesChanged).await.unwrap();
    assert_eq!(next(&mut a_in).await, Inbound::Control(Control::RulesChanged));
}

async fn subjects_are_separate((a, b): (Box<dyn Backplane>, Box<dyn Backplane>)) {
    let mut b_in = b.inbound().unwrap();
    let (topic, changes) = (Subject::Topic("same".into()), Subject::Changes("same".into()));
    b.interest(&changes).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"topic"));
    a.publish(&changes, Bytes::from_static(b"changes"));
    assert_eq!(next(&mut b_in).await, message(&changes, b"changes"), "a topic and a collection of one name differ");
    silent(&mut b_in, "no interest in the topic").await;
}

async fn the_inbound_stream_is_taken_once((a, _b): (Box<dyn Backplane>, Box<dyn Backplane>)) {
    assert!(a.inbound().is_some());
    assert!(a.inbound().is_none(), "one consumer per node");
}
