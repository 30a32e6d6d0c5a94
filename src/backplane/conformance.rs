//! The conformance suite every [`Backplane`] implementation must pass.
//!
//! Call [`run`] from a test with an async factory for two fresh nodes on one
//! fresh medium; it panics with a description of the first broken rule.
//! Implementations whose medium can fail also run [`run_outage`] with an
//! [`Outage`] hook that stops and restarts it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Announcement, Backplane, Control, Inbound, Inlets, Subject};

/// How long a check waits for a message that must arrive.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long a check waits to be satisfied that a message will not arrive.
const SILENCE: Duration = Duration::from_millis(300);

/// Two nodes on one fresh medium.
pub struct Pair {
    /// The first node.
    pub a: Box<dyn Backplane>,
    /// The second node.
    pub b: Box<dyn Backplane>,
}

impl Pair {
    /// A pair of nodes.
    pub fn new(a: impl Backplane, b: impl Backplane) -> Self {
        Self { a: Box::new(a), b: Box::new(b) }
    }
}

/// Stops and restarts the medium of a pair (a private NATS server, say).
pub trait Outage {
    /// Makes the medium unreachable.
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Makes it reachable again.
    fn start(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Runs every check, each on a fresh pair of nodes from `fresh`.
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    interest_decides_delivery(fresh().await).await;
    a_publisher_keeps_its_order(fresh().await).await;
    control_reaches_the_other_nodes_and_is_acknowledged(fresh().await).await;
    control_never_waits_behind_data(fresh().await).await;
    announcements_reach_the_other_nodes(fresh().await).await;
    subjects_are_separate(fresh().await).await;
    names_cannot_steer_messages(fresh().await).await;
    the_inbound_stream_is_taken_once(fresh().await).await;
}

/// Checks what an outage does: `control` fails while the medium is down, and
/// after it comes back the node hears [`Inbound::Lost`] and its interests
/// are in place again.
pub async fn run_outage(pair: Pair, outage: &dyn Outage) {
    let Pair { a, b } = pair;
    let mut b_in = b.inbound().unwrap().messages;
    let topic = Subject::Topic("outage".into());
    b.interest(&topic).await.unwrap();
    outage.stop().await;
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if a.control(Control::RulesChanged).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    refused.await.expect("control fails while the medium is down");
    outage.start().await;
    let lost = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = b_in.recv().await {
            if message == Inbound::Lost {
                return;
            }
        }
    });
    lost.await.expect("a node hears Lost after an outage");
    // The interest is back: a publication after recovery arrives.
    let arrived = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            a.publish(&topic, Bytes::from_static(b"after the outage"));
            if let Ok(Some(Inbound::Message { payload, .. })) =
                tokio::time::timeout(Duration::from_millis(500), b_in.recv()).await
            {
                assert_eq!(&payload[..], b"after the outage");
                return;
            }
        }
    });
    arrived.await.expect("interests are restored after an outage");
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

/// Acknowledges every control message a node receives, and passes them on.
fn acknowledge(inlets: &mut Inlets) -> mpsc::UnboundedReceiver<Control> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (_, placeholder) = mpsc::channel(1);
    let mut control = std::mem::replace(&mut inlets.control, placeholder);
    tokio::spawn(async move {
        while let Some(delivery) = control.recv().await {
            let _ = tx.send(delivery.control.clone());
            delivery.ack();
        }
    });
    rx
}

