//! The embedded store: one SQLite file in WAL mode, no server.
//!
//! One writer thread owns the only writing connection. Requests reach it
//! through a bounded channel; it takes every request waiting, runs them in
//! one transaction, commits once (one fsync for the whole group,
//! `synchronous = FULL`) and only then answers each request; if one
//! fails, the group runs again with a savepoint each, so that it fails
//! alone. Reads run on a small pool of read-only connections, which WAL
//! lets proceed while the writer commits.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    CustomerQuery, Delivery, Directory, Erasure, EventQuery, EventRedaction, EventStatus, HistoryEntry, HistoryQuery,
    Import, Inbox, IngestOutcome, MessageQuery, Outcome, Page, Publish, Rebuild, Rebuilt, Remap, Retry, Store,
    StoreError, StoredEvent, Subscriptions, compress, migrations, outboxed,
};
use crate::BoxFuture;
use crate::clock::Clock;
use crate::directory::{self, Loaded, MergeLink, Record};
use crate::model::{Customer, Profile, UtcMillis};
use crate::outbound::{Backlog, Claim, Due, Message, Outbox, OutboxError, Recorded, Subscription};
use crate::sources::{Mapped, Unmappable};

/// The start of the statement that inserts records, to be followed by rows
/// of [`RecordColumns::values`].
macro_rules! insert_records {
    () => {
        "INSERT INTO customers (id, source, external_id, account, email, status, profile, order_key,
                                merged_into, merged_from, version, changed_at, change_seq,
                                last_history, last_outbox, profile_codec) VALUES"
    };
}

mod bulk;
mod checkpoint;
mod composed;
mod ids;
mod keys;
mod lock;
mod outbound;
mod persons;
mod rebuild;
mod retention;
mod sessions;
mod sources;
mod staged;
#[cfg(test)]
mod tests;

use self::checkpoint::Checkpoints;
use self::ids::{EVENT, KeptId, PackedId, id_text};
use self::lock::StoreLock;
pub use self::staged::Staging;
use super::reprocess::{Reprocessing, reprocessing};
use super::rows::{
    EVENT_COLUMNS, Lookup, NAMES_BACKFILL_STEP, NamesBackfill, REDACT_EVENTS, RawEvent, RawRecord, Settled, Settling,
    customer_page, is_suppressed_target, lookup_edits, mention_erasures, mention_keys, name_words, pack_body,
    pack_dedupe_key, pack_history, pack_order_key, pack_profile, page, positioned_page, record_columns,
    redact_envelopes, redaction, settling, status_indexed, touched_ids, unpack_history, unpack_order_key,
};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_init.sql"),
    include_str!("migrations/sqlite/0002_outbound.sql"),
    include_str!("migrations/sqlite/0003_lookup_indexes.sql"),
    include_str!("migrations/sqlite/0004_chains.sql"),
    include_str!("migrations/sqlite/0005_sending.sql"),
    include_str!("migrations/sqlite/0006_version_floors.sql"),
    include_str!("migrations/sqlite/0007_mentions.sql"),
    include_str!("migrations/sqlite/0008_fanout.sql"),
    include_str!("migrations/sqlite/0009_access.sql"),
    include_str!("migrations/sqlite/0010_claims.sql"),
    include_str!("migrations/sqlite/0011_codec.sql"),
    include_str!("migrations/sqlite/0012_console.sql"),
    include_str!("migrations/sqlite/0013_history_codec.sql"),
    include_str!("migrations/sqlite/0014_outbox_codec.sql"),
    include_str!("migrations/sqlite/0015_profile_codec.sql"),
    include_str!("migrations/sqlite/0016_persons.sql"),
    include_str!("migrations/sqlite/0017_dead_messages.sql"),
    include_str!("migrations/sqlite/0018_customer_names.sql"),
    include_str!("migrations/sqlite/0019_footprint.sql"),
    include_str!("migrations/sqlite/0020_person_codec.sql"),
    include_str!("migrations/sqlite/0021_dedupe_digests.sql"),
    include_str!("migrations/sqlite/0022_events_status_partial.sql"),
    include_str!("migrations/sqlite/0023_ids_as_bytes.sql"),
    include_str!("migrations/sqlite/0024_review_codec.sql"),
    include_str!("migrations/sqlite/0025_composed_received_at.sql"),
    include_str!("migrations/sqlite/0026_reviews_by_status.sql"),
    include_str!("migrations/sqlite/0027_review_ids_as_bytes.sql"),
    include_str!("migrations/sqlite/0028_person_ids_as_bytes.sql"),
];

/// The seqs of customer `?1`'s history entries, from its latest back
/// through the chain (migration 4), for a statement that follows.
const HISTORY_CHAIN: &str = "WITH RECURSIVE chain(seq) AS (
    SELECT last_history FROM customers WHERE id = ?1 AND last_history IS NOT NULL
    UNION SELECT h.prev FROM history h JOIN chain ON h.seq = chain.seq WHERE h.prev IS NOT NULL)";

/// The seqs of customer `?1`'s outbox rows: its record's chain, and those
/// a rebuild left in `outbox_heads`.
const OUTBOX_CHAIN: &str = "WITH RECURSIVE chain(seq) AS (
    SELECT last_outbox FROM customers WHERE id = ?1 AND last_outbox IS NOT NULL
    UNION SELECT seq FROM outbox_heads WHERE customer_id = ?1
    UNION SELECT o.prev FROM outbox o JOIN chain ON o.seq = chain.seq WHERE o.prev IS NOT NULL)";

/// Requests waiting for the writer at most; beyond, callers wait.
const QUEUE: usize = 1024;
/// Requests committed together at most.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock another holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The statements each connection keeps prepared. The writer's
/// transactions go through more than a hundred distinct statements
/// (ingest, fan-out, claims, persons, sources' counters); with rusqlite's
/// default of 16 each one was compiled again on most uses, a third of the
/// writer's instructions (callgrind, bench/callgrind.sh `COLLECT=all`).
const STATEMENT_CACHE: usize = 256;

/// Opens a connection to the database at `path` with the settings every
/// connection shares.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How the writer keeps its commits.
#[derive(Debug, Clone)]
enum Durability {
    /// In the WAL, each one on the disk before it is answered.
    Journaled,
    /// Without a journal, in one transaction: a staged import's copy of
    /// the store, which replaces the store only once it is whole
    /// ([`staged`]). `committed` is set once that transaction is.
    Staged { committed: Arc<AtomicBool> },
}

/// Creates the folder of the database at `path` if need be, and takes its
/// lock.
fn lock_store(path: &Path) -> Result<StoreLock, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: format!("cannot create {}: {e}", dir.display()),
        })?;
    }
    StoreLock::acquire(path)
}

pub struct SqliteStore {
    commands: mpsc::Sender<Command>,
    readers: Arc<Readers>,
    writer: Mutex<Option<JoinHandle<()>>>,
    queued: Arc<Notify>,
    /// Held by the rebuild under way: one at a time.
    rebuilding: Arc<tokio::sync::Mutex<()>>,
    /// What stamps the directory's changes (the writer has its copy).
    clock: Clock,
}

