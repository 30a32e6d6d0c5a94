//! Who is present on each topic, on this node and on the others, and the
//! join/leave events this node's members receive.
//!
//! Across nodes no central list exists: each node tells the others of its
//! members' joins and leaves as they happen ([`PresenceEvent`] on the
//! topic's presence subject), and every [`ANNOUNCE_EVERY`](crate::node)
//! interval repeats its full member list per topic. A remote member not
//! repeated for three intervals (its node died, or its leave was lost) is
//! announced as left. Guarantees: a member's join reaches the other nodes'
//! members at once unless the backplane loses it, and within one interval
//! otherwise; a member of a dead node leaves within three intervals;
//! `PRESENCE_STATE` lists every member this node knows of, in `connId`
//! order (connection ids are unique across the cluster).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::protocol::{Member, ServerMessage, encode_server};
use crate::send_queue::{ConnId, Outbound, SendQueue};

/// Member bytes (subjects and info) in one `PRESENCE_STATE`.
pub(super) const PRESENCE_PAGE_BYTES: usize = 16 * 1024;
/// Members in one backplane member list.
const MEMBERS_PER_MESSAGE: usize = 256;
/// Largest presence message accepted from the backplane.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One present connection of this node.
struct Present {
    sub: String,
    info: Option<Value>,
    queue: SendQueue,
}

/// One present connection of another node.
struct Remote {
    node: String,
    sub: String,
    info: Option<Value>,
    seen: Instant,
}

/// Everyone present on one topic.
#[derive(Default)]
struct Room {
    local: BTreeMap<ConnId, Present>,
    remote: BTreeMap<ConnId, Remote>,
}

impl Room {
    fn tell_local(&self, event: &bytes::Bytes) {
        for member in self.local.values() {
            member.queue.offer(Outbound::Message(event.clone()));
        }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// What one node tells the others about presence on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum PresenceEvent {
    /// A member joined (or changed its info).
    Join { node: String, conn_id: ConnId, sub: String, info: Option<Value> },
    /// A member left.
    Leave { node: String, conn_id: ConnId, sub: String },
    /// Some of a node's members, repeated every interval.
    Members { node: String, members: Vec<(ConnId, String, Option<Value>)> },
}

impl PresenceEvent {
    pub(super) fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(rmp_serde::to_vec_named(self).expect("a presence event always encodes"))
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_EVENT_BYTES {
            return None;
        }
        rmp_serde::from_slice(bytes).ok()
    }
}

/// Members per topic. A std mutex per topic: held to change and announce, never across an await.
#[derive(Default)]
pub(super) struct Presence {
    topics: DashMap<String, Arc<Mutex<Room>>>,
}

fn join_event(topic: &str, conn_id: ConnId, sub: &str, info: &Option<Value>) -> bytes::Bytes {
    encode_server(&ServerMessage::PresenceJoin {
        topic: topic.to_string(),
        sub: sub.to_string(),
        conn_id,
        info: info.clone(),
    })
}

fn leave_event(topic: &str, conn_id: ConnId, sub: String) -> bytes::Bytes {
    encode_server(&ServerMessage::PresenceLeave { topic: topic.to_string(), sub, conn_id })
}

impl Presence {
    fn room(&self, topic: &str) -> Arc<Mutex<Room>> {
        self.topics.entry(topic.to_string()).or_default().clone()
    }

    fn existing(&self, topic: &str) -> Option<Arc<Mutex<Room>>> {
        self.topics.get(topic).map(|r| r.value().clone())
    }

