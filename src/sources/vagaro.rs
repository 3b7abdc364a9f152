//! Vagaro's "Customer events" webhook (seed 000): an envelope `{id,
//! createdDate, type, action, payload}` whose `payload` is one flat
//! customer snapshot, authenticated by the verification token Vagaro sends
//! in `X-Vagaro-Signature`.
//!
//! Vagaro posts its other event types (appointments, transactions, form
//! responses) to the same URL: they are acknowledged as ignored. Field
//! values go through `crate::model::normalize`; the ingest layer stores
//! what [`Vagaro::map`] returns.

use serde_json::Value;

use crate::model::normalize::{self, AddressFields, Reader};
use crate::model::{Country, CustomerEvent, CustomerRef, Profile, Status};
use crate::sources::envelope::{self, Envelope};
use crate::sources::{Adapter, Mapped, SourceSettings, TokenHeader, Unmappable};

pub struct Vagaro;

/// Payload fields with a place in the canonical customer; the rest are
/// kept as `attributes`.
const MAPPED: &[&str] = &[
    "customerId",
    "businessIds",
    "customerFirstName",
    "customerLastName",
    "businessGroupId",
    "email",
    "mobilePhone",
    "dayPhone",
    "nightPhone",
    "streetAddress",
    "city",
    "regionCode",
    "regionName",
    "countryCode",
    "countryName",
    "postalCode",
    "createdDate",
    "modifiedDate",
];

impl Adapter for Vagaro {
    fn token_header(&self) -> TokenHeader {
        TokenHeader::Named("X-Vagaro-Signature")
    }

    fn envelope_id(&self, body: &Value) -> Option<String> {
        envelope::id(body)
    }

