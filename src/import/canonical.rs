//! Canonical customers as Clientele envelopes: a CSV row of canonical
//! field names, or a customer as `clientele export --format jsonl` writes
//! it, becomes the body a `clientele` source reads (`crate::sources`'
//! `clientele` kind), so that it is kept, deduplicated and ordered as that
//! body sent as a webhook would be, and a rebuild reads it again.
//!
//! The envelope has no `id`: the dedupe key is its content hash, so the
//! same row imported twice is a duplicate. Pure: no I/O.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// Columns holding one text value each.
const TEXT: &[&str] = &[
    "customerId",
    "account",
    "status",
    "platformStatus",
    "firstName",
    "middleName",
    "lastName",
    "nickname",
    "email",
    "birthDate",
    "optOut",
    "createdAt",
    "updatedAt",
    "mergedInto",
];
/// Columns holding a list, its items separated by [`LIST_SEPARATOR`].
const LISTS: &[&str] = &["businessIds", "groups", "mergedFrom"];
pub const LIST_SEPARATOR: char = ';';
/// The fields of the one address a row holds, as `address.{field}`.
pub const ADDRESS: &[&str] = &[
    "kind",
    "street1",
    "street2",
    "city",
    "regionCode",
    "regionName",
    "postalCode",
    "countryCode",
    "countryName",
];
/// Columns the directory derives itself (`clientele export` writes them):
/// read past.
const DIRECTORY_OWN: &[&str] = &["id", "source", "externalId", "version", "changedAt"];
/// Columns a CSV must have.
pub const REQUIRED: [&str; 2] = ["customerId", "updatedAt"];

/// Where a column's value goes in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Text(String),
    List(String),
    /// A phone of this kind (`phones.mobile`).
    Phone(String),
    /// A field of the primary address (`address.street1`).
    Address(String),
    /// An attribute (`attributes.tier`).
    Attribute(String),
    Skipped,
}

/// A CSV's header row, read.
#[derive(Debug, Clone)]
pub struct Header {
    columns: Vec<Column>,
}

/// Why a header row cannot be read: the whole file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "the header row has no {0} column: the first row names canonical fields (customerId and updatedAt are required)"
    )]
    Missing(&'static str),
    #[error(
        "the header row names {0:?}, which is no canonical field: use customerId, updatedAt, firstName, email, \
         phones.<kind>, address.<field>, businessIds, attributes.<name>, … (docs/operating.md, Backfill)"
    )]
    Unknown(String),
    #[error("the header row names {0:?} twice")]
    Twice(String),
}

impl Header {
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, HeaderError> {
        let mut seen = BTreeSet::new();
        let mut columns = Vec::new();
        for name in names {
            let name = name.trim();
            if !seen.insert(name.to_owned()) {
                return Err(HeaderError::Twice(name.to_owned()));
            }
            let column = if TEXT.contains(&name) {
                Column::Text(name.to_owned())
            } else if LISTS.contains(&name) {
                Column::List(name.to_owned())
            } else if DIRECTORY_OWN.contains(&name) {
                Column::Skipped
            } else if let Some(kind) = name.strip_prefix("phones.").filter(|k| !k.is_empty()) {
                Column::Phone(kind.to_owned())
            } else if let Some(field) = name.strip_prefix("address.").filter(|f| ADDRESS.contains(f)) {
                Column::Address(field.to_owned())
            } else if let Some(attribute) = name.strip_prefix("attributes.").filter(|a| !a.is_empty()) {
                Column::Attribute(attribute.to_owned())
            } else {
                return Err(HeaderError::Unknown(name.to_owned()));
            };
            columns.push(column);
        }
        for required in REQUIRED {
            if !seen.contains(required) {
                return Err(HeaderError::Missing(required));
            }
        }
        Ok(Header { columns })
    }

    /// A row of this header as an envelope body. Empty cells are left out;
    /// the adapter says what is missing.
    pub fn envelope<'a>(&self, cells: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
        let mut payload = Map::new();
        let mut address = Map::new();
        let mut phones = Vec::new();
        let mut attributes = Map::new();
        for (column, cell) in self.columns.iter().zip(cells) {
            if cell.trim().is_empty() {
                continue;
            }
            let text = Value::String(cell.to_owned());
            match column {
                Column::Text(name) => {
                    payload.insert(name.clone(), text);
                }
                Column::List(name) => {
                    let items = cell.split(LIST_SEPARATOR).map(str::trim).filter(|i| !i.is_empty());
                    payload.insert(name.clone(), items.collect());
                }
                Column::Phone(kind) => phones.push(json!({"kind": kind, "raw": cell})),
                Column::Address(field) => {
                    address.insert(field.clone(), text);
                }
                Column::Attribute(name) => {
                    attributes.insert(name.clone(), text);
                }
                Column::Skipped => {}
            }
        }
        if !address.is_empty() {
            address.insert("primary".into(), Value::Bool(true));
            payload.insert("addresses".into(), json!([address]));
        }
        if !phones.is_empty() {
            payload.insert("phones".into(), Value::Array(phones));
        }
        if !attributes.is_empty() {
            payload.insert("attributes".into(), Value::Object(attributes));
        }
        wrap(payload, None)
    }
}

