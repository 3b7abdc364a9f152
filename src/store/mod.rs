//! Storage: the inbox of raw deliveries, the customer directory and its
//! history, subscriptions and the outbox, each a role trait ([`Inbox`],
//! [`Directory`], [`Subscriptions`], and [`Outbox`], which outbound defines
//! where it uses it) that every backend implements; [`Store`] is all of
//! them together with the store's own life.
//!
//! The HTTP layer hands the store a [`Delivery`] (authenticated, parsed,
//! mapped by its adapter); the store commits the raw body, the dedupe
//! record and the delivery's effect on the directory in one transaction and
//! only then answers. What an event does to the directory is decided by
//! [`directory`], which is pure and shared by every backend; a backend only
//! loads, applies and persists. The backend is chosen by the store URL's
//! scheme: `sqlite://` for the embedded store, `postgres://` for one that
//! several instances share.

mod import;
pub mod keys;
mod migrations;
pub mod persons;
pub mod postgres;
mod replay;
mod reprocess;
mod rows;
pub mod sources;
pub mod sqlite;

pub use import::Import;
pub use rows::EnvelopeBody;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BoxFuture;
pub use crate::directory::{HistoryEntry, Outcome};
use crate::model::Action;
use crate::model::{Customer, UtcMillis};
use crate::outbound::{Message, MessageStatus, Outbox, Subscription};
use crate::sources::{Mapped, Mention, Unmappable};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// Another process writes to the embedded store: two writers would
    /// each keep their own view of it.
    #[error(
        "the store at {path} is in use by another Clientele process{holder}: stop it first \
         (several instances sharing one store need the Postgres store)"
    )]
    InUse { path: String, holder: String },
    /// The store was written by a newer Clientele, whose data this build
    /// may not read right.
    #[error(
        "the store's schema is version {found}, newer than this build of Clientele knows ({known}): run a newer Clientele"
    )]
    NewerSchema { found: i64, known: usize },
    /// A migration file differs from the one the store applied: this build
    /// and the store disagree on the schema.
    #[error(
        "migration {version} of this build differs from the one the store applied (an edited migration file): \
         run the Clientele release that migrated this store"
    )]
    EditedMigration { version: i64 },
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// Not [`From`]: connection failures become [`StoreError::Unavailable`].
    #[error("database error: {0}")]
    Postgres(sqlx::Error),
    #[error("stored data cannot be read: {0}")]
    Corrupt(serde_json::Error),
    #[error("the store has shut down")]
    Closed,
    /// The database cannot take writes now (disk full, I/O error): the
    /// delivery was not kept, and the platform should retry.
    #[error("the store cannot take writes: {0}")]
    Unavailable(String),
    /// A broken invariant: a bug, logged and answered as an internal error.
    #[error("internal error: {0}")]
    Bug(String),
    #[error("event {0} was redacted by an erasure and cannot be reprocessed")]
    Redacted(String),
}

// Not `#[from]`, which makes the cause a `source()` too: the messages
// above say it already, and the CLI prints an error's causes after it.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        Self::Corrupt(error)
    }
}

/// One authenticated delivery, ready to be kept.
#[derive(Debug)]
pub struct Delivery {
    /// The source's configured name.
    pub source: String,
    pub dedupe_key: String,
    pub received_at: UtcMillis,
    /// The request headers of interest (`traceparent`, `user-agent`,
    /// `content-type`), lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub mapped: Result<Mapped, Unmappable>,
    /// What the body names, for an erasure to find it when the directory
    /// does not link it to a customer (see [`crate::sources::unlinked_mentions`]).
    pub mentions: Vec<Mention>,
}

/// What keeping a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted {
        event_id: String,
        customer_id: String,
        outcome: Outcome,
    },
    /// The same delivery was kept before: nothing changed.
    Duplicate {
        event_id: String,
    },
    Ignored {
        event_id: String,
    },
    Quarantined {
        event_id: String,
        reason: String,
    },
    /// The customer was erased: nothing was kept.
    Suppressed,
}

/// What a manual retry of a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Pending again, due now.
    Queued,
    NotFound,
    /// Withdrawn by an erasure: it is never sent again.
    Cancelled,
}

/// What an erasure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    Erased,
    /// Erased before: nothing left to do.
    AlreadyErased,
    NotFound,
}

/// What deleting a kept event by hand found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRedaction {
    /// Its body and headers are gone (or were already).
    Redacted,
    NotFound,
    /// Applied to its customer's record: its data goes with the customer's
    /// erasure, not alone.
    Accepted,
}

/// Whether applying an event tells subscribers about the changes it makes.
/// A rebuild does not: its changes were published when they first happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Yes,
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Accepted,
    Quarantined,
    Ignored,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Accepted => "accepted",
            EventStatus::Quarantined => "quarantined",
            EventStatus::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(EventStatus::Accepted),
            "quarantined" => Some(EventStatus::Quarantined),
            "ignored" => Some(EventStatus::Ignored),
            _ => None,
        }
    }
}

