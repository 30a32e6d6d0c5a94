//! Which address a request comes from, behind load balancers.
//!
//! A peer inside `--trusted-proxies` is a balancer: the client is the
//! rightmost address of its `X-Forwarded-For` header that is not itself a
//! trusted proxy (each proxy appends the address it received from, so the
//! addresses to the left of that one are whatever the client claimed, and
//! spoofable). Any other peer is the client itself, whatever it sends. Every
//! per-address limit (connections, unauthenticated connections, failed
//! authentications, API budgets) applies to the address found here.
//!
//! The PROXY protocol is not read: balancers that speak HTTP add
//! `X-Forwarded-For`, and a TCP balancer in front of syncgate must terminate
//! HTTP or pass the client address some other way.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use ipnet::IpNet;

/// Addresses in one `X-Forwarded-For` chain looked at, at most.
const MAX_HOPS: usize = 32;

/// Whether `peer` is one of the trusted proxies.
pub(crate) fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// The client's address for a request from `peer` with `headers`.
pub(crate) fn client_address(trusted: &[IpNet], peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
    if !is_trusted(trusted, peer.ip()) {
        return peer;
    }
    let hops: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(ip) = parse_hop(hop.trim()) else {
            // Garbage where an address should be: nothing to its left can be trusted.
            return peer;
        };
        if !is_trusted(trusted, ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

/// An address as balancers write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let balancer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let outsider: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let h = headers(&["198.51.100.7"]);
        assert_eq!(client_address(&trusted, balancer, &h).ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_address(&trusted, outsider, &h), outsider, "an untrusted peer is the client");
        assert_eq!(client_address(&[], balancer, &h), balancer, "no trusted proxies: the socket's peer");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.1/32".parse().unwrap()];
        let balancer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let spoofed = headers(&["1.1.1.1, 198.51.100.7", "192.0.2.1, 10.9.9.9"]);
        assert_eq!(client_address(&trusted, balancer, &spoofed).ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        let with_ports = headers(&["[2001:db8::5]:443"]);
        assert_eq!(client_address(&trusted, balancer, &with_ports).ip(), "2001:db8::5".parse::<IpAddr>().unwrap());
        let garbage = headers(&["1.1.1.1, not-an-ip"]);
        assert_eq!(client_address(&trusted, balancer, &garbage), balancer);
        assert_eq!(client_address(&trusted, balancer, &HeaderMap::new()), balancer, "no header: the balancer");
    }
}
