//! Storage: the inbox of raw deliveries, the customer directory and its
//! history, behind one [`Store`] trait.
//!
//! The HTTP layer hands the store a [`Delivery`] (authenticated, parsed,
//! mapped by its adapter); the store commits the raw body, the dedupe
//! record and the delivery's effect on the directory in one transaction and
//! only then answers. What an event does to the directory is decided by
//! [`directory`], which is pure and shared by every backend; a backend only
//! loads, applies and persists. The backend is chosen by the store URL's
//! scheme: `sqlite://` for the embedded store, `postgres://` for one that
//! several instances share.

pub mod directory;
mod import;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use import::Import;
pub use rows::EnvelopeBody;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{Customer, OrderKey, UtcMillis, Warning};
use crate::outbound::{Attempt, Due, Message, MessageStatus, Next, Subscription};
use crate::sources::{Mapped, Mention, Unmappable};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// What an event did to its customer's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    /// Older than the record's current snapshot: kept, changed nothing.
    Stale,
    /// Newer, but the record already said all of it.
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// How a record changed, in the vocabulary of outbound messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Merged,
    /// Erased.
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Merged => "merged",
            Action::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Created, Self::Updated, Self::Merged, Self::Deleted]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
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

/// One entry of a customer's history (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub event_id: String,
    pub received_at: UtcMillis,
    pub order_key: OrderKey,
    pub action: Action,
    pub outcome: Outcome,
    pub changes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
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

/// Which due messages the dispatcher takes, and for how long.
#[derive(Debug, Clone)]
pub struct Claim {
    pub now: UtcMillis,
    /// Claimed messages are not due again before this: an attempt lost in a
    /// crash is retried once it passes.
    pub lease_until: UtcMillis,
    /// Sends the claim may start, besides the first of each subscription
    /// that has none in flight: that one it always may, so that no
    /// subscriber waits for the slots others hold.
    pub limit: usize,
    /// How many more sends of a subscription may start, for those listed;
    /// `per_subscription` for the others.
    pub shares: HashMap<String, usize>,
    pub per_subscription: usize,
    /// The subscriptions with sends in flight now.
    pub busy: HashSet<String>,
    /// The messages being sent now (by `seq`): never claimed again while
    /// they are, even when due again (retried, replayed, or their lease
    /// ran out), so that a message is not sent twice at once and no claim
    /// leases one it cannot send. Due, they are claimed once their send
    /// ends.
    pub sending: HashSet<i64>,
}

impl Claim {
    /// How many of a subscription's messages this claim may take at most.
    pub fn share(&self, subscription: &str) -> usize {
        self.shares.get(subscription).copied().unwrap_or(self.per_subscription)
    }

    /// What to take of each subscription's due messages (oldest first, at
    /// most its [`share`](Self::share)): one of each first, from the
    /// subscription at `turn` in rotation, the first of an idle one
    /// whatever the limit; then the others while the limit lasts.
    pub fn pick(&self, mut due: Vec<(String, Vec<i64>)>, turn: usize) -> Vec<i64> {
        let start = turn % due.len().max(1);
        due.rotate_left(start);
        let mut budget = self.limit;
        let mut picked = Vec::new();
        let mut more = Vec::new();
        for (subscription, mut seqs) in due {
            seqs.retain(|seq| !self.sending.contains(seq));
            seqs.truncate(self.share(&subscription));
            let Some(&first) = seqs.first() else {
                continue;
            };
            if budget == 0 && self.busy.contains(&subscription) {
                continue;
            }
            picked.push(first);
            budget = budget.saturating_sub(1);
            more.push(seqs);
        }
        for seqs in more {
            let take = budget.min(seqs.len() - 1);
            picked.extend_from_slice(&seqs[1..=take]);
            budget -= take;
        }
        picked
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    fn claim(limit: usize, busy: &[&str]) -> Claim {
        Claim {
            now: UtcMillis::now(),
            lease_until: UtcMillis::now(),
            limit,
            shares: HashMap::from([("slow".to_owned(), 1)]),
            per_subscription: 8,
            busy: busy.iter().map(|s| s.to_string()).collect(),
            sending: HashSet::from([3]),
        }
    }

    #[test]
    fn an_idle_subscription_gets_its_first_send_when_every_slot_is_taken() {
        let due = vec![("busy".to_owned(), vec![1, 2]), ("idle".to_owned(), vec![10, 11])];
        assert_eq!(claim(0, &["busy"]).pick(due, 0), [10]);
    }

    #[test]
    fn a_claim_takes_one_of_each_subscription_before_more_of_any_within_its_share() {
        let due = vec![
            ("a".to_owned(), vec![1, 2, 3, 4]),
            ("slow".to_owned(), vec![20, 21]),
            ("b".to_owned(), vec![30, 31]),
        ];
        // 3 is being sent; `slow` may start one; then the limit runs out.
        assert_eq!(claim(4, &["a"]).pick(due.clone(), 0), [1, 20, 30, 2]);
        assert_eq!(claim(4, &["a"]).pick(due, 1), [20, 30, 1, 31]);
    }
}

/// What is waiting to be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Pending messages per subscription, every subscription listed.
    pub pending: Vec<(String, u64)>,
    /// Outbox rows (changes) not fanned out into messages yet.
    pub unfanned: u64,
}

