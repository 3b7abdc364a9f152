//! The Postgres store: several `clientele serve` instances on one database.
//!
//! Every write is one transaction on a pooled connection. Deliveries
//! that arrive together share one (see [`group`]): a few committer tasks
//! each take the deliveries waiting and keep them in a handful of
//! set-based statements, since what limits an instance is round trips,
//! not rows. What the embedded store gets from having one writer, this one
//! gets from the database:
//! - a delivery raced to two instances is settled by the unique
//!   `events (source, dedupe_key)`: the loser's insert fails, its
//!   transaction runs again and finds a duplicate;
//! - the records an event touches are locked (transaction-scoped advisory
//!   locks, taken in one order) before they are read, so concurrent events
//!   for one customer apply one after the other, on any instance;
//! - outbox rows take their places in the feed (`published`) in the order
//!   their transactions commit: each numbers its rows under a lock it
//!   holds until it ends, so a reader that sees a number sees every
//!   number below it that will ever be committed;
//! - due messages are claimed with `FOR UPDATE SKIP LOCKED` and leased, so
//!   each is sent by one instance, and a crashed instance's claims are
//!   taken over when their leases end.
//!
//! A statement that joins a batch (`unnest`, `= ANY`) against a table
//! that grows is sent unprepared (`persistent(false)`), so that Postgres
//! plans it for each execution with the table as large as it is then. A
//! prepared statement's plan is made once, after five executions, and
//! kept until the table's statistics change: made while the table was
//! small (a new database, or at any size while autovacuum is off or has
//! not yet run) it reads the whole table for every batch from then on,
//! and ingest slowed as the tables grew (docs/decisions.md, "Statements
//! planned with the table's size"; [`DUPLICATES`] is one). sqlx looks a
//! text up in the connection's prepared statements first: a text sent
//! unprepared is never also sent prepared.
//!
//! A group of deliveries ([`group`]) is the exception: its transactions
//! run on connections of their own whose planner may not scan a table or
//! join it by hashing or merging ([`INDEXED`]), so that a plan made on a
//! small table reads the indexes as well as one made on a large table.
//! There its joins of a batch are prepared, planned once a connection
//! instead of at every group ([`Plans`]).
//!
//! A transaction that loses a race (a deadlock, a duplicate key) is run
//! again from the start. When the database cannot be reached, requests fail
//! with [`StoreError::Unavailable`] (answered `503`), and the pool
//! reconnects by itself once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Acquire, Executor, FromRow, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;

use self::writes::Writes;
use super::reprocess::{Reprocessing, reprocessing};
use super::rows::{
    EVENT_COLUMNS, HOLDING_KEYS, Lookup, NAMES_BACKFILL_STEP, NamesBackfill, REDACT_EVENTS, RawEvent, RawRecord,
    Settled, Settling, customer_page, history_page, mention_erasures, mention_keys, name_words, page, record_columns,
    redact_envelopes, redaction, status_indexed, touched_ids, unpack_order_key,
};
use super::{
    CustomerQuery, Delivery, Directory, Erasure, EventQuery, EventRedaction, HistoryEntry, HistoryQuery, Import, Inbox,
    IngestOutcome, MessageQuery, Outcome, Page, Publish, Rebuild, Rebuilt, Remap, Retry, Store, StoreError,
    StoredEvent, Subscriptions, migrations, outboxed,
};
use crate::BoxFuture;
use crate::clock::Clock;
use crate::directory::{self, Loaded, MergeLink, Record};
use crate::model::{Customer, UtcMillis};
use crate::outbound::{Backlog, Claim, Due, Message, Outbox, OutboxError, Recorded, Subscription};
use crate::sources::{Mapped, Unmappable};

mod group;
mod keys;
mod outbound;
mod persons;
mod rebuild;
mod retention;
mod sessions;
mod sources;
mod writes;

pub use group::DUPLICATES;
pub use outbound::CLAIM;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_init.sql"),
    include_str!("migrations/postgres/0002_outbound.sql"),
    include_str!("migrations/postgres/0003_sending.sql"),
    include_str!("migrations/postgres/0004_version_floors.sql"),
    include_str!("migrations/postgres/0005_mentions.sql"),
    include_str!("migrations/postgres/0006_fanout.sql"),
    include_str!("migrations/postgres/0007_access.sql"),
    include_str!("migrations/postgres/0008_claims.sql"),
    include_str!("migrations/postgres/0009_codec.sql"),
    include_str!("migrations/postgres/0010_console.sql"),
    include_str!("migrations/postgres/0011_history_codec.sql"),
    include_str!("migrations/postgres/0012_outbox_codec.sql"),
    include_str!("migrations/postgres/0013_profile_codec.sql"),
    include_str!("migrations/postgres/0014_persons.sql"),
    include_str!("migrations/postgres/0015_dead_messages.sql"),
    include_str!("migrations/postgres/0016_customer_names.sql"),
    include_str!("migrations/postgres/0017_footprint.sql"),
    include_str!("migrations/postgres/0018_person_codec.sql"),
    include_str!("migrations/postgres/0019_dedupe_digests.sql"),
    include_str!("migrations/postgres/0020_events_status_partial.sql"),
    include_str!("migrations/postgres/0021_review_codec.sql"),
    include_str!("migrations/postgres/0022_published_at_commit.sql"),
    include_str!("migrations/postgres/0023_customer_keys.sql"),
];

