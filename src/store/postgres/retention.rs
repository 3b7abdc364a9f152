//! The Postgres store's [`Retention`]: the embedded store's statements, in
//! short transactions that only one instance runs at a time (the others
//! skip their step: the work is the same). Deleted rows' space is reused
//! by the table once autovacuum has passed (`docs/decisions.md`).

use sqlx::PgConnection;

use super::{COMPACTION_LOCK, LOCK_SPACE, PgStore};
use crate::retention::{Cutoffs, Retention, Step};
use crate::store::rows::{MESSAGE_COMPACTION, entry_received_at, event_compaction};
use crate::store::{BoxFuture, StoreError};

/// The statement in Postgres's parameter style.
fn dialect(sql: &str) -> String {
    sql.replace('?', "$")
}

/// The dedupe key of the packed order key in `column` (see
/// [`crate::store::rows::pack_order_key`]).
fn dedupe_key(column: &str) -> String {
    format!("substring({column} from 17)")
}

/// The last outbox row made before `$1`: its messages and those before
/// it are of changes past their age.
const OUTBOX_BEFORE: &str = "SELECT seq FROM outbox WHERE created_at < $1 ORDER BY created_at DESC LIMIT 1";

/// Our tables, from the catalog: those of the connection's schema.
const TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = current_schema() AND c.relkind = 'r'";

impl PgStore {
    /// Runs `step` in a transaction holding this store's compaction lock;
    /// when another instance holds it, skips the step (the work is the
    /// same) and answers `T::default()`.
    async fn compaction<T: Default>(
        &self,
        step: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Per schema: stores in other schemas of the database compact
        // independently.
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()) # $2)")
            .bind(LOCK_SPACE)
            .bind(COMPACTION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(T::default());
        }
        let done = step(&mut tx).await?;
        tx.commit().await?;
        Ok(done)
    }
}

