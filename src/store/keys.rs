//! API keys and the audit log (SPEC §9): keys kept as digests with their
//! scopes, looked up by digest on every admin request (so a revoked key
//! is refused from the next request on, on every instance), and the
//! administrative actions taken with them.
//!
//! `crate::http::auth` turns a presented key into a principal through
//! this role; `crate::http::keys` manages keys and serves the audit log.

use serde::Serialize;

use super::{BoxFuture, Page, StoreError};
use crate::model::UtcMillis;

/// An API key as kept: its digest, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    /// `key_…`.
    pub id: String,
    pub name: String,
    /// `read`, `write`, `erase`, `admin`.
    pub scopes: Vec<String>,
    pub created_at: UtcMillis,
    /// SHA-256 of the key, hex.
    #[serde(skip)]
    pub digest: String,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub at: UtcMillis,
    /// The API key that acted; `null` for the configuration's `admin_token`.
    pub key_id: Option<String>,
    /// `source.create`, `token.revoke`, `key.create`, `customer.erase`, …
    pub action: String,
    /// What it acted on: a source's name, a key's or an event's id, a
    /// token as `source/tok_…`; an erased customer as the SHA-256 of its
    /// id, never the id.
    pub target: String,
}

pub trait Keys: Send + Sync {
    fn create_key(&self, key: StoredKey) -> BoxFuture<'_, Result<(), StoreError>>;

    fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, StoreError>>;

    fn key(&self, id: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>>;

    /// The key whose digest this is.
    fn key_by_digest(&self, digest: String) -> BoxFuture<'_, Result<Option<StoredKey>, StoreError>>;

    /// Revokes (deletes) a key. `false`: no such key.
    fn delete_key(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    fn record_audit(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The audit log, newest first.
    fn audit(&self, limit: usize, before: Option<i64>) -> BoxFuture<'_, Result<Page<AuditEntry>, StoreError>>;
}
