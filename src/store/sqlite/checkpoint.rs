//! Copying the WAL back into the database, off the commit path.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses 1,000
//! WAL pages: it copies pages into the database file and fsyncs it while
//! every write queued behind that commit waits. Here a thread of its own runs
//! passive checkpoints, which never block the writer. Under a steady flow of
//! commits a passive checkpoint never quite catches up, and the WAL only
//! starts over once one has; so past [`RESTART_AFTER_PAGES`] the commit
//! thread restarts it between two commits ([`restart_wal`]), where it holds no
//! lock and the restart cannot starve, copying only the pages the passive
//! checkpoints left. The WAL file is cut back to [`WAL_KEEP_BYTES`] when it
//! starts over.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use rusqlite::Connection;

use super::{State, err};
use crate::store::StoreError;

/// How often the WAL is copied back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// A WAL longer than this (pages) after a passive checkpoint is restarted.
const RESTART_AFTER_PAGES: i64 = 8192;
/// The WAL file is cut back to this size when it starts over.
pub(super) const WAL_KEEP_BYTES: u64 = 64 << 20;

/// Ends the checkpoint thread when dropped (with the store).
pub(super) type Stop = Sender<std::convert::Infallible>;

/// Starts the checkpoint thread on a connection of its own.
pub(super) fn start(path: &Path, state: Arc<State>) -> Result<Stop, StoreError> {
    let conn = Connection::open(path).map_err(|e| err("opening the checkpoint connection", e))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| err("configuring checkpoints", e))?;
    let (stop, stopped) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("syncgate-checkpoint".into())
        .spawn(move || checkpoint_loop(&conn, &stopped, &state))
        .map_err(|e| err("starting the checkpoint thread", e))?;
    Ok(stop)
}

fn checkpoint_loop(conn: &Connection, stopped: &Receiver<std::convert::Infallible>, state: &State) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        match wal_checkpoint(conn, "PASSIVE") {
            Ok(pages) => state.wal_pages.store(pages, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
        }
    }
    // The store is closing: leave the database whole and the WAL empty.
    if let Err(e) = wal_checkpoint(conn, "TRUNCATE") {
        tracing::debug!(error = %e, "final WAL checkpoint skipped");
    }
}

/// On the commit thread, between two commits: starts the WAL over once the
/// checkpoint thread found it long.
pub(super) fn restart_wal(conn: &Connection, state: &State) {
    if state.wal_pages.load(Ordering::Relaxed) <= RESTART_AFTER_PAGES {
        return;
    }
    match wal_checkpoint(conn, "RESTART") {
        Ok(pages) => state.wal_pages.store(pages, Ordering::Relaxed),
        Err(e) => tracing::warn!(error = %e, "restarting the WAL failed; retrying after the next commit"),
    }
}

/// Runs a checkpoint of `mode`; the pages in the WAL afterwards.
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
}