async fn compact_events(
    conn: &mut PgConnection,
    cutoffs: Cutoffs,
    after: i64,
    limit: usize,
) -> Result<Step, StoreError> {
    let (end, first) = window(conn, "events", "received_at", after, limit).await?;
    let (Some(end), Some(first)) = (end, first) else {
        return Ok(Step::default());
    };
    if first >= cutoffs.newest().to_string() {
        return Ok(Step::default());
    }
    let bodies = [cutoffs.raw_events, cutoffs.quarantine].map(|c| c.to_string());
    let rows = [cutoffs.raw_events, cutoffs.quarantine].map(|c| c.min(cutoffs.dedupe).to_string());
    let cutoffs: [&[String]; 3] = [&[rows.clone(), bodies.clone()].concat(), &rows, &bodies];
    let mut counts = [0; 3];
    for ((sql, cutoffs), count) in event_compaction(dedupe_key).iter().zip(cutoffs).zip(&mut counts) {
        let sql = dialect(sql);
        let mut query = sqlx::query(&sql).bind(after).bind(end);
        for cutoff in cutoffs {
            query = query.bind(cutoff);
        }
        *count = query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(Step {
        rows: counts[1],
        bodies: counts[2],
        next: Some(end),
    })
}

async fn compact_messages(conn: &mut PgConnection, cutoffs: Cutoffs, limit: usize) -> Result<u64, StoreError> {
    let cut: Option<i64> = sqlx::query_scalar(OUTBOX_BEFORE)
        .bind(cutoffs.messages.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(cut) = cut else { return Ok(0) };
    let subscriptions: Vec<String> = sqlx::query_scalar("SELECT id FROM subscriptions")
        .fetch_all(&mut *conn)
        .await?;
    let mut dropped = 0;
    for subscription in subscriptions {
        for (i, sql) in MESSAGE_COMPACTION.iter().enumerate() {
            let done = sqlx::query(&dialect(sql))
                .bind(&subscription)
                .bind(cut)
                .bind(limit as i64)
                .execute(&mut *conn)
                .await?;
            if i == 1 {
                dropped += done.rows_affected();
            }
        }
    }
    Ok(dropped)
}

/// The last row and the earliest time of the window of `table` after
/// `$1`, `$2` rows long, by `time`.
async fn window(
    conn: &mut PgConnection,
    table: &str,
    time: &str,
    after: i64,
    limit: usize,
) -> Result<(Option<i64>, Option<String>), StoreError> {
    let sql = format!(
        "SELECT MAX(seq), MIN({time}) FROM (SELECT seq, {time} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2) w"
    );
    Ok(sqlx::query_as(&sql)
        .bind(after)
        .bind(limit as i64)
        .fetch_one(&mut *conn)
        .await?)
}

/// Envelopes are found by their customer (an index), not through a chain:
/// any that nothing needs may go.
async fn compact_outbox(
    conn: &mut PgConnection,
    cutoffs: Cutoffs,
    after: i64,
    limit: usize,
) -> Result<Step, StoreError> {
    let cutoff = cutoffs.messages.to_string();
    let (Some(end), Some(first)) = window(conn, "outbox", "created_at", after, limit).await? else {
        return Ok(Step::default());
    };
    if first >= cutoff {
        return Ok(Step::default());
    }
    // Fanned out and read by the resolver: both follow `published`.
    let dropped = sqlx::query(
        "DELETE FROM outbox o WHERE o.seq > $1 AND o.seq <= $2 AND o.created_at < $3
             AND o.published <= (SELECT position FROM fanout)
             AND o.published <= (SELECT position FROM person_resolver)
             AND NOT EXISTS (SELECT 1 FROM subscriptions s JOIN messages m
                             ON m.subscription_id = s.id AND m.outbox_seq = o.seq)",
    )
    .bind(after)
    .bind(end)
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    Ok(Step {
        bodies: 0,
        rows: dropped.rows_affected(),
        next: Some(end),
    })
}

/// A history entry as compaction reads it: seq, its event's received time
/// while the event row is kept, else the entry as kept, and its codec;
/// whether its event's body is gone.
type EntryRow = (i64, Option<String>, Option<Vec<u8>>, i16, bool);

/// Entries are found by their customer (an index): any past its age whose
/// event has no body left may go.
async fn compact_history(
    conn: &mut PgConnection,
    cutoffs: Cutoffs,
    after: i64,
    limit: usize,
) -> Result<Step, StoreError> {
    let Some(cutoff) = cutoffs.history else {
        return Ok(Step::default());
    };
    // Only an entry whose event row is gone is read.
    let window: Vec<EntryRow> = sqlx::query_as(
        "SELECT h.seq, e.received_at,
                CASE WHEN e.seq IS NULL THEN COALESCE(h.packed, convert_to(h.entry, 'UTF8')) END, h.codec,
                e.body IS NULL OR e.redacted
         FROM history h LEFT JOIN events e ON e.id = h.event_id WHERE h.seq > $1 ORDER BY h.seq LIMIT $2",
    )
    .bind(after)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let (mut next, cutoff) = (window.last().map(|w| w.0), cutoff.to_string());
    let mut bodiless = Vec::new();
    for (seq, received, entry, codec, gone) in window {
        if entry_received_at(received, entry.unwrap_or_default(), codec.into())? >= cutoff {
            next = None;
            break;
        }
        if gone {
            bodiless.push(seq);
        }
    }
    // Unprepared, as joins of a batch are (see the store's module doc).
    let dropped = sqlx::query("DELETE FROM history WHERE seq = ANY($1)")
        .persistent(false)
        .bind(&bodiless)
        .execute(&mut *conn)
        .await?;
    Ok(Step {
        bodies: 0,
        rows: dropped.rows_affected(),
        next,
    })
}

impl Retention for PgStore {
    fn compact_events(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.compaction(move |conn| Box::pin(compact_events(conn, cutoffs, after, limit))))
    }

    fn compact_messages(&self, cutoffs: Cutoffs, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.compaction(move |conn| Box::pin(compact_messages(conn, cutoffs, limit))))
    }

    fn compact_outbox(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.compaction(move |conn| Box::pin(compact_outbox(conn, cutoffs, after, limit))))
    }

    fn compact_history(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.compaction(move |conn| Box::pin(compact_history(conn, cutoffs, after, limit))))
    }

    /// Autovacuum makes deleted rows' space reusable by itself; giving it
    /// back to the file system would take a `VACUUM FULL`, which locks
    /// the table.
    fn reclaim(&self, _pages: u32) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn store_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT {TABLES}");
            let bytes: i64 = sqlx::query_scalar(&sql).fetch_one(&self.pool).await?;
            Ok(bytes as u64)
        })
    }

    fn table_bytes(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT c.relname::TEXT, pg_total_relation_size(c.oid) {TABLES} ORDER BY 1");
            let rows: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
            Ok(rows.into_iter().map(|(t, b)| (t, b as u64)).collect())
        })
    }
}
