//! The embedded store's atomic rebuild (SPEC §12). The events are replayed
//! on a connection of the rebuild's own into temporary tables named like
//! the directory's: SQLite looks a name up in `temp` before `main`, so the
//! directory's code writes them unchanged, while the store serves and
//! changes meanwhile. To finish, the writer holds its writes (the rebuild
//! runs between two of its transactions), the events that arrived
//! meanwhile are replayed, and the rebuilt rows replace the live ones in
//! one transaction. A rebuild that stops before (an error, a crash, a
//! kill) leaves nothing behind: temporary tables end with their connection.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::composed::{COMPOSED, write_out};
use super::ids::{KeptId, PackedId};
use super::{Context, connect, history_chains, read_record, reprocess};
use crate::clock::Clock;
use crate::store::rows::{Lookups, directory_deletes, record_columns};
use crate::store::{Publish, Rebuilt, Remap, StoreError};

/// The tables a rebuild writes, which temporary ones shadow on its
/// connection: the directory, and the events whose outcome it settles
/// again (copied one by one as they are replayed).
const SHADOWED: &str = r#"["customers", "customer_phones", "customer_businesses", "customer_names", "merge_links",
                           "history", "events", "event_mentions", "outbox_heads"]"#;

/// The customers of the rebuilt sources (`?1`, a JSON array) in the live
/// directory.
const LIVE: &str = "SELECT id FROM main.customers WHERE source IN (SELECT value FROM json_each(?1))";

/// A rebuild under way: its connection, with the temporary tables.
pub(super) struct Shadow {
    conn: Connection,
    ctx: Context,
    /// The rebuilt sources, a JSON array.
    sources: String,
    remap: Remap,
    /// The last event replayed (its `seq`).
    after: i64,
    rebuilt: Rebuilt,
    /// Erasures the store had kept when the rebuild began.
    erasures: i64,
}

