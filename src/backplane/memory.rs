//! The in-process backplane: nodes in one process (one node by default, or
//! several in tests) share a [`MemoryBus`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

pub(crate) use super::inlet::INBOUND_QUEUE;
use super::inlet::Inlet;
use super::{
    Announcement, Backplane, BackplaneFuture, CONTROL_ACK_WAIT, Control, ControlDelivery, Inbound, Inlets, Subject,
};

/// Control messages a node's control queue holds.
const CONTROL_QUEUE: usize = 1024;

/// Node id within a bus.
type NodeId = u64;

/// One node of a bus: its id, data queue and control queue.
type NodeEntry = (NodeId, Arc<Inlet>, mpsc::Sender<ControlDelivery>);

/// The shared medium of the nodes of one process.
#[derive(Debug, Default)]
pub struct MemoryBus {
    /// Nodes with interest, per subject.
    interest: DashMap<Subject, Vec<NodeId>>,
    /// Every node's inbound side. A std mutex: held only to clone senders.
    nodes: Mutex<Vec<NodeEntry>>,
    next: std::sync::atomic::AtomicU64,
}

/// One node's handle on a [`MemoryBus`].
#[derive(Debug)]
pub struct MemoryBackplane {
    bus: Arc<MemoryBus>,
    id: NodeId,
    subjects: Mutex<HashSet<Subject>>,
    inbound: Mutex<Option<Inlets>>,
}

impl MemoryBus {
    /// A bus with no nodes yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A new node on this bus, with an inbound queue of `queue` messages.
    pub fn node_with_queue(self: &Arc<Self>, queue: usize) -> MemoryBackplane {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (inlet, messages) = Inlet::new(queue);
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).push((id, inlet, control_tx));
        let inlets = Inlets { messages, control };
        MemoryBackplane { bus: self.clone(), id, subjects: Mutex::default(), inbound: Mutex::new(Some(inlets)) }
    }

    /// A new node on this bus.
    pub fn node(self: &Arc<Self>) -> MemoryBackplane {
        self.node_with_queue(INBOUND_QUEUE)
    }

    fn inlets(&self, except: NodeId, only: Option<&[NodeId]>) -> Vec<Arc<Inlet>> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter(|(id, _, _)| *id != except && only.is_none_or(|only| only.contains(id)))
            .map(|(_, inlet, _)| inlet.clone())
            .collect()
    }

    fn control_queues(&self, except: NodeId) -> Vec<mpsc::Sender<ControlDelivery>> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.iter().filter(|(id, _, _)| *id != except).map(|(_, _, control)| control.clone()).collect()
    }
}

impl MemoryBackplane {
    /// A node alone on its own bus: the default for one process.
    pub fn standalone() -> Self {
        MemoryBus::new().node()
    }
}

impl Backplane for MemoryBackplane {
    fn interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        if self.subjects.lock().unwrap_or_else(|e| e.into_inner()).insert(subject.clone()) {
            self.bus.interest.entry(subject.clone()).or_default().push(self.id);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn drop_interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        if self.subjects.lock().unwrap_or_else(|e| e.into_inner()).remove(subject) {
            self.bus.interest.remove_if_mut(subject, |_, nodes| {
                nodes.retain(|id| *id != self.id);
                nodes.is_empty()
            });
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish(&self, subject: &Subject, payload: Bytes) {
        // Alone on the bus, or nobody else interested: nothing to copy or lock.
        let Some(nodes) = self.bus.interest.get(subject) else { return };
        if nodes.iter().all(|id| *id == self.id) {
            return;
        }
        let targets = nodes.clone();
        drop(nodes);
        for inlet in self.bus.inlets(self.id, Some(&targets)) {
            inlet.offer(Inbound::Message { subject: subject.clone(), payload: payload.clone() });
        }
    }

    fn control(&self, control: Control) -> BackplaneFuture<'_, usize> {
        let mut acks = Vec::new();
        for queue in self.bus.control_queues(self.id) {
            let (ack, acked) = oneshot::channel();
            let delivery = ControlDelivery::new(control.clone(), format!("memory-{}", self.id), move || {
                let _ = ack.send(());
            });
            if queue.try_send(delivery).is_ok() {
                acks.push(acked);
            }
        }
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + CONTROL_ACK_WAIT;
            let mut acknowledged = 0;
            for acked in acks {
                if tokio::time::timeout_at(deadline, acked).await.is_ok_and(|r| r.is_ok()) {
                    acknowledged += 1;
                }
            }
            Ok(acknowledged)
        })
    }

    fn announce(&self, announcement: &Announcement) {
        for inlet in self.bus.inlets(self.id, None) {
            inlet.offer(Inbound::Announcement(announcement.clone()));
        }
    }

    fn inbound(&self) -> Option<Inlets> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn has_peers(&self) -> bool {
        // Interest is registered by others only: none registered, nobody to reach.
        !self.bus.interest.is_empty() && self.bus.nodes.lock().unwrap_or_else(|e| e.into_inner()).len() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_backplane_conformance_suite() {
        super::super::conformance::run(|| async {
            let bus = MemoryBus::new();
            super::super::conformance::Pair::new(bus.node(), bus.node())
        })
        .await;
    }

    #[tokio::test]
    async fn control_gets_through_a_node_whose_data_queue_is_full() {
        let bus = MemoryBus::new();
        let (sender, receiver) = (bus.node(), bus.node_with_queue(2));
        let mut inlets = receiver.inbound().unwrap();
        let subject = Subject::Topic("busy".into());
        receiver.interest(&subject).await.unwrap();
        for n in 0..8u8 {
            sender.publish(&subject, Bytes::from(vec![n]));
        }
        let revoke = Control::RevokeJti { jti: "j".into() };
        let acknowledging = tokio::spawn(async move {
            let delivery = inlets.control.recv().await.expect("the control message arrives");
            let control = delivery.control.clone();
            delivery.ack();
            control
        });
        assert_eq!(sender.control(revoke.clone()).await, Ok(1), "acknowledged, not dropped behind data");
        assert_eq!(acknowledging.await.unwrap(), revoke);
    }

    #[tokio::test]
    async fn an_overflowing_node_is_told_it_lost_messages() {
        let bus = MemoryBus::new();
        let (sender, receiver) = (bus.node(), bus.node_with_queue(2));
        let mut inbound = receiver.inbound().unwrap().messages;
        let subject = Subject::Changes("c".into());
        receiver.interest(&subject).await.unwrap();
        for n in 0..4u8 {
            sender.publish(&subject, Bytes::from(vec![n]));
        }
        let payloads: Vec<_> = [inbound.recv().await, inbound.recv().await].into_iter().flatten().collect();
        assert!(matches!(&payloads[..], [Inbound::Message { .. }, Inbound::Message { .. }]));
        assert_eq!(inbound.recv().await, Some(Inbound::Lost), "the loss is announced though nothing else was sent");
        sender.publish(&subject, Bytes::from_static(&[9]));
        let Some(Inbound::Message { payload, .. }) = inbound.recv().await else { panic!() };
        assert_eq!(&payload[..], &[9], "and delivery goes on");
    }
}
