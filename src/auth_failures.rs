//! Failed authentications per client (IP, or IPv6 /64), in one-minute
//! windows, so token guessing, expensive RSA verifications and requests to
//! the identity provider cannot be used to burn CPU or flood the provider.
//!
//! A verification takes its slot *before* it runs ([`AuthFailures::try_reserve`])
//! and gives it back when it succeeds ([`AuthFailures::refund`]), so
//! concurrent attempts from one client can never exceed the limit.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::ip_slots::client_key;

/// Entries kept before old windows are swept.
const SWEEP_AT: usize = 100_000;

/// Counts authentication failures per IP.
#[derive(Debug)]
pub struct AuthFailures {
    per_minute: u32,
    windows: DashMap<IpAddr, (Instant, u32)>,
}

impl AuthFailures {
    /// Allows `per_minute` failures per IP per minute; 0 disables the limit.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: DashMap::new() }
    }

    /// Whether `ip` has used up its failures for the current minute.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.per_minute > 0
            && self
                .windows
                .get(&client_key(ip))
                .is_some_and(|w| w.0.elapsed() < Duration::from_secs(60) && w.1 >= self.per_minute)
    }

    /// Takes one failure slot of `ip` for a verification about to run; false
    /// (nothing taken) when the client has used up its failures this minute.
    /// The slot counts as a failure unless [`AuthFailures::refund`] gives it back.
    pub fn try_reserve(&self, ip: IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if self.windows.len() >= SWEEP_AT {
            self.windows.retain(|_, w| w.0.elapsed() < Duration::from_secs(60));
        }
        let mut window = self.windows.entry(client_key(ip)).or_insert((Instant::now(), 0));
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), 0);
        }
        if window.1 >= self.per_minute {
            return false;
        }
        window.1 += 1;
        true
    }

    /// Gives back a slot taken by [`AuthFailures::try_reserve`]: the verification
    /// succeeded, or failed through no fault of the client (a provider outage).
    pub fn refund(&self, ip: IpAddr) {
        if let Some(mut window) = self.windows.get_mut(&client_key(ip)) {
            window.1 = window.1.saturating_sub(1);
        }
    }

    /// Counts one failure of `ip` that no verification reserved (a bad admin credential).
    pub fn record_failure(&self, ip: IpAddr) {
        let _ = self.try_reserve(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_the_budget_until_the_minute_passes() {
        let limit = AuthFailures::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!limit.is_blocked(ip));
            assert!(limit.try_reserve(ip));
        }
        assert!(limit.is_blocked(ip));
        assert!(!limit.try_reserve(ip), "no slot past the budget");
        limit.refund(ip);
        assert!(limit.try_reserve(ip), "a success gives its slot back");
        assert!(!limit.is_blocked(other));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!limit.is_blocked(ip));
        assert!(!AuthFailures::new(0).is_blocked(ip));
    }
}
