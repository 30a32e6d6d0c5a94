//! The order of one collection's `CHANGE`s on one node (sans-IO).
//!
//! Commits finish out of order (the store groups them; other nodes commit
//! too) and the backplane may lose a message, so changes are held until the
//! collection's chain ([`crate::store::Applied::Stored`]'s `prev`) says
//! nothing is missing. A gap that does not close within the grace period is
//! not waited for: the watchers are told to catch up from the store
//! ([`Step::Resync`]) and the held changes follow.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Changes held behind a gap before it counts as expired at once.
pub const MAX_HELD: usize = 4096;

/// One commit's changes to one collection, as the hub and the backplane carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The collection's position before this commit: nothing of it lies between `prev` and the first record.
    pub prev: u64,
    /// The position of the commit's last write to the collection (the `CHANGE`'s cursor).
    pub last: u64,
    /// The encoded `CHANGE`, shared by every watcher.
    pub change: Bytes,
}

impl ChangeNotice {
    /// The backplane payload: `prev` and `last` (big-endian u64) and the encoded `CHANGE`.
    pub fn to_payload(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.change.len());
        out.put_u64(self.prev);
        out.put_u64(self.last);
        out.extend_from_slice(&self.change);
        out.freeze()
    }

    /// Reads a backplane payload; `None` if it is too short or its positions are impossible.
    pub fn from_payload(mut payload: Bytes) -> Option<Self> {
        if payload.len() < 16 {
            return None;
        }
        let (prev, last) = (payload.get_u64(), payload.get_u64());
        (prev < last).then_some(Self { prev, last, change: payload })
    }
}

/// What the hub must do for a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this change to every watcher.
    Deliver(ChangeNotice),
    /// Every watcher may have missed changes: each catches up from the store.
    Resync,
    /// A gap opened: call [`FeedOrder::gap_expired`] with this number after the grace period.
    ArmGapTimer(u64),
}

/// The delivery order of one collection's changes.
#[derive(Debug, Default)]
pub struct FeedOrder {
    /// Every change up to this position has been delivered; `None` before [`FeedOrder::start`].
    delivered: Option<u64>,
    started: bool,
    /// Changes waiting for earlier ones, by `prev`.
    held: BTreeMap<u64, ChangeNotice>,
    /// The number of the armed gap timer, if one is armed.
    armed: Option<u64>,
    timers: u64,
}

impl FeedOrder {
    /// Starts delivering from `position` (the store's position when the node's
    /// interest began), or, when it could not be read, from the first change
    /// received after telling the watchers to catch up.
    pub fn start(&mut self, position: Option<u64>) -> Vec<Step> {
        self.started = true;
        self.delivered = position;
        self.release()
    }

    /// Takes a change in, returning what can be done now.
    pub fn receive(&mut self, notice: ChangeNotice) -> Vec<Step> {
        if self.delivered.is_some_and(|d| notice.last <= d) {
            return Vec::new();
        }
        self.held.insert(notice.prev, notice);
        if self.held.len() > MAX_HELD {
            return self.skip_gap();
        }
        self.release()
    }

    /// The grace period of gap timer `timer` has passed.
    pub fn gap_expired(&mut self, timer: u64) -> Vec<Step> {
        if self.armed != Some(timer) {
            return Vec::new();
        }
        self.armed = None;
        self.skip_gap()
    }

    /// The backplane lost messages: the watchers catch up, and what is held follows.
    pub fn lost(&mut self) -> Vec<Step> {
        if !self.started {
            return Vec::new();
        }
        let mut steps = vec![Step::Resync];
        steps.extend(self.flush());
        steps
    }

    /// Every change up to this position has been delivered (`None`: not known yet).
    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// The store holds the collection at `position`: if that is past what was
    /// delivered, a change was lost without a later one to reveal the gap.
    /// The watchers catch up, whatever is held follows, and the chain goes
    /// on from `position`.
    pub fn behind(&mut self, position: u64) -> Vec<Step> {
        if !self.started || self.delivered.is_some_and(|d| d >= position) {
            return Vec::new();
        }
        let steps = self.lost();
        self.delivered = Some(self.delivered.map_or(position, |d| d.max(position)));
        steps
    }

    /// Stops waiting for the missing changes: watchers catch up from the store,
    /// then everything held is delivered in order.
    fn skip_gap(&mut self) -> Vec<Step> {
        if !self.started || self.held.is_empty() {
            return Vec::new();
        }
        self.lost()
    }

    /// Delivers every held change in chain order, whatever the gaps.
    fn flush(&mut self) -> Vec<Step> {
        self.armed = None;
        let mut steps = Vec::new();
        for (_, notice) in std::mem::take(&mut self.held) {
            if self.delivered.is_some_and(|d| notice.last <= d) {
                continue;
            }
            self.delivered = Some(notice.last);
            steps.push(Step::Deliver(notice));
        }
        steps
    }