    fn map(&self, body: &Value, source: &SourceSettings) -> Result<Mapped, Unmappable> {
        let Envelope {
            envelope,
            payload,
            external_id,
        } = match envelope::open("vagaro", body)? {
            Ok(opened) => opened,
            Err(ignored) => return Ok(ignored),
        };

        let mut r = Reader::new();
        let tz = &source.timezone;
        let field = |name: &str| payload.get(name);
        let account = r.read("account", field("businessGroupId"), normalize::text);
        // The envelope time was documented as `createdAt` before `createdDate`.
        let sent_at = r
            .read("envelope.createdDate", envelope.get("createdDate"), |v| {
                normalize::timestamp(v, tz)
            })
            .or_else(|| {
                r.read("envelope.createdAt", envelope.get("createdAt"), |v| {
                    normalize::timestamp(v, tz)
                })
            });
        let created_at = r.read("createdAt", field("createdDate"), |v| normalize::timestamp(v, tz));
        let updated_at = r.read("updatedAt", field("modifiedDate"), |v| normalize::timestamp(v, tz));
        let order_at = updated_at.or(created_at);
        if order_at.is_none() && sent_at.is_none() {
            return Err(Unmappable(
                "no usable time for ordering: payload.modifiedDate, payload.createdDate and \
                 createdDate are missing or unreadable"
                    .into(),
            ));
        }

        let address = r.address(
            "addresses[0]",
            "primary".into(),
            AddressFields {
                street1: field("streetAddress"),
                city: field("city"),
                region_code: field("regionCode"),
                region_name: field("regionName"),
                postal_code: field("postalCode"),
                country_code: field("countryCode"),
                country_name: field("countryName"),
                primary: Some(&Value::Bool(true)),
                ..AddressFields::default()
            },
            source.default_country,
        );
        // The address carries the record's country, or the default already.
        let country = address
            .as_ref()
            .and_then(|a| a.country_code.as_deref())
            .and_then(Country::parse)
            .or(source.default_country);
        let phones = [("mobile", "mobilePhone"), ("day", "dayPhone"), ("night", "nightPhone")]
            .into_iter()
            .filter_map(|(kind, name)| {
                r.read(&format!("phones.{kind}"), field(name), |v| {
                    normalize::phone(kind, v, country)
                })
            })
            .collect();

        let profile = Profile {
            account: account.clone(),
            status: Status::Active,
            platform_status: None,
            first_name: r.read("firstName", field("customerFirstName"), normalize::text),
            middle_name: None,
            last_name: r.read("lastName", field("customerLastName"), normalize::text),
            nickname: None,
            email: r.read("email", field("email"), normalize::email),
            phones,
            birth_date: None,
            addresses: address.into_iter().collect(),
            business_ids: r.set("businessIds", field("businessIds")),
            groups: Vec::new(),
            opt_out: None,
            created_at,
            updated_at,
            attributes: normalize::attributes(payload.iter().filter(|(name, _)| !MAPPED.contains(&name.as_str()))),
        };
        Ok(Mapped::Customer(Box::new(CustomerEvent {
            customer: CustomerRef {
                id: format!("{}:{external_id}", source.name),
                source: source.name.clone(),
                external_id,
                account,
            },
            order_at,
            sent_at,
            profile,
            merged_into: None,
            merged_from: Vec::new(),
            warnings: r.into_warnings(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestCaseError};
    use serde_json::json;

    use super::*;
    use crate::model::Warning;
    use crate::sources::testing::{self, warned};

    fn settings() -> SourceSettings {
        testing::settings("vagaro", TimeZone::UTC)
    }

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/vagaro-customer-updated.json")).unwrap()
    }

    fn with(payload: Value) -> Value {
        testing::overlay(fixture(), "payload", payload)
    }

    fn event(body: &Value) -> CustomerEvent {
        testing::event(&Vagaro, body, &settings())
    }

    fn reason(body: &Value) -> String {
        testing::reason(&Vagaro, body, &settings())
    }

    #[test]
    fn seed_example_maps_to_the_canonical_customer() {
        let e = event(&fixture());
        assert_eq!(
            e.customer,
            CustomerRef {
                id: "vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1".into(),
                source: "vagaro".into(),
                external_id: "4CB231BAD3B26B7DE53FE5832A54A7B1".into(),
                account: Some("tYKEZF-L445YEDnCx0TIfA==".into()),
            }
        );
        assert_eq!(e.sent_at.unwrap().to_string(), "2024-03-15T00:00:00.000Z");
        assert_eq!(e.order_at.unwrap().to_string(), "2023-08-10T08:50:00.000Z");
        assert_eq!((e.merged_into, e.merged_from), (None, vec![]));
        assert_eq!(e.warnings, vec![]);
        assert_eq!(
            serde_json::to_value(&e.profile).unwrap(),
            json!({
                "account": "tYKEZF-L445YEDnCx0TIfA==",
                "status": "active",
                "platformStatus": null,
                "firstName": "Johnny",
                "middleName": null,
                "lastName": "Smith",
                "nickname": null,
                "email": "[email\u{a0}protected]",
                "phones": [{"kind": "mobile", "e164": "+19145551212", "raw": "9145551212"}],
                "birthDate": null,
                "addresses": [{
                    "kind": "primary",
                    "street1": "498 Edgecombe Avenue Manhattan",
                    "street2": null,
                    "city": "New York",
                    "regionCode": "US-NY",
                    "regionName": "New York",
                    "postalCode": "10030",
                    "countryCode": "US",
                    "countryName": "United States of America",
                    "primary": true
                }],
                "businessIds": ["U2FsdGVkX18zRbwyUxRZaHNTYGwjKCpDdAkKP4eUDsE="],
                "groups": [],
                "optOut": null,
                "createdAt": "2023-07-10T08:50:00.000Z",
                "updatedAt": "2023-08-10T08:50:00.000Z",
                "attributes": {
                    "createdBy": "GVkX18zRbwyUxRZaHNTYGwjK",
                    "modifiedBy": "GVkX18zRbwyUxRZaHNTYGwjK"
                }
            })
        );
    }

    #[test]
    fn token_is_the_signature_header_and_id_the_envelope_id() {
        assert_eq!(Vagaro.token_header(), TokenHeader::Named("X-Vagaro-Signature"));
        assert_eq!(
            Vagaro.envelope_id(&fixture()).as_deref(),
            Some("254FA623-D2B0-4785-A07D-A1A7059C74FF")
        );
        assert_eq!(Vagaro.envelope_id(&json!({"id": 7})).as_deref(), Some("7"));
        assert_eq!(Vagaro.envelope_id(&json!({"id": " "})), None);
        assert_eq!(Vagaro.envelope_id(&json!([1])), None);
    }

    #[test]
    fn other_event_types_are_ignored() {
        for kind in ["appointment", "transaction", "formResponse"] {
            let mut body = fixture();
            body["type"] = json!(kind);
            assert_eq!(
                Vagaro.map(&body, &settings()),
                Ok(Mapped::Ignored {
                    what: format!("vagaro {kind} event")
                })
            );
        }
    }

    #[test]
    fn any_customer_action_in_any_case_is_mapped() {
        let mut body = fixture();
        body["type"] = json!("Customer");
        body["action"] = json!("deleted");
        assert_eq!(event(&body).customer.external_id, "4CB231BAD3B26B7DE53FE5832A54A7B1");
    }

    #[test]
    fn integer_customer_id_is_a_string() {
        let e = event(&with(json!({"customerId": 19})));
        assert_eq!(
            (e.customer.id.as_str(), e.customer.external_id.as_str()),
            ("vagaro:19", "19")
        );
    }

    #[test]
    fn unmappable_bodies_name_the_field() {
        let mut no_type = fixture();
        no_type.as_object_mut().unwrap().remove("type");
        let mut no_payload = fixture();
        no_payload.as_object_mut().unwrap().remove("payload");
        let mut bad_payload = fixture();
        bad_payload["payload"] = json!("customer");
        let cases = [
            (json!(["customer"]), "body is not an object"),
            (no_type, "type is missing"),
            (no_payload, "payload is missing"),
            (bad_payload, "payload is not an object"),
            (with(json!({"customerId": null})), "payload.customerId is missing"),
            (with(json!({"customerId": " n/a "})), "payload.customerId is missing"),
            (
                with(json!({"customerId": {"email": "a@b.c"}})),
                "payload.customerId is not a string or a whole number",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(reason(&body), expected);
        }
    }

    #[test]
    fn no_usable_time_is_unmappable() {
        let mut body = with(json!({"createdDate": "soon", "modifiedDate": null}));
        body["createdDate"] = json!("2024-02-30T00:00:00Z");
        assert!(
            reason(&body).starts_with("no usable time for ordering: "),
            "{}",
            reason(&body)
        );
    }

    #[test]
    fn envelope_time_alone_orders_the_event() {
        let e = event(&with(json!({"createdDate": null, "modifiedDate": null})));
        assert_eq!(
            (e.order_at, e.sent_at.map(|t| t.to_string())),
            (None, Some("2024-03-15T00:00:00.000Z".into()))
        );
    }

    #[test]
    fn envelope_time_may_be_created_at_as_once_documented() {
        let mut body = fixture();
        let envelope = body.as_object_mut().unwrap();
        envelope.remove("createdDate");
        envelope.insert("createdAt".into(), json!("2024-03-16T01:02:03.456Z"));
        let e = event(&body);
        assert_eq!(e.sent_at.unwrap().to_string(), "2024-03-16T01:02:03.456Z");
        assert_eq!(e.warnings, vec![]);
        body["createdDate"] = json!("2024-03-16");
        let e = event(&body);
        assert_eq!(e.sent_at.unwrap().to_string(), "2024-03-16T01:02:03.456Z");
        assert_eq!(warned(&e), ["envelope.createdDate"]);
    }

    #[test]
    fn order_time_falls_back_to_created_date() {
        let e = event(&with(json!({"modifiedDate": ""})));
        assert_eq!(e.order_at.unwrap().to_string(), "2023-07-10T08:50:00.000Z");
        assert_eq!(e.profile.updated_at, None);
    }

    #[test]
    fn unreadable_fields_are_null_with_warnings() {
        let e = event(&with(json!({
            "email": true,
            "modifiedDate": "last tuesday",
            "regionCode": "ZZ",
            "businessIds": "123",
            "customerFirstName": ["Johnny"],
        })));
        assert_eq!(e.profile.email, None);
        assert_eq!(e.profile.first_name, None);
        assert_eq!(e.profile.updated_at, None);
        assert_eq!(e.profile.business_ids, Vec::<String>::new());
        assert_eq!(e.profile.addresses[0].region_code, None);
        assert_eq!(e.order_at.unwrap().to_string(), "2023-07-10T08:50:00.000Z");
        assert_eq!(
            warned(&e),
            [
                "updatedAt",
                "addresses[0].regionCode",
                "firstName",
                "email",
                "businessIds"
            ]
        );
        assert_eq!(
            e.warnings[0],
            Warning {
                field: "updatedAt".into(),
                problem: "is not a date and time".into()
            }
        );
    }

    #[test]
    fn record_country_qualifies_region_and_phones() {
        let e = event(&with(json!({
            "countryCode": "gbr",
            "regionCode": "lnd",
            "mobilePhone": "020 7946 0958",
            "dayPhone": "+1 914 555 1212",
            "nightPhone": "555 1212",
        })));
        let a = &e.profile.addresses[0];
        assert_eq!(
            (a.region_code.as_deref(), a.country_code.as_deref()),
            (Some("GB-LND"), Some("GB"))
        );
        let phones: Vec<(&str, Option<&str>)> = e
            .profile
            .phones
            .iter()
            .map(|p| (p.kind.as_str(), p.e164.as_deref()))
            .collect();
        assert_eq!(
            phones,
            [
                ("mobile", Some("+442079460958")),
                ("day", Some("+19145551212")),
                ("night", None),
            ]
        );
        assert_eq!(e.profile.phones[2].raw, "555 1212");
    }

    #[test]
    fn qualified_region_and_default_country() {
        let e = event(&with(
            json!({"countryCode": null, "countryName": null, "regionCode": "AU-NSW"}),
        ));
        let a = &e.profile.addresses[0];
        assert_eq!(
            (a.region_code.as_deref(), a.country_code.as_deref()),
            (Some("AU-NSW"), Some("US"))
        );
    }

    #[test]
    fn empty_address_and_phones_are_dropped() {
        let e = event(&with(json!({
            "streetAddress": "", "city": "N/A", "regionCode": null, "regionName": " ",
            "postalCode": "", "countryCode": "", "countryName": null, "mobilePhone": "",
        })));
        assert_eq!(e.profile.addresses, vec![]);
        assert_eq!(e.profile.phones, vec![]);
        assert_eq!(e.warnings, vec![]);
    }

    #[test]
    fn business_ids_are_a_sorted_set() {
        let e = event(&with(json!({"businessIds": ["789", "123", 456, "123", ""]})));
        assert_eq!(e.profile.business_ids, ["123", "456", "789"]);
    }

    #[test]
    fn unknown_payload_fields_become_normalized_attributes() {
        let e = event(&with(json!({
            "loyaltyTier": " gold ",
            "smsOptIn": "TRUE",
            "referral": "N/A",
            "createdBy": "",
        })));
        assert_eq!(
            Value::Object(e.profile.attributes),
            json!({"loyaltyTier": "gold", "smsOptIn": true, "modifiedBy": "GVkX18zRbwyUxRZaHNTYGwjK"})
        );
    }

    // Hostile bodies: `map` never panics, and what it maps keeps the
    // canonical invariants. The strategies and checks have the same shape
    // in treez.rs and clientele.rs (to be shared in `testing.rs`). Each
    // property runs proptest's default 256 cases (`PROPTEST_CASES` for a
    // longer run), with XorShift: ChaCha dominates the time in debug builds.

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
        "appointment",
    ];

    /// Keys of nested objects: some that adapters read, some odd.
    const KEYS: &[&str] = &[
        "", "id", "kind", "raw", "e164", "type", "state", "primary", "\u{0}", "k",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
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
            prop::sample::select(HOSTILE).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    fn arb_settings() -> impl Strategy<Value = SourceSettings> {
        let countries = prop::sample::select(&["", "US", "GB", "CA"][..]).prop_map(Country::parse);
        let zones = prop::sample::select(&["UTC", "America/Los_Angeles", "Australia/Lord_Howe"][..]);
        (countries, zones).prop_map(|(default_country, zone)| SourceSettings {
            default_country,
            ..testing::settings("vagaro", TimeZone::get(zone).unwrap())
        })
    }

    /// The JSON pointer of every member and item of `value`.
    fn pointers(value: &Value, at: &str, into: &mut Vec<String>) {
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
    fn strings(value: &Value) -> Vec<&str> {
        match value {
            Value::String(s) => vec![s.as_str(), s.trim()],
            Value::Array(items) => items.iter().flat_map(strings).collect(),
            Value::Object(map) => map.values().flat_map(strings).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `text` shows a planted value: one long enough to be personal
    /// data and with a character that no field name or problem has.
    fn shows(text: &str, planted: &str) -> bool {
        planted.chars().count() > 3
            && planted
                .chars()
                .any(|c| !c.is_ascii_alphanumeric() && !" .[]()_:,-".contains(c))
            && text.contains(planted)
    }

    fn is_e164(s: &str) -> bool {
        s.strip_prefix('+').is_some_and(|d| {
            (2..=15).contains(&d.len()) && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
        })
    }

    /// `^[A-Z]{2}-[A-Z0-9]{1,3}$`
    fn is_region_code(s: &str) -> bool {
        s.split_once('-').is_some_and(|(c, sub)| {
            c.len() == 2
                && c.bytes().all(|b| b.is_ascii_uppercase())
                && (1..=3).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    }

    fn is_set(items: &[String]) -> bool {
        items.windows(2).all(|w| w[0] < w[1])
    }

    /// Maps `body`: whatever it is, no panic; a customer keeps the
    /// canonical invariants; neither warnings nor a quarantine reason show
    /// a planted value.
    fn check(body: &Value, source: &SourceSettings, planted: &Value) -> Result<(), TestCaseError> {
        let planted = strings(planted);
        let event = match Vagaro.map(body, source) {
            Ok(Mapped::Customer(event)) => event,
            Ok(Mapped::Ignored { .. }) => return Ok(()),
            Err(Unmappable(reason)) => {
                prop_assert!(!planted.iter().any(|p| shows(&reason, p)), "{reason:?} shows a value");
                return Ok(());
            }
        };
        let (c, p) = (&event.customer, &event.profile);
        prop_assert_eq!(&c.id, &format!("{}:{}", source.name, c.external_id));
        prop_assert_eq!(&c.source, &source.name);
        prop_assert!(!c.external_id.is_empty() && c.external_id == c.external_id.trim());
        prop_assert_eq!(&c.account, &p.account);
        prop_assert!(event.order_at.is_some() || event.sent_at.is_some());
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
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]

        #[test]
        fn map_never_panics_on_any_json(body in arb_json(), source in arb_settings()) {
            check(&body, &source, &body)?;
        }

        #[test]
        fn map_never_panics_on_any_customer_payload(
            payload in prop::collection::btree_map(prop::sample::select(MAPPED), arb_json(), 0..MAPPED.len()),
            created in prop_oneof![arb_json(), Just(json!("2024-03-15T00:00:00Z"))],
            source in arb_settings(),
        ) {
            let payload: serde_json::Map<String, Value> = payload.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let body = json!({"id": "e1", "createdDate": created, "type": "customer", "payload": payload});
            check(&body, &source, &body["payload"])?;
        }

        /// Real bodies with one or two fields replaced reach deeper into
        /// the mapping than random ones.
        #[test]
        fn map_keeps_its_invariants_when_seed_fields_are_replaced(
            edits in prop::collection::vec((any::<prop::sample::Index>(), arb_json()), 1..=2),
            source in arb_settings(),
        ) {
            let mut all = Vec::new();
            pointers(&fixture(), "", &mut all);
            let mut body = fixture();
            for (at, value) in &edits {
                if let Some(slot) = body.pointer_mut(&all[at.index(all.len())]) {
                    *slot = value.clone();
                }
            }
            let planted = Value::Array(edits.into_iter().map(|(_, v)| v).collect());
            check(&body, &source, &planted)?;
        }
    }
}