/// Connections per instance, besides the groups'.
const POOL_SIZE: u32 = 16;
/// Connections per instance for groups of deliveries: one for each
/// committer, and two for imports (see [`group`]).
const GROUP_POOL_SIZE: u32 = group::COMMITTERS as u32 + 2;
/// The groups' connections' planner settings: no plan scans a table or
/// joins one by hashing or merging where an index can be read instead, so
/// a statement joining a batch against a table reads the index for each
/// key of the batch whatever the table's size when it was planned. Each
/// statement a group sends joins at most a group's rows against a table,
/// by its key: a lookup a key is its best plan at any size.
const INDEXED: &str = "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off";
/// How long a request waits for a connection (the database down, or every
/// connection busy) before it fails as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Runs of one transaction that keeps losing races, at most.
const MAX_RUNS: usize = 10;
/// Customers whose changes one replay transaction queues again.
const REPLAY_CHUNK: usize = 200;
/// The first key of every advisory lock Clientele takes, so that its locks
/// never meet another application's on a shared database ("CLNT").
const LOCK_SPACE: i32 = 0x434c_4e54;
/// The second key of the lock held while migrating; records' keys are
/// hashes of their ids, which may collide with it harmlessly.
const MIGRATION_LOCK: i32 = 0;
/// With the hash of the store's schema, the second key of the lock a
/// fan-out holds (see [`outbound::fan_out`]): a store in another schema of
/// the database fans out on its own (one database-wide key made each
/// schema's fan-out skip its turn while another's ran).
const FAN_OUT_LOCK: i32 = 1;
/// With the hash of the store's schema, the second key of the lock a
/// compaction step holds: one instance compacts a store at a time (see
/// [`retention`]).
const COMPACTION_LOCK: i32 = 2;
/// The second key of the lock a rebuild's connection holds (see
/// [`rebuild`]), whose first is its schema's hash.
const REBUILD_LOCK: i32 = 3;
/// With the hash of the store's schema, the second key of the lock a
/// transaction takes to write outbox rows, held until it ends, so that
/// their places in the feed follow the commits (see
/// [`outbound::OutboxRows::write`]).
const PUBLISH_LOCK: i32 = 4;

pub struct PgStore {
    pool: PgPool,
    /// What keeps groups of deliveries, on connections of their own
    /// ([`INDEXED`]).
    group: group::Group,
    queued: Arc<Notify>,
    /// Claims made so far by this instance: each starts at the next
    /// subscription, so that none waits behind the others.
    claims: AtomicUsize,
    /// Where deliveries wait to be kept in a group (see [`group`]).
    committer: group::Committer,
    /// What stamps the directory's changes.
    clock: Clock,
}

/// A write transaction, and what it did that matters after its commit.
struct Work<'c> {
    tx: sqlx::Transaction<'c, Postgres>,
    /// It queued outbound messages: the dispatcher is told after the commit.
    queued: bool,
    /// The directory's changes in this transaction happen at this time.
    now: UtcMillis,
    /// How its connection plans joins of a batch.
    plans: Plans,
}

/// How a transaction's connection plans the statements that join a batch
/// against a table that grows (see the module's doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plans {
    /// Unprepared: planned at each execution, with the table's size then.
    EachTime,
    /// Prepared, on a connection whose plans read indexes ([`INDEXED`]).
    Indexed,
}

impl Plans {
    /// Whether a join of a batch is prepared on this connection.
    fn prepared(self) -> bool {
        self == Plans::Indexed
    }
}

