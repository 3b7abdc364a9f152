//! Sources kept as data (SPEC §9): the sources created through the API,
//! their tokens (as digests), the deliveries a paused source holds, and
//! the per-source delivery counts behind `stats`.
//!
//! The runtime registry (`crate::sources::registry`) reads every source
//! when [`Sources::sources_version`] moves, which each change of a source
//! or a token does in the same transaction; the ingest path never reads
//! this role, except to hold a paused source's delivery. Sources of the
//! configuration file are not stored here: they live in the file.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{BoxFuture, StoreError};
use crate::model::UtcMillis;

/// A source's settings, as the API takes and shows them (camelCase) and
/// as the store keeps them (one JSON document per source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// `vagaro`, `treez` or `clientele`.
    pub kind: String,
    /// How deliveries are authenticated: `token` (the default) or
    /// `standard-webhooks` (the `clientele` kind only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    #[serde(default)]
    pub default_country: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    /// Addresses or CIDR blocks that may send; empty: any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Deliveries per second (a burst of as many); `null`: no limit.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The header the token is read from, instead of the kind's own.
    #[serde(default)]
    pub auth_header: Option<String>,
}

/// A source created through the API, with its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSource {
    pub name: String,
    pub spec: SourceSpec,
    pub enabled: bool,
    pub created_at: UtcMillis,
    pub tokens: Vec<StoredToken>,
}

/// One of a source's tokens: never the token itself, unless the source
/// verifies Standard Webhooks signatures, which need the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    pub source: String,
    /// SHA-256 of the token, hex.
    pub digest: String,
    /// The `whsec_` secret of a `standard-webhooks` source: an HMAC key
    /// cannot be checked against a digest.
    pub secret: Option<String>,
    pub created_at: UtcMillis,
    pub expires_at: Option<UtcMillis>,
    pub last_used_at: Option<UtcMillis>,
}

/// A delivery a paused source kept, to apply once it is enabled again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Arrival order.
    pub seq: i64,
    pub source: String,
    pub dedupe_key: String,
    pub received_at: UtcMillis,
    /// The headers kept with a delivery, as JSON.
    pub headers: String,
    pub body: Vec<u8>,
}

/// The sources read at one version of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub version: i64,
    pub sources: Vec<StoredSource>,
    /// Deleted since the version asked for (maybe created again since:
    /// then also in `sources`).
    pub deleted: Vec<String>,
}

/// What deleting a source found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDeletion {
    Deleted,
    NotFound,
    /// It holds deliveries not applied yet: enable it first.
    Holding,
}

/// Deliveries counted by one instance since its last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `(source, hour "YYYY-MM-DDTHH", outcome)` and how many.
    pub counts: Vec<(String, String, String, u64)>,
    /// Each source's latest delivery.
    pub last_delivery: Vec<(String, UtcMillis)>,
    /// Each token's latest use, by token id.
    pub tokens_used: Vec<(String, UtcMillis)>,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.last_delivery.is_empty() && self.tokens_used.is_empty()
    }
}

/// A source's delivery counts (SPEC §9 `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub last_delivery_at: Option<UtcMillis>,
    /// `(outcome, count)` over the hours asked for.
    pub counts: Vec<(String, u64)>,
}

/// The role the sources API, the registry and the ingest path use.
pub trait Sources: Send + Sync {
    /// Moves with every change of a source or a token, on any instance.
    fn sources_version(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// The sources created through the API, with their tokens: those
    /// changed after version `since` (every one when `None`) and those
    /// deleted since, or the one named `name`.
    fn stored_sources(&self, since: Option<i64>, name: Option<String>) -> BoxFuture<'_, Result<Changed, StoreError>>;

    /// Creates a source with its first token. `false`: the name is taken.
    fn create_source(&self, source: StoredSource) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Replaces a source's settings and `enabled`. `false`: no such source.
    fn update_source(&self, name: String, spec: SourceSpec, enabled: bool) -> BoxFuture<'_, Result<bool, StoreError>>;

    fn delete_source(&self, name: String) -> BoxFuture<'_, Result<SourceDeletion, StoreError>>;

    /// Adds a token to a source. `false`: no such source.
    fn add_token(&self, token: StoredToken) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Deletes a source's token. `false`: no such token of that source.
    fn delete_token(&self, source: String, id: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Keeps a paused source's delivery, durably, before answering.
    fn hold(&self, held: Held) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The sources that hold deliveries.
    fn holding(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Leases the release of a source's held deliveries to one releaser
    /// until `until`; `false` while another one's lease runs.
    fn lease_release(
        &self,
        source: String,
        now: UtcMillis,
        until: UtcMillis,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Ends a releaser's lease.
    fn end_release(&self, source: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A source's oldest held deliveries, oldest first.
    fn held(&self, source: String, limit: usize) -> BoxFuture<'_, Result<Vec<Held>, StoreError>>;

    /// Forgets a held delivery once it is applied.
    fn release(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Adds one instance's counts to the hourly buckets.
    fn record_usage(&self, usage: Usage) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Each source's counts in the buckets from `since_hour` on (one
    /// source's, or every source's that has any).
    fn stats(
        &self,
        source: Option<String>,
        since_hour: String,
    ) -> BoxFuture<'_, Result<HashMap<String, Stats>, StoreError>>;

    /// Every source's counts per hourly bucket from `since_hour` on, as
    /// `(source, hour, outcome, count)`: the console's chart over time.
    fn hourly_stats(&self, since_hour: String) -> BoxFuture<'_, Result<Vec<HourlyCount>, StoreError>>;
}

/// `(source, hour "YYYY-MM-DDTHH", outcome, count)`.
pub type HourlyCount = (String, String, String, u64);

/// The hourly bucket of a time: `YYYY-MM-DDTHH`.
pub fn hour_of(at: UtcMillis) -> String {
    at.to_string()[..13].to_owned()
}