struct Command {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

enum Op {
    Ingest(Box<Delivery>),
    IngestBatch(Vec<Delivery>, Publish),
    Reprocess(String, Result<Mapped, Unmappable>, Publish),
    Erase(String),
    RedactEvent(String),
    CreateSubscription(Subscription),
    DeleteSubscription(String),
    SetEnabled(String, bool),
    RetryMessage(String),
    Replay(String, UtcMillis),
    FanOut,
    Claim(Claim),
    RecordAttempts(Vec<Recorded>),
    /// A write of another role (sources, keys: see [`SqliteStore::write`]).
    Run(WriteFn),
    /// Work that runs between two of the writer's transactions, not in
    /// one: the writer's writes wait for it (a rebuild's swap, on a
    /// connection of its own).
    Aside(AsideFn),
    Shutdown,
}

type AsideFn = Box<dyn FnOnce() -> Result<Box<dyn std::any::Any + Send>, StoreError> + Send>;

/// A write run by the writer in its transaction. It may run twice (see
/// [`Writer::commit`]), so it is `Fn`.
type WriteFn = Box<dyn Fn(&Connection) -> Result<Box<dyn std::any::Any + Send>, StoreError> + Send>;

enum Answer {
    Ingest(IngestOutcome),
    Batch(Vec<IngestOutcome>),
    Reprocess(Option<IngestOutcome>),
    Found(bool),
    Retried(Retry),
    Subscription(Option<Subscription>),
    Replayed(Option<u64>),
    Erased(Erasure),
    EventRedacted(EventRedaction),
    Claimed(Vec<outbound::Claimed>),
    FannedOut { more: bool },
    Any(Box<dyn std::any::Any + Send>),
    Done,
}

impl SqliteStore {
    /// Opens (creating if need be) the database at `path` and brings its
    /// schema up to date; the directory's changes are stamped by `clock`.
    pub fn open(path: &Path, clock: Clock) -> Result<Self, StoreError> {
        let lock = Arc::new(lock_store(path)?);
        staged::remove_left_behind(path);
        Self::open_locked(path, lock, Durability::Journaled, clock)
    }

    /// Opens the database at `path`, whose lock (or, for a staged import,
    /// whose target's lock) this process holds.
    fn open_locked(
        path: &Path,
        lock: Arc<StoreLock>,
        durability: Durability,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let queued = Arc::new(Notify::new());
        let writer = Writer::open_locked(
            path,
            lock,
            durability,
            queued.clone(),
            checkpoint::Limits::DEFAULT,
            clock.clone(),
        )
        .map_err(|e| match e {
            StoreError::Sqlite(e) => open_error(e.to_string()),
            e => e,
        })?;
        let (commands, receiver) = mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("clientele-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            commands,
            readers: Arc::new(Readers {
                path: path.to_owned(),
                idle: Mutex::new(Some(Vec::new())),
            }),
            writer: Mutex::new(Some(handle)),
            queued,
            rebuilding: Arc::default(),
            clock,
        })
    }

    async fn send(&self, op: Op) -> Result<Answer, StoreError> {
        send(&self.commands, op).await
    }

    /// Runs `write` on the writer, in the transaction of its batch.
    async fn write<T: Send + 'static>(
        &self,
        write: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let op = Op::Run(Box::new(move |tx| {
            write(tx).map(|value| Box::new(value) as Box<dyn std::any::Any + Send>)
        }));
        self.ask(op, |answer| match answer {
            Answer::Any(value) => value.downcast::<T>().ok().map(|value| *value),
            _ => None,
        })
        .await
    }

    /// Sends `op` to the writer and picks its answer's value.
    async fn ask<T>(&self, op: Op, pick: impl FnOnce(Answer) -> Option<T>) -> Result<T, StoreError> {
        pick(self.send(op).await?).ok_or_else(|| StoreError::Bug("the writer answered another kind of request".into()))
    }
}

/// Sends `op` to the writer and waits for its answer.
async fn send(commands: &mpsc::Sender<Command>, op: Op) -> Result<Answer, StoreError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command { op, reply })
        .await
        .map_err(|_| StoreError::Closed)?;
    answer.await.map_err(|_| StoreError::Closed)?
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS clientele_migrations (version INTEGER PRIMARY KEY, checksum BLOB NOT NULL)",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let kept = conn
        .prepare("SELECT version, checksum FROM clientele_migrations")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let plan = migrations::plan(MIGRATIONS, version, &kept)?;
    let tx = conn.transaction()?;
    for (version, checksum) in &plan.record {
        tx.execute(
            "INSERT INTO clientele_migrations (version, checksum) VALUES (?1, ?2)",
            params![version, checksum],
        )?;
    }
    tx.commit()?;
    for (version, sql, checksum) in plan.apply {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO clientele_migrations (version, checksum) VALUES (?1, ?2)",
            params![version, checksum],
        )?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

/// Writes the `customer_names` rows of the customers kept before the
/// migration that made the table, a step a transaction, from the position
/// it keeps in `backfills` (gone when done): a start after an interrupted
/// one goes on from there.
fn backfill_names(conn: &mut Connection) -> Result<(), StoreError> {
    let mut backfill = NamesBackfill::new();
    loop {
        let tx = conn.transaction()?;
        let Some(after) = tx
            .query_row("SELECT after FROM backfills WHERE name = 'customer_names'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        else {
            return Ok(());
        };
        let step: Vec<(String, Vec<u8>, i64)> = tx
            .prepare_cached("SELECT id, profile, profile_codec FROM customers WHERE id > ?1 ORDER BY id LIMIT ?2")?
            .query_map(params![after, NAMES_BACKFILL_STEP], |r| {
                Ok((r.get(0)?, kept_bytes(r.get_ref(1)?), r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        match backfill.step(step)? {
            None => {
                tx.execute("DELETE FROM backfills WHERE name = 'customer_names'", [])?;
            }
            Some((last, words, ids)) => {
                let mut insert = tx.prepare_cached(&format!("{} (?1, ?2)", lookup_insert(Lookup::Names)))?;
                for (word, id) in words.iter().zip(&ids) {
                    insert.execute([word, id])?;
                }
                drop(insert);
                tx.execute("UPDATE backfills SET after = ?1 WHERE name = 'customer_names'", [last])?;
            }
        }
        tx.commit()?;
    }
}

/// The statement listing events of `status` past a `seq` (`?2`), `?3` at
/// most, with `columns`.
fn events_by_status(columns: &str, status: EventStatus) -> String {
    format!(
        "SELECT {columns} FROM events WHERE status = ?1{} AND seq > ?2 ORDER BY seq LIMIT ?3",
        status_indexed(status)
    )
}

impl Import for SqliteStore {
    /// One command to the writer: the batch runs in the writer's
    /// transaction, with whatever else is waiting.
    fn ingest_batch(
        &self,
        deliveries: Vec<Delivery>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Vec<IngestOutcome>, StoreError>> {
        Box::pin(self.ask(Op::IngestBatch(deliveries, publish), |a| match a {
            Answer::Batch(outcomes) => Some(outcomes),
            _ => None,
        }))
    }
}

impl Inbox for SqliteStore {
    fn ingest(&self, delivery: Delivery) -> BoxFuture<'_, Result<IngestOutcome, StoreError>> {
        Box::pin(self.ask(Op::Ingest(Box::new(delivery)), |a| match a {
            Answer::Ingest(outcome) => Some(outcome),
            _ => None,
        }))
    }

    fn reprocess(
        &self,
        event_id: String,
        mapped: Result<Mapped, Unmappable>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Option<IngestOutcome>, StoreError>> {
        Box::pin(self.ask(Op::Reprocess(event_id, mapped, publish), |a| match a {
            Answer::Reprocess(outcome) => Some(outcome),
            _ => None,
        }))
    }

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
            let raw = conn
                .prepare_cached(&sql)?
                .query_row([PackedId(&id)], read_event)
                .optional()?;
            raw.map(RawEvent::into_event).transpose()
        }))
    }

    fn redact_event(&self, id: String) -> BoxFuture<'_, Result<EventRedaction, StoreError>> {
        Box::pin(self.ask(Op::RedactEvent(id), |a| match a {
            Answer::EventRedacted(redaction) => Some(redaction),
            _ => None,
        }))
    }

    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<Page<StoredEvent>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            // Bodies only when asked for (a rebuild): a page of a thousand
            // listed events must not read a thousand bodies.
            let columns = if query.bodies {
                EVENT_COLUMNS.to_owned()
            } else {
                EVENT_COLUMNS.replace(", body,", ", NULL,")
            };
            let after = query.after.unwrap_or(0);
            let limit = query.limit as i64 + 1;
            // One statement per shape, so that a status filter uses its index.
            let rows = match query.status {
                Some(status) => {
                    let mut stmt = conn.prepare_cached(&events_by_status(&columns, status))?;
                    let rows = stmt.query_map(params![status.as_str(), after, limit], read_event)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let sql = format!("SELECT {columns} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params![after, limit], read_event)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
            };
            let events = rows
                .into_iter()
                .map(RawEvent::into_event)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(events, query.limit, |e| e.seq))
        }))
    }
}

