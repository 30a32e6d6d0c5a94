//! The sync streams of one connection under arbitrary interleavings of
//! commits (some lost), resyncs, SYNCs, UNSYNCs, scans and deliveries: a
//! change is never sent at or below a cursor the client already has, and
//! once everything settles the client of a followed collection holds every
//! committed position.
#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use syncgate::sync_streams::{ChangeStep, ScanStep, SyncStreams, Ticket};

#[derive(Debug, Arbitrary)]
enum Op {
    Commit { lost: bool },
    Detect,
    Sync,
    Unsync,
    Read(u8),
    Complete(u8),
    Take,
}

struct Scan {
    ticket: Ticket,
    request: bool,
    since: u64,
    read: Option<u64>,
    /// Started for a following that has since ended: its answer is not the client's view.
    stale: bool,
}

enum Item {
    Change(u64),
    Resync(u64),
}

#[derive(Default)]
struct Model {
    top: u64,
    queue: VecDeque<Item>,
    lost: bool,
    behind_gap: Vec<u64>,
    rounds: u64,
    scans: Vec<Scan>,
    known: BTreeSet<u64>,
    high: u64,
    following: bool,
    /// The client's view is whole from its last full SYNC_DATA on.
    whole: bool,
}

impl Model {
    fn deliver(&mut self, position: u64) {
        assert!(position > self.high, "change {position} after cursor {}", self.high);
        self.high = position;
        self.known.insert(position);
    }

    fn complete(&mut self, streams: &mut SyncStreams<u64>, scan: Scan, upto: u64) {
        let c: Arc<str> = Arc::from("c");
        match streams.scan_done(&c, scan.ticket, scan.request, Ok(upto)) {
            ScanStep::Send { .. } if scan.stale => {}
            ScanStep::Send { deliver, then } => {
                if scan.request {
                    self.high = 0;
                    if self.following {
                        self.known.clear();
                        self.whole = true;
                    }
                }
                self.known.extend(scan.since + 1..=upto);
                self.high = self.high.max(upto);
                for position in deliver {
                    self.deliver(position);
                }
                if let Some(c) = then {
                    self.scans.push(Scan { ticket: c.ticket, request: false, since: c.since, read: None, stale: false });
                }
            }
            ScanStep::Rescan(ticket) => {
                self.scans.push(Scan { ticket, request: true, since: scan.since, read: None, stale: scan.stale })
            }
            ScanStep::Drop => {}
            ScanStep::Failed { .. } => unreachable!("no scan fails here"),
        }
    }

    fn step(&mut self, streams: &mut SyncStreams<u64>, op: Op) {
        let c: Arc<str> = Arc::from("c");
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
            Op::Detect => {
                if self.lost {
                    self.lost = false;
                    self.rounds += 1;
                    self.queue.push_back(Item::Resync(self.rounds));
                    self.queue.extend(self.behind_gap.drain(..).map(Item::Change));
                }
            }
            Op::Sync => {
                self.following = true;
                let ticket = streams.sync(&c);
                self.scans.push(Scan { ticket, request: true, since: 0, read: None, stale: false });
            }
            Op::Unsync => {
                streams.unsync("c");
                self.scans.iter_mut().for_each(|s| s.stale = true);
                self.following = false;
                self.whole = false;
            }
            Op::Read(n) if !self.scans.is_empty() => {
                let i = usize::from(n) % self.scans.len();
                self.scans[i].read.get_or_insert(self.top);
            }
            Op::Complete(n) if !self.scans.is_empty() => {
                let i = usize::from(n) % self.scans.len();
                if let Some(upto) = self.scans[i].read {
                    let scan = self.scans.remove(i);
                    self.complete(streams, scan, upto);
                }
            }
            Op::Read(_) | Op::Complete(_) => {}
            Op::Take => match self.queue.pop_front() {
                Some(Item::Change(p)) => match streams.change("c", p, p) {
                    ChangeStep::Deliver(p) => self.deliver(p),
                    ChangeStep::Overflow => unreachable!("unbounded here"),
                    ChangeStep::Held | ChangeStep::Skip => {}
                },
                Some(Item::Resync(round)) => {
                    if let Some(c) = streams.resync(&c, round) {
                        self.scans.push(Scan { ticket: c.ticket, request: false, since: c.since, read: None, stale: false });
                    }
                }
                None => {}
            },
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut streams = SyncStreams::new(usize::MAX);
    let mut model = Model::default();
    for op in ops.into_iter().take(400) {
        model.step(&mut streams, op);
    }
    model.step(&mut streams, Op::Detect);
    while !model.queue.is_empty() || !model.scans.is_empty() {
        model.step(&mut streams, Op::Take);
        if let Some(scan) = model.scans.pop() {
            let upto = scan.read.unwrap_or(model.top);
            model.complete(&mut streams, scan, upto);
        }
    }
    if model.following && model.whole {
        assert_eq!(model.known, (1..=model.top).collect::<BTreeSet<u64>>(), "every committed position");
    }
});
