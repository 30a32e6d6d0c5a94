//! The NATS backplane: the backplane conformance suite on a real NATS
//! (`SYNCGATE_TEST_NATS`), an outage of a private `nats-server`, and
//! messages forged by a plain NATS client on the cluster's subjects.

mod common;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use common::nats::{PrivateNats, fresh_cluster, node};
use syncgate::backplane::conformance::{self, Outage, Pair};
use syncgate::backplane::subjects::Subjects;
use syncgate::backplane::{Backplane, Control, Inbound, Subject};

#[tokio::test]
async fn nats_passes_the_backplane_conformance_suite() {
    let Some(url) = common::nats::url("nats_passes_the_backplane_conformance_suite") else { return };
    for secret in [None, Some("a cluster secret of some length")] {
        conformance::run(|| async {
            let cluster = fresh_cluster("conf");
            Pair::new(node(&url, &cluster, "a", secret).await, node(&url, &cluster, "b", secret).await)
        })
        .await;
    }
}

impl Outage for PrivateNats {
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { PrivateNats::stop(self) })
    }
    fn start(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.start_again() })
    }
}

#[tokio::test]
async fn after_a_nats_outage_nodes_hear_lost_and_their_interests_are_back() {
    let Some(nats) = PrivateNats::start("after_a_nats_outage_nodes_hear_lost_and_their_interests_are_back") else {
        return;
    };
    let cluster = fresh_cluster("outage");
    let pair = Pair::new(node(&nats.url(), &cluster, "a", None).await, node(&nats.url(), &cluster, "b", None).await);
    conformance::run_outage(pair, &nats).await;
}

#[tokio::test]
async fn nodes_of_another_cluster_never_hear_each_other() {
    let Some(url) = common::nats::url("nodes_of_another_cluster_never_hear_each_other") else { return };
    let (one, two) = (fresh_cluster("one"), fresh_cluster("two"));
    let a = node(&url, &one, "a", None).await;
    let b = node(&url, &two, "b", None).await;
    let mut b_in = b.inbound().unwrap();
    let topic = Subject::Topic("shared".into());
    b.interest(&topic).await.unwrap();
    a.publish(&topic, Bytes::from_static(b"x"));
    assert_eq!(a.control(Control::RulesChanged).await, Ok(0), "nobody of cluster one acknowledges");
    let heard = tokio::time::timeout(std::time::Duration::from_millis(500), b_in.messages.recv()).await;
    assert!(heard.is_err(), "another cluster's message arrived: {heard:?}");
    assert!(b_in.control.try_recv().is_err());
}

/// A plain NATS client with publish rights on the cluster's subjects, but
/// without the cluster secret, forges a disconnect and a `CHANGE`: nothing
/// reaches the node, and the refusals are counted.
#[tokio::test]
async fn forged_backplane_messages_change_nothing() {
    let Some(url) = common::nats::url("forged_backplane_messages_change_nothing") else { return };
    let cluster = fresh_cluster("forged");
    let secret = Some("the real cluster secret, 32 bytes");
    let victim = node(&url, &cluster, "victim", secret).await;
    let mut inlets = victim.inbound().unwrap();
    let changes = Subject::Changes("notes".into());
    victim.interest(&changes).await.unwrap();
    let subjects = Subjects::new(&cluster).unwrap();
    let attacker = async_nats::connect(url.as_str()).await.unwrap();
    let sealer = |secret: Option<&[u8]>, subject: &str, kind, body: &[u8]| {
        let at = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
            .unwrap();
        Bytes::from(syncgate::backplane::envelope::Sealer::new(secret).seal(subject, kind, at, 1, "forger", body))
    };
    use syncgate::backplane::envelope::Kind;
    let disconnect = rmp_serde::to_vec_named(&Control::Disconnect { sub: "alice".into() }).unwrap();
    let change_subject = subjects.of(&changes);
    let forged = [
        (subjects.control(), sealer(None, &subjects.control(), Kind::Control, &disconnect)),
        (subjects.control(), sealer(Some(b"a guessed secret"), &subjects.control(), Kind::Control, &disconnect)),
        (
            change_subject.clone(),
            sealer(None, &change_subject, Kind::Changes, b"\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02x"),
        ),
        (change_subject.clone(), Bytes::from_static(b"not even an envelope")),
        // A genuine-looking control envelope replayed onto a data subject.
        (change_subject.clone(), sealer(None, &subjects.control(), Kind::Control, &disconnect)),
    ];
    for (subject, payload) in forged.iter().cloned() {
        attacker.publish(subject, payload).await.unwrap();
    }
    attacker.flush().await.unwrap();
    let arrived = tokio::time::timeout(std::time::Duration::from_millis(700), inlets.messages.recv()).await;
    assert!(arrived.is_err(), "a forged message reached the node: {arrived:?}");
    assert!(inlets.control.try_recv().is_err(), "a forged control message reached the node");
    assert_eq!(victim.stats().rejected.get(), forged.len() as u64, "every forgery is counted");
    // And a node holding the secret is still heard.
    let peer = node(&url, &cluster, "peer", secret).await;
    peer.publish(&changes, Bytes::from_static(b"genuine"));
    let genuine = tokio::time::timeout(std::time::Duration::from_secs(5), inlets.messages.recv()).await.unwrap();
    assert_eq!(genuine, Some(Inbound::Message { subject: changes, payload: Bytes::from_static(b"genuine") }));
}
