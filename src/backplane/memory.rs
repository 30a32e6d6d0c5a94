//! The in-process backplane: nodes in one process (one node by default, or
//! several in tests) share a [`MemoryBus`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::{Backplane, BackplaneFuture, Control, Inbound, Subject};

/// Messages a node's inbound queue holds before newer ones are dropped (and
/// [`Inbound::Lost`] is announced).
pub(crate) const INBOUND_QUEUE: usize = 64 * 1024;

/// Node id within a bus.
type NodeId = u64;

/// The shared medium of the nodes of one process.
#[derive(Debug, Default)]
pub struct MemoryBus {
    /// Nodes with interest, per subject.
    interest: DashMap<Subject, Vec<NodeId>>,
    /// Every node's inbound side. A std mutex: held only to clone senders.
    nodes: Mutex<Vec<(NodeId, Arc<Inlet>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// One node's inbound queue, and whether an announcement of a loss is on its way.
#[derive(Debug)]
struct Inlet {
    queue: mpsc::Sender<Inbound>,
    announcing: AtomicBool,
}

impl Inlet {
    /// Queues `message`; when the queue is full, drops it and makes sure an
    /// [`Inbound::Lost`] follows as soon as there is room (even if nothing
    /// else is ever sent), without making the publisher wait.
    fn offer(self: &Arc<Self>, message: Inbound) {
        if self.queue.try_send(message).is_ok() || self.announcing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inlet = self.clone();
        tokio::spawn(async move {
            let Ok(permit) = inlet.queue.reserve().await else { return };
            // Cleared before the announcement is queued: a drop after this point
            // starts a new one, a drop before it is covered by this one.
            inlet.announcing.store(false, Ordering::Release);
            permit.send(Inbound::Lost);
        });
    }
}

/// One node's handle on a [`MemoryBus`].
#[derive(Debug)]
pub struct MemoryBackplane {
    bus: Arc<MemoryBus>,
    id: NodeId,
    subjects: Mutex<HashSet<Subject>>,
    inbound: Mutex<Option<mpsc::Receiver<Inbound>>>,
}

impl MemoryBus {
    /// A bus with no nodes yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A new node on this bus, with an inbound queue of `queue` messages.
    pub fn node_with_queue(self: &Arc<Self>, queue: usize) -> MemoryBackplane {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue.max(1));
        let inlet = Arc::new(Inlet { queue: tx, announcing: AtomicBool::new(false) });
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).push((id, inlet));
        MemoryBackplane { bus: self.clone(), id, subjects: Mutex::default(), inbound: Mutex::new(Some(rx)) }
    }

    /// A new node on this bus.
    pub fn node(self: &Arc<Self>) -> MemoryBackplane {
        self.node_with_queue(INBOUND_QUEUE)
    }

    fn inlets(&self, except: NodeId, only: Option<&[NodeId]>) -> Vec<Arc<Inlet>> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter(|(id, _)| *id != except && only.is_none_or(|only| only.contains(id)))
            .map(|(_, inlet)| inlet.clone())
            .collect()
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

    fn control(&self, control: Control) -> BackplaneFuture<'_, ()> {
        for inlet in self.bus.inlets(self.id, None) {
            inlet.offer(Inbound::Control(control.clone()));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn inbound(&self) -> Option<mpsc::Receiver<Inbound>> {
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
        super::super::conformance::run(|| {
            let bus = MemoryBus::new();
            (Box::new(bus.node()) as Box<dyn Backplane>, Box::new(bus.node()) as Box<dyn Backplane>)
        })
        .await;
    }

    #[tokio::test]
    async fn an_overflowing_node_is_told_it_lost_messages() {
        let bus = MemoryBus::new();
        let (sender, receiver) = (bus.node(), bus.node_with_queue(2));
        let mut inbound = receiver.inbound().unwrap();
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
