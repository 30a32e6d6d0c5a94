//! Time, read in one place; everything else takes `now` as an argument.
//!
//! Connections read their time from the server's [`Clock`] (in
//! [`crate::ServerConfig`]): by default a [`MonotonicClock`] built on tokio's
//! `Instant`, so deadlines (expiry, auth timeout, idle, pings, revalidation)
//! never jump with the wall clock, and a test can drive a real server with
//! `tokio::time::pause()` and `advance()` instead of sleeping.

use std::fmt::Debug;

pub use syncgate_proto::time::{unix_ms, unix_secs};

/// A source of "now" in Unix milliseconds.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// Wall time at creation plus tokio's monotonic time since: it never goes
/// back, and it follows `tokio::time::pause()`/`advance()` in tests.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl MonotonicClock {
    /// A clock anchored at the current wall time. Call it inside a tokio
    /// runtime when the test pauses time (the anchor is tokio's `Instant`).
    pub fn new() -> Self {
        Self { base_ms: unix_ms(), base: tokio::time::Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}
