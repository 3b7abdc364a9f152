//! The canonical customer and the events that change it.
//!
//! Adapters (`crate::sources`) turn platform bodies into [`CustomerEvent`]s
//! made of these types; the directory (`crate::directory`) folds
//! events into [`Customer`] records; the HTTP API and outbound messages
//! serialize [`Customer`] as the camelCase JSON of SPEC §4. Nothing here
//! knows a platform or a database.

pub mod json;
pub mod normalize;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use normalize::{Country, UtcMillis};

/// A record's lifecycle state. Adapters only produce `Active` and
/// `Inactive`; `Merged` is derived by the directory from merge links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    Inactive,
    Merged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Merged => "merged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Phone {
    pub kind: String,
    pub e164: Option<String>,
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub kind: String,
    pub street1: Option<String>,
    pub street2: Option<String>,
    pub city: Option<String>,
    pub region_code: Option<String>,
    pub region_name: Option<String>,
    pub postal_code: Option<String>,
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub primary: bool,
}

/// A government or platform id that names the person behind a customer
/// (SPEC §11): Treez `drivers_license` and `state_medical_id`, or any kind
/// the Clientele envelope sends. Personal data like the rest of the
/// profile: erased with it, never logged. `value` is the platform's text,
/// trimmed; matching compares a folded form of it (`crate::persons`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    /// `drivers_license`, `state_medical_id`, or the sender's own kind,
    /// lower-cased.
    pub kind: String,
    pub value: String,
}

/// Everything one platform snapshot says about a customer. Snapshots are
/// whole: applying one replaces every field of the previous one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub account: Option<String>,
    /// `Active` or `Inactive` as the platform sees it; the record shows
    /// `merged` instead while it has a `mergedInto` link.
    pub status: Status,
    pub platform_status: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub nickname: Option<String>,
    pub email: Option<String>,
    pub phones: Vec<Phone>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub addresses: Vec<Address>,
    /// Sorted and de-duplicated: the platform sends a set.
    pub business_ids: Vec<String>,
    /// Sorted and de-duplicated, like the other sets. Absent from records
    /// stored before identifiers were kept: read as none.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    pub groups: Vec<String>,
    pub opt_out: Option<bool>,
    pub created_at: Option<UtcMillis>,
    pub updated_at: Option<UtcMillis>,
    pub attributes: Map<String, Value>,
}

/// A customer as the directory serves it (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    pub source: String,
    pub external_id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub merged_into: Option<String>,
    pub merged_from: Vec<String>,
    /// Count of applied changes: directory bookkeeping, like `changedAt`.
    pub version: u64,
    pub changed_at: UtcMillis,
}

/// Who a customer is, independent of what is known about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRef {
    /// `{source}:{externalId}` or `{source}:{account}:{externalId}`.
    pub id: String,
    pub source: String,
    pub external_id: String,
    pub account: Option<String>,
}

/// A field that could not be read; the event still applies with the field
/// `null`. Never carries the offending value (it may be personal data): the
/// raw body keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Warning {
    pub field: String,
    pub problem: String,
}

/// One customer snapshot as an adapter read it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerEvent {
    pub customer: CustomerRef,
    /// The customer's platform time (modified, else created).
    pub order_at: Option<UtcMillis>,
    /// The envelope's own time, where the platform sends one.
    pub sent_at: Option<UtcMillis>,
    pub profile: Profile,
    /// This customer was absorbed into that one (Treez `merged_into_customer_id`).
    pub merged_into: Option<CustomerRef>,
    /// These customers were absorbed into this one (Treez `merged_customer_ids`).
    pub merged_from: Vec<CustomerRef>,
    pub warnings: Vec<Warning>,
}

/// Total order of a customer's events (SPEC §4): platform time, then the
/// envelope time, then the dedupe key, so that no two distinct deliveries
/// tie. `None` sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderKey {
    pub at: Option<UtcMillis>,
    pub sent_at: Option<UtcMillis>,
    pub dedupe_key: String,
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
