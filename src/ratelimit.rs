//! Failed authentications per client IP, in one-minute windows, so token
//! guessing and expensive RSA verifications cannot be used to burn CPU.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

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
            && self.windows.get(&ip).is_some_and(|w| w.0.elapsed() < Duration::from_secs(60) && w.1 >= self.per_minute)
    }

    /// Counts one failure of `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        if self.windows.len() >= SWEEP_AT {
            self.windows.retain(|_, w| w.0.elapsed() < Duration::from_secs(60));
        }
        let mut window = self.windows.entry(ip).or_insert((Instant::now(), 0));
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), 0);
        }
        window.1 = window.1.saturating_add(1);
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
            limit.record_failure(ip);
        }
        assert!(limit.is_blocked(ip));
        assert!(!limit.is_blocked(other));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!limit.is_blocked(ip));
        assert!(!AuthFailures::new(0).is_blocked(ip));
    }
}
