//! Backups of the SQLite store: a consistent copy of a live store, and a
//! restore into an empty data directory (with a new epoch, see `crate::cursor`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::StoreError;
use super::sqlite::{FORMAT_VERSION, err, private_dir, private_file, set_epoch, to_u64};

/// What a backup contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Records copied.
    pub records: u64,
    /// The cursor the copy is consistent at.
    pub cursor: u64,
}

/// Copies a (possibly live) store in `dir` to `out` as one consistent snapshot.
pub fn backup(dir: &Path, out: &Path) -> Result<BackupReport, StoreError> {
    let path = dir.join("syncgate.db");
    if !path.exists() {
        return Err(StoreError(format!("{} holds no syncgate store", dir.display())));
    }
    if out.exists() {
        return Err(StoreError(format!("{} already exists", out.display())));
    }
    let source = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(&format!("cannot open {}", path.display()), e))?;
    source.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| err("configuring the backup", e))?;
    private_file(out).map_err(|e| err(&format!("cannot create {}", out.display()), e))?;
    let mut target = Connection::open(out).map_err(|e| err(&format!("cannot create {}", out.display()), e))?;
    {
        let copy = rusqlite::backup::Backup::new(&source, &mut target).map_err(|e| err("starting the backup", e))?;
        // All pages in one step: one read snapshot, so writers cannot make it restart or tear it.
        copy.step(-1).map_err(|e| err("copying", e))?;
    }
    verify(&target, out)
}

/// Loads a backup into an empty data directory.
pub fn restore(dir: &Path, from: &Path) -> Result<BackupReport, StoreError> {
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(&format!("cannot open {}", from.display()), e))?;
    verify(&source, from)?;
    private_dir(dir)?;
    let path = dir.join("syncgate.db");
    if path.exists() {
        return Err(StoreError(format!(
            "{} already holds a store; restore needs an empty data directory",
            dir.display()
        )));
    }
    private_file(&path).map_err(|e| err(&format!("cannot create {}", path.display()), e))?;
    let mut target = Connection::open(&path).map_err(|e| err(&format!("cannot create {}", path.display()), e))?;
    {
        let copy = rusqlite::backup::Backup::new(&source, &mut target).map_err(|e| err("starting the restore", e))?;
        copy.step(-1).map_err(|e| err("copying", e))?;
    }
    // A restored store rewinds positions: a new epoch makes every cursor issued
    // before it resync from scratch instead of silently skipping the rewound range.
    set_epoch(&target, crate::cursor::new_epoch())?;
    verify(&target, &path)
}

fn verify(conn: &Connection, path: &Path) -> Result<BackupReport, StoreError> {
    let bad = |e: rusqlite::Error| err(&format!("{} is not a syncgate backup", path.display()), e);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(bad)?;
    if version != FORMAT_VERSION {
        return Err(StoreError(format!("{} has format {version}; expected {FORMAT_VERSION}", path.display())));
    }
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(bad)?;
    if check != "ok" {
        return Err(StoreError(format!("{} failed its integrity check: {check}", path.display())));
    }
    let records: i64 = conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0)).map_err(bad)?;
    let cursor: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE name = 'seq'", [], |r| r.get(0)).optional().map_err(bad)?;
    Ok(BackupReport { records: to_u64(records), cursor: cursor.map_or(0, to_u64) })
}
