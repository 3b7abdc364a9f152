//! The Postgres store's [`Sessions`], the same SQL as the embedded store's:
//! a session signed in on one instance serves on every other.

use super::PgStore;
use crate::model::UtcMillis;
use crate::store::sessions::{Sessions, StoredSession};
use crate::store::{BoxFuture, StoreError};

type RawSession = (String, String, Option<String>, String, i64, i64);

impl Sessions for PgStore {
    fn create_session(
        &self,
        session: StoredSession,
        expired_before: UtcMillis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM console_sessions WHERE seen_at < $1")
                .bind(expired_before.as_millisecond())
                .execute(&self.pool)
                .await?;
            sqlx::query(
                "INSERT INTO console_sessions (id_digest, credential, key_id, csrf, created_at, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&session.id_digest)
            .bind(&session.credential)
            .bind(&session.key_id)
            .bind(&session.csrf)
            .bind(session.created_at.as_millisecond())
            .bind(session.seen_at.as_millisecond())
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn session(&self, id_digest: String) -> BoxFuture<'_, Result<Option<StoredSession>, StoreError>> {
        Box::pin(async move {
            let row: Option<RawSession> = sqlx::query_as(
                "SELECT id_digest, credential, key_id, csrf, created_at, seen_at
                 FROM console_sessions WHERE id_digest = $1",
            )
            .bind(&id_digest)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(
                |(id_digest, credential, key_id, csrf, created_at, seen_at)| StoredSession {
                    id_digest,
                    credential,
                    key_id,
                    csrf,
                    created_at: UtcMillis::from_millisecond(created_at),
                    seen_at: UtcMillis::from_millisecond(seen_at),
                },
            ))
        })
    }

    fn touch_session(&self, id_digest: String, at: UtcMillis) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("UPDATE console_sessions SET seen_at = $2 WHERE id_digest = $1")
                .bind(&id_digest)
                .bind(at.as_millisecond())
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn delete_session(&self, id_digest: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM console_sessions WHERE id_digest = $1")
                .bind(&id_digest)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }
}
