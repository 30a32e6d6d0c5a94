//! Hybrid logical clocks: `"<millis>:<counter>:<nodeId>"`.
//!
//! A writer stamps each op with its HLC and the server keeps it: an offline
//! edit keeps the time it was made. Timestamps are totally ordered by
//! `(millis, counter, node)`, so two replicas always agree on which write is
//! last (the node id breaks ties). The server's own clock absorbs every
//! timestamp it accepts, so anything it stamps later sorts after them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// One hybrid logical timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hlc {
    /// Wall-clock milliseconds since the Unix epoch (as the writer saw it).
    pub millis: u64,
    /// Logical counter for events within the same millisecond.
    pub counter: u32,
    /// The writer's node id: 1 to 64 bytes, no control characters.
    pub node: String,
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.millis, self.counter, self.node.as_str()).cmp(&(other.millis, other.counter, other.node.as_str()))
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.millis, self.counter, self.node)
    }
}

/// Why a string is not an HLC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hlc must be \"<millis>:<counter>:<nodeId>\": {0}")]
pub struct HlcError(&'static str);

impl FromStr for Hlc {
    type Err = HlcError;

    fn from_str(s: &str) -> Result<Self, HlcError> {
        let mut parts = s.splitn(3, ':');
        let millis = parts.next().ok_or(HlcError("missing millis"))?;
        let counter = parts.next().ok_or(HlcError("missing counter"))?;
        let node = parts.next().ok_or(HlcError("missing node id"))?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(millis) || !digits(counter) {
            return Err(HlcError("millis and counter must be decimal integers"));
        }
        let millis = millis.parse().map_err(|_| HlcError("millis out of range"))?;
        let counter = counter.parse().map_err(|_| HlcError("counter out of range"))?;
        if node.is_empty() || node.len() > 64 || node.chars().any(char::is_control) {
            return Err(HlcError("node id must be 1 to 64 bytes without control characters"));
        }
        Ok(Hlc { millis, counter, node: node.to_string() })
    }
}

/// The last-writer-wins rule: whether a write `(hlc, value)` replaces the
/// current one. Timestamps decide; equal timestamps (a writer that reused
/// one) fall back to the MessagePack encoding of the values, so every replica
/// picks the same winner whatever order the writes arrive in.
pub fn replaces(new_hlc: &Hlc, new_value: &[u8], current_hlc: &Hlc, current_value: &[u8]) -> bool {
    match new_hlc.cmp(current_hlc) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => new_value > current_value,
    }
}

/// The server's clock: monotonic, and never behind a timestamp it accepted.
#[derive(Debug)]
pub struct HlcClock {
    node: String,
    /// `(millis, counter)` of the latest timestamp issued or observed. A std
    /// mutex: it is held for a comparison, never across an await.
    last: Mutex<(u64, u32)>,
}

impl HlcClock {
    /// A clock for `node`, starting at `start` (e.g. restored from disk).
    pub fn new(node: impl Into<String>, start: (u64, u32)) -> Self {
        Self { node: node.into(), last: Mutex::new(start) }
    }

    /// A fresh timestamp at wall time `now_ms`, after everything seen so far.
    pub fn tick(&self, now_ms: u64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if now_ms > last.0 { (now_ms, 0) } else { (last.0, last.1.saturating_add(1)) };
        Hlc { millis: last.0, counter: last.1, node: self.node.clone() }
    }

    /// Absorbs an accepted timestamp so later ticks sort after it.
    pub fn observe(&self, seen: &Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if (seen.millis, seen.counter) > *last {
            *last = (seen.millis, seen.counter);
        }
    }

    /// The latest `(millis, counter)`, for persisting.
    pub fn last(&self) -> (u64, u32) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_formats_and_rejects() {
        let h: Hlc = "1800000000000:3:node:with:colons".parse().unwrap();
        assert_eq!((h.millis, h.counter, h.node.as_str()), (1_800_000_000_000, 3, "node:with:colons"));
        assert_eq!(h.to_string(), "1800000000000:3:node:with:colons");
        for bad in [
            "",
            "1",
            "1:2",
            "1:2:",
            "a:2:n",
            "1:-2:n",
            "1:2:\n",
            "99999999999999999999999:0:n",
            "1:4294967296:n",
            " 1:2:n",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_clock_is_monotonic_and_absorbs() {
        let clock = HlcClock::new("srv", (0, 0));
        let a = clock.tick(100);
        let b = clock.tick(100);
        let c = clock.tick(50);
        assert!(a < b && b < c);
        clock.observe(&"500:7:x".parse().unwrap());
        let d = clock.tick(100);
        assert_eq!((d.millis, d.counter), (500, 8));
    }

    proptest! {
        #[test]
        fn order_is_total_and_round_trips(m1 in 0u64..5, c1 in 0u32..3, n1 in "[a-c]{1,2}", m2 in 0u64..5, c2 in 0u32..3, n2 in "[a-c]{1,2}") {
            let a = Hlc { millis: m1, counter: c1, node: n1 };
            let b = Hlc { millis: m2, counter: c2, node: n2 };
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            prop_assert_eq!(a.to_string().parse::<Hlc>().unwrap(), a);
        }
    }
}