impl Directory for SqliteStore {
    fn customer(&self, id: String) -> BoxFuture<'_, Result<Option<Customer>, StoreError>> {
        Box::pin(
            self.readers
                .run(move |conn| Ok(load_record(conn, &id)?.map(|r| r.to_customer()))),
        )
    }

    fn erase(&self, id: String) -> BoxFuture<'_, Result<Erasure, StoreError>> {
        Box::pin(self.ask(Op::Erase(id), |a| match a {
            Answer::Erased(erasure) => Some(erasure),
            _ => None,
        }))
    }

    fn customers(&self, query: CustomerQuery) -> BoxFuture<'_, Result<Page<Customer>, StoreError>> {
        Box::pin(self.readers.run(move |conn| list_customers(conn, &query)))
    }

    fn history(&self, query: HistoryQuery) -> BoxFuture<'_, Result<Option<Page<HistoryEntry>>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            // One snapshot (see `Readers::run`): an entry composed from the
            // record is read with the record it was composed from.
            let Some(record) = load_record(conn, &query.customer_id)? else {
                return Ok(None);
            };
            // The chain from the latest entry back to the cursor: only the
            // page's entries are read whole.
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE chain(seq) AS (
                     SELECT last_history FROM customers WHERE id = ?1 AND last_history > ?2
                     UNION SELECT h.prev FROM history h JOIN chain ON h.seq = chain.seq WHERE h.prev > ?2)
                 SELECT seq, entry, codec FROM history WHERE seq IN (SELECT seq FROM chain) ORDER BY seq LIMIT ?3",
            )?;
            let args = params![query.customer_id, query.after.unwrap_or(0), query.limit as i64 + 1];
            let rows: Vec<(i64, Vec<u8>, i64)> = stmt
                .query_map(args, |r| Ok((r.get(0)?, kept_bytes(r.get_ref(1)?), r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let entries = rows
                .into_iter()
                .map(|(seq, entry, codec)| {
                    let entry = match codec {
                        composed::COMPOSED => composed::kept_entry(conn, seq, &record)?
                            .ok_or_else(|| StoreError::Bug("a composed history entry is gone".into()))?,
                        _ => unpack_history(codec, entry)?,
                    };
                    Ok((seq, entry))
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Some(positioned_page(entries, query.limit)))
        }))
    }

    fn begin_rebuild(&self, sources: Vec<String>, remap: Remap) -> BoxFuture<'_, Result<Box<dyn Rebuild>, StoreError>> {
        Box::pin(async move {
            let guard = self
                .rebuilding
                .clone()
                .try_lock_owned()
                .map_err(|_| StoreError::Rebuilding)?;
            let (path, clock) = (self.readers.path.clone(), self.clock.clone());
            let shadow = tokio::task::spawn_blocking(move || rebuild::Shadow::open(&path, &sources, remap, clock))
                .await
                .map_err(|e| StoreError::Bug(format!("a rebuild panicked: {e}")))??;
            Ok(Box::new(Rebuilding {
                shadow: Some(shadow),
                commands: self.commands.clone(),
                _one_at_a_time: guard,
            }) as Box<dyn Rebuild>)
        })
    }
}

/// A rebuild under way on the embedded store (see [`rebuild`]).
struct Rebuilding {
    /// Taken while a step runs on a blocking thread.
    shadow: Option<rebuild::Shadow>,
    commands: mpsc::Sender<Command>,
    _one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
}

impl Rebuild for Rebuilding {
    fn replay(&mut self, limit: usize) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut shadow = self
                .shadow
                .take()
                .ok_or_else(|| StoreError::Bug("a rebuild's step failed before".into()))?;
            let (shadow, more) = tokio::task::spawn_blocking(move || {
                let more = shadow.replay(limit);
                (shadow, more)
            })
            .await
            .map_err(|e| StoreError::Bug(format!("a rebuild panicked: {e}")))?;
            self.shadow = Some(shadow);
            more
        })
    }

    fn finish(self: Box<Self>, page: usize) -> BoxFuture<'static, Result<Rebuilt, StoreError>> {
        Box::pin(async move {
            let Rebuilding {
                shadow,
                commands,
                _one_at_a_time,
            } = *self;
            let shadow = shadow.ok_or_else(|| StoreError::Bug("a rebuild's step failed before".into()))?;
            // Between two of the writer's transactions: its writes wait.
            let op = Op::Aside(Box::new(move || {
                shadow
                    .finish(page)
                    .map(|rebuilt| Box::new(rebuilt) as Box<dyn std::any::Any + Send>)
            }));
            match send(&commands, op).await? {
                Answer::Any(value) => value
                    .downcast::<Rebuilt>()
                    .map(|rebuilt| *rebuilt)
                    .map_err(|_| StoreError::Bug("the writer answered another kind of request".into())),
                _ => Err(StoreError::Bug("the writer answered another kind of request".into())),
            }
        })
    }
}

impl Store for SqliteStore {
    fn size_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            let bytes: i64 = conn.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )?;
            Ok(bytes.max(0) as u64)
        }))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.commands.is_closed() {
                return Err(StoreError::Closed);
            }
            self.readers
                .run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
                .await
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The writer's connection closes last: then SQLite copies the
            // WAL into the database file and removes it, so that the file
            // alone holds every commit once the service has stopped.
            self.readers.close();
            // The writer answers Shutdown after committing what came before.
            let _ = self.send(Op::Shutdown).await;
            let handle = self.writer.lock().expect("writer handle lock").take();
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        })
    }
}

impl Subscriptions for SqliteStore {
    fn create_subscription(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.ask(Op::CreateSubscription(subscription), |a| {
            matches!(a, Answer::Done).then_some(())
        }))
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<Subscription>, StoreError>> {
        Box::pin(self.readers.run(outbound::subscriptions))
    }

    fn subscription(&self, id: String) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>> {
        Box::pin(self.readers.run(move |conn| outbound::subscription(conn, &id)))
    }

    fn delete_subscription(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.ask(Op::DeleteSubscription(id), found))
    }

    fn set_subscription_enabled(
        &self,
        id: String,
        enabled: bool,
    ) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>> {
        Box::pin(self.ask(Op::SetEnabled(id, enabled), |a| match a {
            Answer::Subscription(subscription) => Some(subscription),
            _ => None,
        }))
    }

    fn messages(&self, query: MessageQuery) -> BoxFuture<'_, Result<Page<Message>, StoreError>> {
        Box::pin(self.readers.run(move |conn| outbound::messages(conn, &query)))
    }

    fn retry_message(&self, id: String) -> BoxFuture<'_, Result<Retry, StoreError>> {
        Box::pin(self.ask(Op::RetryMessage(id), |a| match a {
            Answer::Retried(retry) => Some(retry),
            _ => None,
        }))
    }

    fn replay(&self, subscription_id: String, since: UtcMillis) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.ask(Op::Replay(subscription_id, since), |a| match a {
            Answer::Replayed(count) => Some(count),
            _ => None,
        }))
    }
}

impl Outbox for SqliteStore {
    fn fan_out(&self) -> BoxFuture<'_, Result<bool, OutboxError>> {
        Box::pin(outboxed(self.ask(Op::FanOut, |a| match a {
            Answer::FannedOut { more } => Some(more),
            _ => None,
        })))
    }

    fn claim_due(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Due>, OutboxError>> {
        Box::pin(outboxed(async move {
            let claimed = self
                .ask(Op::Claim(claim), |a| match a {
                    Answer::Claimed(claimed) => Some(claimed),
                    _ => None,
                })
                .await?;
            claimed
                .into_iter()
                .map(|(mut due, pending)| {
                    if let Some(pending) = pending {
                        due.body = pending.compose(&due)?;
                    }
                    Ok(due)
                })
                .collect()
        }))
    }

    fn record_attempts(&self, attempts: Vec<Recorded>) -> BoxFuture<'_, Result<(), OutboxError>> {
        let op = Op::RecordAttempts(attempts);
        Box::pin(outboxed(self.ask(op, |a| matches!(a, Answer::Done).then_some(()))))
    }

    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, OutboxError>> {
        Box::pin(outboxed(self.readers.run(outbound::backlog)))
    }

    fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }
}

