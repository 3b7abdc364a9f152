//! A first import into an embedded store that holds no customer yet
//! (`clientele import`, SPEC §10): loaded into a copy of the store with no
//! journal, and put in the store's place once every record is kept.
//!
//! Through the WAL, an import writes each page it changes once to the WAL
//! at every commit and again to the database file at every checkpoint:
//! about 26 KB written to the disk for each record's 1.3 KB
//! (bench/README.md). A store that holds no customer and no event has
//! nothing a stop midway could lose but its sources, keys and
//! subscriptions, a few pages. So the import copies it (`VACUUM INTO`,
//! once its WAL is checkpointed into its file), with the store's owner;
//! loads the copy with the same writer and statements in one transaction
//! without a journal on the disk (`journal_mode = MEMORY`, `synchronous =
//! OFF`: each page reaches the file when it leaves the cache or at the
//! commit; a write that fails ends the import, [`Loading`]); and, when
//! every record is kept and committed, turns the copy's WAL mode on,
//! gives it the store's permissions, flushes it to the disk and renames
//! it over the store. The
//! store's lock is held from before the copy until after the rename, so no
//! `serve` opens either file half-made. (A tool that ignores the lock, an
//! `sqlite3` shell or backup, must not open the store meanwhile.)
//! A stop before the rename (an error, a kill, a crash) leaves the store
//! as it was and the copy beside it, which the next open of the store
//! removes; the import, run again, keeps everything.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::lock::StoreLock;
use super::{Answer, Answers, Command, Context, Durability, Op, SqliteStore, execute, lock_store, unpanicked};
use crate::clock::Clock;
use crate::store::StoreError;

/// The staged writer's settings ([`Durability::Staged`]). The copy is
/// thrown away if anything fails, so a rollback need not survive a crash;
/// 256 MiB of page cache keep most of the indexes' pages a load revisits
/// (a throwaway build's million records, one transaction: 15,700 records/s
/// with 64 MiB, 17,500 with 256 MiB, for about 210 MiB more at its peak;
/// bench/README.md).
pub(super) const PRAGMAS: &str = "PRAGMA journal_mode = MEMORY;
     PRAGMA synchronous = OFF;
     PRAGMA cache_size = -262144;";

/// The staged writer's one transaction, from its first write to its
/// shutdown. A commit a batch wrote each page a batch changed to the file
/// again (the indexes' pages, each one or more times a batch): one
/// transaction writes each when it leaves the cache or at the end, and
/// took a million records' import from 10,500 to 15,200 a second
/// (bench/README.md). The copy replaces the store only if the transaction
/// commits whole: after a write fails, it is rolled back and every later
/// write refused, and [`Staging::finish`] refuses a copy whose
/// transaction did not commit.
pub(super) struct Loading {
    committed: Arc<AtomicBool>,
    /// Why a write failed, once one has.
    failed: Option<String>,
}

impl Loading {
    pub(super) fn new(committed: Arc<AtomicBool>) -> Self {
        Loading {
            committed,
            failed: None,
        }
    }

    /// Runs `batch` in the transaction, and commits it at a shutdown.
    pub(super) fn transact(&mut self, conn: &Connection, batch: &[Command], ctx: &mut Context) -> Answers {
        batch.iter().map(|command| self.run(conn, &command.op, ctx)).collect()
    }

    fn run(&mut self, conn: &Connection, op: &Op, ctx: &mut Context) -> Result<Answer, StoreError> {
        if let Some(failed) = &self.failed {
            return Err(StoreError::Unavailable(format!(
                "an earlier write of this import failed ({failed}), so its copy of the store is thrown away"
            )));
        }
        let result = unpanicked(|| {
            if conn.is_autocommit() {
                conn.execute_batch("BEGIN IMMEDIATE")?;
            }
            let answer = execute(conn, op, ctx)?;
            if matches!(op, Op::Shutdown) {
                conn.execute_batch("COMMIT")?;
                self.committed.store(true, Ordering::Release);
            }
            Ok(answer)
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "a write of a staged import failed: the import stops and keeps nothing");
            self.failed = Some(e.to_string());
            if !conn.is_autocommit()
                && let Err(e) = conn.execute_batch("ROLLBACK")
            {
                tracing::warn!(error = %e, "cannot roll a staged import's copy back (it is thrown away)");
            }
        }
        result
    }
}

