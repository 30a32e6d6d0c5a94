//! Keeps one connection's messages within the rate its server announced
//! (`AUTH_ACK.limits.messagesPerSecond` and `messageBurst`).
//!
//! The server counts every message in a token bucket and closes with 4029 far
//! past it. A client that re-sends its `SUB`s, `SYNC`s and replay at once
//! after a reconnect would be closed again on every attempt, so every message
//! waits here for its turn. The client's bucket is a little smaller and slower
//! than the server's (one token held back, 90% of the rate): messages paced
//! here can arrive bunched by the network and must still fit.

use std::time::{Duration, Instant};

/// One connection's token bucket.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// Messages per second; 0 sends at once.
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Option<Instant>,
    /// Messages sent before the limits were known (the `AUTH`).
    sent_unpaced: u32,
}

impl Pacer {
    /// Applies announced limits; messages already sent on this socket count.
    pub(crate) fn set_limits(&mut self, messages_per_second: u64, message_burst: u64) {
        if messages_per_second == 0 || message_burst == 0 {
            self.rate = 0.0;
            return;
        }
        let first = self.rate == 0.0;
        self.rate = messages_per_second as f64 * 0.9;
        self.capacity = (message_burst as f64 - 1.0).max(1.0);
        if first {
            self.tokens = (self.capacity - f64::from(self.sent_unpaced)).max(0.0);
            self.refilled_at = Some(Instant::now());
        }
        self.tokens = self.tokens.min(self.capacity);
    }

    /// How long the next message must wait (zero: send now), taking its token.
    pub(crate) fn take(&mut self, now: Instant) -> Duration {
        if self.rate == 0.0 {
            self.sent_unpaced = self.sent_unpaced.saturating_add(1);
            return Duration::ZERO;
        }
        let since = self.refilled_at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.tokens = (self.tokens + since * self.rate).min(self.capacity);
        self.refilled_at = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_burst_wait_at_the_rate() {
        let mut pacer = Pacer::default();
        let start = Instant::now();
        assert_eq!(pacer.take(start), Duration::ZERO, "before the limits: the AUTH goes at once");
        pacer.set_limits(10, 4);
        assert_eq!(pacer.take(start), Duration::ZERO);
        assert_eq!(pacer.take(start), Duration::ZERO, "the burst less one held back, less the AUTH");
        let third = pacer.take(start);
        assert!(third > Duration::from_millis(100) && third < Duration::from_millis(120), "{third:?}");
        let fourth = pacer.take(start);
        assert!(fourth > third, "each later message waits longer: {fourth:?}");
        let mut free = Pacer::default();
        free.set_limits(0, 0);
        assert!((0..1000).all(|_| free.take(start).is_zero()));
    }
}
