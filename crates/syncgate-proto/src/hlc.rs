//! Hybrid logical clocks: `"<millis>:<counter>:<nodeId>"`.
//!
//! A writer stamps each op with its HLC and the server keeps it: an offline
//! edit keeps the time it was made. Timestamps are totally ordered by
//! `(millis, counter, node)`, so two replicas always agree on which write is
//! last (the node id breaks ties). A clock absorbs the timestamps it sees, so
//! anything it stamps later sorts after them, but never one further ahead of
//! its own wall clock than the drift bound: a hostile stamp far in the future
//! (or with a saturated counter) cannot drag every clock that sees it along.
//! Counters are 16-bit, as in the usual HLC designs; a larger one does not parse.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// The largest physical time a stamp may carry: 2^53 − 1, the largest
/// integer both a `u64` and a JavaScript number hold exactly, so every
/// client reads every stamp the same way (a larger one is `invalid`).
pub const MAX_MILLIS: u64 = (1 << 53) - 1;

/// The largest logical counter: a stamp with a larger one is `invalid`.
pub const MAX_COUNTER: u32 = u16::MAX as u32;

/// How far ahead of its wall clock a clock follows a stamp it sees, by default.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 60_000;

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
        // Parsed by hand over the bytes: every op carries a stamp, and the
        // split-and-parse version cost about 870 instructions per op.
        let (millis, rest) = split_at_colon(s).ok_or(HlcError("missing counter"))?;
        let (counter, node) = split_at_colon(rest).ok_or(HlcError("missing node id"))?;
        let (Some(millis), Some(counter)) = (decimal(millis, 16), decimal(counter, 5)) else {
            return Err(HlcError("millis (1 to 16 digits) and counter (1 to 5 digits) must be decimal integers"));
        };
        if millis > MAX_MILLIS {
            return Err(HlcError("millis must be at most 2^53-1"));
        }
        let counter =
            u32::try_from(counter).ok().filter(|c| *c <= MAX_COUNTER).ok_or(HlcError("counter must be 0 to 65535"))?;
        if node.is_empty() || node.len() > 64 || crate::names::has_control(node) {
            return Err(HlcError("node id must be 1 to 64 bytes without control characters"));
        }
        Ok(Hlc { millis, counter, node: node.to_string() })
    }
}

/// `text` before and after its first `:` (a byte search: `str::split_once`
/// with a char pattern cost more than the rest of the parse).
fn split_at_colon(text: &str) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == b':')?;
    // `:` is ASCII: both sides are on character boundaries.
    Some((&text[..at], &text[at + 1..]))
}