/// The copy a staged import loads: the store's file name and `.staging`,
/// beside it.
fn staging_path(db: &Path) -> PathBuf {
    sibling(db, ".staging")
}

/// A staged import's copy of the store, removed when dropped unless
/// [`Staging::finish`] put it in the store's place.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    staging: PathBuf,
    /// Set once the writer committed the copy's one transaction
    /// ([`Loading`]).
    committed: Arc<AtomicBool>,
    /// The store's lock, held until the copy is in place.
    _lock: Arc<StoreLock>,
    done: bool,
}

impl SqliteStore {
    /// Opens the store at `path` for `clientele import`. A store that holds
    /// no customer and no event is copied, and the copy opened without a
    /// journal: the import keeps its records there, then calls
    /// [`Staging::finish`] once the store is closed. Any other store opens
    /// as [`SqliteStore::open`] opens it, and `None` comes with it.
    pub fn open_for_import(path: &Path, clock: Clock) -> Result<(Self, Option<Staging>), StoreError> {
        let lock = Arc::new(lock_store(path)?);
        remove_left_behind(path);
        if !holds_nothing(path).map_err(|e| preparing(path, e))? {
            return Ok((Self::open_locked(path, lock, Durability::Journaled, clock)?, None));
        }
        // A link is followed: the rename replaces the file, not the link.
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let staging = Staging {
            staging: staging_path(&target),
            target,
            committed: Arc::new(AtomicBool::new(false)),
            _lock: lock.clone(),
            done: false,
        };
        if staging.target.exists() {
            copy(&staging.target, &staging.staging).map_err(|e| preparing(&staging.target, e))?;
            if let Err(e) = same_owner(&staging.target, &staging.staging) {
                tracing::info!(
                    error = %e,
                    "the import's copy cannot have the store's owner: the import goes through the WAL instead"
                );
                drop(staging);
                return Ok((Self::open_locked(path, lock, Durability::Journaled, clock)?, None));
            }
        }
        let committed = staging.committed.clone();
        let store = Self::open_locked(&staging.staging, lock, Durability::Staged { committed }, clock)
            .map_err(|e| preparing(&staging.target, e))?;
        Ok((store, Some(staging)))
    }
}

/// An error met while making or opening the copy, said of the store at
/// `target` (the copy is gone by the time it is read).
fn preparing(target: &Path, error: StoreError) -> StoreError {
    let reason = match error {
        StoreError::Sqlite(e) => e.to_string(),
        StoreError::Open { reason, .. } => reason,
        other => return other,
    };
    StoreError::Open {
        path: target.display().to_string(),
        reason: format!("cannot make the copy a first import loads: {reason}"),
    }
}

