//! The client's state file: the whole replica, saved atomically.
//!
//! One file per client. A save writes a temporary file, fsyncs it, renames it
//! over the old one and fsyncs the directory, so a crash leaves either the old
//! or the new state, never a torn one. Saves run on the blocking pool, never on
//! the async runtime, and the client's lock is held only to serialise the
//! replica, never across I/O.
//!
//! Saves are grouped: every change bumps a generation number, and a caller
//! that needs its change on disk waits for a save that started after it. One
//! save covers every change made before it began, so a burst of writes costs
//! a few saves, not one each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Local;

/// A client's state file and the generation saved in it.
pub(crate) struct StateFile {
    path: PathBuf,
    /// The generation on disk. An async mutex: it is held across the save,
    /// which is what orders saves (a later snapshot is never overwritten by an earlier one).
    saved: tokio::sync::Mutex<u64>,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, saved: tokio::sync::Mutex::new(0) }
    }

    /// The saved bytes, or `None` when there is no file yet.
    pub(crate) fn load(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Returns once a state at least as new as `generation` is on disk.
    pub(crate) async fn save_through(&self, local: &Arc<Mutex<Local>>, generation: u64) -> std::io::Result<()> {
        let mut saved = self.saved.lock().await;
        if *saved >= generation {
            return Ok(());
        }
        let (bytes, snapshot) = {
            let local = local.lock().unwrap_or_else(|e| e.into_inner());
            (local.replica.to_bytes(), local.generation)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| std::io::Error::other(format!("the save task failed: {e}")))??;
        *saved = snapshot;
        Ok(())
    }
}

/// Write a temporary file, fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