fn found(answer: Answer) -> Option<bool> {
    match answer {
        Answer::Found(found) => Some(found),
        _ => None,
    }
}

struct Readers {
    path: PathBuf,
    /// Idle connections, or `None` once the store is closing: then reads
    /// in progress close their connection when they end, and new ones are
    /// refused.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl Readers {
    /// Runs `read` on a pooled read-only connection, off the async threads,
    /// in one transaction: a read of several statements (a message and its
    /// attempts) sees one committed state.
    fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = this.take()?;
                // Rolled back when dropped: it only ever read.
                let result = conn
                    .unchecked_transaction()
                    .map_err(StoreError::from)
                    .and_then(|tx| read(&tx));
                this.put(conn);
                result
            })
            .await
            .map_err(|e| StoreError::Bug(format!("a read panicked: {e}")))?
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = match self.idle.lock().expect("reader pool lock").as_mut() {
            None => return Err(StoreError::Closed),
            Some(idle) => idle.pop(),
        };
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        connect(&self.path, flags)
    }

    fn put(&self, conn: Connection) {
        if let Some(idle) = self.idle.lock().expect("reader pool lock").as_mut()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
    }

    /// Closes the idle connections, and each busy one when its read ends;
    /// refuses new reads.
    fn close(&self) {
        self.idle.lock().expect("reader pool lock").take();
    }
}

/// Each command's answer, in the order of the batch.
type Answers = Vec<Result<Answer, StoreError>>;

struct Writer {
    /// Declared before `conn`, so dropped first: the writer's connection
    /// is the last to close.
    checkpoints: Checkpoints,
    conn: Connection,
    /// A staged import's one transaction; `None` for a store's writer,
    /// which commits each batch.
    loading: Option<staged::Loading>,
    ctx: Context,
    /// Told when a commit queued outbound messages.
    queued: Arc<Notify>,
    /// Declared after `conn`: released once the connection has closed.
    _lock: Arc<StoreLock>,
}

/// What the writer carries from one request to the next.
struct Context {
    /// The last position given in the change feed (`change_seq`).
    last_change: i64,
    /// SQLite's `data_version` when this writer last looked: it changes
    /// when another connection commits, and then what this context
    /// remembers of the store is read again.
    data_version: i64,
    /// Whether the batch being written wrote outbox rows or queued
    /// messages.
    queued: bool,
    /// Whether an erasure's old pages may still be in the WAL.
    erased: bool,
    /// Claims made so far: each starts at the next subscription, so that
    /// none waits behind the others.
    claims: usize,
    /// What stamps the directory's changes.
    clock: Clock,
}

impl Writer {
    /// Opens the database's one writing connection and brings its schema up
    /// to date; its checkpoints follow `limits`.
    #[cfg(test)]
    fn open(path: &Path, queued: Arc<Notify>, limits: checkpoint::Limits, clock: Clock) -> Result<Self, StoreError> {
        let lock = Arc::new(lock_store(path)?);
        Self::open_locked(path, lock, Durability::Journaled, queued, limits, clock)
    }

    /// [`Writer::open`] for a database whose lock this process holds, kept
    /// as `durability` says.
    fn open_locked(
        path: &Path,
        lock: Arc<StoreLock>,
        durability: Durability,
        queued: Arc<Notify>,
        limits: checkpoint::Limits,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let mut conn = connect(path, OpenFlags::default())?;
        // Incremental vacuum gives compaction's freed pages back to the
        // file system; SQLite takes the setting only before the first
        // table is made, so a store made before stays as it is.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA temp_store = MEMORY;
             PRAGMA secure_delete = ON;",
        )?;
        conn.execute_batch(match durability {
            Durability::Journaled => {
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -16384;"
            }
            Durability::Staged { .. } => staged::PRAGMAS,
        })?;
        migrate(&mut conn)?;
        backfill_names(&mut conn)?;
        if conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))? == 0 {
            tracing::warn!(
                "this store was made without incremental vacuum: compaction's freed pages are reused \
                 but not given back to the file system until a VACUUM (docs/operating.md)"
            );
        }
        let checkpoints = Checkpoints::start(path, &mut conn, limits)?;
        Ok(Self {
            checkpoints,
            loading: match durability {
                Durability::Journaled => None,
                Durability::Staged { committed } => Some(staged::Loading::new(committed)),
            },
            ctx: Context {
                last_change: last_change(&conn)?,
                data_version: data_version(&conn)?,
                queued: false,
                erased: false,
                claims: 0,
                clock,
            },
            conn,
            queued,
            _lock: lock,
        })
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(command) = receiver.blocking_recv() {
            let mut next = Some(command);
            let mut aside = None;
            while let Some(command) = next.take() {
                if matches!(command.op, Op::Aside(_)) {
                    aside = Some(command);
                    break;
                }
                batch.push(command);
                if batch.len() < MAX_BATCH {
                    next = receiver.try_recv().ok();
                }
            }
            let shutdown = batch.iter().any(|c| matches!(c.op, Op::Shutdown));
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if let Some(Command {
                op: Op::Aside(work),
                reply,
            }) = aside
            {
                let done = std::panic::catch_unwind(AssertUnwindSafe(work))
                    .unwrap_or_else(|_| Err(StoreError::Bug("work aside the writer panicked".into())));
                let _ = reply.send(done.map(Answer::Any));
            }
            if shutdown {
                self.checkpoint_at_shutdown();
                break;
            }
        }
        tracing::debug!("store writer stopped");
    }

    /// Runs every command of the batch in one transaction and answers them
    /// only once it is committed. The commands run one after the other
    /// without savepoints first; if one fails, the transaction is rolled
    /// back and they run again, each in its own savepoint, so that one
    /// failure does not undo the others. (A savepoint for every command
    /// costs a copy of each page it modifies.)
    fn commit(&mut self, batch: &mut Vec<Command>) {
        let size = batch.len();
        let before = (
            self.ctx.last_change,
            self.ctx.data_version,
            self.ctx.erased,
            self.ctx.claims,
        );
        let results = match self.transact(batch, false) {
            Ok(Some(results)) => Ok(results),
            Ok(None) => {
                tracing::warn!(
                    size,
                    "a write of the batch failed; the batch runs again, a savepoint each"
                );
                (
                    self.ctx.last_change,
                    self.ctx.data_version,
                    self.ctx.erased,
                    self.ctx.claims,
                ) = before;
                self.ctx.queued = false;
                self.transact(batch, true)
                    .map(|results| results.expect("commands in savepoints are answered one by one"))
            }
            Err(e) => Err(e),
        };
        match results {
            Ok(results) => {
                metrics::histogram!("clientele_store_batch_size").record(size as f64);
                if std::mem::take(&mut self.ctx.queued) {
                    self.queued.notify_one();
                }
                // Before answering: an erasure is off the disk when it is
                // acknowledged, unless a read holds the WAL (then soon after).
                if self.ctx.erased {
                    self.ctx.erased = !self.checkpoint_after_erasure();
                }
                for (command, result) in batch.drain(..).zip(results) {
                    let _ = command.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a write transaction failed");
                self.ctx.queued = false;
                for command in batch.drain(..) {
                    let _ = command.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
        self.checkpoints.after_commit(&self.conn);
    }

    /// Runs the batch's commands in one transaction, each in a savepoint
    /// of its own if `isolated`, and commits. Without savepoints, the first
    /// command that fails rolls the transaction back: then `None`.
    fn transact(&mut self, batch: &[Command], isolated: bool) -> Result<Option<Answers>, rusqlite::Error> {
        if let Some(loading) = &mut self.loading {
            return Ok(Some(loading.transact(&self.conn, batch, &mut self.ctx)));
        }
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another connection committed since this one last looked (a tool,
        // or a process that ignored the lock): what the context remembers
        // is read again, inside the lock this transaction now holds.
        let version = data_version(&tx)?;
        if version != self.ctx.data_version {
            tracing::warn!("another connection wrote to the store; the writer reads its state again");
            self.ctx.data_version = version;
            self.ctx.last_change = last_change(&tx)?;
        }
        let mut results = Vec::with_capacity(batch.len());
        for command in batch {
            let result = unpanicked(|| {
                if !isolated {
                    return execute(&tx, &command.op, &mut self.ctx);
                }
                let sp = tx.savepoint()?;
                let answer = execute(&sp, &command.op, &mut self.ctx)?;
                sp.commit()?;
                Ok(answer)
            });
            if let Err(e) = &result {
                if !isolated {
                    return Ok(None);
                }
                tracing::error!(error = %e, "a write failed and was rolled back");
            }
            results.push(result);
        }
        tx.commit()?;
        Ok(Some(results))
    }
}

/// What `write` answers, or a bug if it panicked: one write's panic fails
/// that write, not the writer.
fn unpanicked(write: impl FnOnce() -> Result<Answer, StoreError>) -> Result<Answer, StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(write))
        .unwrap_or_else(|_| Err(StoreError::Bug("a write panicked".into())))
}

impl Writer {
    /// An erasure's old page images must not outlive it in the WAL: copies
    /// the WAL into the database (where secure_delete zeroed the freed
    /// content) and truncates it. A read in progress holds the WAL; then
    /// this gives up at once, rather than stall every write, and the next
    /// commit tries again. Returns whether it is done.
    fn checkpoint_after_erasure(&mut self) -> bool {
        match self.empty_wal(Duration::from_millis(20)) {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!("an erasure's pages are still in the WAL behind a read; retrying at the next commit");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot checkpoint after an erasure; retrying at the next commit");
                false
            }
        }
    }

    /// At shutdown: the database file alone holds every commit, even if a
    /// read outlives the writer (then SQLite could not remove the WAL as
    /// the writer's connection closes). Waits up to the busy timeout for
    /// reads in progress.
    fn checkpoint_at_shutdown(&mut self) {
        match self.empty_wal(BUSY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => tracing::warn!("a read held the WAL at shutdown; the next start reads the commits left in it"),
            Err(e) => tracing::error!(error = %e, "cannot checkpoint at shutdown; the next start reads the WAL"),
        }
    }

    /// Copies the whole WAL into the database file and truncates it,
    /// waiting at most `patience` for reads in progress. Returns whether
    /// it is done.
    fn empty_wal(&mut self, patience: Duration) -> rusqlite::Result<bool> {
        self.checkpoints.wait();
        self.conn.busy_timeout(patience)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        let done = busy? == 0;
        if done {
            self.checkpoints.emptied();
        }
        Ok(done)
    }
}

/// The last position given in the change feed.
fn last_change(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(change_seq), 0) FROM customers", [], |r| r.get(0))
}