    /// Delivers the held changes that continue the chain; arms a timer for a gap.
    fn release(&mut self) -> Vec<Step> {
        if !self.started {
            return Vec::new();
        }
        let Some(mut delivered) = self.delivered else {
            // Where the chain stood is unknown: catch up, then follow from here.
            return if self.held.is_empty() { Vec::new() } else { self.lost() };
        };
        let mut steps = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let notice = entry.get();
            if notice.last <= delivered {
                entry.remove();
            } else if notice.prev <= delivered {
                delivered = notice.last;
                steps.push(Step::Deliver(entry.remove()));
            } else {
                break;
            }
        }
        self.delivered = Some(delivered);
        if self.held.is_empty() {
            self.armed = None;
        } else if self.armed.is_none() {
            self.timers += 1;
            self.armed = Some(self.timers);
            steps.push(Step::ArmGapTimer(self.timers));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(prev: u64, last: u64) -> ChangeNotice {
        ChangeNotice { prev, last, change: Bytes::from(format!("{prev}-{last}")) }
    }

    fn delivered(steps: &[Step]) -> Vec<u64> {
        steps.iter().filter_map(|s| if let Step::Deliver(n) = s { Some(n.last) } else { None }).collect()
    }

    #[test]
    fn out_of_order_commits_are_delivered_in_chain_order() {
        let mut order = FeedOrder::default();
        assert!(order.receive(notice(3, 5)).is_empty(), "nothing leaves before the feed has started");
        assert!(delivered(&order.start(Some(3))).eq(&[5]));
        let steps = order.receive(notice(9, 12));
        assert_eq!(steps, [Step::ArmGapTimer(1)], "9 is missing: held, and a timer armed");
        assert_eq!(delivered(&order.receive(notice(5, 9))), [9, 12], "the gap closed: both in order");
        assert!(order.gap_expired(1).is_empty(), "a timer for a closed gap does nothing");
        assert!(order.receive(notice(5, 9)).is_empty(), "a duplicate is dropped");
    }

    #[test]
    fn a_gap_that_stays_open_sends_the_watchers_to_the_store() {
        let mut order = FeedOrder::default();
        order.start(Some(10));
        assert_eq!(order.receive(notice(14, 15)), [Step::ArmGapTimer(1)]);
        assert_eq!(order.receive(notice(15, 20)), [], "held behind the same gap, no second timer");
        let steps = order.gap_expired(1);
        assert_eq!(steps[0], Step::Resync, "the watchers catch up first");
        assert_eq!(delivered(&steps), [15, 20], "then the held changes follow");
        assert_eq!(delivered(&order.receive(notice(20, 21))), [21], "and the chain goes on from there");
        assert!(order.receive(notice(11, 14)).is_empty(), "the late change was covered by the catch-up");
    }

    #[test]
    fn an_unknown_start_and_a_loss_both_resync() {
        let mut order = FeedOrder::default();
        order.start(None);
        let steps = order.receive(notice(40, 41));
        assert_eq!((steps[0].clone(), delivered(&steps)), (Step::Resync, vec![41]));
        assert_eq!(order.lost(), [Step::Resync]);
        assert_eq!(delivered(&order.receive(notice(41, 42))), [42]);
    }

    #[test]
    fn a_feed_behind_the_store_resyncs_once_and_goes_on_from_there() {
        let mut order = FeedOrder::default();
        assert!(order.behind(9).is_empty(), "not started: nothing to check");
        order.start(Some(5));
        assert!(order.behind(5).is_empty(), "level with the store");
        assert!(order.behind(3).is_empty(), "ahead of a stale reading");
        assert_eq!(order.behind(8), [Step::Resync], "the change at 8 was lost: the watchers catch up");
        assert_eq!(order.delivered(), Some(8));
        assert!(order.behind(8).is_empty(), "one catch-up per loss");
        assert_eq!(delivered(&order.receive(notice(8, 9))), [9], "the chain goes on from the store's position");
        assert!(order.receive(notice(5, 8)).is_empty(), "the lost change, arriving late, was covered");
    }

    #[test]
    fn too_many_held_changes_end_the_wait() {
        let mut order = FeedOrder::default();
        order.start(Some(0));
        for n in 0..MAX_HELD as u64 {
            order.receive(notice(10 + 2 * n, 11 + 2 * n));
        }
        let steps = order.receive(notice(10_000_000, 10_000_001));
        assert_eq!(steps[0], Step::Resync);
        assert_eq!(delivered(&steps).len(), MAX_HELD + 1);
    }

    #[test]
    fn payloads_round_trip_and_nonsense_is_refused() {
        let n = notice(7, 9);
        assert_eq!(ChangeNotice::from_payload(n.to_payload()), Some(n));
        assert_eq!(ChangeNotice::from_payload(Bytes::from_static(b"short")), None);
        assert_eq!(ChangeNotice::from_payload(notice(9, 7).to_payload()), None, "prev must be below last");
    }
}