impl Staging {
    /// Puts the loaded copy in the store's place: WAL mode on, flushed to
    /// the disk, renamed over the store. Call it once the store opened on
    /// the copy is closed. On an error the store is as it was before the
    /// import.
    pub fn finish(mut self) -> Result<(), StoreError> {
        let failed = |step: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "cannot {step} ({e}): the store is as it was before the import; run the import again"
            ))
        };
        if !self.committed.load(Ordering::Acquire) {
            return Err(failed(
                "put the imported copy in place",
                &"its transaction did not commit: a write failed, or the store was not closed",
            ));
        }
        let wal_on = || -> rusqlite::Result<String> {
            let conn = Connection::open(&self.staging)?;
            let mode = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            conn.close().map_err(|(_, e)| e)?;
            Ok(mode)
        };
        match wal_on() {
            Ok(mode) if mode == "wal" => {}
            Ok(mode) => {
                return Err(failed(
                    "turn the imported copy's WAL on",
                    &format!("journal mode {mode}"),
                ));
            }
            Err(e) => return Err(failed("turn the imported copy's WAL on", &e)),
        }
        if self.target.exists() {
            std::fs::metadata(&self.target)
                .and_then(|store| std::fs::set_permissions(&self.staging, store.permissions()))
                .map_err(|e| failed("give the imported copy the store's permissions", &e))?;
        }
        File::open(&self.staging)
            .and_then(|file| file.sync_all())
            .map_err(|e| failed("flush the imported copy to the disk", &e))?;
        // The store's WAL was emptied before the copy was made (`copy`):
        // one left beside the new file would be read into it.
        for suffix in ["-wal", "-shm"] {
            remove_if_there(&sibling(&self.target, suffix)).map_err(|e| failed("remove the store's old WAL", &e))?;
        }
        std::fs::rename(&self.staging, &self.target).map_err(|e| failed("put the imported copy in place", &e))?;
        self.done = true;
        // The rename itself on the disk: without it a power cut could bring
        // back the empty store (never a half-made one).
        let folder = match self.target.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(folder).and_then(|folder| folder.sync_all()) {
            tracing::warn!(error = %e, "cannot flush the store's folder to the disk after the import");
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = remove_copy(&self.staging)
        {
            tracing::warn!(error = %e, path = %self.staging.display(), "cannot remove an unfinished import's copy");
        }
    }
}

/// Removes the copy a stopped staged import left beside the store at `db`,
/// whose lock this process holds (so no import is running).
pub(super) fn remove_left_behind(db: &Path) {
    let staging = staging_path(&std::fs::canonicalize(db).unwrap_or_else(|_| db.to_owned()));
    if !staging.exists() {
        return;
    }
    match remove_copy(&staging) {
        Ok(()) => tracing::warn!(
            path = %staging.display(),
            "removed the copy an import into the empty store left unfinished: that import kept nothing, run it again"
        ),
        Err(e) => tracing::warn!(error = %e, path = %staging.display(), "cannot remove an unfinished import's copy"),
    }
}

/// Whether the database at `path` holds no customer and no event (or is
/// not made yet).
fn holds_nothing(path: &Path) -> Result<bool, StoreError> {
    if !path.exists() {
        return Ok(true);
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    let made: Option<i64> = conn
        .query_row("SELECT 1 FROM sqlite_schema WHERE name = 'customers'", [], |r| r.get(0))
        .optional()?;
    if made.is_none() {
        return Ok(true);
    }
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM customers) AND NOT EXISTS (SELECT 1 FROM events)",
        [],
        |r| r.get(0),
    )?)
}

/// Copies the database at `from` to a new file at `to`, once every commit
/// of its WAL is in its file: so that removing that WAL before the copy
/// takes the store's place loses nothing, even if the process stops
/// between the two.
fn copy(from: &Path, to: &Path) -> Result<(), StoreError> {
    let to_text = to.to_str().ok_or_else(|| StoreError::Open {
        path: from.display().to_string(),
        reason: format!("{} is not a UTF-8 path, which SQLite's copy needs", to.display()),
    })?;
    let conn = Connection::open(from)?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(StoreError::Open {
            path: from.display().to_string(),
            reason: "another connection reads it (an sqlite3 shell, a backup?): close it, then run the import again"
                .into(),
        });
    }
    conn.execute("VACUUM INTO ?1", [to_text])?;
    Ok(())
}

/// Gives the copy at `to` the owner of the store at `from`, as the file
/// that replaces it: a store made by the service's user must stay its own
/// when an administrator imports into it.
#[cfg(unix)]
fn same_owner(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (store, copy) = (std::fs::metadata(from)?, std::fs::metadata(to)?);
    if (store.uid(), store.gid()) != (copy.uid(), copy.gid()) {
        std::os::unix::fs::chown(to, Some(store.uid()), Some(store.gid()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn same_owner(_from: &Path, _to: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Removes a copy and what SQLite may have left beside it.
fn remove_copy(staging: &Path) -> std::io::Result<()> {
    for suffix in ["-journal", "-wal", "-shm"] {
        remove_if_there(&sibling(staging, suffix))?;
    }
    remove_if_there(staging)
}

/// The path of `db` with `suffix` added to its file name.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
