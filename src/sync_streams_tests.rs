//! Tests of the sync streams: the rules one by one, then a model of the
//! store, the hub and the actor run under arbitrary interleavings.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn name() -> Arc<str> {
    Arc::from("c")
}

fn sent(step: ScanStep<u64>) -> (Vec<u64>, Option<CatchUp>) {
    match step {
        ScanStep::Send { deliver, then } => (deliver, then),
        other => panic!("expected Send, got {other:?}"),
    }
}

#[test]
fn changes_wait_for_the_snapshot_and_only_uncovered_ones_follow_it() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    assert_eq!(streams.change("c", 1, 1), ChangeStep::Skip, "not followed yet");
    let ticket = streams.sync(&c);
    assert_eq!(streams.change("c", 4, 4), ChangeStep::Held);
    assert_eq!(streams.change("c", 6, 6), ChangeStep::Held);
    let (deliver, then) = sent(streams.scan_done(&c, ticket, true, Ok(5)));
    assert_eq!((deliver, then), (vec![6], None), "4 was in the snapshot (cursor 5), 6 was not");
    assert_eq!(streams.change("c", 6, 6), ChangeStep::Skip, "a duplicate is dropped");
    assert_eq!(streams.change("c", 9, 9), ChangeStep::Deliver(9));
}

#[test]
fn a_resync_while_a_sync_still_pages_catches_up_after_it() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    let ticket = streams.sync(&c);
    assert_eq!(streams.resync(&c, 7), None, "the scan in flight comes first");
    assert_eq!(streams.change("c", 12, 12), ChangeStep::Held);
    let (deliver, then) = sent(streams.scan_done(&c, ticket, true, Ok(10)));
    assert_eq!(deliver, [0; 0], "12 may lie past the lost change: it waits behind the catch-up");
    let catch_up = then.expect("a catch-up follows the snapshot");
    assert_eq!((catch_up.since, catch_up.round), (10, 7), "from the snapshot's cursor, for the round that asked");
    assert_eq!(streams.change("c", 14, 14), ChangeStep::Held, "held behind the catch-up");
    assert_eq!(streams.change("c", 17, 17), ChangeStep::Held);
    let (deliver, then) = sent(streams.scan_done(&c, catch_up.ticket, false, Ok(15)));
    assert_eq!((deliver, then), (vec![17], None), "12 and 14 came with the catch-up, 17 after it");
    assert_eq!(streams.change("c", 18, 18), ChangeStep::Deliver(18));
}

#[test]
fn a_resync_of_an_idle_stream_starts_a_catch_up_at_once() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    assert_eq!(streams.resync(&c, 1), None, "not followed");
    let ticket = streams.sync(&c);
    sent(streams.scan_done(&c, ticket, true, Ok(3)));
    let catch_up = streams.resync(&c, 2).expect("a catch-up");
    assert_eq!(catch_up.since, 3);
    assert!(matches!(streams.scan_done(&c, catch_up.ticket, false, Ok(8)), ScanStep::Send { .. }));
    assert_eq!(streams.change("c", 8, 8), ChangeStep::Skip, "covered by the catch-up");
}

#[test]
fn an_ended_followings_scans_answer_their_requests_and_change_nothing() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    let old = streams.sync(&c);
    streams.unsync("c");
    assert!(!streams.follows("c"));
    let new = streams.sync(&c);
    assert_eq!(sent(streams.scan_done(&c, old, true, Ok(50))), (vec![], None), "the old SYNC is answered");
    assert_eq!(streams.change("c", 20, 20), ChangeStep::Held, "the new following still waits for its own scan");
    assert_eq!(streams.change("c", 60, 60), ChangeStep::Held);
    let ScanStep::Rescan(again) = streams.scan_done(&c, new, true, Ok(10)) else {
        panic!("read before the old answer: it would take the client back")
    };
    assert_eq!(sent(streams.scan_done(&c, again, true, Ok(55))).0, [60], "20 came with the new read, 60 after it");
    let catch_up = streams.resync(&c, 1).unwrap();
    streams.unsync("c");
    assert_eq!(streams.scan_done(&c, catch_up.ticket, false, Ok(30)), ScanStep::Drop, "nobody wants it");
}

