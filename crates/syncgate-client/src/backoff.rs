//! Jittered exponential backoff between reconnect attempts.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is uniformly drawn
/// from `[d/2, d]` where `d = min(max, initial * 2^attempt)`, so that many
/// clients dropped at once do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(250), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_jitter() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2) };
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let ceiling =
                (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20))).min(Duration::from_secs(2));
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| b.delay(5)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }
}
