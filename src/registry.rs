//! Who is connected: authenticated connections by subject, for the admin API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::auth::Identity;
use crate::send_queue::ConnId;

/// An order for one connection from outside its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseOrder {
    /// Close with this code and reason.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Where orders for one connection arrive from outside its task. The first
/// order is kept (a later one finds the connection closing already), so a
/// connection holds one small slot rather than a channel and its buffer.
#[derive(Debug, Default)]
pub(crate) struct CloseSlot {
    order: Mutex<Option<CloseOrder>>,
    /// Set with `order`: lets [`CloseSlot::try_take`], called before every
    /// frame a busy connection writes, skip the lock while nothing waits.
    waiting: AtomicBool,
    arrived: Notify,
}

impl CloseSlot {
    /// Leaves an order for the connection (unless one is waiting already).
    pub(crate) fn send(&self, order: CloseOrder) {
        self.order.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(order);
        self.waiting.store(true, Ordering::Release);
        self.arrived.notify_one();
    }

    /// The order, if one is waiting (for a connection too busy writing to wait on [`CloseSlot::recv`]).
    pub(crate) fn try_take(&self) -> Option<CloseOrder> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        self.order.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The order, once one arrives. Cancel-safe: an order stays until taken.
    pub(crate) async fn recv(&self) -> CloseOrder {
        loop {
            if let Some(order) = self.order.lock().unwrap_or_else(PoisonError::into_inner).take() {
                return order;
            }
            self.arrived.notified().await;
        }
    }
}

struct Entry {
    sub: String,
    jti: Option<String>,
    issued_at: Option<u64>,
    close_slot: Arc<CloseSlot>,
}

/// Authenticated connections of one server.
#[derive(Default)]
pub(crate) struct Registry {
    connections: DashMap<ConnId, Entry>,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records (or updates, after a refresh) an authenticated connection.
    pub(crate) fn register(&self, id: ConnId, identity: &Identity, close_slot: Arc<CloseSlot>) {
        let entry =
            Entry { sub: identity.sub.clone(), jti: identity.jti.clone(), issued_at: identity.issued_at, close_slot };
        self.connections.insert(id, entry);
    }

    /// Forgets a connection that ended.
    pub(crate) fn unregister(&self, id: ConnId) {
        self.connections.remove(&id);
    }

    /// Closes every connection whose identity matches; returns how many were told.
    pub(crate) fn close_matching(
        &self,
        code: u16,
        reason: &str,
        matches: impl Fn(&str, Option<&str>, Option<u64>) -> bool,
    ) -> usize {
        let targets: Vec<Arc<CloseSlot>> = self
            .connections
            .iter()
            .filter(|e| matches(&e.sub, e.jti.as_deref(), e.issued_at))
            .map(|e| e.close_slot.clone())
            .collect();
        for target in &targets {
            target.send(CloseOrder::Close { code, reason: reason.to_string() });
        }
        targets.len()
    }

    /// Open authenticated connections.
    pub(crate) fn len(&self) -> usize {
        self.connections.len()
    }

    /// `(total, connections per subject)`.
    pub(crate) fn counts(&self) -> (usize, BTreeMap<String, usize>) {
        let mut by_sub = BTreeMap::new();
        for entry in self.connections.iter() {
            *by_sub.entry(entry.sub.clone()).or_insert(0) += 1;
        }
        (self.connections.len(), by_sub)
    }
}