async fn interest_decides_delivery(Pair { a, b }: Pair) {
    let (mut a_in, mut b_in) = (a.inbound().unwrap().messages, b.inbound().unwrap().messages);
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

async fn a_publisher_keeps_its_order(Pair { a, b }: Pair) {
    let mut b_in = b.inbound().unwrap().messages;
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

async fn control_reaches_the_other_nodes_and_is_acknowledged(Pair { a, b }: Pair) {
    let (mut a_inlets, mut b_inlets) = (a.inbound().unwrap(), b.inbound().unwrap());
    let (mut a_control, mut b_control) = (acknowledge(&mut a_inlets), acknowledge(&mut b_inlets));
    let revoke = Control::RevokeSubject { sub: "u1".into(), issued_before: 42 };
    assert_eq!(a.control(revoke.clone()).await, Ok(1), "the other node acknowledged within the wait");
    let received = tokio::time::timeout(ARRIVAL, b_control.recv()).await.expect("control arrives");
    assert_eq!(received, Some(revoke), "control needs no interest");
    let echoed = tokio::time::timeout(SILENCE, a_control.recv()).await;
    assert!(echoed.is_err(), "control does not come back to its sender: {echoed:?}");
    assert_eq!(b.control(Control::RulesChanged).await, Ok(1));
    assert_eq!(tokio::time::timeout(ARRIVAL, a_control.recv()).await.unwrap(), Some(Control::RulesChanged));
}

async fn control_never_waits_behind_data(Pair { a, b }: Pair) {
    let mut b_inlets = b.inbound().unwrap();
    let changes = Subject::Changes("busy".into());
    b.interest(&changes).await.unwrap();
    // Data the node does not read yet (it may fill its queue and be dropped).
    for n in 0..5_000u32 {
        a.publish(&changes, Bytes::from(n.to_be_bytes().to_vec()));
    }
    let mut b_control = acknowledge(&mut b_inlets);
    let revoke = Control::RevokeJti { jti: "j".into() };
    assert_eq!(a.control(revoke.clone()).await, Ok(1), "acknowledged though data is waiting");
    assert_eq!(tokio::time::timeout(ARRIVAL, b_control.recv()).await.unwrap(), Some(revoke));
}

async fn announcements_reach_the_other_nodes(Pair { a, b }: Pair) {
    let mut b_in = b.inbound().unwrap().messages;
    let announcement = Announcement {
        node_id: "conformance-a".into(),
        version: "test".into(),
        rules_digest: "d".into(),
        connections: 2,
        started_at: crate::clock::unix_ms(),
    };
    // An announcement may be sent before the other node listens: keep announcing.
    let received = tokio::time::timeout(ARRIVAL, async {
        loop {
            a.announce(&announcement);
            if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), b_in.recv()).await {
                return message;
            }
        }
    });
    match received.await.expect("an announcement arrives") {
        Inbound::Announcement(got) => assert_eq!(got.connections, 2),
        other => panic!("expected an announcement, got {other:?}"),
    }
}

async fn subjects_are_separate(Pair { a, b }: Pair) {
    let mut b_in = b.inbound().unwrap().messages;
    let (topic, changes, presence) =
        (Subject::Topic("same".into()), Subject::Changes("same".into()), Subject::Presence("same".into()));
    b.interest(&changes).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"topic"));
    a.publish(&presence, Bytes::from_static(b"presence"));
    a.publish(&changes, Bytes::from_static(b"changes"));
    assert_eq!(next(&mut b_in).await, message(&changes, b"changes"), "a topic and a collection of one name differ");
    silent(&mut b_in, "no interest in the topic or its presence").await;
}

async fn names_cannot_steer_messages(Pair { a, b }: Pair) {
    let mut b_in = b.inbound().unwrap().messages;
    let names = ["a.b", "a.>", "a b", "a", "a.*"];
    for listened in names {
        let subject = Subject::Topic(listened.into());
        b.interest(&subject).await.unwrap();
        for sent in names {
            a.publish(&Subject::Topic(sent.into()), Bytes::from(sent.as_bytes().to_vec()));
        }
        let got = tokio::time::timeout(ARRIVAL, b_in.recv())
            .await
            .unwrap_or_else(|_| panic!("interest in {listened:?} brings its publication"))
            .expect("the inbound stream ended");
        assert_eq!(
            got,
            Inbound::Message { subject: subject.clone(), payload: Bytes::from(listened.as_bytes().to_vec()) }
        );
        silent(&mut b_in, &format!("interest in {listened:?} brings that name only")).await;
        b.drop_interest(&subject).await.unwrap();
    }
}

async fn the_inbound_stream_is_taken_once(Pair { a, b: _b }: Pair) {
    assert!(a.inbound().is_some());
    assert!(a.inbound().is_none(), "one consumer per node");
}
