//! Helpers shared by the adapters' unit tests.

use jiff::tz::TimeZone;
use proptest::prelude::*;
use serde_json::Value;

use proptest::test_runner::TestCaseError;

use super::{Adapter, Mapped, SourceSettings, Unmappable};
use crate::model::json::Json;
use crate::model::{Country, CustomerEvent};

/// A US source named `name` reading offset-less times in `timezone`.
pub fn settings(name: &str, timezone: TimeZone) -> SourceSettings {
    SourceSettings {
        name: name.into(),
        default_country: Country::parse("US"),
        timezone,
        account: None,
    }
}

/// `body` with the fields of `fields` set in its object `at`.
pub fn overlay(mut body: Value, at: &str, fields: Value) -> Value {
    for (name, value) in fields.as_object().expect("fields is an object") {
        body[at][name] = value.clone();
    }
    body
}

/// What `adapter` makes of `body`, read as a delivery is.
pub fn map(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> Result<Mapped, Unmappable> {
    adapter.map(&Json::from(body), settings)
}

/// The envelope id `adapter` reads in `body`.
pub fn envelope_id(adapter: &dyn Adapter, body: &Value) -> Option<String> {
    adapter.envelope_id(&Json::from(body))
}

/// The customer event `adapter` maps `body` to; panics on anything else.
pub fn event(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> CustomerEvent {
    match map(adapter, body, settings) {
        Ok(Mapped::Customer(event)) => *event,
        other => panic!("expected a customer, got {other:?}"),
    }
}

/// Why `adapter` quarantines `body`; panics if it does not.
pub fn reason(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> String {
    map(adapter, body, settings).unwrap_err().reason
}

/// The customer a body that `adapter` quarantines names; panics if it
/// does not quarantine it.
pub fn quarantined_customer(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> Option<String> {
    map(adapter, body, settings).unwrap_err().customer
}

/// The fields an event warned about.
pub fn warned(event: &CustomerEvent) -> Vec<&str> {
    event.warnings.iter().map(|w| w.field.as_str()).collect()
}

/// Keys of nested objects: some that adapters read, some odd.
const KEYS: &[&str] = &[
    "", "id", "kind", "raw", "e164", "type", "state", "primary", "\u{0}", "k",
];

/// Settings of a source named `name`, with any of a few countries and time
/// zones, and sometimes `account` (never, without one).
pub fn arb_settings(name: &'static str, account: Option<&'static str>) -> impl Strategy<Value = SourceSettings> {
    let countries = prop::sample::select(&["", "US", "GB", "CA"][..]).prop_map(Country::parse);
    let zones = prop::sample::select(&["UTC", "America/Los_Angeles", "Australia/Lord_Howe"][..]);
    let accounts = prop::sample::select(std::iter::once(None).chain(account.map(Some)).collect::<Vec<_>>());
    (countries, zones, accounts).prop_map(move |(default_country, zone, account)| SourceSettings {
        default_country,
        account: account.map(str::to_owned),
        ..settings(name, TimeZone::get(zone).unwrap())
    })
}

/// Strings a hostile or broken sender puts anywhere.
const HOSTILE: &[&str] = &[
    "",
    " N/A ",
    "null",
    "TRUE",
    "\u{0}",
    "Ju\u{0}les",
    "'; DROP TABLE customers; --",
    "2023-02-30",
    "9999-99-99",
    "0000-01-01T00:00:00Z",
    "+010000-01-01T00:00:00Z",
    "2026-04-24 11:38:21.000",
    "2026-01-01T00:00:00[Mars/Olympus]",
    "+0",
    "😀📞",
    "1-800-FLOWERS",
    "CA-ON",
    "ZZ",
    "gbr",
    "customer",
];

/// Arbitrary JSON, with hostile strings among its leaves: [`HOSTILE`] and
/// the adapter's `own`.
pub fn arb_json(own: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let hostile: Vec<&'static str> = HOSTILE.iter().chain(own).copied().collect();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        prop::collection::vec(any::<char>(), 0..12).prop_map(|cs| Value::from(String::from_iter(cs))),
        "[+]?[0-9]{0,40}".prop_map(Value::from),
        Just(Value::from("9".repeat(500))),
        prop::sample::select(hostile).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// The JSON pointer of every member and item of `value`.
pub fn pointers(value: &Value, at: &str, into: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => Vec::new(),
    };
    for (name, child) in children {
        let pointer = format!("{at}/{name}");
        into.push(pointer.clone());
        pointers(child, &pointer, into);
    }
}

/// The strings in `value`, at any depth.
pub fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str(), s.trim()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(map) => map.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Whether `text` shows a planted value: one long enough to be personal
/// data and with a character that no field name or problem has.
pub fn shows(text: &str, planted: &str) -> bool {
    planted.chars().count() > 3
        && planted
            .chars()
            .any(|c| !c.is_ascii_alphanumeric() && !" .[]()_:,-".contains(c))
        && text.contains(planted)
}

pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `^[A-Z]{2}-[A-Z0-9]{1,3}$`
pub fn is_region_code(s: &str) -> bool {
    s.split_once('-').is_some_and(|(c, sub)| {
        c.len() == 2
            && c.bytes().all(|b| b.is_ascii_uppercase())
            && (1..=3).contains(&sub.len())
            && sub.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

pub fn is_set(items: &[String]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

/// Maps `body` with `adapter`: whatever it is, no panic; a customer keeps
/// the canonical invariants, and the adapter's own (`own`); neither
/// warnings nor a quarantine reason show a planted value.
pub fn check_mapping(
    adapter: &dyn Adapter,
    body: &Value,
    source: &SourceSettings,
    planted: &Value,
    own: impl FnOnce(&CustomerEvent) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let planted = strings(planted);
    let event = match map(adapter, body, source) {
        Ok(Mapped::Customer(event)) => event,
        Ok(Mapped::Ignored { .. }) => return Ok(()),
        Err(Unmappable { reason, .. }) => {
            prop_assert!(!planted.iter().any(|p| shows(&reason, p)), "{reason:?} shows a value");
            return Ok(());
        }
    };
    let (c, p) = (&event.customer, &event.profile);
    prop_assert_eq!(&c.source, &source.name);
    prop_assert!(!c.external_id.is_empty() && c.external_id == c.external_id.trim());
    prop_assert_eq!(&c.account, &p.account);
    prop_assert!(
        is_set(&p.business_ids) && is_set(&p.groups),
        "{:?} {:?}",
        p.business_ids,
        p.groups
    );
    for phone in &p.phones {
        prop_assert!(phone.e164.as_deref().is_none_or(is_e164), "{:?}", phone);
        prop_assert!(!phone.raw.is_empty());
    }
    for a in &p.addresses {
        prop_assert!(
            a.region_code.as_deref().is_none_or(is_region_code),
            "{:?}",
            a.region_code
        );
        prop_assert!(
            a.country_code
                .as_deref()
                .is_none_or(|c| Country::parse(c).map(Country::as_str) == Some(c))
        );
    }
    prop_assert!(p.email.as_deref().is_none_or(|e| e == e.to_lowercase()));
    prop_assert!(
        p.identifiers.windows(2).all(|w| w[0] < w[1])
            && p.identifiers
                .iter()
                .all(|i| !i.kind.is_empty() && !i.value.is_empty() && i.kind == i.kind.to_lowercase()),
        "{:?}",
        p.identifiers
    );
    prop_assert!(serde_json::to_value(p).is_ok());
    for w in &event.warnings {
        prop_assert!(
            w.problem.starts_with("is ") || w.problem.starts_with("names "),
            "{:?}",
            w
        );
        prop_assert!(
            !planted.iter().any(|v| shows(&w.field, v) || shows(&w.problem, v)),
            "{:?}",
            w
        );
    }
    own(&event)
}

/// Every merge link names a customer of the same prefix, never the event's
/// own, and `merged_from` is a set.
pub fn check_links(event: &CustomerEvent, prefix: &str) -> Result<(), TestCaseError> {
    let links: Vec<_> = event.merged_into.iter().chain(&event.merged_from).collect();
    prop_assert!(
        links
            .iter()
            .all(|l| l.id.starts_with(prefix) && l.id != event.customer.id),
        "{:?}",
        links
    );
    let from: Vec<String> = event.merged_from.iter().map(|l| l.id.clone()).collect();
    prop_assert!(is_set(&from), "{:?}", from);
    Ok(())
}