impl Shadow {
    /// Opens the rebuild's connection to the database at `path` and makes
    /// its temporary tables, empty, with the live ones' columns,
    /// constraints and indexes.
    pub(super) fn open(path: &Path, sources: &[String], remap: Remap, clock: Clock) -> Result<Self, StoreError> {
        let conn = connect(path, OpenFlags::default())?;
        // As the writer's: commits as durable, and what a swap frees
        // zeroed (an erasure after it finds nothing left in free space).
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")?;
        let schema: Vec<(String, String)> = conn
            .prepare(
                "SELECT type, sql FROM main.sqlite_schema
                 WHERE tbl_name IN (SELECT value FROM json_each(?1)) AND sql IS NOT NULL
                 ORDER BY type = 'index'",
            )?
            .query_map([SHADOWED], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (kind, sql) in schema {
            conn.execute_batch(&temporary(&kind, &sql)?)?;
        }
        let erasures = conn.query_row("SELECT COUNT(*) FROM main.suppressions", [], |r| r.get(0))?;
        Ok(Self {
            conn,
            ctx: Context {
                last_change: 0,
                data_version: 0,
                queued: false,
                erased: false,
                claims: 0,
                clock,
            },
            sources: serde_json::to_string(sources)?,
            remap,
            after: 0,
            rebuilt: Rebuilt::default(),
            erasures,
        })
    }

    /// Replays up to `limit` more accepted events into the temporary
    /// tables, in arrival order. Returns whether more may wait.
    pub(super) fn replay(&mut self, limit: usize) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let events: crate::store::compress::PackedEvents = tx
            .prepare_cached(
                "SELECT seq, id, source, body, codec FROM main.events
                 WHERE status = 'accepted' AND seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![self.after, limit as i64], |r| {
                Ok((r.get(0)?, r.get::<_, KeptId>(1)?.0, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let events = crate::store::compress::unpacked(events)?;
        for (seq, id, source, body) in &events {
            self.after = *seq;
            // A source no longer configured, or a body gone: left as it is.
            let Some(mapped) = body.as_deref().and_then(|body| (self.remap)(source, body)) else {
                self.rebuilt.skipped += 1;
                continue;
            };
            tx.prepare_cached("INSERT OR IGNORE INTO temp.events SELECT * FROM main.events WHERE id = ?1")?
                .execute([PackedId(id)])?;
            match reprocess(&tx, id, &mapped, Publish::No, &mut self.ctx) {
                Ok(_) => self.rebuilt.replayed += 1,
                Err(StoreError::Redacted(_)) => self.rebuilt.skipped += 1,
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        Ok(events.len() == limit)
    }

    /// Replays what arrived since the last page and swaps the rebuilt
    /// directory in, in one transaction. Runs while the store's writer
    /// holds its writes: nothing new arrives meanwhile.
    pub(super) fn finish(mut self, page: usize) -> Result<Rebuilt, StoreError> {
        while self.replay(page)? {}
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let erasures: i64 = tx.query_row("SELECT COUNT(*) FROM main.suppressions", [], |r| r.get(0))?;
        if erasures != self.erasures {
            // Its customers' rows may be in the rebuilt tables, and the
            // records it changed were replayed without it.
            return Err(StoreError::RebuildOverrun);
        }
        let sources = &self.sources;
        write_out_replaced(&tx, sources)?;
        for sql in [
            // A version never goes down: at least the live record's, or the
            // floor a rebuild that stopped midway left.
            "UPDATE temp.customers AS t SET version = MAX(t.version,
                 COALESCE((SELECT m.version FROM main.customers m WHERE m.id = t.id), 0),
                 COALESCE((SELECT f.version FROM main.version_floors f WHERE f.customer_id = t.id), 0))",
            // Each record keeps its chain of envelopes (the rebuild
            // published none), or takes back the end a rebuild left.
            "UPDATE temp.customers AS t SET last_outbox = COALESCE(
                 (SELECT m.last_outbox FROM main.customers m WHERE m.id = t.id),
                 (SELECT MAX(h.seq) FROM main.outbox_heads h WHERE h.customer_id = t.id))",
            "DELETE FROM main.outbox_heads WHERE (customer_id, seq) IN (SELECT id, last_outbox FROM temp.customers)",
        ] {
            tx.execute(sql, [])?;
        }
        // Records the rebuild did not make again keep their chain's end.
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO main.outbox_heads (customer_id, seq)
                 SELECT id, last_outbox FROM main.customers
                 WHERE id IN ({LIVE}) AND last_outbox IS NOT NULL AND id NOT IN (SELECT id FROM temp.customers)"
            ),
            [sources],
        )?;
        // Numbered after every live history entry and change feed position.
        let (history, feed): (i64, i64) = tx.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM main.sqlite_sequence WHERE name = 'history'), 0),
                        COALESCE((SELECT MAX(seq) FROM main.history), 0))
                    + COALESCE((SELECT MAX(seq) FROM temp.history), 0),
                    COALESCE((SELECT MAX(change_seq) FROM main.customers), 0)
                    + COALESCE((SELECT MAX(change_seq) FROM temp.customers), 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute("UPDATE temp.history SET seq = seq + ?1, prev = prev + ?1", [history])?;
        tx.execute(
            "UPDATE temp.customers SET last_history = last_history + ?1, change_seq = change_seq + ?2",
            [history, feed],
        )?;
        let live_history = format!(
            "{} DELETE FROM main.history WHERE seq IN (SELECT seq FROM chain)",
            history_chains("main.", LIVE)
        );
        for sql in std::iter::once(live_history).chain(directory_deletes("main.", LIVE, Lookups::Tables)) {
            tx.execute(&sql, [sources])?;
        }
        for sql in [
            "INSERT INTO main.history SELECT * FROM temp.history",
            "INSERT INTO main.customers SELECT * FROM temp.customers",
            "INSERT OR IGNORE INTO main.customer_phones SELECT * FROM temp.customer_phones",
            "INSERT OR IGNORE INTO main.customer_businesses SELECT * FROM temp.customer_businesses",
            "INSERT OR IGNORE INTO main.customer_names SELECT * FROM temp.customer_names",
            "INSERT OR IGNORE INTO main.merge_links SELECT * FROM temp.merge_links",
            "UPDATE main.events AS e SET status = t.status, reason = t.reason, outcome = t.outcome,
                                         customer_id = t.customer_id
             FROM temp.events AS t WHERE e.id = t.id",
            "DELETE FROM main.version_floors",
        ] {
            tx.execute(sql, [])?;
        }
        tx.commit()?;
        Ok(self.rebuilt)
    }
}

/// Writes out the envelopes kept composed from the live records of the
/// rebuilt `sources` (a JSON array), which the swap replaces with records
/// that differ at least in when they changed. (Their history goes with
/// them.)
fn write_out_replaced(tx: &Connection, sources: &str) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT {}, last_outbox FROM main.customers
         WHERE source IN (SELECT value FROM json_each(?1))
           AND EXISTS (SELECT 1 FROM main.outbox o WHERE o.seq = last_outbox AND o.codec = {COMPOSED})",
        record_columns("profile")
    );
    let mut composed = tx.prepare(&sql)?;
    let rows = composed.query_map([sources], |r| Ok((read_record(r)?, r.get::<_, i64>(11)?)))?;
    for row in rows {
        let (raw, seq) = row?;
        write_out(tx, Some(seq), None, &raw.into_record()?.0)?;
    }
    Ok(())
}

/// The statement that makes, in `temp`, the table or index whose live
/// schema is `sql`.
fn temporary(kind: &str, sql: &str) -> Result<String, StoreError> {
    let made = match kind {
        "table" => sql
            .strip_prefix("CREATE TABLE ")
            .map(|rest| format!("CREATE TEMP TABLE {rest}")),
        "index" => sql
            .strip_prefix("CREATE INDEX ")
            .map(|rest| format!("CREATE INDEX temp.{rest}"))
            .or_else(|| {
                sql.strip_prefix("CREATE UNIQUE INDEX ")
                    .map(|rest| format!("CREATE UNIQUE INDEX temp.{rest}"))
            }),
        _ => None,
    };
    made.ok_or_else(|| StoreError::Bug(format!("a rebuild cannot shadow {kind} {sql:?}")))
}
