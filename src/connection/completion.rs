//! What comes back to the actor from the work it started as tasks
//! (verifications, commits, scans, interest), and what a scan starts from
//! and reads.

use std::sync::Arc;

use crate::auth::{AuthError, Identity};
use crate::backplane::BackplaneError;
use crate::collections::Snapshot;
use crate::cursor::Cursor;
use crate::node::CatchUpPages;
use crate::protocol::OpOutcome;
use crate::store::StoreError;
use crate::sync_streams::{CatchUp, Ticket};

/// The result of work the actor started.
pub(super) enum Completion {
    /// A token verification.
    Verified(Result<Identity, AuthError>),
    /// The client IP had used up its failed authentications: nothing was verified.
    Blocked,
    /// A committed `OP_BATCH`: the outcomes fill the slots the session left open.
    Written { id: u64, results: Vec<Option<OpOutcome>>, slots: Vec<usize>, outcomes: Vec<OpOutcome> },
    /// A snapshot read for `SYNC {id}`, or a catch-up (no id).
    Scanned {
        id: Option<u64>,
        collection: Arc<str>,
        ticket: Ticket,
        /// The `SYNC`'s `since` (for a scan that must be done again).
        since: Option<Cursor>,
        result: Result<Scanned, StoreError>,
    },
    /// Node-level interest in a `SUB`'s topic, established or not.
    Subscribed { id: u64, topic: String, result: Result<(), BackplaneError> },
}

/// Where a scan starts.
pub(super) enum ScanFrom {
    /// A `SYNC`: from its `since` (everything when absent).
    Request(Option<Cursor>),
    /// A catch-up, shared with the collection's other watchers of the same round.
    CatchUp(CatchUp),
}

/// What a scan read.
pub(super) enum Scanned {
    /// A `SYNC`'s snapshot, in pages.
    Snapshot(Snapshot),
    /// A catch-up's `CHANGE` pages, encoded once for every watcher.
    CatchUp(Arc<CatchUpPages>),
}

impl Scanned {
    pub(super) fn cursor(&self) -> u64 {
        match self {
            Self::Snapshot(snapshot) => snapshot.cursor,
            Self::CatchUp(pages) => pages.cursor,
        }
    }
}
