//! Vagaro's "Customer events" webhook (seed 000): an envelope `{id,
//! createdDate, type, action, payload}` whose `payload` is one flat
//! customer snapshot, authenticated by the verification token Vagaro sends
//! in `X-Vagaro-Signature`.
//!
//! Vagaro posts its other event types (appointments, transactions, form
//! responses) to the same URL: they are acknowledged as ignored. Field
//! values go through `crate::model::normalize`; the ingest layer stores
//! what [`Vagaro::map`] returns.

use crate::model::json::Json;
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

    fn envelope_id(&self, body: &Json) -> Option<String> {
        envelope::id(body)
    }

    fn map(&self, body: &Json, source: &SourceSettings) -> Result<Mapped, Unmappable> {
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
        let customer = CustomerRef {
            id: format!("{}:{external_id}", source.name),
            source: source.name.clone(),
            external_id,
            account,
        };
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
            return Err(Unmappable::of(&customer.id)(
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
                primary: Some(&Json::Bool(true)),
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
                r.read(format_args!("phones.{kind}"), field(name), |v| {
                    normalize::phone(kind, v, country)
                })
            })
            .collect();

        let profile = Profile {
            account: customer.account.clone(),
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
            identifiers: Vec::new(),
            groups: Vec::new(),
            opt_out: None,
            created_at,
            updated_at,
            attributes: normalize::attributes(payload.iter().filter(|(name, _)| !MAPPED.contains(name))),
        };
        Ok(Mapped::Customer(Box::new(CustomerEvent {
            customer,
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
    use serde_json::{Value, json};

    use super::*;
    use crate::model::Warning;
    use crate::sources::testing::{self, arb_json, pointers, warned};

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
                "identifiers": [],
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
            testing::envelope_id(&Vagaro, &fixture()).as_deref(),
            Some("254FA623-D2B0-4785-A07D-A1A7059C74FF")
        );
        assert_eq!(testing::envelope_id(&Vagaro, &json!({"id": 7})).as_deref(), Some("7"));
        assert_eq!(testing::envelope_id(&Vagaro, &json!({"id": " "})), None);
        assert_eq!(testing::envelope_id(&Vagaro, &json!([1])), None);
    }

    #[test]
    fn other_event_types_are_ignored() {
        for kind in ["appointment", "transaction", "formResponse"] {
            let mut body = fixture();
            body["type"] = json!(kind);
            assert_eq!(
                testing::map(&Vagaro, &body, &settings()),
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
        // It names its customer: an erasure reaches it.
        let id = event(&fixture()).customer.id;
        assert_eq!(testing::quarantined_customer(&Vagaro, &body, &settings()), Some(id));
        let anonymous = with(json!({"customerId": ""}));
        assert_eq!(testing::quarantined_customer(&Vagaro, &anonymous, &settings()), None);
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
    // canonical invariants (the shared strategies and checks are in
    // `testing.rs`). Each
    // property runs proptest's default 256 cases (`PROPTEST_CASES` for a
    // longer run), with XorShift: ChaCha dominates the time in debug builds.

    /// Strings hostile to this platform's fields, besides `testing`'s own.
    const HOSTILE: &[&str] = &["appointment"];

    /// [`testing::check_mapping`], with what is vagaro's own.
    fn check(body: &Value, source: &SourceSettings, planted: &Value) -> Result<(), TestCaseError> {
        testing::check_mapping(&Vagaro, body, source, planted, |event| {
            let c = &event.customer;
            prop_assert_eq!(&c.id, &format!("{}:{}", source.name, c.external_id));
            prop_assert!(event.order_at.is_some() || event.sent_at.is_some());
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]

        #[test]
        fn map_never_panics_on_any_json(body in arb_json(HOSTILE), source in testing::arb_settings("vagaro", None)) {
            check(&body, &source, &body)?;
        }

        #[test]
        fn map_never_panics_on_any_customer_payload(
            payload in prop::collection::btree_map(prop::sample::select(MAPPED), arb_json(HOSTILE), 0..MAPPED.len()),
            created in prop_oneof![arb_json(HOSTILE), Just(json!("2024-03-15T00:00:00Z"))],
            source in testing::arb_settings("vagaro", None),
        ) {
            let payload: serde_json::Map<String, Value> = payload.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let body = json!({"id": "e1", "createdDate": created, "type": "customer", "payload": payload});
            check(&body, &source, &body["payload"])?;
        }

        /// Real bodies with one or two fields replaced reach deeper into
        /// the mapping than random ones.
        #[test]
        fn map_keeps_its_invariants_when_seed_fields_are_replaced(
            edits in prop::collection::vec((any::<prop::sample::Index>(), arb_json(HOSTILE)), 1..=2),
            source in testing::arb_settings("vagaro", None),
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
