//! A backplane node that loses chosen `CHANGE` publications on their way to
//! the other nodes, for the tests of gap recovery and catch-up.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use syncgate::backplane::{Backplane, BackplaneFuture, Control, Inbound, Subject};
use tokio::sync::mpsc;

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
    fn control(&self, control: Control) -> BackplaneFuture<'_, ()> {
        self.inner.control(control)
    }
    fn inbound(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.inner.inbound()
    }
}
