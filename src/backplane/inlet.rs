//! A node's bounded inbound queue: when it is full, the newest message is
//! dropped and an [`Inbound::Lost`] follows as soon as there is room, so a
//! slow node learns that it must catch up instead of silently missing changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::Inbound;

/// Messages a node's inbound queue holds before newer ones are dropped (and
/// [`Inbound::Lost`] is announced).
pub(crate) const INBOUND_QUEUE: usize = 64 * 1024;

/// One node's inbound queue, and whether an announcement of a loss is on its way.
#[derive(Debug)]
pub(crate) struct Inlet {
    queue: mpsc::Sender<Inbound>,
    announcing: AtomicBool,
}

impl Inlet {
    /// A queue of `capacity` messages and its receiving end.
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Inbound>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        (Arc::new(Self { queue, announcing: AtomicBool::new(false) }), rx)
    }

    /// Queues `message`; when the queue is full, drops it and makes sure an
    /// [`Inbound::Lost`] follows as soon as there is room (even if nothing
    /// else is ever sent), without making the sender wait.
    pub(crate) fn offer(self: &Arc<Self>, message: Inbound) {
        if self.queue.try_send(message).is_err() {
            self.announce_loss();
        }
    }

    /// Makes sure an [`Inbound::Lost`] is queued as soon as there is room.
    pub(crate) fn announce_loss(self: &Arc<Self>) {
        if self.announcing.swap(true, Ordering::AcqRel) {
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