/// Changes whenever another connection commits to the database.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

fn execute(tx: &Connection, op: &Op, ctx: &mut Context) -> Result<Answer, StoreError> {
    match op {
        Op::Ingest(delivery) => ingest(tx, delivery, Publish::Yes, ctx).map(Answer::Ingest),
        Op::IngestBatch(deliveries, publish) => bulk::ingest_batch(tx, deliveries, *publish, ctx).map(Answer::Batch),
        Op::Reprocess(event_id, mapped, publish) => {
            reprocess(tx, event_id, mapped, *publish, ctx).map(Answer::Reprocess)
        }
        Op::Erase(id) => erase(tx, id, ctx).map(Answer::Erased),
        Op::RedactEvent(id) => redact_event(tx, id, ctx).map(Answer::EventRedacted),
        Op::CreateSubscription(subscription) => {
            outbound::create_subscription(tx, subscription)?;
            Ok(Answer::Done)
        }
        Op::DeleteSubscription(id) => outbound::delete_subscription(tx, id).map(Answer::Found),
        Op::SetEnabled(id, enabled) => outbound::set_enabled(tx, id, *enabled).map(Answer::Subscription),
        Op::RetryMessage(id) => {
            let retry = outbound::retry_message(tx, id)?;
            ctx.queued |= retry == Retry::Queued;
            Ok(Answer::Retried(retry))
        }
        Op::Replay(id, since) => {
            let replayed = outbound::replay(tx, id, *since)?;
            ctx.queued |= replayed.is_some_and(|n| n > 0);
            Ok(Answer::Replayed(replayed))
        }
        Op::FanOut => outbound::fan_out(tx).map(|more| Answer::FannedOut { more }),
        Op::Aside(_) => Err(StoreError::Bug("work aside the writer reached its transaction".into())),
        Op::Claim(claim) => {
            ctx.claims += 1;
            outbound::claim(tx, claim, ctx.claims).map(Answer::Claimed)
        }
        Op::RecordAttempts(attempts) => {
            for Recorded { message, attempt, next } in attempts {
                outbound::record_attempt(tx, message, attempt, *next)?;
            }
            Ok(Answer::Done)
        }
        Op::Run(write) => write(tx).map(Answer::Any),
        Op::Shutdown => Ok(Answer::Done),
    }
}

/// Keeps a delivery; its changes go to the outbox if `publish`. The
/// floors a rebuild left are read either way: a version never goes down.
fn ingest(tx: &Connection, d: &Delivery, publish: Publish, ctx: &mut Context) -> Result<IngestOutcome, StoreError> {
    let (loaded, mut heads) = load_touched(tx, &d.mapped, Publish::Yes)?;
    if is_suppressed_target(&loaded, &d.mapped) {
        return Ok(IngestOutcome::Suppressed);
    }
    let dedupe_key = pack_dedupe_key(&d.dedupe_key);
    let duplicate = tx
        .prepare_cached(
            "UPDATE events SET duplicates = duplicates + 1 WHERE source = ?1 AND dedupe_key = ?2 RETURNING id",
        )?
        .query_row(params![d.source, dedupe_key], |r| r.get::<_, KeptId>(0))
        .optional()?
        .map(|id| id.0);
    if let Some(event_id) = duplicate {
        return Ok(IngestOutcome::Duplicate { event_id });
    }
    let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let settled = settle(
        tx,
        settling(&event_id, &d.dedupe_key, d.received_at, &d.mapped),
        &loaded,
        &mut heads,
        publish,
        ctx,
    )?;
    let body = pack_body(&d.body);
    tx.prepare_cached(
        "INSERT INTO events (id, source, dedupe_key, received_at, headers, body, codec, status, reason, outcome, customer_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        PackedId(&event_id),
        d.source,
        dedupe_key,
        d.received_at.to_string(),
        serde_json::to_string(&d.headers)?,
        body.bytes,
        body.codec,
        settled.status.as_str(),
        settled.reason,
        settled.outcome.map(Outcome::as_str),
        settled.customer_id,
    ])?;
    if !d.mentions.is_empty() {
        let keys: Vec<String> = d.mentions.iter().map(|m| m.key(&d.source)).collect();
        tx.prepare_cached("INSERT OR IGNORE INTO event_mentions (key, event_seq) SELECT value, ?2 FROM json_each(?1)")?
            .execute(params![serde_json::to_string(&keys)?, tx.last_insert_rowid()])?;
    }
    Ok(settled.answer)
}

