//! A node's background work: the backplane pump (other nodes' publications,
//! changes and control messages), tombstone collection, the position check
//! that notices a collection's last change never arrived, and the periodic
//! read-back of revocations other nodes saved.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Node;
use crate::backplane::{ControlDelivery, Inbound, Inlets, Subject};
use crate::hub::{ChangeNotice, GAP_GRACE};

/// Starts the node's background tasks; they end with the shutdown token.
pub(super) fn start(node: &Arc<Node>, inbound: Option<Inlets>) {
    match inbound {
        Some(Inlets { messages, control }) => {
            node.tracker.spawn(pump(node.clone(), messages));
            node.tracker.spawn(pump_control(node.clone(), control));
            node.tracker.spawn(super::peers::announce(node.clone()));
        }
        None => {
            warn!("the backplane's inbound stream was taken by another server: other nodes cannot reach this one")
        }
    }
    node.tracker.spawn(collect_tombstones(node.clone()));
    node.tracker.spawn(check_positions(node.clone()));
    node.tracker.spawn(reload_revocations(node.clone()));
}

/// How often revocations saved by other nodes are read back.
const REVOCATION_RELOAD: Duration = Duration::from_secs(5);

/// Reads back revocations other nodes saved in a shared store, every few
/// seconds: a revocation holds on every node even when the backplane message
/// that announced it was lost.
async fn reload_revocations(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(REVOCATION_RELOAD) => {}
        }
        if let Err(e) = node.reload_revocations().await {
            warn!(error = %e, "saved revocations could not be read back");
        }
    }
}

/// Feeds other nodes' messages to the hub and carries out their control messages, until shutdown.
async fn pump(node: Arc<Node>, mut inbound: mpsc::Receiver<Inbound>) {
    loop {
        let message = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            message = inbound.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match message {
            Inbound::Message { subject: Subject::Topic(topic), payload } => {
                node.hub.deliver(&topic, payload);
            }
            Inbound::Message { subject: Subject::Changes(collection), payload } => {
                match ChangeNotice::from_payload(payload) {
                    Some(notice) => node.hub.receive_change(&collection, notice),
                    None => warn!(collection, "a malformed change notice from the backplane was dropped"),
                }
            }
            Inbound::Message { subject: Subject::Presence(topic), payload } => {
                node.hub.receive_presence(&topic, &payload);
            }
            Inbound::Announcement(announcement) => node.peers.heard(announcement, &node.rules_digest()),
            Inbound::Lost => {
                node.hub.lost();
                // Revocations announced while messages were lost are in the store.
                let reloading = node.clone();
                node.tracker.spawn(async move {
                    if let Err(e) = reloading.reload_revocations().await {
                        warn!(error = %e, "saved revocations could not be read back after a backplane loss");
                    }
                });
            }
        }
    }
}

/// Carries out other nodes' control messages and acknowledges each, on a
/// queue of their own: no amount of data delays a revocation.
async fn pump_control(node: Arc<Node>, mut control: mpsc::Receiver<ControlDelivery>) {
    loop {
        let delivery = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            delivery = control.recv() => match delivery {
                Some(delivery) => delivery,
                None => return,
            },
        };
        let closed = node.apply_control(&delivery.control);
        info!(control = ?delivery.control, from = %delivery.origin, closed, "control message from another node");
        delivery.ack();
    }
}

/// Collects expired tombstones hourly (and once at start), until shutdown.
async fn collect_tombstones(node: Arc<Node>) {
    let retention = u64::try_from(node.config.tombstone_retention.as_millis()).unwrap_or(u64::MAX);
    loop {
        let cutoff = crate::clock::unix_ms().saturating_sub(retention);
        match node.collections.collect_tombstones(cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(collected = n, "expired tombstones collected"),
            Err(e) => warn!(error = %e, "tombstone collection failed"),
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Every `position_check` interval, compares each followed collection's
/// delivered position with the store's: a gap is otherwise noticed only when
/// a *later* change arrives, so a lost last change (a dropped backplane
/// message, a node killed between its commit and its publication) would
/// never reach the watchers. A feed found behind gets the gap grace to
/// receive what may still be on its way (a commit of this node finishing),
/// then its watchers catch up from the store.
async fn check_positions(node: Arc<Node>) {
    let every = node.config.position_check;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut behind = Vec::new();
        for (collection, delivered) in node.hub.followed() {
            match node.config.store.collection_position(&collection).await {
                Ok(position) if position > delivered.unwrap_or(0) => behind.push((collection, position)),
                Ok(_) => {}
                Err(e) => warn!(collection, error = %e, "could not read a followed collection's position"),
            }
        }
        if behind.is_empty() {
            continue;
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAP_GRACE) => {}
        }
        for (collection, position) in behind {
            node.hub.check_position(&collection, position);
        }
    }
}
