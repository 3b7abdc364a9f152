//! The embedded store's [`Retention`]: each step one write of the writer
//! thread, between deliveries; freed pages go back to the file system by
//! incremental vacuum (a store made before `auto_vacuum` was set keeps
//! them for reuse until a `VACUUM`: `docs/operating.md`).
//!
//! A customer's envelopes and history entries are found through chains
//! from its latest (migration 4), not an index: an erasure walks them. So
//! only the oldest rows of a chain go ([`drop_oldest`]): a row that goes
//! leaves nothing older behind it, and every row kept stays reachable.

use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::retention::{Cutoffs, Retention, Step};
use crate::store::rows::{MESSAGE_COMPACTION, entry_received_at, event_compaction};
use crate::store::{BoxFuture, StoreError};

/// `PRAGMA auto_vacuum`'s value for incremental vacuum.
const INCREMENTAL: i64 = 2;

/// The dedupe key of the packed order key in `column` (see
/// [`crate::store::rows::pack_order_key`]).
fn dedupe_key(column: &str) -> String {
    format!("substr({column}, 17)")
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
    let [forget, drop_rows, drop_bodies] = event_compaction(dedupe_key);
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
    let Some(cut) = outbox_before(tx, &cutoffs.messages.to_string())? else {
        return Ok(0);
    };
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

/// The last outbox row made before `cutoff`: its messages and those before
/// it are of changes past their age. Found by halving the range of `seq`
/// (the outbox has no index on its time since migration 19): the one
/// writer numbers the changes in the order of their times, so the rows
/// made before a time are a prefix. Should the clock step back, the cut
/// moves by as many rows as it stepped over.
fn outbox_before(tx: &Connection, cutoff: &str) -> Result<Option<i64>, StoreError> {
    let (first, last): (Option<i64>, Option<i64>) = tx.query_row("SELECT MIN(seq), MAX(seq) FROM outbox", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    let (Some(mut low), Some(mut high)) = (first, last) else {
        return Ok(None);
    };
    let mut at = tx.prepare_cached("SELECT seq, created_at FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let mut found = None;
    while low <= high {
        let middle = low + (high - low) / 2;
        let (seq, created): (i64, String) = at.query_row([middle], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if created.as_str() < cutoff {
            found = Some(seq);
            low = seq + 1;
        } else {
            high = middle - 1;
        }
    }
    Ok(found)
}

/// Drops, in order, the rows of `rows` (seq, the chain's previous row,
/// whether the row itself may go) that have no older row of their chain
/// left: each that goes makes the next of its chain the oldest. Returns
/// how many went.
fn drop_oldest(tx: &Connection, table: &str, rows: &[(i64, Option<i64>, bool)]) -> Result<u64, StoreError> {
    let mut kept = tx.prepare_cached(&format!("SELECT 1 FROM {table} WHERE seq = ?1"))?;
    let mut delete = tx.prepare_cached(&format!("DELETE FROM {table} WHERE seq = ?1"))?;
    let mut dropped = 0;
    for &(seq, prev, may_go) in rows {
        if may_go && !prev.map_or(Ok(false), |prev| kept.exists([prev]))? {
            dropped += delete.execute([seq])? as u64;
        }
    }
    Ok(dropped)
}

/// The next window's start: the window's `last` row when all its `len`
/// rows were past their age, else `None` (the rest is younger).
fn next_window(len: usize, last: Option<i64>, past: usize) -> Option<i64> {
    last.filter(|_| past == len)
}

fn compact_outbox(tx: &Connection, cutoffs: Cutoffs, after: i64, limit: usize) -> Result<Step, StoreError> {
    // The dispatcher fans the outbox out, the resolver reads it: both pass.
    let read: i64 = tx.query_row(
        "SELECT MIN(f.position, r.position) FROM fanout f, person_resolver r",
        [],
        |r| r.get(0),
    )?;
    let window: Vec<(i64, Option<i64>, String)> = tx
        .prepare_cached("SELECT seq, prev, created_at FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![after, limit as i64], |r| r.try_into())?
        .collect::<Result<_, _>>()?;
    let cutoff = cutoffs.messages.to_string();
    // The one writer numbers the changes in the order of their times.
    let past = window
        .iter()
        .take_while(|(seq, _, created)| *seq <= read && *created < cutoff)
        .count();
    let mut referenced = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM subscriptions s JOIN messages m ON m.subscription_id = s.id AND m.outbox_seq = ?1)",
    )?;
    let rows = window[..past]
        .iter()
        .map(|(seq, prev, _)| Ok((*seq, *prev, !referenced.query_row([seq], |r| r.get::<_, bool>(0))?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Step {
        bodies: 0,
        rows: drop_oldest(tx, "outbox", &rows)?,
        next: next_window(window.len(), window.last().map(|w| w.0), past),
    })
}

/// A history entry as compaction reads it: seq, the chain's previous
/// entry, its event's received time while the event row is kept, else the
/// entry as kept, and its codec; whether its event's body is gone.
type EntryRow = (i64, Option<i64>, Option<String>, Vec<u8>, i64, bool);

fn compact_history(tx: &Connection, cutoffs: Cutoffs, after: i64, limit: usize) -> Result<Step, StoreError> {
    let Some(cutoff) = cutoffs.history else {
        return Ok(Step::default());
    };
    // An entry's event without a body: gone, dropped by compaction or
    // redacted. Only an entry whose event row is gone is read.
    let window: Vec<EntryRow> = tx
        .prepare_cached(
            "SELECT h.seq, h.prev, e.received_at, CASE WHEN e.seq IS NULL THEN h.entry END, h.codec,
                    e.body IS NULL OR e.redacted
             FROM history h LEFT JOIN events e ON e.id = h.event_id WHERE h.seq > ?1 ORDER BY h.seq LIMIT ?2",
        )?
        .query_map(params![after, limit as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                super::kept_bytes(r.get_ref(3)?),
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let (len, last, cutoff) = (window.len(), window.last().map(|w| w.0), cutoff.to_string());
    let mut rows = Vec::with_capacity(len);
    for (seq, prev, received, entry, codec, bodiless) in window {
        if entry_received_at(received, entry, codec)? >= cutoff {
            break;
        }
        rows.push((seq, prev, bodiless));
    }
    Ok(Step {
        bodies: 0,
        rows: drop_oldest(tx, "history", &rows)?,
        next: next_window(len, last, rows.len()),
    })
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
    // The pragma gives one page back per step of its statement: stepped
    // to its end, not once (as `execute_batch` would).
    let mut vacuum = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut steps = vacuum.query([])?;
    while steps.next()?.is_some() {}
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

    fn compact_outbox(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.write(move |tx| compact_outbox(tx, cutoffs, after, limit)))
    }

    fn compact_history(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>> {
        Box::pin(self.write(move |tx| compact_history(tx, cutoffs, after, limit)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_change_before_a_time_is_found_over_gaps_in_seq() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
            .expect("a table");
        assert_eq!(outbox_before(&conn, "t010").expect("a search"), None);
        let seqs: Vec<i64> = (1..=40).step_by(3).collect();
        for seq in &seqs {
            conn.execute("INSERT INTO outbox VALUES (?1, ?2)", params![seq, format!("t{seq:03}")])
                .expect("a row");
        }
        for cutoff in 0..=45 {
            let expected = seqs.iter().copied().filter(|seq| *seq < cutoff).max();
            let found = outbox_before(&conn, &format!("t{cutoff:03}")).expect("a search");
            assert_eq!(found, expected, "before t{cutoff:03}");
        }
    }

    #[test]
    fn only_the_oldest_of_a_chain_go_so_every_row_kept_stays_reachable() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE chained (seq INTEGER PRIMARY KEY, prev INTEGER)")
            .expect("a table");
        // Two chains, a: 1 <- 3 <- 4 <- 6 and b: 2 <- 5; 4 may not go (a
        // message waits for it).
        for (seq, prev) in [
            (1, None),
            (2, None),
            (3, Some(1)),
            (4, Some(3)),
            (5, Some(2)),
            (6, Some(4)),
        ] {
            conn.execute("INSERT INTO chained VALUES (?1, ?2)", params![seq, prev])
                .expect("a row");
        }
        let window = [
            (1, None, true),
            (2, None, true),
            (3, Some(1), true),
            (4, Some(3), false),
            (5, Some(2), true),
            (6, Some(4), true),
        ];
        assert_eq!(drop_oldest(&conn, "chained", &window).expect("a step"), 4);
        let kept: Vec<i64> = conn
            .prepare("SELECT seq FROM chained ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("the rows kept");
        // 6 stays behind 4: the walk from 6 reaches 4 still.
        assert_eq!(kept, [4, 6]);
    }

    #[test]
    fn a_reclaim_step_gives_back_as_many_pages_as_asked() {
        let dir = tempfile::tempdir().expect("a directory");
        let conn = Connection::open(dir.path().join("db")).expect("open");
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             CREATE TABLE t (b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
             INSERT INTO t SELECT zeroblob(4000) FROM n;
             DELETE FROM t;",
        )
        .expect("600 pages freed");
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("a page size");
        assert_eq!(reclaim(&conn, 256).expect("a step"), 256 * page as u64);
        let free: i64 = conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .expect("a count");
        assert!(free >= 300, "{free} pages still free");
    }
}