impl Work<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// One write: a function of the transaction and its arguments, which may
/// run more than once (see [`PgStore::write`]).
type WriteFn<A, T> = for<'c> fn(&'c mut Work, &'c A) -> BoxFuture<'c, Result<T, StoreError>>;

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date.
    /// `shown` names the store in errors (the URL without its password).
    pub async fn open(url: &str, shown: &str, clock: Clock) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: shown.to_owned(),
            reason,
        };
        // sqlx wraps a bad option's error in another that says "error with
        // configuration" as it does: the innermost cause says what is wrong.
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            open_error(format!("invalid URL: {cause}"))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_error(format!("cannot connect: {e}")))?;
        migrate(&pool)
            .await
            .map_err(|e| open_error(format!("cannot migrate: {e}")))?;
        let groups = PgPoolOptions::new()
            .max_connections(GROUP_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| Box::pin(async move { conn.execute(INDEXED).await.map(drop) }))
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        let queued = Arc::new(Notify::new());
        let group = group::Group {
            pool: groups,
            queued: queued.clone(),
            clock: clock.clone(),
        };
        Ok(Self {
            committer: group::Committer::start(group.clone()),
            pool,
            group,
            queued,
            claims: AtomicUsize::new(0),
            clock,
        })
    }

    /// Runs `op` in a transaction and commits it (see [`transact`]).
    async fn write<A: Sync, T>(&self, args: &A, op: WriteFn<A, T>) -> Result<T, StoreError> {
        transact(&self.pool, Plans::EachTime, &self.queued, &self.clock, args, op).await
    }

    /// Runs a read in a read-only transaction on one snapshot, so that a
    /// read of several statements (a message and its attempts) sees one
    /// committed state, as the embedded store's readers do.
    async fn read<T>(
        &self,
        read: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let value = read(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
}

/// Runs `op` in a transaction on a connection of `pool`, which plans as
/// `plans` says, and commits it;
/// runs it again, from the start, while it loses races (see
/// [`lost_race`]). Tells `queued` once a transaction that queued outbound
/// messages has committed.
async fn transact<A: Sync, T>(
    pool: &PgPool,
    plans: Plans,
    queued: &Notify,
    clock: &Clock,
    args: &A,
    op: WriteFn<A, T>,
) -> Result<T, StoreError> {
    let mut runs = 1;
    loop {
        let result = async {
            let mut work = Work {
                tx: pool.begin().await?,
                queued: false,
                now: clock.now(),
                plans,
            };
            let value = op(&mut work, args).await?;
            work.tx.commit().await?;
            Ok((value, work.queued))
        }
        .await;
        match result {
            Ok((value, wrote)) => {
                if wrote {
                    queued.notify_one();
                }
                return Ok(value);
            }
            Err(e) if runs < MAX_RUNS && lost_race(&e) => {
                metrics::counter!("clientele_store_retries_total").increment(1);
                tracing::debug!(error = %e, "a transaction lost a race; running it again");
                runs += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failed transaction lost a race that running it again settles:
/// a deadlock between two instances' locks, a serialization failure, or a
/// delivery another instance kept first.
fn lost_race(error: &StoreError) -> bool {
    let StoreError::Postgres(sqlx::Error::Database(e)) = error else {
        return false;
    };
    match e.code().as_deref() {
        Some("40001" | "40P01") => true,
        Some("23505") => e.constraint() == Some("events_source_dedupe_key_key"),
        _ => false,
    }
}

impl From<sqlx::Error> for StoreError {
    /// The database out of reach, shutting down, or out of resources is
    /// [`StoreError::Unavailable`]: the request can be retried later.
    fn from(error: sqlx::Error) -> Self {
        let unavailable = match &error {
            // A protocol error is a connection cut mid-message (a proxy
            // between instance and database going down answers a
            // connection's first request with garbage, say).
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::PoolClosed => return StoreError::Closed,
            // Connection exceptions, insufficient resources, operator
            // intervention (a shutdown), read-only (a replica promoted
            // elsewhere).
            sqlx::Error::Database(e) => e
                .code()
                .is_some_and(|c| ["08", "53", "57P", "25006"].iter().any(|p| c.starts_with(p))),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Postgres(error)
        }
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    // Instances starting together migrate one at a time; the others then
    // find the work done.
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(LOCK_SPACE)
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let mut result = apply_migrations(&mut conn).await;
    if result.is_ok() {
        result = backfill_names(&mut conn).await;
    }
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(LOCK_SPACE)
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    result
}

async fn apply_migrations(conn: &mut PgConnection) -> Result<(), StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS clientele_schema (version INTEGER NOT NULL); \
         ALTER TABLE clientele_schema ADD COLUMN IF NOT EXISTS checksum BYTEA",
    )
    .await?;
    let applied: Vec<(i32, Option<Vec<u8>>)> = sqlx::query_as("SELECT version, checksum FROM clientele_schema")
        .fetch_all(&mut *conn)
        .await?;
    let version = applied.iter().map(|(v, _)| i64::from(*v)).max().unwrap_or(0);
    let kept = applied
        .into_iter()
        .filter_map(|(v, sum)| Some((i64::from(v), sum?)))
        .collect();
    let plan = migrations::plan(MIGRATIONS, version, &kept)?;
    for (version, checksum) in &plan.record {
        sqlx::query("UPDATE clientele_schema SET checksum = $2 WHERE version = $1")
            .bind(*version as i32)
            .bind(checksum)
            .execute(&mut *conn)
            .await?;
    }
    for (version, sql, checksum) in plan.apply {
        let mut tx = conn.begin().await?;
        // A plain string runs as a simple query: every statement of the file.
        tx.execute(sql).await?;
        sqlx::query("INSERT INTO clientele_schema (version, checksum) VALUES ($1, $2)")
            .bind(version as i32)
            .bind(checksum)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "migrated the Postgres store");
    }
    Ok(())
}

/// Writes the names' keys of the customers kept before the migration that
/// made `customer_names` (version 16; its rows are `customer_keys`' since
/// 23), a step a transaction, from the position it keeps in `backfills`
/// (gone when done), while the migration lock holds the other instances
/// back: a start after an interrupted one goes on from there.
async fn backfill_names(conn: &mut PgConnection) -> Result<(), StoreError> {
    let mut backfill = NamesBackfill::new();
    let read = format!("SELECT id, {PROFILE}, profile_codec FROM customers WHERE id > $1 ORDER BY id LIMIT $2");
    loop {
        let mut tx = conn.begin().await?;
        let Some(after): Option<String> =
            sqlx::query_scalar("SELECT after FROM backfills WHERE name = 'customer_names' FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(());
        };
        let step: Vec<(String, Vec<u8>, i16)> = sqlx::query_as(&read)
            .bind(&after)
            .bind(NAMES_BACKFILL_STEP)
            .fetch_all(&mut *tx)
            .await?;
        let step = step
            .into_iter()
            .map(|(id, kept, codec)| (id, kept, codec.into()))
            .collect();
        match backfill.step(step)? {
            None => {
                sqlx::query("DELETE FROM backfills WHERE name = 'customer_names'")
                    .execute(&mut *tx)
                    .await?;
            }
            Some((last, words, ids)) => {
                // Added to the customers' other keys (see migration 23).
                sqlx::query(
                    "INSERT INTO customer_keys (customer_id, keys)
                     SELECT customer_id, array_agg(word) FROM unnest($1::text[], $2::text[]) AS k(word, customer_id)
                     GROUP BY customer_id
                     ON CONFLICT (customer_id) DO UPDATE
                     SET keys = ARRAY(SELECT DISTINCT unnest(customer_keys.keys || excluded.keys))",
                )
                .bind(words.iter().map(|word| Lookup::Names.key(word)).collect::<Vec<_>>())
                .bind(ids)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE backfills SET after = $1 WHERE name = 'customer_names'")
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
    }
}

impl Import for PgStore {
    /// Groups of deliveries, as webhooks' (see [`group`]), in order: each
    /// group's transaction holds its customers' locks for a few statements,
    /// while several instances keep writing alongside.
    fn ingest_batch(
        &self,
        deliveries: Vec<Delivery>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Vec<IngestOutcome>, StoreError>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            let mut deliveries = deliveries.into_iter().peekable();
            while deliveries.peek().is_some() {
                let items: Vec<group::Item> = deliveries
                    .by_ref()
                    .take(group::MAX_GROUP)
                    .map(|d| (d, publish))
                    .collect();
                for outcome in self.group.commit(items.into()).await {
                    outcomes.push(outcome?);
                }
            }
            Ok(outcomes)
        })
    }
}

impl Inbox for PgStore {
    fn ingest(&self, delivery: Delivery) -> BoxFuture<'_, Result<IngestOutcome, StoreError>> {
        Box::pin(self.committer.ingest(delivery))
    }

    fn reprocess(
        &self,
        event_id: String,
        mapped: Result<Mapped, Unmappable>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Option<IngestOutcome>, StoreError>> {
        Box::pin(async move {
            self.write(&(event_id, mapped, publish), |work, (id, mapped, publish)| {
                Box::pin(reprocess(work, id, mapped, *publish))
            })
            .await
        })
    }

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| {
                Box::pin(async move {
                    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
                    let row: Option<RawEvent> = sqlx::query_as(&sql).bind(&id).fetch_optional(conn).await?;
                    row.map(RawEvent::into_event).transpose()
                })
            })
            .await
        })
    }

    fn redact_event(&self, id: String) -> BoxFuture<'_, Result<EventRedaction, StoreError>> {
        Box::pin(async move {
            self.write(&id, |work, id| {
                Box::pin(async move {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM events WHERE id = $1 FOR UPDATE")
                            .bind(id)
                            .fetch_optional(work.conn())
                            .await?;
                    let redaction = redaction(status.as_deref());
                    if redaction == EventRedaction::Redacted {
                        forget_event(work.conn(), id).await?;
                    }
                    Ok(redaction)
                })
            })
            .await
        })
    }

    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<Page<StoredEvent>, StoreError>> {
        Box::pin(async move { self.read(|conn| Box::pin(list_events(conn, query))).await })
    }
}