fn reprocess(
    tx: &Connection,
    event_id: &str,
    mapped: &Result<Mapped, Unmappable>,
    publish: Publish,
    ctx: &mut Context,
) -> Result<Option<IngestOutcome>, StoreError> {
    let (loaded, mut heads) = load_touched(tx, mapped, publish)?;
    let kept = tx
        .prepare_cached("SELECT dedupe_key, received_at, redacted FROM events WHERE id = ?1")?
        .query_row([PackedId(event_id)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let settling = match reprocessing(event_id, kept, &loaded, mapped)? {
        Reprocessing::Missing => return Ok(None),
        Reprocessing::Forget => {
            forget_event(tx, event_id)?;
            ctx.erased = true;
            return Ok(Some(IngestOutcome::Suppressed));
        }
        Reprocessing::Settle(settling) => settling,
    };
    let settled = settle(tx, settling, &loaded, &mut heads, publish, ctx)?;
    tx.prepare_cached("UPDATE events SET status = ?2, reason = ?3, outcome = ?4, customer_id = ?5 WHERE id = ?1")?
        .execute(params![
            PackedId(event_id),
            settled.status.as_str(),
            settled.reason,
            settled.outcome.map(Outcome::as_str),
            settled.customer_id,
        ])?;
    Ok(Some(settled.answer))
}

/// The state of the customers settling `mapped` needs (see
/// [`touched_ids`]).
fn load_touched(
    tx: &Connection,
    mapped: &Result<Mapped, Unmappable>,
    publish: Publish,
) -> Result<(Loaded, Heads), StoreError> {
    load(tx, &touched_ids(mapped), publish)
}

/// Settles a kept event: applies it to the directory, whose state it
/// touches is `loaded`, if it is a customer event.
fn settle(
    tx: &Connection,
    settling: Settling<'_>,
    loaded: &Loaded,
    heads: &mut Heads,
    publish: Publish,
    ctx: &mut Context,
) -> Result<Settled, StoreError> {
    Ok(match settling {
        Settling::Done(settled) => settled,
        Settling::Apply(event, meta) => {
            let effects = directory::apply(loaded, event, &meta, ctx.clock.now());
            persist(tx, loaded, heads, &effects, publish, ctx)?;
            let outcome = effects
                .outcome
                .expect("applying an event always settles its own customer");
            Settled::accepted(meta, event.customer.id.clone(), outcome)
        }
    })
}

fn is_suppressed(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM suppressions WHERE customer_id = ?1")?
        .exists([id])?)
}

/// The seqs of the history entries, in the tables of `schema` (empty, or
/// `main.`), of the customers whose ids `customers` selects, walked back
/// from each record's latest (never a scan of the whole history), for a
/// statement that follows.
fn history_chains(schema: &str, customers: &str) -> String {
    format!(
        "WITH RECURSIVE chain(seq) AS (
             SELECT last_history FROM {schema}customers WHERE id IN ({customers}) AND last_history IS NOT NULL
             UNION SELECT h.prev FROM {schema}history h JOIN chain ON h.seq = chain.seq WHERE h.prev IS NOT NULL)"
    )
}

/// Erases a customer in the current transaction (see [`Store::erase`]).
fn erase(tx: &Connection, id: &str, ctx: &mut Context) -> Result<Erasure, StoreError> {
    if is_suppressed(tx, id)? {
        return Ok(Erasure::AlreadyErased);
    }
    let now = ctx.clock.now();
    let Some(record) = load_record(tx, id)? else {
        return erase_without_record(tx, id, now, ctx);
    };
    let mut ids = vec![id.to_owned()];
    let partners = tx
        .prepare_cached(
            "SELECT absorbed FROM merge_links WHERE survivor = ?1 UNION SELECT survivor FROM merge_links WHERE absorbed = ?1",
        )?
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    ids.extend(partners);
    let (loaded, mut heads) = load(tx, &ids, Publish::Yes)?;
    let erasing = directory::erase(
        &loaded,
        &record,
        format!("erasure_{}", uuid::Uuid::now_v7().simple()),
        now,
    );
    // The chains are read from the record: it goes last.
    for sql in [
        // Raw bodies stay listed, redacted.
        format!(
            "{HISTORY_CHAIN} {REDACT_EVENTS}
             WHERE id IN (SELECT event_id FROM history WHERE seq IN (SELECT seq FROM chain)) AND customer_id = ?1"
        ),
        format!("{HISTORY_CHAIN} DELETE FROM history WHERE seq IN (SELECT seq FROM chain)"),
    ] {
        tx.prepare_cached(&sql)?.execute([id])?;
    }
    erase_traces(tx, id, now)?;
    let keys = serde_json::to_string(&mention_keys(&record))?;
    for sql in mention_erasures("SELECT event_seq FROM event_mentions WHERE key IN (SELECT value FROM json_each(?1))") {
        tx.prepare_cached(&sql)?.execute([&keys])?;
    }
    for sql in [
        "DELETE FROM merge_links WHERE survivor = ?1 OR absorbed = ?1",
        "DELETE FROM customers WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    edit_lookups(tx, id, Some(&record.profile), &Profile::default())?;
    suppress(tx, id, now)?;
    persist(tx, &loaded, &mut heads, &erasing.effects, Publish::Yes, ctx)?;
    // Not chained: the record is gone, and the message names no one else.
    publish(tx, &[erasing.deleted], &mut Heads::default(), ctx)?;
    ctx.erased = true;
    Ok(Erasure::Erased)
}

/// What an id left besides its record and history, erased: the
/// quarantined bodies that named it and its envelopes (through the
/// record's chain and `outbox_heads`) redacted, its pending messages
/// cancelled. Returns how many bodies and envelopes were redacted.
fn erase_traces(tx: &Connection, id: &str, now: UtcMillis) -> Result<usize, StoreError> {
    // The index on the status keeps this to the quarantined events.
    let bodies = tx
        .prepare_cached(&format!(
            "{REDACT_EVENTS} WHERE status = 'quarantined' AND customer_id = ?1"
        ))?
        .execute([id])?;
    let envelopes = tx
        .prepare_cached(&format!(
            "{OUTBOX_CHAIN} {} WHERE seq IN (SELECT seq FROM chain)",
            redact_envelopes("json_object", "json('true')", &id_text("id", EVENT))
        ))?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM outbox_heads WHERE customer_id = ?1")?
        .execute([id])?;
    // A message being sent stays pending: its attempt is under way, and the
    // `deleted` message waits behind it.
    tx.prepare_cached(
        "UPDATE messages SET status = 'cancelled', next_attempt_at = NULL
         WHERE customer_id = ?1 AND status = 'pending' AND (sending_until IS NULL OR sending_until <= ?2)",
    )?
    .execute(params![id, now.as_millisecond()])?;
    Ok(bodies + envelopes)
}

/// Redacts a kept event by hand (see [`Store::redact_event`]).
fn redact_event(tx: &Connection, id: &str, ctx: &mut Context) -> Result<EventRedaction, StoreError> {
    let status: Option<String> = tx
        .prepare_cached("SELECT status FROM events WHERE id = ?1")?
        .query_row([PackedId(id)], |r| r.get(0))
        .optional()?;
    let redaction = redaction(status.as_deref());
    if redaction == EventRedaction::Redacted {
        forget_event(tx, id)?;
        ctx.erased = true;
    }
    Ok(redaction)
}

/// Redacts event `id` and forgets what it named.
fn forget_event(tx: &Connection, id: &str) -> Result<(), StoreError> {
    for sql in [
        format!("{REDACT_EVENTS} WHERE id = ?1"),
        "DELETE FROM event_mentions WHERE event_seq = (SELECT seq FROM events WHERE id = ?1)".into(),
    ] {
        tx.prepare_cached(&sql)?.execute([PackedId(id)])?;
    }
    Ok(())
}

/// Erases an id without a record (a quarantined delivery named it, or a
/// rebuild left its envelopes while its events now quarantine): its traces
/// are erased and the id suppressed. No `deleted` message: without a
/// record there is no version to send. `NotFound` if nothing names it.
fn erase_without_record(tx: &Connection, id: &str, now: UtcMillis, ctx: &mut Context) -> Result<Erasure, StoreError> {
    if erase_traces(tx, id, now)? == 0 {
        return Ok(Erasure::NotFound);
    }
    suppress(tx, id, now)?;
    ctx.erased = true;
    Ok(Erasure::Erased)
}

fn suppress(tx: &Connection, id: &str, now: UtcMillis) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO suppressions (customer_id, erased_at) VALUES (?1, ?2)")?
        .execute(params![id, now.to_string()])?;
    Ok(())
}