/// A kept delivery as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub event_id: String,
    pub source: String,
    pub dedupe_key: String,
    pub received_at: UtcMillis,
    pub status: EventStatus,
    pub reason: Option<String>,
    pub outcome: Option<Outcome>,
    pub customer_id: Option<String>,
    pub duplicates: u64,
    pub redacted: bool,
    pub headers: BTreeMap<String, String>,
    /// The raw body; `None` once redacted.
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
    /// Arrival order, for paging.
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Debug, Clone, Default)]
pub struct CustomerQuery {
    pub source: Option<String>,
    pub account: Option<String>,
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub business_id: Option<String>,
    pub changed_since: Option<UtcMillis>,
    pub include_merged: bool,
    pub limit: usize,
    /// Continue after this position (from a previous page).
    pub after: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub customer_id: String,
    pub limit: usize,
    /// Continue after this position (from a previous page).
    pub after: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub status: Option<EventStatus>,
    pub limit: usize,
    pub after: Option<i64>,
    /// Whether to read the raw bodies too.
    pub bodies: bool,
}

#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub subscription_id: String,
    pub status: Option<MessageStatus>,
    pub limit: usize,
    pub after: Option<i64>,
}

/// A page of results and the position to continue from, if there is more.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

impl From<StoreError> for crate::outbound::OutboxError {
    fn from(error: StoreError) -> Self {
        crate::outbound::OutboxError::new(error)
    }
}

/// A store operation's result as the [`Outbox`] role answers it.
pub(crate) async fn outboxed<T>(
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, crate::outbound::OutboxError> {
    Ok(operation.await?)
}

/// A Clientele store: every role, and the store's own life. Writes are
/// linearized by the backend; reads see only committed data. Each user
/// asks for the role it needs (the dispatcher an [`Outbox`], say).
pub trait Store:
    Inbox + Directory + Subscriptions + Outbox + Import + keys::Keys + sources::Sources + persons::Persons
{
    /// Whether the store can serve reads and take writes.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Finishes queued writes and closes the store.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The inbox: deliveries kept as they came, and what each did.
pub trait Inbox: Send + Sync + 'static {
    /// Keeps a delivery and applies it, durably, before answering.
    fn ingest(&self, delivery: Delivery) -> BoxFuture<'_, Result<IngestOutcome, StoreError>>;

    /// Applies a kept event again with a fresh mapping of its body (after a
    /// fix of the source's configuration, or in a rebuild). `None`: no such
    /// event.
    fn reprocess(
        &self,
        event_id: String,
        mapped: Result<Mapped, Unmappable>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Option<IngestOutcome>, StoreError>>;

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>>;

    /// Redacts a kept event that is not applied to a customer (ignored, or
    /// quarantined), as an erasure redacts a customer's: it stays listed,
    /// without its body and headers.
    fn redact_event(&self, id: String) -> BoxFuture<'_, Result<EventRedaction, StoreError>>;

    /// Kept events in arrival order.
    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<Page<StoredEvent>, StoreError>>;
}

/// The customer directory: records, their history, erasure, and the
/// steps of a rebuild.
pub trait Directory: Send + Sync + 'static {
    fn customer(&self, id: String) -> BoxFuture<'_, Result<Option<Customer>, StoreError>>;

    /// Erases a customer (SPEC §5): its record, history, merge links, raw
    /// event bodies and outbound bodies, keeping only a suppression entry;
    /// subscribers get a `deleted` message.
    fn erase(&self, id: String) -> BoxFuture<'_, Result<Erasure, StoreError>>;

    fn customers(&self, query: CustomerQuery) -> BoxFuture<'_, Result<Page<Customer>, StoreError>>;

    /// A page of a customer's history, oldest first. `None`: no such
    /// customer.
    fn history(&self, query: HistoryQuery) -> BoxFuture<'_, Result<Option<Page<HistoryEntry>>, StoreError>>;

    /// Empties the directory of the customers of `sources` (their records,
    /// history, merge links and lookups), keeping the raw events, the
    /// suppressions and every other source's customers: the first step of
    /// a rebuild, which replays the events of `sources` only (with
    /// [`Publish::No`]). Each emptied record's version is kept as a floor:
    /// until [`Directory::restore_versions`], a published change of that
    /// customer comes after it.
    fn reset_directory(&self, sources: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The last step of a rebuild: raises each record's version to the one
    /// it had before (a rebuild may count fewer changes than were sent,
    /// after an erasure unlinked a merge, say), so that no version goes
    /// down or is sent twice, and forgets the floors.
    fn restore_versions(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Subscriptions and their messages, as the API manages them.
pub trait Subscriptions: Send + Sync + 'static {
    fn create_subscription(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), StoreError>>;

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<Subscription>, StoreError>>;

    fn subscription(&self, id: String) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>>;

    /// Deletes a subscription and its messages. `false`: no such subscription.
    fn delete_subscription(&self, id: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    fn set_subscription_enabled(
        &self,
        id: String,
        enabled: bool,
    ) -> BoxFuture<'_, Result<Option<Subscription>, StoreError>>;

    /// A subscription's messages, oldest first, with their attempts.
    fn messages(&self, query: MessageQuery) -> BoxFuture<'_, Result<Page<Message>, StoreError>>;

    /// Makes a message pending again, due now, with a fresh schedule.
    fn retry_message(&self, id: String) -> BoxFuture<'_, Result<Retry, StoreError>>;

    /// Queues again, due now, every change since `since` that the
    /// subscription wants. `None`: no such subscription.
    fn replay(&self, subscription_id: String, since: UtcMillis) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;
}
