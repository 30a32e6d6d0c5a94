//! Request budgets for the HTTP API: the socket's message rate (and burst),
//! kept per identity and per client address, so a token or an address gets
//! no more through `/api/*` than through a WebSocket (where the budget is the
//! session's own). Token buckets, refilled by the time passed.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use dashmap::DashMap;

/// Buckets kept before idle (full) ones are let go.
const MAX_BUCKETS: usize = 100_000;

/// One budget.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Spender {
    Identity(String),
    Address(IpAddr),
}

/// Budgets of every identity and address that used the API lately.
#[derive(Debug)]
pub(crate) struct RequestBudgets {
    per_second: f64,
    burst: f64,
    buckets: DashMap<Spender, Mutex<Bucket>>,
}

impl RequestBudgets {
    /// `per_second` sustained (0: no limit), `burst` more at once.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst.max(1)), buckets: DashMap::new() }
    }

    /// `per_minute` sustained and at once (0: no limit): the vault's limit, counted like authentications.
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        Self { per_second: f64::from(per_minute) / 60.0, burst: f64::from(per_minute.max(1)), buckets: DashMap::new() }
    }

    /// Spends one request of `sub`'s budget; false when it is used up.
    pub(crate) fn identity(&self, sub: &str) -> bool {
        self.spend(Spender::Identity(sub.to_string()))
    }

    /// Spends one request of `ip`'s budget; false when it is used up.
    pub(crate) fn address(&self, ip: IpAddr) -> bool {
        self.spend(Spender::Address(crate::ip_slots::client_key(ip)))
    }

    fn spend(&self, spender: Spender) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_BUCKETS {
            self.forget_idle();
        }
        let now = Instant::now();
        let entry = self.buckets.entry(spender).or_insert_with(|| Mutex::new(Bucket { tokens: self.burst, at: now }));
        let mut bucket = entry.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Lets go of buckets that have refilled (their spenders went quiet).
    fn forget_idle(&self) {
        let now = Instant::now();
        self.buckets.retain(|_, bucket| {
            let bucket = bucket.get_mut().unwrap_or_else(|e| e.into_inner());
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let budgets = RequestBudgets::new(10, 3);
        assert!((0..3).all(|_| budgets.identity("alice")));
        assert!(!budgets.identity("alice"), "the burst is spent");
        assert!(budgets.identity("bob"), "budgets are per identity");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(budgets.identity("alice"), "refilled at 10 per second");
        let unlimited = RequestBudgets::new(0, 0);
        assert!((0..1000).all(|_| unlimited.address("127.0.0.1".parse().unwrap())));
    }
}
