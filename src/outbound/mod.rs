//! Outbound webhooks (SPEC §6, §15): subscriptions, the messages the
//! directory's changes queue for them, and the dispatcher that signs and
//! sends them.
//!
//! The store commits each change's envelope to an outbox in the
//! delivery's own transaction. The [`dispatcher`] works through the
//! store's [`Outbox`] role (defined in [`outbox`], implemented by each
//! backend; nothing here depends on the store): it fans the rows out into
//! one message per matching subscription and claims due ones, in order per
//! customer; [`send`] signs each with Standard Webhooks signatures
//! ([`signing`]) and hands it to the [`deliver::Destination`] its URL
//! names: [`http`], or one of the [`brokers`] (NATS JetStream, RabbitMQ,
//! Redis Streams), allowed destinations only ([`destination`]); then it
//! records the attempt and what follows from it ([`policy`]): delivered,
//! retried later, or dead. Only the destinations know where a message goes.

pub mod brokers;
pub mod deliver;
pub mod destination;
pub mod dispatcher;
pub mod http;
pub mod outbox;
pub mod policy;
pub mod send;
pub mod signing;

pub use outbox::{Backlog, Claim, Outbox, OutboxError};

use serde::{Deserialize, Serialize};

use crate::model::Action;
use crate::model::UtcMillis;

/// Who receives which changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    /// Listed with the password of its credentials masked.
    #[serde(serialize_with = "serialize_masked")]
    pub url: String,
    /// `whsec_` + base64 of the key, or raw key bytes. Shown once, at
    /// creation.
    #[serde(skip_serializing)]
    pub secret: String,
    /// Empty: every action.
    pub actions: Vec<Action>,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// What changes to send: `customer` (also when empty), `person`.
    pub types: Vec<String>,
    pub enabled: bool,
    pub created_at: UtcMillis,
}

fn serialize_masked<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&destination::masked(url))
}

/// The outbox's `source` of a person's change (SPEC §11): no source can
/// be named so (names are letters, digits, `-` and `_`), and a
/// subscription's `sources` filter does not apply to persons.
pub const PERSON_SOURCE: &str = "@person";

impl Subscription {
    /// Whether a change of this action, of a record of this source (or a
    /// person's, [`PERSON_SOURCE`]), is for this subscription.
    pub fn wants(&self, action: Action, source: &str) -> bool {
        let person = source == PERSON_SOURCE;
        let typed = if person {
            self.types.iter().any(|t| t == "person")
        } else {
            self.types.is_empty() || self.types.iter().any(|t| t == "customer")
        };
        typed
            && (self.actions.is_empty() || self.actions.contains(&action))
            && (person || self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Pending,
    Delivered,
    Dead,
    /// Withdrawn by an erasure before it was delivered.
    Cancelled,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Dead => "dead",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

/// One try at sending a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: UtcMillis,
    /// `None`: no answer (connection failed, or timed out).
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A message as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    /// The envelope id: `webhook-id`, the same for every subscriber.
    pub event_id: String,
    pub subscription_id: String,
    pub customer_id: String,
    pub version: u64,
    pub action: Action,
    pub status: MessageStatus,
    pub next_attempt_at: Option<UtcMillis>,
    pub attempts: Vec<Attempt>,
    #[serde(skip)]
    pub seq: i64,
}

/// A message claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub seq: i64,
    pub subscription_id: String,
    pub url: String,
    pub secret: String,
    /// The envelope id, sent as `webhook-id`.
    pub event_id: String,
    pub body: String,
    /// When the change was committed (the envelope's `createdDate`): a
    /// delivery's lag is counted from it.
    pub created_at: UtcMillis,
    /// Failed attempts so far, which sets the next wait.
    pub failures: u32,
    /// Raised by a manual retry or a replay: an attempt started before one
    /// does not overrule it.
    pub generation: i64,
    /// This claim's token, new at each claim of the message: its attempt
    /// moves the message only while no later claim took it.
    pub claim: i64,
}

/// An attempt at a claimed message and what follows from it, as the
/// store records it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub message: Due,
    pub attempt: Attempt,
    pub next: Next,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Pending, retried at that time.
    Retry {
        at: UtcMillis,
    },
    /// Out of retries, or the subscriber said `410 Gone`, which also
    /// disables the subscription.
    Dead {
        disable_subscription: bool,
    },
}
