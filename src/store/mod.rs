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

mod compress;
mod import;
pub mod keys;
mod migrations;
pub mod persons;
pub mod postgres;
mod replay;
mod reprocess;
mod rows;
pub mod sessions;
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
    /// A rebuild is under way (one at a time).
    #[error("a rebuild of the directory is already running: wait for it to finish")]
    Rebuilding,
    /// A customer was erased while the directory was rebuilt: the rebuilt
    /// directory may hold what the erasure removed, so it was not swapped
    /// in.
    #[error("a customer was erased during the rebuild, so nothing was changed: run the rebuild again")]
    RebuildOverrun,
}

// Not `#[from]`, which makes the cause a `source()` too: the messages
// above say it already, and the CLI prints an error's causes after it.
impl From<rusqlite::Error> for StoreError {
    /// A full disk or a failed read or write of the file is
    /// [`StoreError::Unavailable`]: SQLite rolled the transaction back,
    /// the store is intact, and the request can be retried once space (or
    /// the disk) is back.
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure) => {
                Self::Unavailable(error.to_string())
            }
            _ => Self::Sqlite(error),
        }
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
    /// Customers whose names hold every word of this (see
    /// [`rows::name_words`]); none when it has no word.
    pub name: Option<String>,
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
    /// Only this customer's messages.
    pub customer_id: Option<String>,
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
    Inbox
    + Directory
    + Subscriptions
    + Outbox
    + Import
    + keys::Keys
    + sources::Sources
    + sessions::Sessions
    + crate::retention::Retention
    + persons::Persons
{
    /// Whether the store can serve reads and take writes.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Finishes queued writes and closes the store.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// The bytes the store takes: the embedded store's file (without its
    /// write-ahead log), or the Postgres database's size.
    fn size_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
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

    /// Begins a rebuild of the customers of `sources` (SPEC §12): their
    /// accepted events are replayed ([`Rebuild::replay`]) into a directory
    /// apart from the live one, which serves and changes meanwhile, and
    /// swapped in at once ([`Rebuild::finish`]). The customers of other
    /// sources stay as they are. [`StoreError::Rebuilding`] while another
    /// runs.
    fn begin_rebuild(&self, sources: Vec<String>, remap: Remap) -> BoxFuture<'_, Result<Box<dyn Rebuild>, StoreError>>;
}

/// Maps a kept body of a source again, as a rebuild replays it: `None`
/// when it cannot be (its source is not configured, its body is not
/// JSON), and the event is skipped.
pub type Remap = std::sync::Arc<dyn Fn(&str, &[u8]) -> Option<Result<Mapped, Unmappable>> + Send + Sync>;

/// A rebuild under way (see [`Directory::begin_rebuild`]). Dropped before
/// it finished (an error, a crash, a kill), nothing of it stays: the live
/// directory is the one it was.
pub trait Rebuild: Send {
    /// Replays up to `limit` more accepted events, in arrival order.
    /// Returns whether more may wait.
    fn replay(&mut self, limit: usize) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Holds the store's writes, replays the events that arrived since
    /// (`page` at a time), and replaces the live directory with the
    /// rebuilt one in one transaction. Each record keeps at least the
    /// version it had: no subscriber gets one lower than one it got.
    fn finish(self: Box<Self>, page: usize) -> BoxFuture<'static, Result<Rebuilt, StoreError>>;
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rebuilt {
    /// Accepted events replayed.
    pub replayed: u64,
    /// Events left out: of a source no longer configured, or whose body
    /// is gone or cannot be read.
    pub skipped: u64,
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
