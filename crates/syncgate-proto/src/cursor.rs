//! Sync cursors: `<epoch>:<position>[:<horizon>]`, opaque to clients.
//!
//! A position alone is not enough to resume: after a restore the store's
//! positions start again from the backup's, and a client holding a later
//! position would silently skip every write in the rewound range. So every
//! store has a random *epoch*, drawn when it is created and drawn again by
//! `restore`, and a cursor names both. A cursor of another epoch, or a
//! position the store never issued, cannot be resumed from: the server
//! answers the full state with `SYNC_DATA.reset: true`.
//!
//! A cursor also carries the tombstone-collection horizon it was issued
//! under (omitted while it is 0). A reader may have missed a collected
//! delete only if the horizon moved past its position *after* its cursor was
//! issued ([`Cursor::missed_collected_deletes`]): a reader paging through a
//! collection, or one that synced an empty store, is judged by what changed
//! since, not by an old horizon.

use std::fmt;
use std::str::FromStr;

/// A position in a store's acceptance order, within one epoch of that store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The store's epoch (never 0 for a real store).
    pub epoch: u64,
    /// The acceptance sequence number after which the reader has everything.
    pub position: u64,
    /// The tombstone-collection horizon when the cursor was issued (0: none,
    /// or a cursor from before horizons were carried).
    pub horizon: u64,
}

/// Why a `since` string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`since` is not a cursor this server issued")]
pub struct CursorError;

impl Cursor {
    /// A cursor of `epoch` at `position`, issued under no horizon.
    pub fn new(epoch: u64, position: u64) -> Self {
        Self { epoch, position, horizon: 0 }
    }

    /// A cursor of `epoch` at `position`, issued under `horizon`.
    pub fn with_horizon(epoch: u64, position: u64, horizon: u64) -> Self {
        Self { epoch, position, horizon }
    }

    /// Whether a reader at this cursor may have missed a delete that was
    /// collected since: the store's horizon is now past both the cursor's
    /// position and the horizon it was issued under.
    pub fn missed_collected_deletes(&self, horizon_now: u64) -> bool {
        self.position < horizon_now && self.horizon < horizon_now
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
        if self.horizon == 0 {
            write!(f, "{:x}:{}", self.epoch, self.position)
        } else {
            write!(f, "{:x}:{}:{}", self.epoch, self.position, self.horizon)
        }
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    /// Parses `<hex epoch>:<decimal position>[:<decimal horizon>]`. A bare decimal number (a cursor
    /// of the first protocol release, which had no epochs) parses as epoch 0,
    /// which no store has: it is answered with the full state, not refused.
    fn from_str(s: &str) -> Result<Self, CursorError> {
        let digits = |p: &str, radix: u32| {
            let ok = !p.is_empty() && p.len() <= 20 && p.chars().all(|c| c.is_digit(radix));
            ok.then(|| u64::from_str_radix(p, radix).ok()).flatten()
        };
        let mut parts = s.split(':');
        let (first, second, third) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(CursorError);
        }
        match (first, second, third) {
            (Some(position), None, None) => Ok(Self::new(0, digits(position, 10).ok_or(CursorError)?)),
            (Some(epoch), Some(position), horizon) => Ok(Self {
                epoch: digits(epoch, 16).ok_or(CursorError)?,
                position: digits(position, 10).ok_or(CursorError)?,
                horizon: match horizon {
                    None => 0,
                    Some(h) => digits(h, 10).ok_or(CursorError)?,
                },
            }),
            _ => Err(CursorError),
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
        let h = Cursor::with_horizon(0xab, 7, 5);
        assert_eq!(h.to_string(), "ab:7:5");
        assert_eq!("ab:7:5".parse::<Cursor>(), Ok(h));
        for bad in ["", "x", "1:", ":1", "g:1", "1:-1", "1:2:x", "1:2:3:4", "1:2:", "1:99999999999999999999999"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
        assert!(c.resumable(0xdead_beef, 42));
        assert!(!c.resumable(0xdead_beef, 41), "a position never issued");
        assert!(!c.resumable(7, 100), "another epoch");
    }

    #[test]
    fn only_a_horizon_that_moved_after_the_cursor_means_missed_deletes() {
        let paging = Cursor::with_horizon(1, 100, 500);
        assert!(!paging.missed_collected_deletes(500), "the same horizon as when issued: nothing new was collected");
        assert!(paging.missed_collected_deletes(600), "collected since, past its position");
        assert!(Cursor::new(1, 0).missed_collected_deletes(3), "a cursor at 0 resets too");
        assert!(!Cursor::new(1, 900).missed_collected_deletes(600), "a position past the horizon missed nothing");
    }
}
