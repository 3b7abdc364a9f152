//! The embedded store's [`Sources`]: writes go through the writer like
//! every other (so a held delivery is committed before its `202`), reads
//! through the read pool. Times are kept as RFC 3339 text, which sorts as
//! the instants do.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::model::UtcMillis;
use crate::store::rows::{RawHeld, RawSource, RawToken, changed_sources, decode_held, source_stats};
use crate::store::sources::{
    Changed, Held, HourlyCount, SourceDeletion, Sources, Stats, StoredSource, StoredToken, Usage,
};
use crate::store::{BoxFuture, StoreError};

/// Moves the sources version, and marks `source` as changed at it.
fn bump(tx: &Connection, source: &str) -> rusqlite::Result<()> {
    let version: i64 = tx.query_row(
        "UPDATE access_version SET version = version + 1 WHERE id = 1 RETURNING version",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE sources SET version = ?2 WHERE name = ?1",
        params![source, version],
    )?;
    tx.execute(
        "INSERT INTO source_tombstones (name, version) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM sources WHERE name = ?1)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version",
        params![source, version],
    )?;
    Ok(())
}

fn insert_token(tx: &Connection, t: &StoredToken) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO source_tokens (id, source, digest, secret, created_at, expires_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
        params![
            t.id,
            t.source,
            t.digest,
            t.secret,
            t.created_at.to_string(),
            t.expires_at.map(|e| e.to_string())
        ],
    )
}