/// The records with these ids that exist, every merge link naming one, and
/// which of them were erased; and where the records' chains end. With
/// changes to publish, the floors a rebuild left too: a rebuild itself
/// replays without them ([`Store::begin_rebuild`]).
fn load(tx: &Connection, ids: &[String], publish: Publish) -> Result<(Loaded, Heads), StoreError> {
    let mut loaded = Loaded::default();
    let mut heads = Heads::default();
    let sql = format!(
        "SELECT {}, last_history, last_outbox, {} FROM customers WHERE id = ?1",
        record_columns("profile"),
        composed::heads()
    );
    let mut records = tx.prepare_cached(&sql)?;
    // A record a rebuild emptied takes back where its chain of envelopes
    // ended, so that `outbox_heads` does not grow with each rebuild.
    let mut adopt = tx.prepare_cached("SELECT MAX(seq) FROM outbox_heads WHERE customer_id = ?1")?;
    let mut seen_links = HashSet::new();
    let mut links = tx.prepare_cached(
        "SELECT survivor, absorbed, order_key FROM merge_links WHERE survivor = ?1
         UNION ALL SELECT survivor, absorbed, order_key FROM merge_links WHERE absorbed = ?1",
    )?;
    for id in ids {
        let row = records
            .query_row([id], |r| {
                Ok((
                    read_record(r)?,
                    Head {
                        history: r.get(11)?,
                        outbox: r.get(12)?,
                        outbox_composed: r.get(13)?,
                        history_composed: r.get(14)?,
                        adopted: None,
                    },
                ))
            })
            .optional()?;
        if let Some((raw, head)) = row {
            loaded.records.insert(id.clone(), raw.into_record()?.0);
            heads.0.insert(id.clone(), head);
        } else if let Some(seq) = adopt.query_row([id], |r| r.get::<_, Option<i64>>(0))? {
            heads.0.insert(
                id.clone(),
                Head {
                    outbox: Some(seq),
                    adopted: Some(seq),
                    ..Head::default()
                },
            );
        }
        if is_suppressed(tx, id)? {
            loaded.suppressed.insert(id.clone());
        }
        if publish == Publish::Yes {
            let floor = tx
                .prepare_cached("SELECT version FROM version_floors WHERE customer_id = ?1")?
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()?;
            if let Some(floor) = floor {
                loaded.floors.insert(id.clone(), floor as u64);
            }
        }
        let rows = links.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
        })?;
        for row in rows {
            let (survivor, absorbed, key) = row?;
            if seen_links.insert((survivor.clone(), absorbed.clone())) {
                loaded.links.push(MergeLink {
                    survivor,
                    absorbed,
                    order_key: unpack_order_key(&key)?,
                });
            }
        }
    }
    Ok((loaded, heads))
}

/// Where each loaded customer's chains end: the seqs of its latest history
/// entry and outbox row (migration 4). Persisting an event moves them.
#[derive(Debug, Default)]
struct Heads(HashMap<String, Head>);

#[derive(Debug, Default, Clone, Copy)]
struct Head {
    history: Option<i64>,
    outbox: Option<i64>,
    /// The outbox row at `outbox` is kept [`composed::COMPOSED`] from the
    /// record.
    outbox_composed: bool,
    /// The history entry at `history` is kept [`composed::COMPOSED`] from
    /// the record.
    history_composed: bool,
    /// The chain's end taken from `outbox_heads` for a record not written
    /// yet; its row there goes once the record names it.
    adopted: Option<i64>,
}

impl Heads {
    fn of(&mut self, id: &str) -> &mut Head {
        if !self.0.contains_key(id) {
            self.0.insert(id.to_owned(), Head::default());
        }
        self.0.get_mut(id).expect("inserted above")
    }
}

/// Writes what the directory decided, and queues its changes for
/// subscribers if `publish`. History entries and outbox rows go first,
/// each naming its customer's previous one, so that each record's write
/// names its latest.
fn persist(
    tx: &Connection,
    loaded: &Loaded,
    heads: &mut Heads,
    effects: &directory::Effects,
    publish: Publish,
    ctx: &mut Context,
) -> Result<(), StoreError> {
    // A customer about to get another history entry, or whose record is
    // about to change, first has what was composed from its record written
    // out, published or not.
    let touched = effects.history.iter().map(|(id, _)| id);
    for id in touched.chain(effects.writes.iter().filter(|w| w.changed).map(|w| &w.record.id)) {
        let head = heads.of(id);
        if head.outbox_composed || head.history_composed {
            let old = loaded
                .records
                .get(id)
                .ok_or_else(|| StoreError::Bug("a row composed from a record that was not loaded".into()))?;
            let outbox = head.outbox.filter(|_| head.outbox_composed);
            composed::write_out(tx, outbox, head.history.filter(|_| head.history_composed), old)?;
            head.outbox_composed = false;
            head.history_composed = false;
        }
    }
    let mut history = tx.prepare_cached(
        "INSERT INTO history (customer_id, event_id, entry, codec, prev, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         RETURNING seq",
    )?;
    for (n, (customer_id, entry)) in effects.history.iter().enumerate() {
        // A customer's last entry here, if it is the creation of the
        // record written, is kept composed.
        let last = !effects.history[n + 1..].iter().any(|(later, _)| later == customer_id);
        let written = effects
            .writes
            .iter()
            .rev()
            .find(|w| &w.record.id == customer_id && w.changed);
        let compose = last && written.is_some_and(|w| composed::composes(entry, &w.record));
        let head = heads.of(customer_id);
        let packed = if compose {
            composed::kept()
        } else {
            pack_history(entry)?
        };
        let params = params![
            customer_id,
            PackedId(&entry.event_id),
            packed.bytes,
            packed.codec,
            head.history,
            compose.then(|| entry.received_at.as_millisecond()),
        ];
        head.history = Some(history.query_row(params, |r| r.get(0))?);
        head.history_composed = compose;
    }
    if publish == Publish::Yes {
        self::publish(tx, &effects.changes, heads, ctx)?;
    }
    for write in &effects.writes {
        let r = &write.record;
        let head = *heads.of(&r.id);
        let written = if write.changed {
            ctx.last_change += 1;
            let old = loaded.records.get(&r.id);
            let columns = RecordColumns::new(r, ctx.last_change, head)?;
            let written = tx
                .prepare_cached(record_sql(old, r))?
                .execute(columns.values().as_slice())?;
            edit_lookups(tx, &r.id, old.map(|o| &o.profile), &r.profile)?;
            if let (None, Some(seq)) = (old, head.adopted) {
                tx.prepare_cached("DELETE FROM outbox_heads WHERE customer_id = ?1 AND seq = ?2")?
                    .execute(params![r.id, seq])?;
            }
            written
        } else {
            let order_key = r.order_key.as_ref().map(pack_order_key);
            tx.prepare_cached("UPDATE customers SET order_key = ?2, last_history = ?3 WHERE id = ?1")?
                .execute(params![r.id, order_key, head.history])?
        };
        if written != 1 {
            // Its lookup rows and chains would name a customer that erasure
            // cannot find.
            return Err(StoreError::Bug("a record to update has no row".into()));
        }
    }
    // A stale event writes no record, but its history entry is the
    // record's latest.
    for (customer_id, _) in &effects.history {
        if !effects.writes.iter().any(|w| &w.record.id == customer_id) {
            let written = tx
                .prepare_cached("UPDATE customers SET last_history = ?2 WHERE id = ?1")?
                .execute(params![customer_id, heads.of(customer_id).history])?;
            if written != 1 {
                return Err(StoreError::Bug("a history entry's record has no row".into()));
            }
        }
    }
    let mut link = tx.prepare_cached(UPSERT_LINK)?;
    for l in &effects.links {
        link.execute(params![l.survivor, l.absorbed, pack_order_key(&l.order_key)])?;
    }
    Ok(())
}

/// Inserts a merge link, or raises its key.
const UPSERT_LINK: &str = "INSERT INTO merge_links (survivor, absorbed, order_key) VALUES (?1, ?2, ?3)
     ON CONFLICT (survivor, absorbed) DO UPDATE SET order_key = excluded.order_key";

/// Writes changes to the outbox, for the subscriptions that want them.
fn publish(
    tx: &Connection,
    changes: &[directory::Change],
    heads: &mut Heads,
    ctx: &mut Context,
) -> Result<(), StoreError> {
    ctx.queued |= outbound::queue(tx, changes, heads, ctx.clock.now())?;
    Ok(())
}

