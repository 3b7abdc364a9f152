//! One process at a time writes to an embedded store: an exclusive lock on
//! a file beside the database (`clientele.db.lock`), held by the writer
//! for as long as it runs.
//!
//! Two processes on one file (an overlapping restart, a `rebuild` while
//! `serve` runs) would each keep their own view of the store, and the
//! second one would fail or queue nothing until its view caught up. The
//! lock refuses the second at start-up instead, naming the process that
//! holds it. The operating system releases it when its holder exits,
//! whatever the way, so a crash never leaves the store locked. The file
//! stays beside the database: removing it would let two processes each
//! lock a file of that name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Held while this process writes to the store; released when dropped.
#[derive(Debug)]
pub(super) struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// The lock of the database at `db`, or [`StoreError::InUse`] if
    /// another process holds it.
    pub(super) fn acquire(db: &Path) -> Result<Self, StoreError> {
        let path = lock_path(db);
        let open_error = |e: std::io::Error| StoreError::Open {
            path: db.display().to_string(),
            reason: format!("cannot open its lock file {}: {e}", path.display()),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(open_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::InUse {
                    path: db.display().to_string(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_error(e)),
        }
        // Who holds it, for the message a second process prints.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(open_error)?;
        Ok(Self { _file: file })
    }
}

/// Beside the file the database really is: two paths to one file (a
/// symbolic link, `..`) must meet on one lock.
fn lock_path(db: &Path) -> PathBuf {
    let real = std::fs::canonicalize(db)
        .ok()
        .or_else(|| {
            // A store not created yet: its folder is.
            let folder = std::fs::canonicalize(db.parent()?).ok()?;
            Some(folder.join(db.file_name()?))
        })
        .unwrap_or_else(|| db.to_owned());
    let mut name = real.into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("clientele.db");
        let first = StoreLock::acquire(&db).expect("the first lock");
        let refused = StoreLock::acquire(&db).expect_err("a second lock is refused");
        let message = refused.to_string();
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert!(message.contains("stop it first"), "{message}");
        drop(first);
        StoreLock::acquire(&db).expect("the lock once its holder let go");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_locked_store_is_refused_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("clientele.db");
        std::fs::write(&db, b"").expect("a database file");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).expect("a link");
        let _first = StoreLock::acquire(&db).expect("the first lock");
        assert!(matches!(StoreLock::acquire(&link), Err(StoreError::InUse { .. })));
        let around = dir
            .path()
            .join("..")
            .join(dir.path().file_name().unwrap())
            .join("clientele.db");
        assert!(matches!(StoreLock::acquire(&around), Err(StoreError::InUse { .. })));
    }
}
