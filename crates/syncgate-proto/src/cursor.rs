//! Sync cursors: `<epoch>:<position>`, opaque to clients.
//!
//! A position alone is not enough to resume: after a restore the store's
//! positions start again from the backup's, and a client holding a later
//! position would silently skip every write in the rewound range. So every
//! store has a random *epoch*, drawn when it is created and drawn again by
//! `restore`, and a cursor names both. A cursor of another epoch, or a
//! position the store never issued, cannot be resumed from: the server
//! answers the full state with `SYNC_DATA.reset: true`.

use std::fmt;
use std::str::FromStr;

/// A position in a store's acceptance order, within one epoch of that store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The store's epoch (never 0 for a real store).
    pub epoch: u64,
    /// The acceptance sequence number after which the reader has everything.
    pub position: u64,
}

/// Why a `since` string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`since` is not a cursor this server issued")]
pub struct CursorError;

impl Cursor {
    /// A cursor of `epoch` at `position`.
    pub fn new(epoch: u64, position: u64) -> Self {
        Self { epoch, position }
    }

    /// Whether a reader at this cursor can be given a delta by a store of
    /// `epoch` whose latest position is `last`: same epoch, and a position the
    /// store has issued.
    pub fn resumable(&self, epoch: u64, last: u64) -> bool {
        self.epoch == epoch && self.position <= last
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{}", self.epoch, self.position)
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    /// Parses `<hex epoch>:<decimal position>`. A bare decimal number (a cursor
    /// of the first protocol release, which had no epochs) parses as epoch 0,
    /// which no store has: it is answered with the full state, not refused.
    fn from_str(s: &str) -> Result<Self, CursorError> {
        let digits = |p: &str, radix: u32| {
            let ok = !p.is_empty() && p.len() <= 20 && p.chars().all(|c| c.is_digit(radix));
            ok.then(|| u64::from_str_radix(p, radix).ok()).flatten()
        };
        match s.split_once(':') {
            Some((epoch, position)) => Ok(Self {
                epoch: digits(epoch, 16).ok_or(CursorError)?,
                position: digits(position, 10).ok_or(CursorError)?,
            }),
            None => Ok(Self { epoch: 0, position: digits(s, 10).ok_or(CursorError)? }),
        }
    }
}

/// A fresh random epoch (never 0).
pub fn new_epoch() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor::new(0xdead_beef, 42);
        assert_eq!(c.to_string(), "deadbeef:42");
        assert_eq!("deadbeef:42".parse::<Cursor>(), Ok(c));
        assert_eq!("17".parse::<Cursor>(), Ok(Cursor::new(0, 17)), "an epoch-less cursor resumes nothing");
        for bad in ["", "x", "1:", ":1", "g:1", "1:-1", "1:2:3", "1:99999999999999999999999"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
        assert!(c.resumable(0xdead_beef, 42));
        assert!(!c.resumable(0xdead_beef, 41), "a position never issued");
        assert!(!c.resumable(7, 100), "another epoch");
    }
}