/// `text` as a decimal integer of 1 to `most` ASCII digits (at most 19: no overflow).
fn decimal(text: &str, most: usize) -> Option<u64> {
    if text.is_empty() || text.len() > most {
        return None;
    }
    text.bytes().try_fold(0u64, |n, b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// A value's MessagePack encoding: how a store keeps values, and what
/// [`merge`] compares to tell a replay from a reused stamp.
pub fn encode_value(value: &rmpv::Value) -> Vec<u8> {
    // Sized at once for the common values (a string or bytes: a 5-byte head
    // at most); growing from empty reallocated two or three times per write.
    let capacity = match value {
        rmpv::Value::Binary(bytes) => bytes.len() + 5,
        rmpv::Value::String(text) => text.as_bytes().len() + 5,
        _ => 64,
    };
    let mut out = Vec::with_capacity(capacity);
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// What last-writer-wins makes of a write `(hlc, value)` that meets the
/// current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Its stamp is greater: it becomes the record.
    Replaces,
    /// Its stamp is smaller, or it is the same write again: nothing changes.
    Keeps,
    /// Same stamp, different value: a writer reused a stamp. A store refuses
    /// such a write (`invalid`), so no two values ever circulate under one
    /// stamp and every replica can decide by stamps alone; a replica that
    /// meets one anyway keeps what it has, as the store did.
    Conflicts,
}

/// The last-writer-wins rule every store and replica applies: stamps decide,
/// `(millis, counter, node)` with the node id compared byte-wise. Values are
/// compared, as MessagePack bytes, only to tell a replay (equal) from a reused
/// stamp (different) — never to pick a winner, because a client that decodes
/// values (a browser cannot tell `2` from `2.0`) could not re-create the bytes.
pub fn merge(new_hlc: &Hlc, new_value: &[u8], current_hlc: &Hlc, current_value: &[u8]) -> Merge {
    match new_hlc.cmp(current_hlc) {
        Ordering::Greater => Merge::Replaces,
        Ordering::Less => Merge::Keeps,
        Ordering::Equal if new_value == current_value => Merge::Keeps,
        Ordering::Equal => Merge::Conflicts,
    }
}

/// [`merge`] for values not yet encoded: they are encoded only on a tie of
/// timestamps, the one case that looks at them.
pub fn merge_value(new_hlc: &Hlc, new_value: &rmpv::Value, current_hlc: &Hlc, current_value: &rmpv::Value) -> Merge {
    match new_hlc.cmp(current_hlc) {
        Ordering::Equal => merge(new_hlc, &encode_value(new_value), current_hlc, &encode_value(current_value)),
        Ordering::Greater => Merge::Replaces,
        Ordering::Less => Merge::Keeps,
    }
}

/// A node's clock: monotonic, after every timestamp it absorbed, and never
/// dragged more than `max_ahead_ms` ahead of its wall clock by a remote stamp.
#[derive(Debug)]
pub struct HlcClock {
    node: String,
    /// Stamps further ahead of the wall clock than this are not absorbed.
    max_ahead_ms: u64,
    /// `(millis, counter)` of the latest timestamp issued or observed. A std
    /// mutex: it is held for a comparison, never across an await.
    last: Mutex<(u64, u32)>,
}

impl HlcClock {
    /// A clock for `node`, starting at `start` (e.g. restored from disk),
    /// following remote stamps up to [`DEFAULT_MAX_AHEAD_MS`] ahead.
    pub fn new(node: impl Into<String>, start: (u64, u32)) -> Self {
        Self::with_max_ahead(node, start, DEFAULT_MAX_AHEAD_MS)
    }

    /// A clock that follows remote stamps up to `max_ahead_ms` ahead of its wall clock.
    pub fn with_max_ahead(node: impl Into<String>, start: (u64, u32), max_ahead_ms: u64) -> Self {
        Self { node: node.into(), max_ahead_ms, last: Mutex::new((start.0, start.1.min(MAX_COUNTER))) }
    }

    /// A fresh timestamp at wall time `now_ms`, after everything seen so far.
    /// A full counter moves on to the next millisecond.
    pub fn tick(&self, now_ms: u64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if now_ms > last.0 {
            (now_ms, 0)
        } else if last.1 >= MAX_COUNTER {
            (last.0.saturating_add(1), 0)
        } else {
            (last.0, last.1 + 1)
        };
        Hlc { millis: last.0, counter: last.1, node: self.node.clone() }
    }

    /// Absorbs a timestamp seen at wall time `now_ms` so later ticks sort
    /// after it; returns false (and absorbs nothing) when it lies more than
    /// the bound ahead of the wall clock.
    pub fn observe(&self, seen: &Hlc, now_ms: u64) -> bool {
        if seen.millis > now_ms.saturating_add(self.max_ahead_ms) {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if (seen.millis, seen.counter) > *last {
            *last = (seen.millis, seen.counter.min(MAX_COUNTER));
        }
        true
    }

    /// The latest `(millis, counter)`, for persisting.
    pub fn last(&self) -> (u64, u32) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This clock's node id.
    pub fn node(&self) -> &str {
        &self.node
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
            "1:65536:n",
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
        assert!(clock.observe(&"500:7:x".parse().unwrap(), 100));
        let d = clock.tick(100);
        assert_eq!((d.millis, d.counter), (500, 8));
    }

    #[test]
    fn hostile_stamps_cannot_freeze_a_clock() {
        assert!("1:65535:n".parse::<Hlc>().is_ok());
        assert!("1:65536:n".parse::<Hlc>().is_err(), "counters are 16-bit");
        let clock = HlcClock::with_max_ahead("me", (0, 0), 60_000);
        let now = 1_000_000;
        assert!(!clock.observe(&"1070000:65535:evil".parse().unwrap(), now), "70 s ahead is not absorbed");
        assert_eq!(clock.tick(now), Hlc { millis: now, counter: 0, node: "me".into() });
        assert!(clock.observe(&"1059000:65535:peer".parse().unwrap(), now));
        let next = clock.tick(now);
        assert_eq!((next.millis, next.counter), (1_059_001, 0), "a full counter moves on to the next millisecond");
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
