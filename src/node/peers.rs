//! The other nodes of the cluster, as their announcements show them.
//!
//! Every node announces itself on the backplane every [`ANNOUNCE_EVERY`]
//! (id, version, rules digest, connections); a node not heard from for
//! three intervals is gone: it leaves `/admin/nodes`, and its presence
//! members are announced as left. A node whose rules digest differs from
//! this one's is logged as drift (once per digest it changes to).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use super::Node;
use crate::backplane::Announcement;

/// How often a node announces itself (and refreshes its presence members).
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// A node not heard from for this long is gone.
pub const GONE_AFTER: Duration = Duration::from_secs(6);

/// One live node, as `/admin/nodes` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Its `--node-id`.
    pub id: String,
    /// The syncgate version it runs.
    pub version: String,
    /// The digest of the rules it enforces.
    pub rules_digest: String,
    /// Its open connections.
    pub connections: u64,
    /// When it started (Unix milliseconds).
    pub started_at: u64,
    /// Milliseconds since it was last heard from (0 for this node).
    pub last_seen_ms: u64,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub this_node: bool,
    /// Whether its rules digest differs from this node's.
    pub rules_drift: bool,
}

/// The nodes heard from recently.
#[derive(Default)]
pub(crate) struct Peers {
    heard: Mutex<BTreeMap<String, (Announcement, Instant)>>,
}

impl Peers {
    /// Records an announcement; warns when the other node's rules differ from ours.
    pub(crate) fn heard(&self, announcement: Announcement, ours: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let previous = heard.get(&announcement.node_id).map(|(a, _)| a.rules_digest.clone());
        if previous.is_none() {
            info!(node = %announcement.node_id, version = %announcement.version, "a node joined the cluster");
        }
        if announcement.rules_digest != ours && previous.as_ref() != Some(&announcement.rules_digest) {
            warn!(
                node = %announcement.node_id,
                theirs = %announcement.rules_digest,
                ours = %ours,
                "another node enforces different rules: reload the same rules file on every node"
            );
        }
        heard.insert(announcement.node_id.clone(), (announcement, Instant::now()));
    }

    /// Forgets nodes not heard from for [`GONE_AFTER`]; returns their ids.
    fn expire(&self) -> Vec<String> {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> =
            heard.iter().filter(|(_, (_, at))| at.elapsed() > GONE_AFTER).map(|(id, _)| id.clone()).collect();
        for id in &gone {
            heard.remove(id);
            warn!(node = %id, "a node stopped announcing itself: counted as gone");
        }
        gone
    }

    /// The other live nodes.
    fn others(&self, our_digest: &str) -> Vec<NodeView> {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        heard
            .values()
            .filter(|(_, at)| at.elapsed() <= GONE_AFTER)
            .map(|(a, at)| NodeView {
                id: a.node_id.clone(),
                version: a.version.clone(),
                rules_digest: a.rules_digest.clone(),
                connections: a.connections,
                started_at: a.started_at,
                last_seen_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                this_node: false,
                rules_drift: a.rules_digest != our_digest,
            })
            .collect()
    }
}

impl Node {
    /// What this node announces of itself.
    fn announcement(&self) -> Announcement {
        Announcement {
            node_id: self.config.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            rules_digest: self.rules_digest().to_string(),
            connections: self.registry.len() as u64,
            started_at: self.started_at,
        }
    }

    /// Every live node of the cluster, this one first (`GET /admin/nodes`).
    pub(crate) fn nodes(&self) -> Vec<NodeView> {
        let me = self.announcement();
        let mut nodes = vec![NodeView {
            id: me.node_id,
            version: me.version,
            rules_digest: me.rules_digest.clone(),
            connections: me.connections,
            started_at: me.started_at,
            last_seen_ms: 0,
            this_node: true,
            rules_drift: false,
        }];
        nodes.extend(self.peers.others(&me.rules_digest));
        nodes
    }
}

/// Announces this node every [`ANNOUNCE_EVERY`], refreshes its presence
/// members on the other nodes, and lets go of nodes (and their members) that
/// stopped announcing, until shutdown.
pub(super) async fn announce(node: Arc<Node>) {
    loop {
        node.config.backplane.announce(&node.announcement());
        node.hub.refresh_presence();
        for gone in node.peers.expire() {
            node.hub.node_gone(&gone);
        }
        node.hub.expire_presence(GONE_AFTER);
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
    }
}
