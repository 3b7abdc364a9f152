//! The embedded store's checkpoints: copying the WAL back into the
//! database file, off the writer's thread. SQLite's own automatic
//! checkpoint runs inside the commit that crosses its threshold, and its
//! `fsync` of the database file (the WAL's pages land at random places
//! in it) stalled every delivery behind that commit for 40 to 60 ms on
//! this project's machine. Here a thread with its own connection does the
//! copying while the writer goes on committing to the WAL; what the
//! writer appended meanwhile is copied by further passes, until a pass
//! ends with only a few frames left: the writer copies those itself
//! between two transactions, so that its next write restarts the WAL
//! from its beginning instead of growing it. The writer's copy stalls
//! every delivery for an `fsync` of the database file (which also flushes
//! what the passes copied: a pass syncs the file only when no commit
//! landed during it), so it waits for a pass that leaves little rather
//! than taking what the first one leaves; after a bounded number of
//! passes (when commits are larger than the tail) it copies what is
//! left. Talks to the writer (`super::Writer`) only.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::StoreError;

/// When a checkpoint starts, and when the writer finishes it itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The WAL's size, in frames (one page each), that starts copying it
    /// back.
    pub start: i32,
    /// At most this many frames not yet copied when a pass ends, the
    /// writer copies them: a short stall, after which the WAL restarts.
    pub tail: i32,
    /// After this many passes the writer copies whatever is left, so that
    /// a cycle ends when commits are larger than the tail.
    pub passes: u32,
}

impl Limits {
    /// 64 MiB of WAL; 128 KiB left for the writer. A pass takes long
    /// enough for some commits to land meanwhile, so how much it leaves
    /// goes up and down: at half the benchmark's full rate, 4 to 14
    /// passes ended with at most 32 frames left, which the writer copied
    /// in 1 to 2 ms mostly.
    pub const DEFAULT: Limits = Limits {
        start: 16384,
        tail: 32,
        passes: 16,
    };
}

/// The checkpointing thread, as the writer sees it.
pub(super) struct Checkpoints {
    limits: Limits,
    /// The WAL's size in frames after the writer's latest commit.
    frames: Arc<AtomicI32>,
    /// `None` once the thread is gone: then the writer checkpoints as
    /// SQLite does by default.
    start: Option<Sender<()>>,
    /// After each pass: how many of the WAL's frames are in the database
    /// file now, or `None` if the pass failed.
    copied: Receiver<Option<i32>>,
    /// A pass started and not yet reported: how many passes this copy of
    /// the WAL has taken so far, this one included.
    pass: Option<u32>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Turns the writer's automatic checkpoints off and starts the thread
    /// that does them instead, on its own connection to `path`.
    pub fn start(path: &Path, writer: &mut Connection, limits: Limits) -> Result<Self, StoreError> {
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let frames = Arc::new(AtomicI32::new(0));
        let seen = frames.clone();
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n| {
            seen.store(n, Ordering::Relaxed);
            Ok(())
        }))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(super::BUSY_TIMEOUT)?;
        let (start, starts) = channel();
        let (report, copied) = channel();
        let thread = std::thread::Builder::new()
            .name("clientele-checkpoint".into())
            .spawn(move || copy_back(&conn, &starts, &report))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot start the checkpoint thread: {e}"),
            })?;
        Ok(Self {
            limits,
            frames,
            start: Some(start),
            copied,
            pass: None,
            thread: Some(thread),
        })
    }

    /// After each of the writer's commits: starts a pass once the WAL is
    /// past `limits.start`; once a pass is done, starts another if more
    /// than `limits.tail` frames came meanwhile and fewer than
    /// `limits.passes` passes ran, or else copies what is left on
    /// `writer`, so that the writer's next transaction restarts the WAL.
    /// (If a pass copied it all while the writer was idle, the writer's
    /// next write restarted it already: then fewer frames are in the WAL
    /// than the pass copied.)
    pub fn after_commit(&mut self, writer: &Connection) {
        if self.start.is_none() {
            return;
        }
        let frames = self.frames.load(Ordering::Relaxed);
        let Some(passes) = self.pass else {
            if frames >= self.limits.start {
                self.begin_pass(writer, 1);
            }
            return;
        };
        match self.copied.try_recv() {
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => self.stop(writer),
            Ok(Some(copied)) if copied > frames => self.pass = None,
            Ok(Some(copied)) if frames - copied > self.limits.tail && passes < self.limits.passes => {
                self.begin_pass(writer, passes + 1);
            }
            Ok(_) => {
                self.pass = None;
                if let Err(e) = writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::error!(error = %e, "cannot copy the WAL back into the database file");
                }
            }
        }
    }

    /// The writer emptied the WAL itself (a `TRUNCATE` checkpoint, which
    /// the WAL hook does not see).
    pub fn emptied(&self) {
        self.frames.store(0, Ordering::Relaxed);
    }

    /// Waits for a pass in progress, so that the writer may checkpoint.
    pub fn wait(&mut self) {
        if self.pass.take().is_some() {
            let _ = self.copied.recv();
        }
    }

    fn begin_pass(&mut self, writer: &Connection, passes: u32) {
        if self.start.as_ref().is_some_and(|start| start.send(()).is_ok()) {
            self.pass = Some(passes);
        } else {
            self.stop(writer);
        }
    }

    /// The thread is gone (it cannot be, short of a bug): the writer's
    /// commits checkpoint as SQLite's do, every `limits.start` frames.
    fn stop(&mut self, writer: &Connection) {
        tracing::error!("the checkpoint thread stopped; the writer checkpoints the WAL itself from now on");
        self.start = None;
        self.pass = None;
        if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", self.limits.start) {
            tracing::error!(error = %e, "cannot turn the writer's own checkpoints on");
        }
    }
}

impl Drop for Checkpoints {
    /// Lets a pass in progress finish, and stops the thread.
    fn drop(&mut self) {
        self.start = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: one pass per request, each reported, until the writer is
/// gone.
fn copy_back(conn: &Connection, starts: &Receiver<()>, report: &Sender<Option<i32>>) {
    for () in starts {
        if report.send(pass(conn)).is_err() {
            break;
        }
    }
    tracing::debug!("checkpoint thread stopped");
}

/// A PASSIVE checkpoint, which never blocks the writer: how many frames
/// are in the database file after it, or `None` if it could not run.
/// SQLite answers busy when the pass read the WAL's index while the
/// writer was updating it (a few passes in a thousand): then it tries
/// again, as the writer's copy of a whole WAL is the stall this thread
/// exists to spare.
fn pass(conn: &Connection) -> Option<i32> {
    const TRIES: u32 = 5;
    for _ in 0..TRIES {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i32>(2)?))
        }) {
            Ok((0, copied)) if copied >= 0 => return Some(copied),
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                tracing::error!(error = %e, "cannot copy the WAL back into the database file");
                return None;
            }
        }
    }
    tracing::warn!(
        tries = TRIES,
        "a checkpoint pass found the WAL busy; the writer copies it itself"
    );
    None
}