/// A customer as `clientele export --format jsonl` writes it (the API's
/// JSON) as an envelope body for source `source`: its `externalId` is the
/// `customerId`, its merge links lose the `{source}:` their ids begin
/// with, and its `changedAt` is the envelope's time, for ordering when it
/// has no `updatedAt`. `None`: not a JSON object.
pub fn customer_envelope(customer: Value, source: &str) -> Option<Vec<u8>> {
    let Value::Object(mut payload) = customer else {
        return None;
    };
    if let Some(external) = payload.get("externalId").cloned() {
        payload.insert("customerId".into(), external);
    }
    let prefix = format!("{source}:");
    let unprefixed = |v: &mut Value| {
        if let Value::String(id) = v
            && let Some(rest) = id.strip_prefix(&prefix)
        {
            *id = rest.to_owned();
        }
    };
    if let Some(into) = payload.get_mut("mergedInto") {
        unprefixed(into);
    }
    if let Some(Value::Array(from)) = payload.get_mut("mergedFrom") {
        from.iter_mut().for_each(unprefixed);
    }
    let changed_at = payload.get("changedAt").cloned();
    Some(wrap(payload, changed_at))
}

fn wrap(payload: Map<String, Value>, created_date: Option<Value>) -> Vec<u8> {
    let mut envelope = json!({"type": "customer", "action": "updated", "payload": payload});
    if let Some(at) = created_date {
        envelope["createdDate"] = at;
    }
    serde_json::to_vec(&envelope).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::sources::{Kind, Mapped, testing};

    fn map(body: &[u8]) -> crate::model::CustomerEvent {
        let read = crate::model::json::parse_delivery(body).unwrap();
        match Kind::Clientele.map(&read, &testing::settings("backfill", TimeZone::UTC)) {
            Ok(Mapped::Customer(event)) => *event,
            other => panic!("expected a customer, got {other:?}"),
        }
    }

    #[test]
    fn a_row_reads_as_the_clientele_kind() {
        let header = Header::parse([
            "customerId",
            "updatedAt",
            "firstName",
            "email",
            "phones.mobile",
            "address.street1",
            "address.countryCode",
            "businessIds",
            "attributes.tier",
            "version",
        ])
        .unwrap();
        let body = header.envelope([
            "c-1",
            "2024-03-15T00:00:00Z",
            "Ana",
            "ANA@example.com",
            "914-555-1212",
            "1 Main St",
            "US",
            "b2; b1",
            "gold",
            "7",
        ]);
        let event = map(&body);
        assert_eq!(event.customer.id, "backfill:c-1");
        assert_eq!(event.order_at.unwrap().to_string(), "2024-03-15T00:00:00.000Z");
        assert_eq!(event.profile.first_name.as_deref(), Some("Ana"));
        assert_eq!(event.profile.email.as_deref(), Some("ana@example.com"));
        assert_eq!(event.profile.phones[0].e164.as_deref(), Some("+19145551212"));
        assert_eq!(event.profile.phones[0].kind, "mobile");
        assert_eq!(event.profile.addresses[0].street1.as_deref(), Some("1 Main St"));
        assert!(event.profile.addresses[0].primary);
        assert_eq!(event.profile.business_ids, ["b1", "b2"]);
        assert_eq!(event.profile.attributes["tier"], "gold");
        assert_eq!(event.warnings, []);
    }

    #[test]
    fn empty_cells_are_left_out() {
        let header = Header::parse(["customerId", "updatedAt", "lastName", "address.city"]).unwrap();
        let body: Value = serde_json::from_slice(&header.envelope(["c-1", "2024-03-15T00:00:00Z", " ", ""])).unwrap();
        assert_eq!(
            body["payload"],
            json!({"customerId": "c-1", "updatedAt": "2024-03-15T00:00:00Z"})
        );
    }

    #[test]
    fn a_header_without_the_required_or_with_unknown_columns_is_refused() {
        assert_eq!(
            Header::parse(["customerId", "firstName"]).unwrap_err(),
            HeaderError::Missing("updatedAt")
        );
        assert_eq!(
            Header::parse(["updatedAt"]).unwrap_err(),
            HeaderError::Missing("customerId")
        );
        assert_eq!(
            Header::parse(["customerId", "updatedAt", "first_name"]).unwrap_err(),
            HeaderError::Unknown("first_name".into())
        );
        assert_eq!(
            Header::parse(["customerId", "updatedAt", "address.planet"]).unwrap_err(),
            HeaderError::Unknown("address.planet".into())
        );
        assert_eq!(
            Header::parse(["customerId", "updatedAt", "email", "email"]).unwrap_err(),
            HeaderError::Twice("email".into())
        );
    }

    #[test]
    fn an_exported_customer_reads_back_as_itself() {
        let exported = json!({
            "id": "backfill:c-1", "source": "backfill", "externalId": "c-1",
            "account": null, "status": "active", "firstName": "Ana",
            "phones": [{"kind": "mobile", "e164": "+19145551212", "raw": "914-555-1212"}],
            "addresses": [], "businessIds": [], "groups": [], "attributes": {},
            "updatedAt": "2024-03-15T00:00:00.000Z",
            "mergedInto": "backfill:c-2", "mergedFrom": ["backfill:c-0"],
            "version": 3, "changedAt": "2026-01-01T00:00:00.000Z",
        });
        let event = map(&customer_envelope(exported, "backfill").unwrap());
        assert_eq!(event.customer.id, "backfill:c-1");
        assert_eq!(event.profile.first_name.as_deref(), Some("Ana"));
        assert_eq!(event.profile.phones[0].raw, "914-555-1212");
        assert_eq!(event.merged_into.unwrap().id, "backfill:c-2");
        assert_eq!(event.merged_from[0].id, "backfill:c-0");
        assert_eq!(event.sent_at.unwrap().to_string(), "2026-01-01T00:00:00.000Z");
        assert_eq!(event.warnings, []);
        assert_eq!(customer_envelope(json!([1]), "backfill"), None);
    }
}
