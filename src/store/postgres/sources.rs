//! The Postgres store's [`Sources`], the same SQL as the embedded store's
//! (`sqlite/sources.rs`). Each change of a source or a token moves
//! `access_version` in its transaction: every instance polls it and so
//! sees the change within its poll interval.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::PgStore;
use crate::model::UtcMillis;
use crate::store::rows::{RawHeld, RawSource, RawToken, changed_sources, decode_held, source_stats};
use crate::store::sources::{
    Changed, Held, HourlyCount, SourceDeletion, SourceSpec, Sources, Stats, StoredSource, StoredToken, Usage,
};
use crate::store::{BoxFuture, StoreError};

/// Moves the sources version (the row lock orders concurrent changes),
/// and marks `source` as changed at it.
async fn bump(conn: &mut PgConnection, source: &str) -> Result<(), StoreError> {
    let (version,): (i64,) =
        sqlx::query_as("UPDATE access_version SET version = version + 1 WHERE id = 1 RETURNING version")
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("UPDATE sources SET version = $2 WHERE name = $1")
        .bind(source)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO source_tombstones (name, version)
         SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM sources WHERE name = $1)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version",
    )
    .bind(source)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_token(conn: &mut PgConnection, t: &StoredToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO source_tokens (id, source, digest, secret, created_at, expires_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(&t.id)
    .bind(&t.source)
    .bind(&t.digest)
    .bind(&t.secret)
    .bind(t.created_at.to_string())
    .bind(t.expires_at.map(|e| e.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

async fn exists(conn: &mut PgConnection, sql: &str, key: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query(sql).bind(key).fetch_optional(conn).await?.is_some())
}

impl Sources for PgStore {
    fn sources_version(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let (version,): (i64,) = sqlx::query_as("SELECT version FROM access_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(version)
        })
    }

    fn stored_sources(&self, since: Option<i64>, name: Option<String>) -> BoxFuture<'_, Result<Changed, StoreError>> {
        Box::pin(async move {
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?;
            let (version,): (i64,) = sqlx::query_as("SELECT version FROM access_version WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let tokens: Vec<RawToken> = sqlx::query_as(
                "SELECT t.id, t.source, t.digest, t.secret, t.created_at, t.expires_at, t.last_used_at
                 FROM source_tokens t JOIN sources s ON s.name = t.source
                 WHERE ($1::BIGINT IS NULL OR s.version > $1) AND ($2::TEXT IS NULL OR s.name = $2)
                 ORDER BY t.created_at, t.id",
            )
            .bind(since)
            .bind(&name)
            .fetch_all(&mut *tx)
            .await?;
            let sources: Vec<RawSource> = sqlx::query_as(
                "SELECT name, spec, enabled, created_at FROM sources
                 WHERE ($1::BIGINT IS NULL OR version > $1) AND ($2::TEXT IS NULL OR name = $2) ORDER BY name",
            )
            .bind(since)
            .bind(&name)
            .fetch_all(&mut *tx)
            .await?;
            let deleted: Vec<(String,)> = match since {
                None => Vec::new(),
                Some(since) => {
                    sqlx::query_as("SELECT name FROM source_tombstones WHERE version > $1")
                        .bind(since)
                        .fetch_all(&mut *tx)
                        .await?
                }
            };
            tx.commit().await?;
            let deleted = deleted.into_iter().map(|(name,)| name).collect();
            changed_sources(version, sources, tokens, deleted)
        })
    }

    fn create_source(&self, source: StoredSource) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO sources (name, spec, enabled, created_at, version) VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&source.name)
            .bind(serde_json::to_string(&source.spec)?)
            .bind(source.enabled)
            .bind(source.created_at.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM source_tokens WHERE source = $1")
                .bind(&source.name)
                .execute(&mut *tx)
                .await?;
            for token in &source.tokens {
                insert_token(&mut tx, token).await?;
            }
            bump(&mut tx, &source.name).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn update_source(&self, name: String, spec: SourceSpec, enabled: bool) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let updated = sqlx::query("UPDATE sources SET spec = $2, enabled = $3 WHERE name = $1")
                .bind(&name)
                .bind(serde_json::to_string(&spec)?)
                .bind(enabled)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated > 0 {
                bump(&mut tx, &name).await?;
            }
            tx.commit().await?;
            Ok(updated > 0)
        })
    }

    fn delete_source(&self, name: String) -> BoxFuture<'_, Result<SourceDeletion, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            // Locks the row: a delivery held meanwhile waits for the answer.
            if !exists(&mut tx, "SELECT 1 FROM sources WHERE name = $1 FOR UPDATE", &name).await? {
                return Ok(SourceDeletion::NotFound);
            }
            if exists(&mut tx, "SELECT 1 FROM held WHERE source = $1 LIMIT 1", &name).await? {
                return Ok(SourceDeletion::Holding);
            }
            for sql in [
                "DELETE FROM sources WHERE name = $1",
                "DELETE FROM source_tokens WHERE source = $1",
            ] {
                sqlx::query(sql).bind(&name).execute(&mut *tx).await?;
            }
            bump(&mut tx, &name).await?;
            tx.commit().await?;
            Ok(SourceDeletion::Deleted)
        })
    }

    fn add_token(&self, token: StoredToken) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            if !exists(
                &mut tx,
                "SELECT 1 FROM sources WHERE name = $1 FOR UPDATE",
                &token.source,
            )
            .await?
            {
                return Ok(false);
            }
            insert_token(&mut tx, &token).await?;
            bump(&mut tx, &token.source).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn delete_token(&self, source: String, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM source_tokens WHERE source = $1 AND id = $2")
                .bind(&source)
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted > 0 {
                bump(&mut tx, &source).await?;
            }
            tx.commit().await?;
            Ok(deleted > 0)
        })
    }

    fn hold(&self, held: Held) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO held (source, dedupe_key, received_at, headers, body) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&held.source)
            .bind(&held.dedupe_key)
            .bind(held.received_at.to_string())
            .bind(&held.headers)
            .bind(&held.body)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn holding(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT source FROM held")
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(|(s,)| s).collect())
        })
    }

    fn lease_release(
        &self,
        source: String,
        now: UtcMillis,
        until: UtcMillis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let leased = sqlx::query(
                "UPDATE sources SET release_until = $3
                 WHERE name = $1 AND (release_until IS NULL OR release_until < $2)",
            )
            .bind(&source)
            .bind(now.to_string())
            .bind(until.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(leased > 0)
        })
    }

    fn end_release(&self, source: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("UPDATE sources SET release_until = NULL WHERE name = $1")
                .bind(&source)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn held(&self, source: String, limit: usize) -> BoxFuture<'_, Result<Vec<Held>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<RawHeld> = sqlx::query_as(
                "SELECT seq, source, dedupe_key, received_at, headers, body FROM held
                 WHERE source = $1 ORDER BY seq LIMIT $2",
            )
            .bind(&source)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(decode_held).collect()
        })
    }

    fn release(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM held WHERE seq = $1")
                .bind(seq)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn record_usage(&self, usage: Usage) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // One statement per table, whatever the number of sources.
            let mut tx = self.pool.begin().await?;
            let (mut sources, mut hours, mut outcomes, mut counts) = (vec![], vec![], vec![], vec![]);
            for (source, hour, outcome, n) in usage.counts {
                sources.push(source);
                hours.push(hour);
                outcomes.push(outcome);
                counts.push(n as i64);
            }
            sqlx::query(
                "INSERT INTO source_stats (source, hour, outcome, count)
                 SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])
                 ON CONFLICT (source, hour, outcome) DO UPDATE SET count = source_stats.count + excluded.count",
            )
            .bind(&sources)
            .bind(&hours)
            .bind(&outcomes)
            .bind(&counts)
            .execute(&mut *tx)
            .await?;
            let (names, ats): (Vec<String>, Vec<String>) = usage
                .last_delivery
                .into_iter()
                .map(|(s, at)| (s, at.to_string()))
                .unzip();
            sqlx::query(
                "INSERT INTO source_last_delivery (source, at)
                 SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])
                 ON CONFLICT (source) DO UPDATE SET at = GREATEST(source_last_delivery.at, excluded.at)",
            )
            .bind(&names)
            .bind(&ats)
            .execute(&mut *tx)
            .await?;
            let (ids, ats): (Vec<String>, Vec<String>) = usage
                .tokens_used
                .into_iter()
                .map(|(id, at)| (id, at.to_string()))
                .unzip();
            sqlx::query(
                "UPDATE source_tokens t SET last_used_at = u.at
                 FROM UNNEST($1::TEXT[], $2::TEXT[]) AS u(id, at)
                 WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
            )
            .bind(&ids)
            .bind(&ats)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn stats(
        &self,
        source: Option<String>,
        since_hour: String,
    ) -> BoxFuture<'_, Result<HashMap<String, Stats>, StoreError>> {
        Box::pin(async move {
            let counts: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT source, outcome, SUM(count)::BIGINT FROM source_stats
                 WHERE ($1::TEXT IS NULL OR source = $1) AND hour >= $2 GROUP BY source, outcome",
            )
            .bind(&source)
            .bind(&since_hour)
            .fetch_all(&self.pool)
            .await?;
            let last: Vec<(String, String)> =
                sqlx::query_as("SELECT source, at FROM source_last_delivery WHERE ($1::TEXT IS NULL OR source = $1)")
                    .bind(&source)
                    .fetch_all(&self.pool)
                    .await?;
            source_stats(counts, last)
        })
    }

    fn hourly_stats(&self, since_hour: String) -> BoxFuture<'_, Result<Vec<HourlyCount>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String, String, String, i64)> =
                sqlx::query_as("SELECT source, hour, outcome, count FROM source_stats WHERE hour >= $1")
                    .bind(&since_hour)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|(s, h, o, n)| (s, h, o, n.max(0) as u64))
                .collect())
        })
    }
}
