//! Source adapters: one module per platform kind, each turning a parsed
//! JSON body into canonical [`CustomerEvent`]s (or saying why it cannot).
//!
//! The HTTP ingest layer (`crate::http::ingest`) authenticates a delivery,
//! asks the source's [`Adapter`] where its token lives and what its
//! envelope id is, and maps the body; the store only ever sees the result.
//! Adding a platform is adding a module here and a [`Kind`] variant.
//! [`delivery`] turns a received body into what the store keeps, for a
//! webhook and an import alike.

mod clientele;
pub mod delivery;
mod envelope;
pub mod held;
mod mentions;
pub mod registry;
pub mod standard_webhooks;
#[cfg(test)]
pub(crate) mod testing;
mod treez;
mod vagaro;

use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::model::json::{Delivery, Json};
use crate::model::{Country, CustomerEvent};

pub use mentions::{Mention, unlinked_mentions};

/// The platform kinds Clientele can read (`kind = "…"` in a source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Vagaro,
    Treez,
    Clientele,
}

impl Kind {
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            Kind::Vagaro => &vagaro::Vagaro,
            Kind::Treez => &treez::Treez,
            Kind::Clientele => &clientele::ClienteleEnvelope,
        }
    }

    /// Maps a delivery with this kind's adapter. What reading the body
    /// repaired is a warning on the customer event, whose fields apply
    /// (SPEC §8).
    pub fn map(self, delivery: &Delivery, source: &SourceSettings) -> Result<Mapped, Unmappable> {
        let mut mapped = self.adapter().map(&delivery.value, source)?;
        if let (Mapped::Customer(event), Some(warning)) = (&mut mapped, delivery.warning()) {
            event.warnings.push(warning);
        }
        Ok(mapped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vagaro => "vagaro",
            Kind::Treez => "treez",
            Kind::Clientele => "clientele",
        }
    }
}

/// What a source's configuration contributes to reading its bodies.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The configured source name: the record's `source` and id prefix.
    pub name: String,
    /// For phones and regions that carry no country.
    pub default_country: Option<Country>,
    /// For timestamps that carry no offset (UTC unless configured).
    pub timezone: TimeZone,
    /// The account for bodies that name none (Treez without
    /// `dispensary_short_name`).
    pub account: Option<String>,
}

/// Where a platform sends its shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The whole value of the named header.
    Named(&'static str),
}

/// What an adapter made of a well-formed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Customer(Box<CustomerEvent>),
    /// A kind of event the directory does not use (appointments, products,
    /// test pings): kept and acknowledged so the platform stops retrying.
    Ignored {
        what: String,
    },
}

/// Why a body cannot be mapped: it is quarantined with this reason. The
/// reason names fields, never their values (they may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unmappable {
    pub reason: String,
    /// The customer the body names, when the adapter read its id before
    /// finding the body unmappable: a delivery for an erased customer is
    /// then suppressed, and an erasure reaches the body.
    pub customer: Option<String>,
}

impl Unmappable {
    /// A body that names no customer the adapter could read.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            customer: None,
        }
    }

    /// A body for the customer `id`.
    pub fn of(id: &str) -> impl Fn(String) -> Self + '_ {
        move |reason| Self {
            reason,
            customer: Some(id.to_owned()),
        }
    }
}

/// One platform's reading of its webhook bodies.
pub trait Adapter: Send + Sync {
    /// Where the platform sends its token, unless the source overrides it.
    fn token_header(&self) -> TokenHeader;

    /// The envelope's own event id, for deduplication, where the platform
    /// sends one.
    fn envelope_id(&self, body: &Json) -> Option<String>;

    /// Maps a body into a customer event, an ignored event, or a reason to
    /// quarantine it.
    fn map(&self, body: &Json, source: &SourceSettings) -> Result<Mapped, Unmappable>;
}
