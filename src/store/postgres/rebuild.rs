//! The Postgres store's atomic rebuild (SPEC §12), as the embedded store's
//! (`sqlite/rebuild.rs`): the events are replayed on a connection of the
//! rebuild's own into temporary tables named like the directory's, which
//! Postgres looks up before the store's schema, while every instance
//! serves and changes the live directory. To finish, one transaction locks
//! out writes of events and records (ingest on every instance waits;
//! reads go on), replays what arrived meanwhile, and replaces the live
//! rows with the rebuilt ones. One rebuild at a time: a session lock its
//! connection holds. A rebuild that stops before leaves nothing behind:
//! its temporary tables and its lock end with its connection.

use sqlx::{Connection, PgConnection};

use super::{MAX_RUNS, Plans, REBUILD_LOCK, Work, lost_race, reprocess};
use crate::clock::Clock;
use crate::store::rows::{Lookups, directory_deletes};
use crate::store::{Publish, Rebuilt, Remap, StoreError};

/// The tables a rebuild writes, which temporary ones shadow on its
/// connection: the directory, and the events whose outcome it settles
/// again (copied one by one as they are replayed).
const SHADOWED: [&str; 6] = [
    "customers",
    "customer_keys",
    "merge_links",
    "history",
    "events",
    "event_mentions",
];

/// A rebuild under way: its connection, with the temporary tables.
pub(super) struct Shadow {
    conn: PgConnection,
    /// The store's schema, quoted, followed by a dot.
    live: String,
    sources: Vec<String>,
    remap: Remap,
    /// The last event replayed (its `seq`).
    after: i64,
    rebuilt: Rebuilt,
    /// What stamps the rebuilt records' changes.
    clock: Clock,
    /// Erasures the store had kept when the rebuild began.
    erasures: i64,
}

