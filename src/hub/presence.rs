//! Who is present on each topic of this node, and the join/leave events
//! their fellow members receive.
//!
//! One node keeps its own members only. Across nodes the plan is the
//! backplane's: each node announces its members with heartbeats on a
//! presence subject and drops a remote member whose heartbeats stop, so no
//! central list is ever needed (not built yet: `PRESENCE` answers with this
//! node's members).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rmpv::Value;

use crate::protocol::{Member, ServerMessage, encode_server};
use crate::send_queue::{ConnId, Outbound, SendQueue};

/// Member bytes (subjects and info) in one `PRESENCE_STATE`.
pub(super) const PRESENCE_PAGE_BYTES: usize = 16 * 1024;

/// One present connection.
struct Present {
    sub: String,
    info: Option<Value>,
    queue: SendQueue,
}

/// Members per topic. A std mutex per topic: held to change and announce, never across an await.
#[derive(Default)]
pub(super) struct Presence {
    topics: DashMap<String, Arc<Mutex<BTreeMap<ConnId, Present>>>>,
}

impl Presence {
    /// Adds a member and announces it to the others (and to itself, so it
    /// sees its own `connId`). Joining again with the same `info` announces
    /// nothing (a re-join is no news); returns whether anything was announced.
    pub(super) fn join(&self, topic: &str, queue: SendQueue, sub: String, info: Option<Value>) -> bool {
        let members = self.topics.entry(topic.to_string()).or_default().clone();
        let mut members = members.lock().unwrap_or_else(|e| e.into_inner());
        let conn_id = queue.id();
        if members.get(&conn_id).is_some_and(|present| present.info == info) {
            return false;
        }
        let event = encode_server(&ServerMessage::PresenceJoin {
            topic: topic.to_string(),
            sub: sub.clone(),
            conn_id,
            info: info.clone(),
        });
        members.insert(conn_id, Present { sub, info, queue });
        for member in members.values() {
            member.queue.offer(Outbound::Message(event.clone()));
        }
        true
    }

    /// Removes connection `id` from `topic` and announces it (a no-op if it was not present).
    pub(super) fn leave(&self, topic: &str, id: ConnId) {
        let Some(members) = self.topics.get(topic).map(|m| m.value().clone()) else { return };
        let mut members = members.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gone) = members.remove(&id) else { return };
        let event =
            encode_server(&ServerMessage::PresenceLeave { topic: topic.to_string(), sub: gone.sub, conn_id: id });
        for member in members.values() {
            member.queue.offer(Outbound::Message(event.clone()));
        }
        let empty = members.is_empty();
        drop(members);
        if empty {
            self.topics.remove_if(topic, |_, m| m.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
        }
    }

    /// The members present on `topic` after connection `after`, up to
    /// [`PRESENCE_PAGE_BYTES`] of them, and whether more follow: an answer
    /// never grows with the size of the room.
    pub(super) fn members(&self, topic: &str, after: Option<ConnId>) -> (Vec<Member>, bool) {
        let Some(members) = self.topics.get(topic).map(|m| m.value().clone()) else { return (Vec::new(), false) };
        let members = members.lock().unwrap_or_else(|e| e.into_inner());
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let (mut page, mut bytes) = (Vec::new(), 0);
        for (conn_id, m) in members.range((from, std::ops::Bound::Unbounded)) {
            let size = m.sub.len() + m.info.as_ref().map_or(0, crate::protocol::encoded_len) + 32;
            if !page.is_empty() && bytes + size > PRESENCE_PAGE_BYTES {
                return (page, true);
            }
            bytes += size;
            page.push(Member { sub: m.sub.clone(), conn_id: *conn_id, info: m.info.clone() });
        }
        (page, false)
    }
}
