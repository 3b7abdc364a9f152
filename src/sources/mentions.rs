//! What a kept body names that an erasure must find, when the directory
//! does not link the body to a customer: an ignored event type (a Vagaro
//! appointment, a Treez ticket) or a body quarantined before a customer id
//! could be read. An erasure reaches the bodies of a customer's own events
//! through its history; these it reaches through their [`Mention`]s, which
//! the store indexes as [`Mention::key`]s when it keeps them.
//!
//! The reading is the same for every platform, as these bodies are exactly
//! the ones no adapter reads: any field named like a customer id
//! (`customerId`, `customer_id`, `merged_customer_ids`, a `customer`
//! object's `id`), any string with an `@` (an email), any field named like
//! a phone (as E.164, read with the source's country).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::{Mapped, SourceSettings, Unmappable};
use crate::model::json::Json;
use crate::model::normalize;

/// Mentions one body records at most: a body listing more (no platform's
/// normal traffic) is reached for its first ones, and can be deleted by id.
pub const MAX_MENTIONS: usize = 256;

/// A customer's identifier as a body names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mention {
    /// The platform's customer id (a directory id's last part).
    Id(String),
    /// Trimmed and lower-cased.
    Email(String),
    /// E.164.
    Phone(String),
}

impl Mention {
    /// The index key of this mention in a body of `source`: a digest, so
    /// that every key has one size whatever the value (an id may be 50 KB),
    /// and within the source, so that another source's customer who
    /// shares an email is not reached.
    pub fn key(&self, source: &str) -> String {
        let (kind, value) = match self {
            Mention::Id(v) => ("id", v),
            Mention::Email(v) => ("email", v),
            Mention::Phone(v) => ("phone", v),
        };
        let digest = Sha256::new()
            .chain_update(kind)
            .chain_update([0])
            .chain_update(source)
            .chain_update([0])
            .chain_update(value)
            .finalize();
        hex::encode(digest)
    }
}

/// The mentions to record for `body`, which the adapter mapped into
/// `mapped`: none for a body the directory applies or quarantines under
/// its customer's id, as an erasure finds those by the id.
pub fn unlinked_mentions(mapped: &Result<Mapped, Unmappable>, body: &Json, source: &SourceSettings) -> Vec<Mention> {
    match mapped {
        Ok(Mapped::Ignored { .. }) | Err(Unmappable { customer: None, .. }) => mentions(body, source),
        Ok(Mapped::Customer(_)) | Err(Unmappable { customer: Some(_), .. }) => Vec::new(),
    }
}

/// Everything `body` names, at most [`MAX_MENTIONS`].
fn mentions(body: &Json, source: &SourceSettings) -> Vec<Mention> {
    let mut found = BTreeSet::new();
    walk(body, Field::default(), source, &mut found);
    found.into_iter().collect()
}

/// Where a value is: the name of its field, and of the object holding it.
#[derive(Clone, Copy, Default)]
struct Field<'v> {
    name: Option<&'v str>,
    parent: Option<&'v str>,
}

impl Field<'_> {
    fn names_a_customer_id(self) -> bool {
        let name = self.name.map(squash).unwrap_or_default();
        name.ends_with("customerid")
            || name.ends_with("customerids")
            || (name == "id" && self.parent.map(squash).is_some_and(|p| p.ends_with("customer")))
    }

    fn names_a_phone(self) -> bool {
        self.name.map(squash).is_some_and(|n| n.contains("phone"))
    }
}

/// A field name in lower case without separators: `customer_id`,
/// `customerId` and `Customer-ID` alike.
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn walk<'v>(value: &'v Json<'v>, at: Field<'v>, source: &SourceSettings, found: &mut BTreeSet<Mention>) {
    if found.len() >= MAX_MENTIONS {
        return;
    }
    match value {
        Json::Object(object) => {
            for (name, v) in object.iter() {
                let field = Field {
                    name: Some(name),
                    parent: at.name,
                };
                walk(v, field, source, found);
            }
        }
        // A list's items are named by the list's field (`customer_ids`).
        Json::Array(items) => items.iter().for_each(|item| walk(item, at, source, found)),
        scalar => {
            if at.names_a_customer_id()
                && let Ok(Some(id)) = normalize::id(scalar)
            {
                found.insert(Mention::Id(id));
            }
            if at.names_a_phone()
                && let Ok(Some(phone)) = normalize::phone("mention", scalar, source.default_country)
                && let Some(e164) = phone.e164
            {
                found.insert(Mention::Phone(e164));
            }
            if let Json::String(s) = scalar
                && s.contains('@')
                && let Ok(Some(email)) = normalize::email(scalar)
            {
                found.insert(Mention::Email(email));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::sources::testing;

    fn settings() -> SourceSettings {
        testing::settings("treez", TimeZone::UTC)
    }

    fn ignored() -> Result<Mapped, Unmappable> {
        Ok(Mapped::Ignored { what: "ticket".into() })
    }

    #[test]
    fn ids_emails_and_phones_are_found_wherever_they_are() {
        let body = json!({
            "event_type": "TICKET",
            "data": {
                "ticket_id": "T1",
                "customer_id": 3904,
                "merged_customer_ids": ["3905", " "],
                "customer": {"id": "C7", "Phone_Number": "(914) 555-0199", "note": "ask Jo"},
                "lines": [{"contact": " Jo@Example.COM "}, {"phone": "not a phone"}],
                "id": "not a customer",
            },
        });
        let mut found = unlinked_mentions(&ignored(), &Json::from(&body), &settings());
        found.sort();
        assert_eq!(
            found,
            [
                Mention::Id("3904".into()),
                Mention::Id("3905".into()),
                Mention::Id("C7".into()),
                Mention::Email("jo@example.com".into()),
                Mention::Phone("+19145550199".into()),
            ]
        );
    }

    #[test]
    fn only_bodies_not_linked_to_a_customer_record_mentions() {
        let body = json!({"customerId": "V1"});
        let unlinked = Err(Unmappable::new("type is missing"));
        let linked = Err(Unmappable::of("vagaro:V1")("no usable time".into()));
        assert_eq!(
            unlinked_mentions(&unlinked, &Json::from(&body), &settings()),
            [Mention::Id("V1".into())]
        );
        assert_eq!(unlinked_mentions(&linked, &Json::from(&body), &settings()), []);
    }

    #[test]
    fn a_body_records_a_bounded_number_of_mentions() {
        let emails: Vec<String> = (0..1000).map(|i| format!("p{i}@example.com")).collect();
        let found = unlinked_mentions(&ignored(), &Json::from(&json!({ "emails": emails })), &settings());
        assert_eq!(found.len(), MAX_MENTIONS);
    }

    #[test]
    fn keys_differ_by_kind_source_and_value() {
        let id = Mention::Id("1".into());
        assert_eq!(id.key("treez"), Mention::Id("1".into()).key("treez"));
        assert_ne!(id.key("treez"), id.key("vagaro"));
        assert_ne!(id.key("treez"), Mention::Email("1".into()).key("treez"));
        assert_eq!(id.key("treez").len(), 64);
    }
}
