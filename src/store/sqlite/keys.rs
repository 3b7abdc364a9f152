//! The embedded store's [`Keys`]: API keys by digest, and the audit log.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::store::keys::{AuditEntry, Keys, StoredKey};
use crate::store::rows::{KEY_COLUMNS, RawAudit, RawKey, audit_page, decode_key};
use crate::store::{BoxFuture, Page, StoreError};

fn raw_key(r: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn key_where(conn: &Connection, column: &str, value: &str) -> Result<Option<StoredKey>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?1");
    conn.prepare_cached(&sql)?
        .query_row([value], raw_key)
        .optional()?
        .map(decode_key)
        .transpose()
}

impl Keys for SqliteStore {
    fn create_key(&self, key: StoredKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "INSERT INTO api_keys (id, name, digest, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.id,
                    key.name,
                    key.digest,
                    serde_json::to_string(&key.scopes)?,
                    key.created_at.to_string()
                ],
            )?;
            Ok(())
        }))
    }

    fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
            let rows: Vec<RawKey> = conn.prepare(&sql)?.query_map([], raw_key)?.collect::<Result<_, _>>()?;
            rows.into_iter().map(decode_key).collect()
        }))
    }

    fn key(&self, id: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>> {
        Box::pin(self.readers.run(move |conn| key_where(conn, "id", &id)))
    }

    fn key_by_digest(&self, digest: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>> {
        Box::pin(self.readers.run(move |conn| key_where(conn, "digest", &digest)))
    }

    fn delete_key(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| Ok(tx.execute("DELETE FROM api_keys WHERE id = ?1", [&id])? > 0)))
    }

    fn record_audit(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "INSERT INTO audit (at, key_id, action, target) VALUES (?1, ?2, ?3, ?4)",
                params![entry.at.to_string(), entry.key_id, entry.action, entry.target],
            )?;
            Ok(())
        }))
    }

    fn audit(&self, limit: usize, before: Option<i64>) -> BoxFuture<'_, Result<Page<AuditEntry>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let rows: Vec<RawAudit> = conn
                .prepare_cached(
                    "SELECT seq, at, key_id, action, target FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
                )?
                .query_map(params![before.unwrap_or(i64::MAX), limit as i64 + 1], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            audit_page(rows, limit)
        }))
    }
}
