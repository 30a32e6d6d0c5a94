//! Helpers of the tests with several nodes: a backplane node that loses
//! chosen `CHANGE` publications on their way to the other nodes (gap
//! recovery, catch-up), a write of collection `c`, and a reader of its changes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rmpv::Value;
use syncgate::backplane::{Announcement, Backplane, BackplaneFuture, Control, Inlets, Subject};
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};

use super::RawWs;

/// An `OP_BATCH` (id `n`) writing `k<n>` = `n` into collection `c`.
pub fn put(n: u32) -> ClientMessage {
    let op = RawOp {
        op_id: Value::from(n),
        collection: "c".into(),
        key: format!("k{n}"),
        value: Value::from(n),
        hlc: format!("{}:0:writer", super::now() * 1000 + u64::from(n)),
    };
    ClientMessage::OpBatch { id: u64::from(n), ops: vec![OpInput::Op(op)] }
}

/// Reads `CHANGE`s of `c` until `count` keys arrived; returns them in arrival order.
pub async fn changed_keys(ws: &mut RawWs, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    while keys.len() < count {
        if let ServerMessage::Change { records, .. } = ws.msg_where(|m| matches!(m, ServerMessage::Change { .. })).await
        {
            keys.extend(records.into_iter().map(|r| r.key));
        }
    }
    keys
}

/// Drops the `CHANGE` publications whose 1-based numbers are in `drop`.
pub struct Lossy {
    pub inner: Box<dyn Backplane>,
    pub changes: AtomicUsize,
    pub drop: Vec<usize>,
}

impl Lossy {
    pub fn new(inner: impl Backplane, drop: Vec<usize>) -> Self {
        Self { inner: Box::new(inner), changes: AtomicUsize::new(0), drop }
    }
}

impl Backplane for Lossy {
    fn interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        self.inner.interest(subject)
    }
    fn drop_interest<'a>(&'a self, subject: &'a Subject) -> BackplaneFuture<'a, ()> {
        self.inner.drop_interest(subject)
    }
    fn publish(&self, subject: &Subject, payload: Bytes) {
        if let Subject::Changes(_) = subject {
            let n = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.drop.contains(&n) {
                return;
            }
        }
        self.inner.publish(subject, payload)
    }
    fn control(&self, control: Control) -> BackplaneFuture<'_, usize> {
        self.inner.control(control)
    }
    fn announce(&self, announcement: &Announcement) {
        self.inner.announce(announcement)
    }
    fn inbound(&self) -> Option<Inlets> {
        self.inner.inbound()
    }
}
