//! Connections per client IP: all of them, and those not yet authenticated.
//!
//! A slot is taken at accept (and an unauthenticated slot at the upgrade) and
//! given back when its guard drops, so no path can leak a count. IPv6 clients
//! are counted by their /64 ([`client_key`]): one host commonly holds a whole
//! /64, so counting single addresses would not limit it at all.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use dashmap::DashMap;

/// The key a client is counted under: an IPv4 address (also when mapped
/// into IPv6), or the /64 prefix of an IPv6 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// How many connections one IP may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerIpLimits {
    /// Open connections per IP (0: unlimited).
    pub connections: usize,
    /// Unauthenticated WebSockets per IP (0: unlimited).
    pub unauthenticated: usize,
}

impl Default for PerIpLimits {
    fn default() -> Self {
        Self { connections: 2048, unauthenticated: 1024 }
    }
}

#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    unauthenticated: usize,
}

/// Per-IP counters shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub struct IpSlots {
    limits: PerIpLimits,
    counts: DashMap<IpAddr, Counts>,
}

/// Which counter a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Unauthenticated,
}

/// Gives its slot back when dropped.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<IpSlots>,
    ip: IpAddr,
    kind: Kind,
}

impl IpSlots {
    /// Counters enforcing `limits`.
    pub fn new(limits: PerIpLimits) -> Arc<Self> {
        Arc::new(Self { limits, counts: DashMap::new() })
    }

    /// Takes a connection slot for `ip`, or `None` when it holds its limit.
    pub fn connection(self: &Arc<Self>, ip: IpAddr) -> Option<SlotGuard> {
        self.take(ip, Kind::Connection)
    }

    /// Takes an unauthenticated slot for `ip`, or `None` when it holds its limit.
    pub fn unauthenticated(self: &Arc<Self>, ip: IpAddr) -> Option<SlotGuard> {
        self.take(ip, Kind::Unauthenticated)
    }

    fn take(self: &Arc<Self>, ip: IpAddr, kind: Kind) -> Option<SlotGuard> {
        let limit = match kind {
            Kind::Connection => self.limits.connections,
            Kind::Unauthenticated => self.limits.unauthenticated,
        };
        let ip = client_key(ip);
        let mut counts = self.counts.entry(ip).or_default();
        let count = match kind {
            Kind::Connection => &mut counts.connections,
            Kind::Unauthenticated => &mut counts.unauthenticated,
        };
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(SlotGuard { slots: self.clone(), ip, kind })
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let ip = self.ip;
        if let Some(mut counts) = self.slots.counts.get_mut(&ip) {
            match self.kind {
                Kind::Connection => counts.connections = counts.connections.saturating_sub(1),
                Kind::Unauthenticated => counts.unauthenticated = counts.unauthenticated.saturating_sub(1),
            }
        }
        self.slots.counts.remove_if(&ip, |_, c| c.connections == 0 && c.unauthenticated == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_ip_and_returned_on_drop() {
        let slots = IpSlots::new(PerIpLimits { connections: 2, unauthenticated: 1 });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.connection(a).unwrap();
        let _second = slots.connection(a).unwrap();
        assert!(slots.connection(a).is_none());
        assert!(slots.connection(b).is_some(), "another IP is not affected");
        drop(first);
        assert!(slots.connection(a).is_some());
        let pending = slots.unauthenticated(a).unwrap();
        assert!(slots.unauthenticated(a).is_none());
        drop(pending);
        assert!(slots.unauthenticated(a).is_some());
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let slots = IpSlots::new(PerIpLimits { connections: 2, unauthenticated: 1 });
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = slots.connection(one).unwrap();
        let _b = slots.connection(same_64).unwrap();
        assert!(slots.connection(one).is_none(), "both addresses share one /64's budget");
        assert!(slots.connection(other_64).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
