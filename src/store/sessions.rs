//! The console's sessions (SPEC §13), kept in the store so that they
//! survive a restart and serve every instance that shares it.
//!
//! A session is found by the SHA-256 of the random id its cookie holds
//! (the id itself is never kept), and remembers the SHA-256 of the key it
//! signed in with: `crate::console` looks that key up again on every
//! request, so that a revoked key (or a changed `admin_token`) ends its
//! sessions from the next request on. What idle time ends a session is the
//! console's to decide; the store keeps when each was last seen.

use super::{BoxFuture, StoreError};
use crate::model::UtcMillis;

/// A signed-in console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the session id in the cookie, hex.
    pub id_digest: String,
    /// SHA-256 of the key signed in with, hex: the digest the `Keys` role
    /// finds a key by.
    pub credential: String,
    /// The key's id; `None` for the configuration's `admin_token`.
    pub key_id: Option<String>,
    /// The token every form of this session carries.
    pub csrf: String,
    pub created_at: UtcMillis,
    pub seen_at: UtcMillis,
}

pub trait Sessions: Send + Sync {
    /// Keeps a new session, and forgets every one last seen before
    /// `expired_before`.
    fn create_session(
        &self,
        session: StoredSession,
        expired_before: UtcMillis,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The session whose id has this digest.
    fn session(&self, id_digest: String) -> BoxFuture<'_, Result<Option<StoredSession>, StoreError>>;

    /// Records that the session was used at `at`.
    fn touch_session(&self, id_digest: String, at: UtcMillis) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Ends a session (sign-out, expiry, a revoked key).
    fn delete_session(&self, id_digest: String) -> BoxFuture<'_, Result<(), StoreError>>;
}
