//! The Postgres store's [`Keys`], the same SQL as the embedded store's.

use super::PgStore;
use crate::store::keys::{AuditEntry, Keys, StoredKey};
use crate::store::rows::{KEY_COLUMNS, RawAudit, RawKey, audit_page, decode_key};
use crate::store::{BoxFuture, Page, StoreError};

impl PgStore {
    async fn key_where(&self, column: &str, value: &str) -> Result<Option<StoredKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = $1");
        let row: Option<RawKey> = sqlx::query_as(&sql).bind(value).fetch_optional(&self.pool).await?;
        row.map(decode_key).transpose()
    }
}

impl Keys for PgStore {
    fn create_key(&self, key: StoredKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO api_keys (id, name, digest, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&key.id)
                .bind(&key.name)
                .bind(&key.digest)
                .bind(serde_json::to_string(&key.scopes)?)
                .bind(key.created_at.to_string())
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
            let rows: Vec<RawKey> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
            rows.into_iter().map(decode_key).collect()
        })
    }

    fn key(&self, id: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>> {
        Box::pin(async move { self.key_where("id", &id).await })
    }

    fn key_by_digest(&self, digest: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>> {
        Box::pin(async move { self.key_where("digest", &digest).await })
    }

    fn delete_key(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(&id)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted > 0)
        })
    }

    fn record_audit(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO audit (at, key_id, action, target) VALUES ($1, $2, $3, $4)")
                .bind(entry.at.to_string())
                .bind(&entry.key_id)
                .bind(&entry.action)
                .bind(&entry.target)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn audit(&self, limit: usize, before: Option<i64>) -> BoxFuture<'_, Result<Page<AuditEntry>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<RawAudit> = sqlx::query_as(
                "SELECT seq, at, key_id, action, target FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
            audit_page(rows, limit)
        })
    }
}