/// A page of results and the position to continue from, if there is more.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// A Clientele store. Writes are linearized by the backend; reads see only
/// committed data.
pub trait Store: Send + Sync + 'static + Import {
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

    fn customer(&self, id: String) -> BoxFuture<'_, Result<Option<Customer>, StoreError>>;

    /// Erases a customer (SPEC §5): its record, history, merge links, raw
    /// event bodies and outbound bodies, keeping only a suppression entry;
    /// subscribers get a `deleted` message.
    fn erase(&self, id: String) -> BoxFuture<'_, Result<Erasure, StoreError>>;

    fn customers(&self, query: CustomerQuery) -> BoxFuture<'_, Result<Page<Customer>, StoreError>>;

    /// A page of a customer's history, oldest first. `None`: no such
    /// customer.
    fn history(&self, query: HistoryQuery) -> BoxFuture<'_, Result<Option<Page<HistoryEntry>>, StoreError>>;

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<StoredEvent>, StoreError>>;

    /// Redacts a kept event that is not applied to a customer (ignored, or
    /// quarantined), as an erasure redacts a customer's: it stays listed,
    /// without its body and headers.
    fn redact_event(&self, id: String) -> BoxFuture<'_, Result<EventRedaction, StoreError>>;

    /// Kept events in arrival order.
    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<Page<StoredEvent>, StoreError>>;

    /// Empties the directory of the customers of `sources` (their records,
    /// history, merge links and lookups), keeping the raw events, the
    /// suppressions and every other source's customers: the first step of
    /// a rebuild, which replays the events of `sources` only (with
    /// [`Publish::No`]). Each emptied record's version is kept as a floor:
    /// until [`Store::restore_versions`], a published change of that
    /// customer comes after it.
    fn reset_directory(&self, sources: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The last step of a rebuild: raises each record's version to the one
    /// it had before (a rebuild may count fewer changes than were sent,
    /// after an erasure unlinked a merge, say), so that no version goes
    /// down or is sent twice, and forgets the floors.
    fn restore_versions(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether the store can serve reads and take writes.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Finishes queued writes and closes the store.
    fn close(&self) -> BoxFuture<'_, ()>;

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

    /// Fans the next outbox rows out into messages, one per subscription
    /// that wants a row (enabled ones; a disabled one gets its rows once
    /// enabled again), and makes the first of each customer's line due.
    /// Returns whether more rows wait.
    fn fan_out(&self) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Claims due messages (see [`Claim`]): the heads of the customers'
    /// lines, of enabled subscriptions, due now. Only a line's first
    /// pending message has a due time, so each customer's versions go out
    /// in order.
    fn claim_due(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Due>, StoreError>>;

    /// Records an attempt at a claimed message, and what follows from it
    /// unless the message was retried or replayed since it was claimed.
    fn record_attempt(&self, message: &Due, attempt: Attempt, next: Next) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Pending messages per subscription, and the outbox rows not fanned
    /// out yet.
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, StoreError>>;

    /// Notified after a commit that wrote outbox rows or queued messages.
    fn queued(&self) -> Arc<tokio::sync::Notify>;
}