/// The statement that writes `new`, a record whose row was `old` (none for a
/// new record), bound to its columns in the order of the insert. An update
/// leaves out the indexed columns that did not change: SQLite rewrites the
/// index entries of every column it sets, a random page each.
fn record_sql(old: Option<&Record>, new: &Record) -> &'static str {
    match old {
        None => concat!(
            insert_records!(),
            " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        Some(old) if old.profile.account == new.profile.account && old.profile.email == new.profile.email => {
            "UPDATE customers SET status = ?6, profile = ?7, order_key = ?8, merged_into = ?9, merged_from = ?10,
                 version = ?11, changed_at = ?12, change_seq = ?13, last_history = ?14, last_outbox = ?15,
                 profile_codec = ?16
             WHERE id = ?1"
        }
        Some(_) => {
            "UPDATE customers SET account = ?4, email = ?5, status = ?6, profile = ?7, order_key = ?8,
                 merged_into = ?9, merged_from = ?10, version = ?11, changed_at = ?12, change_seq = ?13,
                 last_history = ?14, last_outbox = ?15, profile_codec = ?16
             WHERE id = ?1"
        }
    }
}

/// A `customers` row's values, in the order of [`record_sql`]'s columns:
/// its profile packed (see [`compress`]).
struct RecordColumns<'a> {
    record: &'a Record,
    status: &'static str,
    profile: compress::Packed,
    order_key: Option<Vec<u8>>,
    merged_from: String,
    version: i64,
    changed_at: String,
    change_seq: i64,
    head: Head,
}

impl<'a> RecordColumns<'a> {
    fn new(record: &'a Record, change_seq: i64, head: Head) -> Result<Self, StoreError> {
        Ok(RecordColumns {
            record,
            status: record.status().as_str(),
            profile: pack_profile(&record.profile)?,
            order_key: record.order_key.as_ref().map(pack_order_key),
            merged_from: serde_json::to_string(&record.merged_from)?,
            version: record.version as i64,
            changed_at: record.changed_at.to_string(),
            change_seq,
            head,
        })
    }

    fn values(&self) -> Vec<&dyn ToSql> {
        let r = self.record;
        vec![
            &r.id,
            &r.source,
            &r.external_id,
            &r.profile.account,
            &r.profile.email,
            &self.status,
            &self.profile.bytes,
            &self.order_key,
            &r.merged_into,
            &self.merged_from,
            &self.version,
            &self.changed_at,
            &self.change_seq,
            &self.head.history,
            &self.head.outbox,
            &self.profile.codec,
        ]
    }
}

/// Brings customer `id`'s lookup rows from its `old` profile (none for a
/// new record) to its `new` one: at erasure, to an empty one.
fn edit_lookups(tx: &Connection, id: &str, old: Option<&Profile>, new: &Profile) -> Result<(), StoreError> {
    for (lookup, add, key) in lookup_edits(old, new) {
        let mut statement = if add {
            tx.prepare_cached(&format!("{} (?1, ?2)", lookup_insert(lookup)))?
        } else {
            tx.prepare_cached(&lookup_delete(lookup))?
        };
        statement.execute([key.as_str(), id])?;
    }
    Ok(())
}

/// The start of the statement that adds lookup rows, to be followed by
/// rows of the key and the customer id.
fn lookup_insert(lookup: Lookup) -> String {
    let (table, key) = lookup.table();
    format!("INSERT OR IGNORE INTO {table} ({key}, customer_id) VALUES")
}

/// The statement that removes a lookup row, bound to the key and the
/// customer id.
fn lookup_delete(lookup: Lookup) -> String {
    let (table, key) = lookup.table();
    format!("DELETE FROM {table} WHERE {key} = ?1 AND customer_id = ?2")
}

fn load_record(conn: &Connection, id: &str) -> Result<Option<Record>, StoreError> {
    let raw = load_raw_record(conn, id)?;
    raw.map(|r| r.into_record().map(|(record, _)| record)).transpose()
}

/// Customer `id`'s row, as read.
fn load_raw_record(conn: &Connection, id: &str) -> Result<Option<RawRecord>, StoreError> {
    let sql = format!("SELECT {} FROM customers WHERE id = ?1", record_columns("profile"));
    Ok(conn.prepare_cached(&sql)?.query_row([id], read_record).optional()?)
}

fn list_customers(conn: &Connection, q: &CustomerQuery) -> Result<Page<Customer>, StoreError> {
    let mut sql = format!(
        "SELECT {} FROM customers WHERE change_seq > ?",
        record_columns("profile")
    );
    let mut args: Vec<String> = vec![q.after.unwrap_or(0).to_string()];
    let filters = [
        ("source = ?", q.source.clone()),
        ("account = ?", q.account.clone()),
        ("email = ?", q.email.as_ref().map(|e| e.trim().to_lowercase())),
        (
            "id IN (SELECT customer_id FROM customer_phones WHERE e164 = ?)",
            q.phone.clone(),
        ),
        (
            "id IN (SELECT customer_id FROM customer_businesses WHERE business_id = ?)",
            q.business_id.clone(),
        ),
        ("changed_at >= ?", q.changed_since.map(|t| t.to_string())),
    ];
    for (clause, value) in filters {
        if let Some(value) = value {
            sql.push_str(" AND ");
            sql.push_str(clause);
            args.push(value);
        }
    }
    if let Some(name) = &q.name {
        sql.push_str(&name_clause(conn, name, &mut args)?);
    }
    if !q.include_merged {
        sql.push_str(" AND status <> 'merged'");
    }
    sql.push_str(" ORDER BY change_seq LIMIT ?");
    args.push((q.limit + 1).to_string());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(&args), read_record)?;
    customer_page(rows.map(|r| r.map_err(StoreError::from)), q.limit)
}

/// Customers a word of a name may have for a name search to start from
/// that word's rows (see [`name_clause`]).
const RARE_WORD: i64 = 3000;

/// The filter of a customer list by name (`CustomerQuery::name`), planned
/// by how common its words are. From its rarest word's rows when fewer
/// than [`RARE_WORD`] customers have it: those customers looked up and
/// sorted, the other words checked on each. When every word is that
/// common, each is checked on the customers read in change order, which
/// finds a page within about `limit × customers / RARE_WORD` of them (a
/// common word is found all along the change feed). Either way about
/// 10 ms at 1,000,000 customers (bench/README.md), where one plan alone
/// takes half a second for one kind of word or the other.
fn name_clause(conn: &Connection, name: &str, args: &mut Vec<String>) -> Result<String, StoreError> {
    let mut words = Vec::new();
    for word in name_words([&name.to_owned()]) {
        let customers: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM customer_names WHERE word = ?1 LIMIT ?2)")?
            .query_row(params![word, RARE_WORD], |r| r.get(0))?;
        words.push((customers, word));
    }
    if words.is_empty() {
        return Ok(" AND FALSE".into());
    }
    words.sort();
    let mut sql = String::new();
    for (i, (customers, word)) in words.into_iter().enumerate() {
        sql.push_str(if i == 0 && customers < RARE_WORD {
            " AND id IN (SELECT customer_id FROM customer_names WHERE word = ?)"
        } else {
            " AND EXISTS (SELECT 1 FROM customer_names WHERE word = ? AND customer_id = customers.id)"
        });
        args.push(word);
    }
    Ok(sql)
}

/// A column that holds JSON text (codec 0) or a compressed frame (see
/// [`compress`]), as bytes.
fn kept_bytes(value: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    match value {
        rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => bytes.to_vec(),
        _ => Vec::new(),
    }
}

pub(super) fn read_record(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(0)?,
        source: r.get(1)?,
        external_id: r.get(2)?,
        profile: kept_bytes(r.get_ref(3)?),
        order_key: r.get(4)?,
        merged_into: r.get(5)?,
        merged_from: r.get(6)?,
        version: r.get(7)?,
        changed_at: r.get(8)?,
        change_seq: r.get(9)?,
        profile_codec: r.get(10)?,
    })
}

fn read_event(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        seq: r.get(0)?,
        id: r.get::<_, KeptId>(1)?.0,
        source: r.get(2)?,
        dedupe_key: r.get(3)?,
        received_at: r.get(4)?,
        headers: r.get(5)?,
        body: r.get(6)?,
        status: r.get(7)?,
        reason: r.get(8)?,
        outcome: r.get(9)?,
        customer_id: r.get(10)?,
        duplicates: r.get(11)?,
        redacted: r.get(12)?,
        codec: r.get(13)?,
    })
}
