//! The embedded store's [`Sessions`]: the console's sessions.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::model::UtcMillis;
use crate::store::sessions::{Sessions, StoredSession};
use crate::store::{BoxFuture, StoreError};

impl Sessions for SqliteStore {
    fn create_session(
        &self,
        session: StoredSession,
        expired_before: UtcMillis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "DELETE FROM console_sessions WHERE seen_at < ?1",
                [expired_before.as_millisecond()],
            )?;
            tx.execute(
                "INSERT INTO console_sessions (id_digest, credential, key_id, csrf, created_at, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    session.id_digest,
                    session.credential,
                    session.key_id,
                    session.csrf,
                    session.created_at.as_millisecond(),
                    session.seen_at.as_millisecond()
                ],
            )?;
            Ok(())
        }))
    }

    fn session(&self, id_digest: String) -> BoxFuture<'_, Result<Option<StoredSession>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id_digest, credential, key_id, csrf, created_at, seen_at
                     FROM console_sessions WHERE id_digest = ?1",
                )?
                .query_row([&id_digest], |r| {
                    Ok(StoredSession {
                        id_digest: r.get(0)?,
                        credential: r.get(1)?,
                        key_id: r.get(2)?,
                        csrf: r.get(3)?,
                        created_at: UtcMillis::from_millisecond(r.get(4)?),
                        seen_at: UtcMillis::from_millisecond(r.get(5)?),
                    })
                })
                .optional()?)
        }))
    }

    fn touch_session(&self, id_digest: String, at: UtcMillis) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "UPDATE console_sessions SET seen_at = ?2 WHERE id_digest = ?1",
                params![id_digest, at.as_millisecond()],
            )?;
            Ok(())
        }))
    }

    fn delete_session(&self, id_digest: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.execute("DELETE FROM console_sessions WHERE id_digest = ?1", [&id_digest])?;
            Ok(())
        }))
    }
}
