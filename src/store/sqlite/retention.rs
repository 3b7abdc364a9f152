//! The embedded store's [`Retention`]: each step one write of the writer
//! thread, between deliveries; freed pages go back to the file system by
//! incremental vacuum (a store made before `auto_vacuum` was set keeps
//! them for reuse until a `VACUUM`: `docs/operating.md`).

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::retention::{Cutoffs, Retention, Step};
use crate::store::rows::{MESSAGE_COMPACTION, OUTBOX_BEFORE, event_compaction};
use crate::store::{BoxFuture, StoreError};

/// `PRAGMA auto_vacuum`'s value for incremental vacuum.
const INCREMENTAL: i64 = 2;

fn json_field(json: &str, name: &str) -> String {
    format!("json_extract({json}, '$.{name}')")
}

fn compact_events(tx: &Connection, cutoffs: Cutoffs, after: i64, limit: usize) -> Result<Step, StoreError> {
    let (end, first): (Option<i64>, Option<String>) = tx
        .prepare_cached(
            "SELECT MAX(seq), MIN(received_at) FROM (SELECT seq, received_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(end), Some(first)) = (end, first) else {
        return Ok(Step::default());
    };
    if first >= cutoffs.newest().to_string() {
        return Ok(Step::default());
    }
    let bodies = [cutoffs.raw_events, cutoffs.quarantine].map(|c| c.to_string());
    let rows = [cutoffs.raw_events, cutoffs.quarantine].map(|c| c.min(cutoffs.dedupe).to_string());
    let [forget, drop_rows, drop_bodies] = event_compaction(json_field);
    tx.prepare_cached(&forget)?
        .execute(params![after, end, rows[0], rows[1], bodies[0], bodies[1]])?;
    let rows = tx
        .prepare_cached(&drop_rows)?
        .execute(params![after, end, rows[0], rows[1]])?;
    let bodies = tx
        .prepare_cached(&drop_bodies)?
        .execute(params![after, end, bodies[0], bodies[1]])?;
    Ok(Step {
        bodies: bodies as u64,
        rows: rows as u64,
        next: Some(end),
    })
}

fn compact_messages(tx: &Connection, cutoffs: Cutoffs, limit: usize) -> Result<u64, StoreError> {
    let cut: Option<i64> = tx
        .prepare_cached(OUTBOX_BEFORE)?
        .query_row([cutoffs.messages.to_string()], |r| r.get(0))
        .optional()?;
    let Some(cut) = cut else { return Ok(0) };
    let subscriptions: Vec<String> = tx
        .prepare_cached("SELECT id FROM subscriptions")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut dropped = 0;
    for subscription in subscriptions {
        let args = params![subscription, cut, limit as i64];
        tx.prepare_cached(MESSAGE_COMPACTION[0])?.execute(args)?;
        dropped += tx.prepare_cached(MESSAGE_COMPACTION[1])?.execute(args)? as u64;
    }
    Ok(dropped)
}

fn reclaim(tx: &Connection, pages: u32) -> Result<u64, StoreError> {
    let pragma = |name: &str| tx.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    if pragma("auto_vacuum")? != INCREMENTAL {
        return Ok(0);
    }
    let free = pragma("freelist_count")?;
    if free == 0 {
        return Ok(0);
    }
    tx.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let given = free - pragma("freelist_count")?;
    Ok((given * pragma("page_size")?) as u64)
}

impl Retention for SqliteStore {
    fn compact_events(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.write(move |tx| compact_events(tx, cutoffs, after, limit)))
    }

    fn compact_messages(&self, cutoffs: Cutoffs, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |tx| compact_messages(tx, cutoffs, limit)))
    }

    fn reclaim(&self, pages: u32) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |tx| reclaim(tx, pages)))
    }

    /// The database file and its WAL, as the file system holds them.
    fn store_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let path = self.readers.path.clone();
        Box::pin(async move {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            Ok(size(&path) + size(std::path::Path::new(&wal)))
        })
    }

    /// From SQLite's `dbstat`, which reads every page: measured seldom.
    fn table_bytes(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            let mut stmt = conn.prepare(
                "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d
                 LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY 1 ORDER BY 1",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        }))
    }
}