fn read_sources(conn: &Connection, since: Option<i64>, name: Option<&str>) -> Result<Changed, StoreError> {
    let version: i64 = conn.query_row("SELECT version FROM access_version WHERE id = 1", [], |r| r.get(0))?;
    let tokens: Vec<RawToken> = conn
        .prepare(
            "SELECT t.id, t.source, t.digest, t.secret, t.created_at, t.expires_at, t.last_used_at
             FROM source_tokens t JOIN sources s ON s.name = t.source
             WHERE (?1 IS NULL OR s.version > ?1) AND (?2 IS NULL OR s.name = ?2) ORDER BY t.created_at, t.id",
        )?
        .query_map(params![since, name], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let sources: Vec<RawSource> = conn
        .prepare(
            "SELECT name, spec, enabled, created_at FROM sources
             WHERE (?1 IS NULL OR version > ?1) AND (?2 IS NULL OR name = ?2) ORDER BY name",
        )?
        .query_map(params![since, name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let deleted: Vec<String> = match since {
        None => Vec::new(),
        Some(since) => conn
            .prepare("SELECT name FROM source_tombstones WHERE version > ?1")?
            .query_map([since], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    };
    changed_sources(version, sources, tokens, deleted)
}

impl Sources for SqliteStore {
    fn sources_version(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            Ok(conn
                .prepare_cached("SELECT version FROM access_version WHERE id = 1")?
                .query_row([], |r| r.get(0))?)
        }))
    }

    fn stored_sources(&self, since: Option<i64>, name: Option<String>) -> BoxFuture<'_, Result<Changed, StoreError>> {
        Box::pin(self.readers.run(move |conn| read_sources(conn, since, name.as_deref())))
    }

    fn create_source(&self, source: StoredSource) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            let spec = serde_json::to_string(&source.spec)?;
            let inserted = tx.execute(
                "INSERT INTO sources (name, spec, enabled, created_at, version) VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT DO NOTHING",
                params![source.name, spec, source.enabled, source.created_at.to_string()],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            // A deleted source's tokens went with it; none can be left.
            tx.execute("DELETE FROM source_tokens WHERE source = ?1", [&source.name])?;
            for token in &source.tokens {
                insert_token(tx, token)?;
            }
            bump(tx, &source.name)?;
            Ok(true)
        }))
    }

    fn update_source(
        &self,
        name: String,
        spec: crate::store::sources::SourceSpec,
        enabled: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            let spec = serde_json::to_string(&spec)?;
            let updated = tx.execute(
                "UPDATE sources SET spec = ?2, enabled = ?3 WHERE name = ?1",
                params![name, spec, enabled],
            )?;
            if updated > 0 {
                bump(tx, &name)?;
            }
            Ok(updated > 0)
        }))
    }

    fn delete_source(&self, name: String) -> BoxFuture<'_, Result<SourceDeletion, StoreError>> {
        Box::pin(self.write(move |tx| {
            let exists = tx
                .query_row("SELECT 1 FROM sources WHERE name = ?1", [&name], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Ok(SourceDeletion::NotFound);
            }
            let holding = tx
                .query_row("SELECT 1 FROM held WHERE source = ?1 LIMIT 1", [&name], |_| Ok(()))
                .optional()?
                .is_some();
            if holding {
                return Ok(SourceDeletion::Holding);
            }
            tx.execute("DELETE FROM sources WHERE name = ?1", [&name])?;
            tx.execute("DELETE FROM source_tokens WHERE source = ?1", [&name])?;
            bump(tx, &name)?;
            Ok(SourceDeletion::Deleted)
        }))
    }

    fn add_token(&self, token: StoredToken) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            let exists = tx
                .query_row("SELECT 1 FROM sources WHERE name = ?1", [&token.source], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Ok(false);
            }
            insert_token(tx, &token)?;
            bump(tx, &token.source)?;
            Ok(true)
        }))
    }

    fn delete_token(&self, source: String, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            let deleted = tx.execute(
                "DELETE FROM source_tokens WHERE source = ?1 AND id = ?2",
                params![source, id],
            )?;
            if deleted > 0 {
                bump(tx, &source)?;
            }
            Ok(deleted > 0)
        }))
    }

    fn hold(&self, held: Held) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO held (source, dedupe_key, received_at, headers, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                held.source,
                held.dedupe_key,
                held.received_at.to_string(),
                held.headers,
                held.body
            ])?;
            Ok(())
        }))
    }

    fn holding(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            Ok(conn
                .prepare_cached("SELECT DISTINCT source FROM held")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        }))
    }

    fn lease_release(
        &self,
        source: String,
        now: UtcMillis,
        until: UtcMillis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            let leased = tx.execute(
                "UPDATE sources SET release_until = ?3
                 WHERE name = ?1 AND (release_until IS NULL OR release_until < ?2)",
                params![source, now.to_string(), until.to_string()],
            )?;
            Ok(leased > 0)
        }))
    }

    fn end_release(&self, source: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute("UPDATE sources SET release_until = NULL WHERE name = ?1", [&source])?;
            Ok(())
        }))
    }

    fn held(&self, source: String, limit: usize) -> BoxFuture<'_, Result<Vec<Held>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let rows: Vec<RawHeld> = conn
                .prepare_cached(
                    "SELECT seq, source, dedupe_key, received_at, headers, body FROM held
                     WHERE source = ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![source, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(decode_held).collect()
        }))
    }

    fn release(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute("DELETE FROM held WHERE seq = ?1", [seq])?;
            Ok(())
        }))
    }

    fn record_usage(&self, usage: Usage) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            let mut count = tx.prepare_cached(
                "INSERT INTO source_stats (source, hour, outcome, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, hour, outcome) DO UPDATE SET count = count + excluded.count",
            )?;
            for (source, hour, outcome, n) in &usage.counts {
                count.execute(params![source, hour, outcome, *n as i64])?;
            }
            let mut last = tx.prepare_cached(
                "INSERT INTO source_last_delivery (source, at) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET at = max(at, excluded.at)",
            )?;
            for (source, at) in &usage.last_delivery {
                last.execute(params![source, at.to_string()])?;
            }
            let mut used = tx.prepare_cached(
                "UPDATE source_tokens SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (id, at) in &usage.tokens_used {
                used.execute(params![id, at.to_string()])?;
            }
            Ok(())
        }))
    }

    fn stats(
        &self,
        source: Option<String>,
        since_hour: String,
    ) -> BoxFuture<'_, Result<HashMap<String, Stats>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let counts: Vec<(String, String, i64)> = conn
                .prepare_cached(
                    "SELECT source, outcome, SUM(count) FROM source_stats
                     WHERE (?1 IS NULL OR source = ?1) AND hour >= ?2 GROUP BY source, outcome",
                )?
                .query_map(params![source, since_hour], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let last: Vec<(String, String)> = conn
                .prepare_cached("SELECT source, at FROM source_last_delivery WHERE (?1 IS NULL OR source = ?1)")?
                .query_map([&source], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            source_stats(counts, last)
        }))
    }

    fn hourly_stats(&self, since_hour: String) -> BoxFuture<'_, Result<Vec<HourlyCount>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let rows: Vec<(String, String, String, i64)> = conn
                .prepare_cached("SELECT source, hour, outcome, count FROM source_stats WHERE hour >= ?1")?
                .query_map([&since_hour], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(s, h, o, n)| (s, h, o, n.max(0) as u64))
                .collect())
        }))
    }
}