impl Directory for PgStore {
    fn customer(&self, id: String) -> BoxFuture<'_, Result<Option<Customer>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| Box::pin(async move { Ok(load_record(conn, &id).await?.map(|r| r.to_customer())) }))
                .await
        })
    }

    fn erase(&self, id: String) -> BoxFuture<'_, Result<Erasure, StoreError>> {
        Box::pin(async move { self.write(&id, |work, id| Box::pin(erase(work, id))).await })
    }

    fn customers(&self, query: CustomerQuery) -> BoxFuture<'_, Result<Page<Customer>, StoreError>> {
        Box::pin(async move { self.read(|conn| Box::pin(list_customers(conn, query))).await })
    }

    fn history(&self, query: HistoryQuery) -> BoxFuture<'_, Result<Option<Page<HistoryEntry>>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| {
                Box::pin(async move {
                    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM customers WHERE id = $1")
                        .bind(&query.customer_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if exists.is_none() {
                        return Ok(None);
                    }
                    let rows: Vec<(i64, Vec<u8>, i16)> = sqlx::query_as(
                        "SELECT seq, COALESCE(packed, convert_to(entry, 'UTF8')), codec FROM history
                         WHERE customer_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(&query.customer_id)
                    .bind(query.after.unwrap_or(0))
                    .bind(query.limit as i64 + 1)
                    .fetch_all(&mut *conn)
                    .await?;
                    let rows = rows.into_iter().map(|(seq, entry, codec)| (seq, entry, codec.into()));
                    Ok(Some(history_page(rows.collect(), query.limit)?))
                })
            })
            .await
        })
    }

    fn begin_rebuild(&self, sources: Vec<String>, remap: Remap) -> BoxFuture<'_, Result<Box<dyn Rebuild>, StoreError>> {
        Box::pin(async move {
            // Its own connection, closed when the rebuild ends, never back
            // in the pool: its temporary tables would shadow the store's.
            let conn = self.pool.acquire().await?.detach();
            let shadow = rebuild::Shadow::open(conn, sources, remap, self.clock.clone()).await?;
            Ok(Box::new(Rebuilding(shadow)) as Box<dyn Rebuild>)
        })
    }
}

