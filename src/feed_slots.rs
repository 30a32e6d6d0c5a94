//! How many change feeds one identity and one client address may hold open:
//! a feed holds a connection, a hub listener and a store scan's worth of
//! work, so neither a token nor an address may open them without bound.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use crate::ip_slots::client_key;

/// Open feeds per identity and per address.
#[derive(Debug, Default)]
pub(crate) struct FeedSlots {
    per_identity: usize,
    per_address: usize,
    identities: DashMap<String, usize>,
    addresses: DashMap<IpAddr, usize>,
}

/// One open feed's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct FeedSlot {
    slots: Arc<FeedSlots>,
    sub: String,
    ip: IpAddr,
}

/// Which bound a new feed would cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TooManyFeeds {
    /// The identity holds `per_identity` feeds.
    Identity(usize),
    /// The address holds `per_address` feeds.
    Address(usize),
}

impl FeedSlots {
    /// Bounds of `per_identity` and `per_address` open feeds (0: no bound).
    pub(crate) fn new(per_identity: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self { per_identity, per_address, ..Self::default() })
    }

    /// Takes a slot for a feed of `sub` from `ip`.
    pub(crate) fn take(self: &Arc<Self>, sub: &str, ip: IpAddr) -> Result<FeedSlot, TooManyFeeds> {
        let ip = client_key(ip);
        if !take(&self.addresses, ip, self.per_address) {
            return Err(TooManyFeeds::Address(self.per_address));
        }
        if !take(&self.identities, sub.to_string(), self.per_identity) {
            give_back(&self.addresses, &ip);
            return Err(TooManyFeeds::Identity(self.per_identity));
        }
        Ok(FeedSlot { slots: self.clone(), sub: sub.to_string(), ip })
    }
}

fn take<K: Eq + Hash>(counts: &DashMap<K, usize>, key: K, limit: usize) -> bool {
    let mut count = counts.entry(key).or_default();
    if limit > 0 && *count >= limit {
        return false;
    }
    *count += 1;
    true
}

fn give_back<K: Eq + Hash>(counts: &DashMap<K, usize>, key: &K) {
    if let Some(mut count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
    }
    counts.remove_if(key, |_, count| *count == 0);
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        give_back(&self.slots.addresses, &self.ip);
        give_back(&self.slots.identities, &self.sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_bounded_per_identity_and_per_address() {
        let slots = FeedSlots::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = slots.take("alice", a).unwrap();
        let _second = slots.take("alice", a).unwrap();
        assert_eq!(slots.take("alice", b).err(), Some(TooManyFeeds::Identity(2)));
        let _bob = slots.take("bob", a).unwrap();
        assert_eq!(slots.take("carol", a).err(), Some(TooManyFeeds::Address(3)));
        drop(first);
        assert!(slots.take("alice", b).is_ok(), "a slot comes back when its feed ends");
    }
}