    fn drop_if_empty(&self, topic: &str) {
        self.topics.remove_if(topic, |_, room| room.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
    }

    /// Adds a member and announces it to the others (and to itself, so it
    /// sees its own `connId`). Joining again with the same `info` announces
    /// nothing (a re-join is no news); returns whether anything was announced.
    pub(super) fn join(&self, topic: &str, queue: SendQueue, sub: String, info: Option<Value>) -> bool {
        let room = self.room(topic);
        let mut room = room.lock().unwrap_or_else(|e| e.into_inner());
        let conn_id = queue.id();
        if room.local.get(&conn_id).is_some_and(|present| present.info == info) {
            return false;
        }
        let event = join_event(topic, conn_id, &sub, &info);
        room.local.insert(conn_id, Present { sub, info, queue });
        room.tell_local(&event);
        true
    }

    /// Removes connection `id` from `topic` and announces it; returns the
    /// member's subject if it was present.
    pub(super) fn leave(&self, topic: &str, id: ConnId) -> Option<String> {
        let room = self.existing(topic)?;
        let mut guard = room.lock().unwrap_or_else(|e| e.into_inner());
        let gone = guard.local.remove(&id)?;
        guard.tell_local(&leave_event(topic, id, gone.sub.clone()));
        drop(guard);
        self.drop_if_empty(topic);
        Some(gone.sub)
    }

    /// The members present on `topic` (here and on the other nodes) after
    /// connection `after`, up to [`PRESENCE_PAGE_BYTES`] of them, and whether
    /// more follow: an answer never grows with the size of the room.
    pub(super) fn members(&self, topic: &str, after: Option<ConnId>) -> (Vec<Member>, bool) {
        let Some(room) = self.existing(topic) else { return (Vec::new(), false) };
        let room = room.lock().unwrap_or_else(|e| e.into_inner());
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let local = room.local.range((from, std::ops::Bound::Unbounded)).map(|(id, m)| (*id, &m.sub, &m.info));
        let remote = room.remote.range((from, std::ops::Bound::Unbounded)).map(|(id, m)| (*id, &m.sub, &m.info));
        let mut all: Vec<_> = local.chain(remote).collect();
        all.sort_by_key(|(id, _, _)| *id);
        let (mut page, mut bytes) = (Vec::new(), 0);
        for (conn_id, sub, info) in all {
            let size = sub.len() + info.as_ref().map_or(0, crate::protocol::encoded_len) + 32;
            if !page.is_empty() && bytes + size > PRESENCE_PAGE_BYTES {
                return (page, true);
            }
            bytes += size;
            page.push(Member { sub: sub.clone(), conn_id, info: info.clone() });
        }
        (page, false)
    }

    /// Takes in what another node said about `topic`.
    pub(super) fn receive(&self, topic: &str, event: PresenceEvent) {
        let room = self.room(topic);
        let mut guard = room.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            PresenceEvent::Join { node, conn_id, sub, info } => {
                remote_join(&mut guard, topic, node, conn_id, sub, info)
            }
            PresenceEvent::Members { node, members } => {
                for (conn_id, sub, info) in members {
                    remote_join(&mut guard, topic, node.clone(), conn_id, sub, info);
                }
            }
            PresenceEvent::Leave { conn_id, .. } => {
                if let Some(gone) = guard.remote.remove(&conn_id) {
                    guard.tell_local(&leave_event(topic, conn_id, gone.sub));
                }
            }
        }
        drop(guard);
        self.drop_if_empty(topic);
    }

    /// This node's members, per topic, in backplane-sized lists.
    pub(super) fn local_lists(&self, node: &str) -> Vec<(String, PresenceEvent)> {
        let rooms: Vec<(String, Arc<Mutex<Room>>)> =
            self.topics.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
        let mut lists = Vec::new();
        for (topic, room) in rooms {
            let room = room.lock().unwrap_or_else(|e| e.into_inner());
            let members: Vec<_> = room.local.iter().map(|(id, m)| (*id, m.sub.clone(), m.info.clone())).collect();
            for chunk in members.chunks(MEMBERS_PER_MESSAGE) {
                lists.push((topic.clone(), PresenceEvent::Members { node: node.to_string(), members: chunk.to_vec() }));
            }
        }
        lists
    }

    /// Announces as left every remote member not heard of for `after`, or
    /// (with `node`) every member of that node.
    pub(super) fn expire(&self, after: Duration, node: Option<&str>) {
        let rooms: Vec<(String, Arc<Mutex<Room>>)> =
            self.topics.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
        for (topic, room) in rooms {
            let mut guard = room.lock().unwrap_or_else(|e| e.into_inner());
            let stale: Vec<ConnId> = guard
                .remote
                .iter()
                .filter(|(_, m)| node.map_or(m.seen.elapsed() > after, |node| m.node == node))
                .map(|(id, _)| *id)
                .collect();
            for conn_id in stale {
                if let Some(gone) = guard.remote.remove(&conn_id) {
                    guard.tell_local(&leave_event(&topic, conn_id, gone.sub));
                }
            }
            drop(guard);
            self.drop_if_empty(&topic);
        }
    }
}

fn remote_join(room: &mut Room, topic: &str, node: String, conn_id: ConnId, sub: String, info: Option<Value>) {
    if room.local.contains_key(&conn_id) {
        return;
    }
    let known = room.remote.get(&conn_id).is_some_and(|m| m.sub == sub && m.info == info);
    if !known {
        room.tell_local(&join_event(topic, conn_id, &sub, &info));
    }
    room.remote.insert(conn_id, Remote { node, sub, info, seen: Instant::now() });
}
