//! The sync streams of one connection (sans-IO): which collections it
//! follows, the position each has been delivered up to, and the changes that
//! wait while a snapshot is read, so that every `CHANGE` reaches the client
//! once and in order, whatever order scans, changes and catch-ups complete in.
//!
//! It never touches a socket, a task or a clock: the connection's actor feeds
//! it events ([`SyncStreams::sync`], [`SyncStreams::unsync`],
//! [`SyncStreams::change`], [`SyncStreams::resync`],
//! [`SyncStreams::scan_done`]) and carries out what they return. The rules:
//!
//! - A `SYNC` starts a scan; the collection's changes that arrive while any
//!   of its scans runs are held, then follow the snapshot.
//! - A change is delivered only if its cursor is past everything the
//!   connection was sent for that collection (snapshot or change), so a
//!   change a snapshot already covered is never sent twice.
//! - A resync (the hub lost a change) starts a catch-up scan from the
//!   delivered position, or, while a scan runs, one after it; the changes
//!   held meanwhile wait behind the catch-up (one of them may lie past the
//!   lost change, and delivering it first would move the position past the
//!   change the catch-up must fetch).
//! - A scan of a following that has ended (`UNSYNC`, maybe a new `SYNC`)
//!   still answers its request but leaves the new following alone.

use std::collections::HashMap;
use std::sync::Arc;

/// Identifies a scan, to hand back to [`SyncStreams::scan_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The following it feeds (0: none, it only answers its request).
    generation: u64,
}

impl Ticket {
    /// The scan only answers a request: it must not make the collection followed.
    pub fn answers_only(&self) -> bool {
        self.generation == 0
    }
}

/// A catch-up scan to start: every change of the collection after `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Hand back to [`SyncStreams::scan_done`].
    pub ticket: Ticket,
    /// The position delivered so far.
    pub since: u64,
    /// The hub's resync round that asked for it: scans of one round may be shared.
    pub round: u64,
}

/// What to do with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeStep<P> {
    /// Send it now.
    Deliver(P),
    /// Held until the collection's snapshot is sent.
    Held,
    /// Already covered, or the collection is not followed: drop it.
    Skip,
    /// Too many changes piled up behind a snapshot: the client reads too slowly (4200).
    Overflow,
}

/// What to do when a scan completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStep<P> {
    /// A catch-up for a following that has ended: nobody wants it.
    Drop,
    /// The scan failed. `ended`: it was the following's last scan, so the
    /// following is over (stop watching the collection, forget the sync).
    Failed {
        /// The following ended.
        ended: bool,
    },
    /// The scan read an older state of the store than the client already
    /// holds of the collection (a `SYNC` answer, a change or a catch-up sent
    /// after the scan started): sending it would take the client back. Scan again for the same
    /// request with this ticket (its answer is at least as new).
    Rescan(Ticket),
    /// Send the scan's pages, then `deliver` in order, then start `then`.
    Send {
        /// Held changes that the snapshot did not cover.
        deliver: Vec<P>,
        /// A catch-up asked for while the scan ran.
        then: Option<CatchUp>,
    },
}

/// One followed collection.
#[derive(Debug)]
struct Stream<P> {
    /// Everything up to this position has been sent (`None` until a first scan completes).
    seen: Option<u64>,
    /// Scans in flight, if any.
    reading: Option<Reading<P>>,
}

/// A collection whose scans are in flight.
#[derive(Debug)]
struct Reading<P> {
    /// Which following of the collection this is.
    generation: u64,
    /// Scans still running (a client may send `SYNC` for a collection twice).
    scans: usize,
    /// Changes that arrived meanwhile, with their cursors.
    held: Vec<(u64, P)>,
    /// A resync arrived meanwhile (its round): a catch-up follows the scans.
    catch_up: Option<u64>,
}

/// The sync streams of one connection.
#[derive(Debug)]
pub struct SyncStreams<P> {
    streams: HashMap<Arc<str>, Stream<P>>,
    generations: u64,
    max_held: usize,
    /// Per collection, the newest store position a `SYNC` answer was read
    /// at, while `SYNC` scans of it are in flight (`in_flight` counts them).
    answered: HashMap<Arc<str>, u64>,
    in_flight: HashMap<Arc<str>, usize>,
}

impl<P> SyncStreams<P> {
    /// No streams yet; at most `max_held` changes wait behind one snapshot.
    pub fn new(max_held: usize) -> Self {
        Self { streams: HashMap::new(), generations: 0, max_held, answered: HashMap::new(), in_flight: HashMap::new() }
    }

    /// A `SYNC` of `collection`: start a scan (from the client's `since`) and
    /// hand its ticket back when it completes.
    pub fn sync(&mut self, collection: &Arc<str>) -> Ticket {
        *self.in_flight.entry(collection.clone()).or_default() += 1;
        self.start_scan(collection)
    }

    /// An `UNSYNC`: forget the collection (scans in flight only answer their requests).
    pub fn unsync(&mut self, collection: &str) {
        self.streams.remove(collection);
    }

    /// Whether `collection` is followed.
    pub fn follows(&self, collection: &str) -> bool {
        self.streams.contains_key(collection)
    }