#[test]
fn a_failed_last_scan_ends_the_following_and_a_failed_other_one_does_not() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    let (first, second) = (streams.sync(&c), streams.sync(&c));
    assert_eq!(streams.scan_done(&c, first, true, Err(())), ScanStep::Failed { ended: false });
    assert!(streams.follows("c"));
    assert_eq!(streams.scan_done(&c, second, true, Err(())), ScanStep::Failed { ended: true });
    assert!(!streams.follows("c"));
}

#[test]
fn a_sync_answered_out_of_order_is_read_again() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(16);
    let c = name();
    let (first, second) = (streams.sync(&c), streams.sync(&c));
    assert!(matches!(streams.scan_done(&c, second, true, Ok(9)), ScanStep::Send { .. }));
    let ScanStep::Rescan(again) = streams.scan_done(&c, first, true, Ok(4)) else {
        panic!("an answer read before one already sent must not be sent")
    };
    assert!(!again.answers_only(), "it still belongs to the following");
    assert!(matches!(streams.scan_done(&c, again, true, Ok(12)), ScanStep::Send { .. }));
}

#[test]
fn too_many_changes_behind_a_snapshot_overflow() {
    let mut streams: SyncStreams<u64> = SyncStreams::new(2);
    let c = name();
    streams.sync(&c);
    assert_eq!(streams.change("c", 1, 1), ChangeStep::Held);
    assert_eq!(streams.change("c", 2, 2), ChangeStep::Held);
    assert_eq!(streams.change("c", 3, 3), ChangeStep::Overflow);
}

/// One step of the model.
#[derive(Debug, Clone)]
enum Op {
    /// A commit; a lost one never reaches the connection's queue.
    Commit { lost: bool },
    /// The hub notices the losses so far: it queues a resync, then the
    /// changes it held behind the gap (as `hub::FeedOrder` does).
    Detect,
    /// The client sends `SYNC` (again).
    Sync,
    /// Scan `n` (modulo those in flight) reads the store now.
    Read(usize),
    /// Scan `n` completes (if it has read).
    Complete(usize),
    /// The actor takes the next item of its queue.
    Take,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // About one commit in four is lost.
        4 => (0u8..4).prop_map(|n| Op::Commit { lost: n == 0 }),
        1 => Just(Op::Detect),
        1 => Just(Op::Sync),
        2 => (0..4usize).prop_map(Op::Read),
        2 => (0..4usize).prop_map(Op::Complete),
        4 => Just(Op::Take),
    ]
}

enum Item {
    Change(u64),
    Resync(u64),
}

struct Scan {
    ticket: Ticket,
    request: bool,
    since: u64,
    read: Option<u64>,
}

/// The store, the hub's queue to the connection, scans in flight, and what the client was sent.
#[derive(Default)]
struct Model {
    top: u64,
    queue: VecDeque<Item>,
    lost: bool,
    /// Changes the hub holds behind a gap.
    behind_gap: Vec<u64>,
    rounds: u64,
    scans: Vec<Scan>,
    /// Positions the client holds.
    known: BTreeSet<u64>,
    /// The highest cursor sent since the last snapshot.
    high: u64,
    synced: bool,
}

impl Model {
    fn send_pages(&mut self, scan: &Scan, upto: u64) {
        if scan.request {
            // A SYNC_DATA without `since` is the whole state: the client keeps nothing else.
            self.high = 0;
            self.known.clear();
        }
        self.known.extend(scan.since + 1..=upto);
        self.high = self.high.max(upto);
    }