/// A rebuild under way on Postgres (see [`rebuild`]).
struct Rebuilding(rebuild::Shadow);

impl Rebuild for Rebuilding {
    fn replay(&mut self, limit: usize) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.0.replay(limit))
    }

    fn finish(self: Box<Self>, page: usize) -> BoxFuture<'static, Result<Rebuilt, StoreError>> {
        Box::pin(self.0.finish(page))
    }
}

impl Store for PgStore {
    fn size_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                .fetch_one(&self.pool)
                .await?;
            Ok(bytes.max(0) as u64)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.group.pool.close().await;
            self.pool.close().await;
        })
    }
}

impl Subscriptions for PgStore {
    fn create_subscription(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(&subscription, |work, s| {
                Box::pin(outbound::create_subscription(work.conn(), s))
            })
            .await
        })
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<Subscription>, StoreError>> {
        Box::pin(async move { self.read(|conn| Box::pin(outbound::subscriptions(conn))).await })
    }

    fn subscription(&self, id: String) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| Box::pin(async move { outbound::subscription(conn, &id).await }))
                .await
        })
    }

    fn delete_subscription(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(&id, |work, id| Box::pin(outbound::delete_subscription(work.conn(), id)))
                .await
        })
    }

    fn set_subscription_enabled(
        &self,
        id: String,
        enabled: bool,
    ) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>> {
        Box::pin(async move {
            self.write(&(id, enabled), |work, (id, enabled)| {
                Box::pin(outbound::set_enabled(work.conn(), id, *enabled))
            })
            .await
        })
    }

    fn messages(&self, query: MessageQuery) -> BoxFuture<'_, Result<Page<Message>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| Box::pin(async move { outbound::messages(conn, &query).await }))
                .await
        })
    }

    fn retry_message(&self, id: String) -> BoxFuture<'_, Result<Retry, StoreError>> {
        Box::pin(async move {
            self.write(&id, |work, id| {
                Box::pin(async move {
                    let retry = outbound::retry_message(work.conn(), id).await?;
                    work.queued |= retry == Retry::Queued;
                    Ok(retry)
                })
            })
            .await
        })
    }

    /// A replay moves the lines of every customer it covers, so it holds
    /// their locks, as ingest does: a few hundred customers per
    /// transaction, which Postgres's lock table holds where all of them
    /// might not.
    fn replay(&self, subscription_id: String, since: UtcMillis) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let id = subscription_id.clone();
            let customers = self
                .read(move |conn| Box::pin(async move { outbound::replayed_customers(conn, &id, since).await }))
                .await?;
            let Some(customers) = customers else {
                return Ok(None);
            };
            let mut queued = 0;
            for chunk in customers.chunks(REPLAY_CHUNK) {
                let args = (subscription_id.clone(), since, chunk.to_vec());
                queued += self
                    .write(&args, |work, (id, since, customers)| {
                        Box::pin(async move {
                            let queued = outbound::replay(work.conn(), id, *since, customers).await?;
                            work.queued |= queued > 0;
                            Ok(queued)
                        })
                    })
                    .await?;
            }
            Ok(Some(queued))
        })
    }
}

impl Outbox for PgStore {
    fn fan_out(&self) -> BoxFuture<'_, Result<bool, OutboxError>> {
        Box::pin(outboxed(async move {
            self.write(&(), |work, ()| Box::pin(outbound::fan_out(work.conn())))
                .await
        }))
    }

    fn claim_due(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Due>, OutboxError>> {
        let turn = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        Box::pin(outboxed(async move {
            self.write(&(claim, turn), |work, (claim, turn)| {
                Box::pin(outbound::claim(work.conn(), claim, *turn))
            })
            .await
        }))
    }

    fn record_attempts(&self, attempts: Vec<Recorded>) -> BoxFuture<'_, Result<(), OutboxError>> {
        Box::pin(outboxed(async move {
            // A transaction per group: their customers' locks stay well
            // inside Postgres's lock table, as a group of deliveries' do.
            for group in attempts.chunks(group::MAX_GROUP) {
                self.write::<&[Recorded], ()>(&group, |work, group| {
                    Box::pin(outbound::record_attempts(work.conn(), group))
                })
                .await?;
            }
            Ok(())
        }))
    }

    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, OutboxError>> {
        Box::pin(outboxed(async move {
            self.read(|conn| Box::pin(outbound::backlog(conn))).await
        }))
    }

    fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }
}

/// Locks these customer ids until the transaction ends, in one order (by
/// key) whoever asks, so that two transactions wanting the same ids never
/// wait on each other crosswise. Every write that reads a customer's state
/// to change it takes its lock first.
async fn lock(conn: &mut PgConnection, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, k)
         FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest($2::text[]) AS id ORDER BY k) AS keys",
    )
    .bind(LOCK_SPACE)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