impl Shadow {
    /// Takes the rebuild's lock on `conn` and makes its temporary tables,
    /// empty, like the live ones.
    pub(super) async fn open(
        mut conn: PgConnection,
        sources: Vec<String>,
        remap: Remap,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        // Keyed by the store's schema: stores in other schemas of the
        // database rebuild on their own.
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext(current_schema()), $1)")
            .bind(REBUILD_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            return Err(StoreError::Rebuilding);
        }
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut conn)
            .await?;
        let live = format!("\"{}\".", schema.replace('"', "\"\""));
        for table in SHADOWED {
            sqlx::query(&format!("CREATE TEMP TABLE {table} (LIKE {live}{table} INCLUDING ALL)"))
                .execute(&mut conn)
                .await?;
        }
        let erasures = count_erasures(&mut conn, &live).await?;
        Ok(Self {
            conn,
            live,
            sources,
            remap,
            after: 0,
            rebuilt: Rebuilt::default(),
            erasures,
            clock,
        })
    }

    /// Replays up to `limit` more accepted events into the temporary
    /// tables, in arrival order, in a transaction of its own, run again
    /// from where it was if it loses a race (a deadlock with a write of
    /// the live store, as [`Self::finish`]). Returns whether more may wait.
    pub(super) async fn replay(&mut self, limit: usize) -> Result<bool, StoreError> {
        let mut runs = 1;
        loop {
            let (after, rebuilt) = (self.after, self.rebuilt);
            match self.replay_once(limit).await {
                Err(e) if runs < MAX_RUNS && lost_race(&e) => {
                    (self.after, self.rebuilt) = (after, rebuilt);
                    runs += 1;
                }
                done => return done,
            }
        }
    }

    async fn replay_once(&mut self, limit: usize) -> Result<bool, StoreError> {
        let mut work = Work {
            tx: self.conn.begin().await?,
            queued: false,
            now: self.clock.now(),
            plans: Plans::EachTime,
        };
        let more = replay_in(
            &mut work,
            &self.live,
            &self.remap,
            &mut self.after,
            &mut self.rebuilt,
            limit,
        )
        .await?;
        work.tx.commit().await?;
        Ok(more)
    }

    /// Locks out writes of events and records, replays what arrived since
    /// the last page, and swaps the rebuilt directory in, in one
    /// transaction.
    pub(super) async fn finish(mut self, page: usize) -> Result<Rebuilt, StoreError> {
        // An ingest holding a customer's lock, waiting for the tables the
        // swap locked, while the swap replays that customer's event: a
        // deadlock, which Postgres ends by failing one of the two. Either
        // runs again, from where it was.
        let mut runs = 1;
        loop {
            let (after, rebuilt) = (self.after, self.rebuilt);
            match self.swap(page).await {
                Ok(()) => break,
                Err(e) if runs < MAX_RUNS && lost_race(&e) => {
                    (self.after, self.rebuilt) = (after, rebuilt);
                    runs += 1;
                }
                Err(e) => return Err(e),
            }
        }
        // Ends the session now, and with it the temporary tables and the
        // lock: the next rebuild may begin at once.
        self.conn.close().await?;
        Ok(self.rebuilt)
    }

    async fn swap(&mut self, page: usize) -> Result<(), StoreError> {
        let live = self.live.clone();
        let mut work = Work {
            tx: self.conn.begin().await?,
            queued: false,
            now: self.clock.now(),
            plans: Plans::EachTime,
        };
        sqlx::query(&format!(
            "LOCK TABLE {live}events, {live}customers IN SHARE ROW EXCLUSIVE MODE"
        ))
        .execute(work.conn())
        .await?;
        while replay_in(&mut work, &live, &self.remap, &mut self.after, &mut self.rebuilt, page).await? {}
        if count_erasures(work.conn(), &live).await? != self.erasures {
            // Its customers' rows may be in the rebuilt tables, and the
            // records it changed were replayed without it.
            return Err(StoreError::RebuildOverrun);
        }
        let reset = format!("SELECT id FROM {live}customers WHERE source = ANY($1)");
        // A version never goes down: at least the live record's, or the
        // floor a rebuild that stopped midway left. Then positions in the
        // change feed after every live one, in the rebuild's order.
        for sql in [
            format!(
                "UPDATE pg_temp.customers t SET version = GREATEST(t.version,
                     COALESCE((SELECT m.version FROM {live}customers m WHERE m.id = t.id), 0),
                     COALESCE((SELECT f.version FROM {live}version_floors f WHERE f.customer_id = t.id), 0))"
            ),
            format!(
                "UPDATE pg_temp.customers t SET change_seq = n.seq
                 FROM (SELECT id, nextval('{live}customers_change_seq') AS seq
                       FROM (SELECT id FROM pg_temp.customers ORDER BY change_seq) o) n
                 WHERE n.id = t.id"
            ),
        ] {
            sqlx::query(&sql).execute(work.conn()).await?;
        }
        let deletes = std::iter::once(format!("DELETE FROM {live}history WHERE customer_id IN ({reset})"))
            .chain(directory_deletes(&live, &reset, Lookups::Keys));
        for sql in deletes {
            sqlx::query(&sql).bind(&self.sources).execute(work.conn()).await?;
        }
        for sql in [
            format!(
                "INSERT INTO {live}history (customer_id, event_id, entry, packed, codec)
                 SELECT customer_id, event_id, entry, packed, codec FROM pg_temp.history ORDER BY seq"
            ),
            format!("INSERT INTO {live}customers SELECT * FROM pg_temp.customers"),
            format!("INSERT INTO {live}customer_keys SELECT * FROM pg_temp.customer_keys ON CONFLICT DO NOTHING"),
            format!("INSERT INTO {live}merge_links SELECT * FROM pg_temp.merge_links ON CONFLICT DO NOTHING"),
            format!(
                "UPDATE {live}events e SET status = t.status, reason = t.reason, outcome = t.outcome,
                                          customer_id = t.customer_id
                 FROM pg_temp.events t WHERE e.id = t.id"
            ),
            format!("DELETE FROM {live}version_floors"),
        ] {
            sqlx::query(&sql).execute(work.conn()).await?;
        }
        work.tx.commit().await?;
        Ok(())
    }
}

async fn count_erasures(conn: &mut PgConnection, live: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {live}suppressions"))
        .fetch_one(conn)
        .await?)
}

/// Replays up to `limit` accepted events after `after` in `work`'s
/// transaction, counting them in `rebuilt`. Returns whether more may wait.
async fn replay_in(
    work: &mut Work<'_>,
    live: &str,
    remap: &Remap,
    after: &mut i64,
    rebuilt: &mut Rebuilt,
    limit: usize,
) -> Result<bool, StoreError> {
    let events: crate::store::compress::PackedEvents = sqlx::query_as(&format!(
        "SELECT seq, id, source, body, codec::INT8 FROM {live}events
         WHERE status = 'accepted' AND seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(*after)
    .bind(limit as i64)
    .fetch_all(work.conn())
    .await?;
    let events = crate::store::compress::unpacked(events)?;
    for (seq, id, source, body) in &events {
        *after = *seq;
        // A source no longer configured, or a body gone: left as it is.
        let Some(mapped) = body.as_deref().and_then(|body| remap(source, body)) else {
            rebuilt.skipped += 1;
            continue;
        };
        sqlx::query(&format!(
            "INSERT INTO pg_temp.events OVERRIDING SYSTEM VALUE SELECT * FROM {live}events WHERE id = $1
             ON CONFLICT DO NOTHING"
        ))
        .bind(id)
        .execute(work.conn())
        .await?;
        match reprocess(work, id, &mapped, Publish::No).await {
            Ok(_) => rebuilt.replayed += 1,
            Err(StoreError::Redacted(_)) => rebuilt.skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(events.len() == limit)
}
