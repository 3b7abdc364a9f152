//! The Postgres store's [`Retention`]: the embedded store's statements, in
//! short transactions that only one instance runs at a time (the others
//! skip their step: the work is the same). Deleted rows' space is reused
//! by the table once autovacuum has passed (`docs/decisions.md`).

use sqlx::{PgConnection, Postgres, Transaction};

use super::{COMPACTION_LOCK, LOCK_SPACE, PgStore};
use crate::retention::{Cutoffs, Retention, Step};
use crate::store::rows::{MESSAGE_COMPACTION, event_compaction};
use crate::store::{BoxFuture, StoreError};

/// The statement in Postgres's parameter style.
fn dialect(sql: &str) -> String {
    sql.replace('?', "$")
}

/// The dedupe key of the packed order key in `column` (see
/// [`crate::store::rows::pack_order_key`]).
fn dedupe_key(column: &str) -> String {
    format!("convert_from(substring({column} from 17), 'UTF8')")
}

/// The last outbox row made before `$1`: its messages and those before
/// it are of changes past their age.
const OUTBOX_BEFORE: &str = "SELECT seq FROM outbox WHERE created_at < $1 ORDER BY created_at DESC LIMIT 1";

/// Our tables, from the catalog: those of the connection's schema.
const TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = current_schema() AND c.relkind = 'r'";

impl PgStore {
    /// A transaction holding the compaction lock of this store, or `None`
    /// when another instance holds it.
    async fn compaction(&self) -> Result<Option<Transaction<'static, Postgres>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Per schema: stores in other schemas of the database compact
        // independently.
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()) # $2)")
            .bind(LOCK_SPACE)
            .bind(COMPACTION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        Ok(locked.then_some(tx))
    }
}

async fn compact_events(
    conn: &mut PgConnection,
    cutoffs: Cutoffs,
    after: i64,
    limit: usize,
) -> Result<Step, StoreError> {
    let (end, first): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT MAX(seq), MIN(received_at) FROM (SELECT seq, received_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) w",
    )
    .bind(after)
    .bind(limit as i64)
    .fetch_one(&mut *conn)
    .await?;
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

impl Retention for PgStore {
    fn compact_events(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(async move {
            let Some(mut tx) = self.compaction().await? else {
                return Ok(Step::default());
            };
            let step = compact_events(&mut tx, cutoffs, after, limit).await?;
            tx.commit().await?;
            Ok(step)
        })
    }

    fn compact_messages(&self, cutoffs: Cutoffs, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let Some(mut tx) = self.compaction().await? else {
                return Ok(0);
            };
            let dropped = compact_messages(&mut tx, cutoffs, limit).await?;
            tx.commit().await?;
            Ok(dropped)
        })
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