async fn reprocess(
    work: &mut Work<'_>,
    event_id: &str,
    mapped: &Result<Mapped, Unmappable>,
    publish: Publish,
) -> Result<Option<IngestOutcome>, StoreError> {
    let mut loaded = lock_and_load(work.conn(), mapped, publish).await?;
    let kept = sqlx::query_as("SELECT dedupe_key, received_at, redacted FROM events WHERE id = $1 FOR UPDATE")
        .bind(event_id)
        .fetch_optional(work.conn())
        .await?;
    let settling = match reprocessing(event_id, kept, &loaded, mapped)? {
        Reprocessing::Missing => return Ok(None),
        Reprocessing::Forget => {
            forget_event(work.conn(), event_id).await?;
            return Ok(Some(IngestOutcome::Suppressed));
        }
        Reprocessing::Settle(settling) => settling,
    };
    let mut writes = Writes::default();
    let settled = settle(settling, &mut loaded, &mut writes, publish, work.now);
    sqlx::query("UPDATE events SET status = $2, reason = $3, outcome = $4, customer_id = $5 WHERE id = $1")
        .bind(event_id)
        .bind(settled.status.as_str())
        .bind(&settled.reason)
        .bind(settled.outcome.map(Outcome::as_str))
        .bind(&settled.customer_id)
        .execute(work.conn())
        .await?;
    // Last, as outbox rows are written (see `outbound::OutboxRows::write`).
    writes.write(work).await?;
    Ok(Some(settled.answer))
}

/// Locks the customers settling `mapped` needs (see [`touched_ids`]),
/// then loads them.
async fn lock_and_load(
    conn: &mut PgConnection,
    mapped: &Result<Mapped, Unmappable>,
    publish: Publish,
) -> Result<Loaded, StoreError> {
    let ids = touched_ids(mapped);
    if ids.is_empty() {
        return Ok(Loaded::default());
    }
    lock(conn, &ids).await?;
    load(conn, &ids, publish, Plans::EachTime).await
}

async fn is_suppressed(conn: &mut PgConnection, id: &str) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM suppressions WHERE customer_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// Settles a kept event: applies it to the directory if it is a customer
/// event, adding what it writes to `writes` and bringing `loaded` up to
/// date (see [`Writes::add`]).
fn settle(
    settling: Settling<'_>,
    loaded: &mut Loaded,
    writes: &mut Writes,
    publish: Publish,
    now: UtcMillis,
) -> Settled {
    match settling {
        Settling::Done(settled) => settled,
        Settling::Apply(event, meta) => {
            let effects = directory::apply(loaded, event, &meta, now);
            let outcome = effects
                .outcome
                .expect("applying an event always settles its own customer");
            writes.add(loaded, effects, publish);
            Settled::accepted(meta, event.customer.id.clone(), outcome)
        }
    }
}

/// Erases a customer in the current transaction (see [`Store::erase`]).
async fn erase(work: &mut Work<'_>, id: &String) -> Result<Erasure, StoreError> {
    // The partners' records change too: the erasure takes their locks with
    // its own, in the one order every transaction takes them (taking its
    // own first and theirs after deadlocked with merges, over and over,
    // under load). A link made between the read and the locks (rare) is
    // locked after; no link to `id` can be made once its lock is held.
    let mut ids = vec![id.clone()];
    ids.extend(partners(work.conn(), id).await?);
    lock(work.conn(), &ids).await?;
    let late: Vec<String> = partners(work.conn(), id)
        .await?
        .into_iter()
        .filter(|p| !ids.contains(p))
        .collect();
    if !late.is_empty() {
        lock(work.conn(), &late).await?;
    }
    ids.extend(late);
    if is_suppressed(work.conn(), id).await? {
        return Ok(Erasure::AlreadyErased);
    }
    let now = work.now;
    let Some(record) = load_record(work.conn(), id).await? else {
        return erase_without_record(work, id, now).await;
    };
    let plans = work.plans;
    let mut loaded = load(work.conn(), &ids, Publish::Yes, plans).await?;
    let erasing = directory::erase(
        &loaded,
        &record,
        format!("erasure_{}", uuid::Uuid::now_v7().simple()),
        now,
    );
    sqlx::query(&format!(
        "{REDACT_EVENTS} WHERE id IN (SELECT event_id FROM history WHERE customer_id = $1) AND customer_id = $1"
    ))
    .bind(id)
    .execute(work.conn())
    .await?;
    for sql in [
        "DELETE FROM history WHERE customer_id = $1",
        "DELETE FROM merge_links WHERE survivor = $1 OR absorbed = $1",
        "DELETE FROM customer_keys WHERE customer_id = $1",
        "DELETE FROM customers WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(work.conn()).await?;
    }
    erase_traces(work, id).await?;
    let keys = mention_keys(&record);
    for sql in mention_erasures("SELECT event_seq FROM event_mentions WHERE key = ANY($1)") {
        // Unprepared, as joins of a batch are (see the module's doc).
        sqlx::query(&sql)
            .persistent(false)
            .bind(&keys)
            .execute(work.conn())
            .await?;
    }
    suppress(work, id, now).await?;
    let mut writes = Writes::default();
    writes.add(&mut loaded, erasing.effects, Publish::Yes);
    writes.publish(erasing.deleted);
    writes.write(work).await?;
    Ok(Erasure::Erased)
}