    /// A change of `collection` with cursor `cursor` arrived from the hub.
    pub fn change(&mut self, collection: &str, cursor: u64, payload: P) -> ChangeStep<P> {
        let Some(stream) = self.streams.get_mut(collection) else { return ChangeStep::Skip };
        if let Some(reading) = &mut stream.reading {
            if reading.held.len() >= self.max_held {
                return ChangeStep::Overflow;
            }
            reading.held.push((cursor, payload));
            return ChangeStep::Held;
        }
        match &mut stream.seen {
            Some(seen) if cursor > *seen => {
                *seen = cursor;
                ChangeStep::Deliver(payload)
            }
            _ => ChangeStep::Skip,
        }
    }

    /// The hub says changes of `collection` may have been lost (resync
    /// `round`): a catch-up scan from the delivered position, now or after
    /// the scans in flight.
    pub fn resync(&mut self, collection: &Arc<str>, round: u64) -> Option<CatchUp> {
        let stream = self.streams.get_mut(collection)?;
        if let Some(reading) = &mut stream.reading {
            reading.catch_up = Some(reading.catch_up.map_or(round, |r| r.max(round)));
            return None;
        }
        let since = stream.seen?;
        let ticket = self.start_scan(collection);
        Some(CatchUp { ticket, since, round })
    }

    /// Scan `ticket` of `collection` completed, with the cursor after its
    /// records (`Err`: it failed). `answers_request`: a `SYNC` waits for it.
    pub fn scan_done(
        &mut self,
        collection: &Arc<str>,
        ticket: Ticket,
        answers_request: bool,
        cursor: Result<u64, ()>,
    ) -> ScanStep<P> {
        // Two SYNCs of one collection can finish out of order: an answer older
        // than one already sent is read again rather than sent.
        if answers_request && let Ok(read_at) = cursor {
            // What the client holds of the collection already: answers sent, and
            // changes and catch-ups delivered to the following.
            let delivered = self.streams.get(collection).and_then(|s| s.seen).unwrap_or(0);
            let newest = self.answered.entry(collection.clone()).or_default();
            if read_at < (*newest).max(delivered) {
                let current = self
                    .streams
                    .get(collection)
                    .and_then(|s| s.reading.as_ref())
                    .is_some_and(|r| r.generation == ticket.generation);
                // The request stays in flight; a scan of an ended following only answers.
                return ScanStep::Rescan(Ticket { generation: if current { ticket.generation } else { 0 } });
            }
            *newest = read_at;
        }
        if answers_request {
            let left = self.in_flight.get_mut(collection).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left == Some(0) {
                self.in_flight.remove(collection);
                self.answered.remove(collection);
            }
        }
        let stream = self.streams.get_mut(collection);
        let current = stream.and_then(|s| s.reading.as_mut()).filter(|r| r.generation == ticket.generation);
        let last = current.map(|reading| {
            reading.scans -= 1;
            reading.scans == 0
        });
        match (cursor, last) {
            (_, None) if !answers_request => ScanStep::Drop,
            (Err(()), last) => {
                if last == Some(true) {
                    self.streams.remove(collection);
                }
                ScanStep::Failed { ended: last == Some(true) }
            }
            (Ok(_), None) => ScanStep::Send { deliver: Vec::new(), then: None },
            (Ok(cursor), Some(last)) => {
                let Some(stream) = self.streams.get_mut(collection) else {
                    return ScanStep::Send { deliver: Vec::new(), then: None };
                };
                let seen = stream.seen.get_or_insert(0);
                *seen = (*seen).max(cursor);
                if !last {
                    return ScanStep::Send { deliver: Vec::new(), then: None };
                }
                let Some(done) = stream.reading.take() else {
                    return ScanStep::Send { deliver: Vec::new(), then: None };
                };
                if let Some(round) = done.catch_up {
                    // A change was lost while the scan ran, and the held changes may lie
                    // past it: they wait behind the catch-up, which covers them.
                    self.generations += 1;
                    let generation = self.generations;
                    stream.reading = Some(Reading { generation, scans: 1, held: done.held, catch_up: None });
                    let catch_up = CatchUp { ticket: Ticket { generation }, since: *seen, round };
                    return ScanStep::Send { deliver: Vec::new(), then: Some(catch_up) };
                }
                let mut deliver = Vec::with_capacity(done.held.len());
                for (cursor, payload) in done.held {
                    if let ChangeStep::Deliver(payload) = self.change(collection, cursor, payload) {
                        deliver.push(payload);
                    }
                }
                ScanStep::Send { deliver, then: None }
            }
        }
    }

    /// Registers a scan of `collection` (a new following if there is none).
    fn start_scan(&mut self, collection: &Arc<str>) -> Ticket {
        self.generations += 1;
        let fresh = self.generations;
        let stream = self.streams.entry(collection.clone()).or_insert(Stream { seen: None, reading: None });
        let reading =
            stream.reading.get_or_insert(Reading { generation: fresh, scans: 0, held: Vec::new(), catch_up: None });
        reading.scans += 1;
        Ticket { generation: reading.generation }
    }
}

#[cfg(test)]
#[path = "sync_streams_tests.rs"]
mod tests;