    fn deliver(&mut self, position: u64) {
        assert!(position > self.high, "change {position} sent after cursor {}: out of order or twice", self.high);
        self.high = position;
        self.known.insert(position);
    }

    fn step(&mut self, streams: &mut SyncStreams<u64>, op: Op) {
        let c = name();
        match op {
            Op::Commit { lost } => {
                self.top += 1;
                if lost {
                    self.lost = true;
                } else if self.lost {
                    self.behind_gap.push(self.top);
                } else {
                    self.queue.push_back(Item::Change(self.top));
                }
            }
            Op::Detect if self.lost => {
                self.lost = false;
                self.rounds += 1;
                self.queue.push_back(Item::Resync(self.rounds));
                self.queue.extend(self.behind_gap.drain(..).map(Item::Change));
            }
            Op::Detect => {}
            Op::Sync => {
                self.synced = true;
                let ticket = streams.sync(&c);
                self.scans.push(Scan { ticket, request: true, since: 0, read: None });
            }
            Op::Read(n) if !self.scans.is_empty() => {
                let i = n % self.scans.len();
                self.scans[i].read.get_or_insert(self.top);
            }
            Op::Complete(n) if !self.scans.is_empty() => {
                let i = n % self.scans.len();
                if let Some(upto) = self.scans[i].read {
                    let scan = self.scans.remove(i);
                    self.complete(streams, scan, upto);
                }
            }
            Op::Read(_) | Op::Complete(_) => {}
            Op::Take => match self.queue.pop_front() {
                Some(Item::Change(position)) => match streams.change("c", position, position) {
                    ChangeStep::Deliver(position) => self.deliver(position),
                    ChangeStep::Overflow => panic!("the model never holds that many"),
                    ChangeStep::Held | ChangeStep::Skip => {}
                },
                Some(Item::Resync(round)) => {
                    if let Some(catch_up) = streams.resync(&c, round) {
                        self.scans.push(Scan {
                            ticket: catch_up.ticket,
                            request: false,
                            since: catch_up.since,
                            read: None,
                        });
                    }
                }
                None => {}
            },
        }
    }

    fn complete(&mut self, streams: &mut SyncStreams<u64>, scan: Scan, upto: u64) {
        match streams.scan_done(&name(), scan.ticket, scan.request, Ok(upto)) {
            ScanStep::Send { deliver, then } => {
                self.send_pages(&scan, upto);
                for position in deliver {
                    self.deliver(position);
                }
                if let Some(catch_up) = then {
                    self.scans.push(Scan {
                        ticket: catch_up.ticket,
                        request: false,
                        since: catch_up.since,
                        read: None,
                    });
                }
            }
            ScanStep::Rescan(ticket) => self.scans.push(Scan { ticket, request: true, since: scan.since, read: None }),
            ScanStep::Drop => {}
            ScanStep::Failed { .. } => panic!("the model's scans never fail"),
        }
    }

    /// Lets everything in flight finish: the hub notices the last loss (the
    /// position check), every scan reads and completes, the queue drains.
    fn settle(&mut self, streams: &mut SyncStreams<u64>) {
        self.step(streams, Op::Detect);
        while !self.queue.is_empty() || !self.scans.is_empty() {
            self.step(streams, Op::Take);
            if let Some(scan) = self.scans.pop() {
                let upto = scan.read.unwrap_or(self.top);
                self.complete(streams, scan, upto);
            }
        }
    }
}

proptest! {
    #[test]
    fn every_change_reaches_the_client_once_and_in_order(ops in proptest::collection::vec(op(), 1..120)) {
        let mut streams = SyncStreams::new(usize::MAX);
        let mut model = Model::default();
        for op in ops {
            model.step(&mut streams, op);
        }
        model.settle(&mut streams);
        if model.synced {
            let all: BTreeSet<u64> = (1..=model.top).collect();
            prop_assert_eq!(&model.known, &all, "the client holds every committed position");
        }
    }
}