/// What an id left besides its record and history, erased: the
/// quarantined bodies that named it and its envelopes redacted, its
/// pending messages cancelled. Returns how many bodies and envelopes were
/// redacted.
/// The records `id` is linked to by a merge, either way.
async fn partners(conn: &mut PgConnection, id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT absorbed FROM merge_links WHERE survivor = $1 UNION SELECT survivor FROM merge_links WHERE absorbed = $1",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
}

async fn erase_traces(work: &mut Work<'_>, id: &str) -> Result<u64, StoreError> {
    let mut redacted = 0;
    for sql in [
        // The index on the status keeps this to the quarantined events.
        format!("{REDACT_EVENTS} WHERE status = 'quarantined' AND customer_id = $1"),
        format!(
            "{}::text, packed = NULL, redacted = TRUE WHERE customer_id = $1",
            redact_envelopes("json_build_object", "TRUE", "id")
        ),
    ] {
        redacted += sqlx::query(&sql).bind(id).execute(work.conn()).await?.rows_affected();
    }
    // A message being sent stays pending: its attempt is under way, and the
    // `deleted` message waits behind it.
    sqlx::query(
        "UPDATE messages SET status = 'cancelled', next_attempt_at = NULL
         WHERE customer_id = $1 AND status = 'pending'
           AND (sending_until IS NULL OR sending_until <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
    )
    .bind(id)
    .execute(work.conn())
    .await?;
    Ok(redacted)
}

/// Redacts event `id` and forgets what it named.
async fn forget_event(conn: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    for sql in [
        format!("{REDACT_EVENTS} WHERE id = $1"),
        "DELETE FROM event_mentions WHERE event_seq = (SELECT seq FROM events WHERE id = $1)".into(),
    ] {
        sqlx::query(&sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Erases an id without a record (a quarantined delivery named it, or a
/// rebuild left its envelopes while its events now quarantine): its traces
/// are erased and the id suppressed. No `deleted` message: without a
/// record there is no version to send. `NotFound` if nothing names it.
async fn erase_without_record(work: &mut Work<'_>, id: &str, now: UtcMillis) -> Result<Erasure, StoreError> {
    if erase_traces(work, id).await? == 0 {
        return Ok(Erasure::NotFound);
    }
    suppress(work, id, now).await?;
    Ok(Erasure::Erased)
}

async fn suppress(work: &mut Work<'_>, id: &str, now: UtcMillis) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO suppressions (customer_id, erased_at) VALUES ($1, $2)")
        .bind(id)
        .bind(now.to_string())
        .execute(work.conn())
        .await?;
    Ok(())
}

/// The records with these ids that exist, every merge link naming one, and
/// which of them were erased: one statement, rows of three kinds. With
/// changes to publish, the floors a rebuild left too: a rebuild itself
/// replays without them ([`Store::begin_rebuild`]). On a connection that
/// plans as `plans` says.
async fn load(conn: &mut PgConnection, ids: &[String], publish: Publish, plans: Plans) -> Result<Loaded, StoreError> {
    let floors = match publish {
        Publish::Yes => {
            "UNION ALL
             SELECT 'floor', customer_id, version::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
             FROM version_floors WHERE customer_id = ANY($1)"
        }
        Publish::No => "",
    };
    let sql = format!(
        "SELECT 'record', {columns} FROM customers WHERE id = ANY($1)
         UNION ALL
         SELECT 'erased', customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
         FROM suppressions WHERE customer_id = ANY($1)
         UNION ALL
         SELECT 'link', survivor, absorbed, NULL, NULL, order_key, NULL, NULL, NULL, NULL, NULL, NULL
         FROM merge_links WHERE survivor = ANY($1) OR absorbed = ANY($1)
         {floors}",
        columns = record_columns(PROFILE)
    );
    // Each row is its kind, then a `customers` row in [`record_columns`]
    // order, or a suppressed id, or a link's survivor, absorbed id and
    // (in the record's `order_key`) order key, or a floor's id and
    // version, the rest null.
    // A join of a batch (see the module's doc).
    let rows: Vec<PgRow> = sqlx::query(&sql)
        .persistent(plans.prepared())
        .bind(ids)
        .fetch_all(conn)
        .await?;
    let mut loaded = Loaded::default();
    for row in rows {
        match row.try_get::<&str, _>(0)? {
            "record" => {
                let (record, _) = record_at(&row, 1)?.into_record()?;
                loaded.records.insert(record.id.clone(), record);
            }
            "erased" => {
                loaded.suppressed.insert(row.try_get(1)?);
            }
            "floor" => {
                let version = row.try_get::<&str, _>(2)?;
                let version = version
                    .parse()
                    .map_err(|_| StoreError::Bug(format!("a version floor of {version:?}")))?;
                loaded.floors.insert(row.try_get(1)?, version);
            }
            "link" => loaded.links.push(MergeLink {
                survivor: row.try_get(1)?,
                absorbed: row.try_get(2)?,
                order_key: unpack_order_key(row.try_get::<&[u8], _>(5)?)?,
            }),
            kind => {
                return Err(StoreError::Bug(format!(
                    "an unexpected {kind:?} row while loading records"
                )));
            }
        }
    }
    // One order whatever the plan, as the embedded store's.
    loaded
        .links
        .sort_by(|a, b| (&a.survivor, &a.absorbed).cmp(&(&b.survivor, &b.absorbed)));
    Ok(loaded)
}

async fn load_record(conn: &mut PgConnection, id: &str) -> Result<Option<Record>, StoreError> {
    let sql = format!("SELECT {} FROM customers WHERE id = $1", record_columns(PROFILE));
    let row: Option<RawRecord> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
    row.map(|r| r.into_record().map(|(record, _)| record)).transpose()
}

async fn list_customers(conn: &mut PgConnection, q: CustomerQuery) -> Result<Page<Customer>, StoreError> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT {} FROM customers WHERE change_seq > ",
        record_columns(PROFILE)
    ));
    sql.push_bind(q.after.unwrap_or(0));
    let filters = [
        ("source = ", q.source.clone()),
        ("account = ", q.account.clone()),
        ("email = ", q.email.as_ref().map(|e| e.trim().to_lowercase())),
        ("changed_at >= ", q.changed_since.map(|t| t.to_string())),
    ];
    for (clause, value) in filters {
        if let Some(value) = value {
            sql.push(" AND ").push(clause).push_bind(value);
        }
    }
    // The phone, the business id and every word of the name, of one
    // customer: one probe of the keys' index.
    let mut keys: Vec<String> = [
        q.phone.as_deref().map(|phone| Lookup::Phones.key(phone)),
        q.business_id.as_deref().map(|id| Lookup::Businesses.key(id)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(name) = &q.name {
        let words = name_words([name]);
        if words.is_empty() {
            sql.push(" AND FALSE");
        }
        keys.extend(words.iter().map(|word| Lookup::Names.key(word)));
    }
    if !keys.is_empty() {
        sql.push(format_args!(" AND id IN ({HOLDING_KEYS}"))
            .push_bind(keys)
            .push("::text[])");
    }
    if !q.include_merged {
        sql.push(" AND status <> 'merged'");
    }
    sql.push(" ORDER BY change_seq LIMIT ").push_bind(q.limit as i64 + 1);
    let rows: Vec<RawRecord> = sql.build_query_as().fetch_all(conn).await?;
    customer_page(rows.into_iter().map(Ok), q.limit)
}

async fn list_events(conn: &mut PgConnection, query: EventQuery) -> Result<Page<StoredEvent>, StoreError> {
    // Bodies only when asked for (a rebuild).
    let columns = if query.bodies {
        EVENT_COLUMNS.to_owned()
    } else {
        EVENT_COLUMNS.replace(", body,", ", NULL::bytea,")
    };
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM events WHERE seq > "));
    sql.push_bind(query.after.unwrap_or(0));
    if let Some(status) = query.status {
        sql.push(" AND status = ")
            .push_bind(status.as_str())
            .push(status_indexed(status));
    }
    sql.push(" ORDER BY seq LIMIT ").push_bind(query.limit as i64 + 1);
    let rows: Vec<RawEvent> = sql.build_query_as().fetch_all(conn).await?;
    let events = rows
        .into_iter()
        .map(RawEvent::into_event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(events, query.limit, |e| e.seq))
}

/// The profile's bytes as kept: compressed, or (written before version
/// 12) JSON text.
const PROFILE: &str = "COALESCE(packed_profile, convert_to(profile, 'UTF8'))";

/// A `customers` row in [`record_columns`] order, from column `at` on.
fn record_at(r: &PgRow, at: usize) -> Result<RawRecord, sqlx::Error> {
    Ok(RawRecord {
        id: r.try_get(at)?,
        source: r.try_get(at + 1)?,
        external_id: r.try_get(at + 2)?,
        profile: r.try_get(at + 3)?,
        order_key: r.try_get(at + 4)?,
        merged_into: r.try_get(at + 5)?,
        merged_from: r.try_get(at + 6)?,
        version: r.try_get(at + 7)?,
        changed_at: r.try_get(at + 8)?,
        change_seq: r.try_get(at + 9)?,
        profile_codec: r.try_get::<i16, _>(at + 10)?.into(),
    })
}

impl FromRow<'_, PgRow> for RawRecord {
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        record_at(r, 0)
    }
}

/// An `events` row in [`EVENT_COLUMNS`] order.
impl FromRow<'_, PgRow> for RawEvent {
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(RawEvent {
            seq: r.try_get(0)?,
            id: r.try_get(1)?,
            source: r.try_get(2)?,
            dedupe_key: r.try_get(3)?,
            received_at: r.try_get(4)?,
            headers: r.try_get(5)?,
            body: r.try_get(6)?,
            status: r.try_get(7)?,
            reason: r.try_get(8)?,
            outcome: r.try_get(9)?,
            customer_id: r.try_get(10)?,
            duplicates: r.try_get(11)?,
            redacted: r.try_get(12)?,
            codec: r.try_get::<i16, _>(13)?.into(),
        })
    }
}
