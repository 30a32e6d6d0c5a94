//! Who is connected: authenticated connections by subject, for the admin API.

use std::collections::BTreeMap;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::outbox::ConnId;

/// An order for one connection from outside its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close with this code and reason.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

struct Entry {
    sub: String,
    jti: Option<String>,
    issued_at: Option<u64>,
    control: mpsc::Sender<Control>,
}

/// Authenticated connections of one server.
#[derive(Default)]
pub struct Registry {
    connections: DashMap<ConnId, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or updates, after a refresh) an authenticated connection.
    pub fn register(&self, id: ConnId, identity: &Identity, control: mpsc::Sender<Control>) {
        let entry =
            Entry { sub: identity.sub.clone(), jti: identity.jti.clone(), issued_at: identity.issued_at, control };
        self.connections.insert(id, entry);
    }

    /// Forgets a connection that ended.
    pub fn unregister(&self, id: ConnId) {
        self.connections.remove(&id);
    }

    /// Closes every connection whose identity matches; returns how many were told.
    pub fn close_matching(
        &self,
        code: u16,
        reason: &str,
        matches: impl Fn(&str, Option<&str>, Option<u64>) -> bool,
    ) -> usize {
        let targets: Vec<mpsc::Sender<Control>> = self
            .connections
            .iter()
            .filter(|e| matches(&e.sub, e.jti.as_deref(), e.issued_at))
            .map(|e| e.control.clone())
            .collect();
        targets.iter().filter(|c| c.try_send(Control::Close { code, reason: reason.to_string() }).is_ok()).count()
    }

    /// `(total, connections per subject)`.
    pub fn counts(&self) -> (usize, BTreeMap<String, usize>) {
        let mut by_sub = BTreeMap::new();
        for entry in self.connections.iter() {
            *by_sub.entry(entry.sub.clone()).or_insert(0) += 1;
        }
        (self.connections.len(), by_sub)
    }
}
