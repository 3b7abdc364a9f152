//! Clientele's own envelope (SPEC §1), for platforms without an adapter,
//! backfills and tests: `{id, createdDate, type: "customer", action,
//! payload}`, authenticated with `Authorization: Bearer …`, where `payload`
//! holds the canonical customer's fields (camelCase) with `customerId` for
//! the platform's id and `updatedAt` as its order time.
//!
//! The payload is read with the same normalizers as the platforms'
//! (`crate::model::normalize`), so a sender need not pre-normalize, and an
//! outbound payload of Clientele itself can be sent back in: the
//! directory's own bookkeeping fields in it are skipped.

use crate::model::json::Json;
use crate::model::normalize::{self, AddressFields, Problem, Reader};
use crate::model::{Country, CustomerEvent, CustomerRef, Profile, Status};
use crate::sources::envelope::{self, Envelope};
use crate::sources::{Adapter, Mapped, SourceSettings, TokenHeader, Unmappable};

pub struct ClienteleEnvelope;

/// Payload fields with a place in the canonical customer; the rest are
/// kept as `attributes`.
const MAPPED: &[&str] = &[
    "customerId",
    "account",
    "status",
    "platformStatus",
    "firstName",
    "middleName",
    "lastName",
    "nickname",
    "email",
    "phones",
    "birthDate",
    "addresses",
    "businessIds",
    "identifiers",
    "groups",
    "optOut",
    "createdAt",
    "updatedAt",
    "attributes",
    "mergedInto",
    "mergedFrom",
];

/// Fields of an outbound customer that the directory derives itself; they
/// say nothing about the customer and are not kept.
const DIRECTORY_OWN: &[&str] = &["id", "source", "externalId", "version", "changedAt"];

impl Adapter for ClienteleEnvelope {
    fn token_header(&self) -> TokenHeader {
        TokenHeader::Bearer
    }

    fn envelope_id(&self, body: &Json) -> Option<String> {
        envelope::id(body)
    }

    fn map(&self, body: &Json, source: &SourceSettings) -> Result<Mapped, Unmappable> {
        let Envelope {
            envelope,
            payload,
            external_id,
        } = match envelope::open("clientele", body)? {
            Ok(opened) => opened,
            Err(ignored) => return Ok(ignored),
        };

        let mut r = Reader::new();
        let tz = &source.timezone;
        let field = |name: &str| payload.get(name);
        let account = r
            .read("account", field("account"), normalize::text)
            .or_else(|| source.account.clone());
        // The customers a merge names get no account: this event's account
        // is not theirs, and a merge stub must not take it from whichever
        // claim happens to arrive first.
        let to_ref = |id: String| CustomerRef {
            id: format!("{}:{id}", source.name),
            source: source.name.clone(),
            external_id: id,
            account: None,
        };
        let customer = CustomerRef {
            account: account.clone(),
            ..to_ref(external_id)
        };
        let unmappable = Unmappable::of(&customer.id);
        let sent_at = r.read("envelope.createdDate", envelope.get("createdDate"), |v| {
            normalize::timestamp(v, tz)
        });
        let created_at = r.read("createdAt", field("createdAt"), |v| normalize::timestamp(v, tz));
        let updated_at = r.read("updatedAt", field("updatedAt"), |v| normalize::timestamp(v, tz));
        let order_at = updated_at.or(created_at);
        if order_at.is_none() && sent_at.is_none() {
            return Err(unmappable(
                "no usable time for ordering: payload.updatedAt, payload.createdAt and \
                 createdDate are missing or unreadable"
                    .into(),
            ));
        }

        let (merged_into, merged_from) = r
            .merge_links(&customer, field("mergedInto"), field("mergedFrom"), to_ref)
            .map_err(unmappable)?;

        let addresses: Vec<_> = r
            .objects("addresses", field("addresses"))
            .into_iter()
            .filter_map(|(at, a)| {
                let kind = r.kind(&at, a.get("kind"));
                let fields = AddressFields {
                    street1: a.get("street1"),
                    street2: a.get("street2"),
                    city: a.get("city"),
                    region_code: a.get("regionCode"),
                    region_name: a.get("regionName"),
                    postal_code: a.get("postalCode"),
                    country_code: a.get("countryCode"),
                    country_name: a.get("countryName"),
                    primary: a.get("primary"),
                };
                r.address(&at, kind, fields, source.default_country)
            })
            .collect();
        // The record's country, for national phone numbers, is its primary
        // address's.
        let country = addresses
            .iter()
            .find(|a| a.primary)
            .and_then(|a| a.country_code.as_deref())
            .and_then(Country::parse)
            .or(source.default_country);
        let phones = r
            .objects("phones", field("phones"))
            .into_iter()
            .filter_map(|(at, p)| {
                let kind = r.kind(&at, p.get("kind"));
                let read = |v: &Json| normalize::phone(&kind, v, country);
                // `raw` is what the platform holds; `e164` alone will do.
                r.read(format_args!("{at}.raw"), p.get("raw"), read)
                    .or_else(|| r.read(format_args!("{at}.e164"), p.get("e164"), read))
            })
            .collect();

        let mut attributes = normalize::attributes(
            payload
                .iter()
                .filter(|(name, _)| !MAPPED.contains(name) && !DIRECTORY_OWN.contains(name)),
        );
        // Explicit attributes win over stray top-level fields of the same name.
        if let Some(explicit) = r.read("attributes", field("attributes"), normalize::object) {
            attributes.extend(normalize::attributes(explicit.iter()));
        }

        let profile = Profile {
            account,
            status: r.read("status", field("status"), status).unwrap_or_default(),
            platform_status: r.read("platformStatus", field("platformStatus"), normalize::text),
            first_name: r.read("firstName", field("firstName"), normalize::text),
            middle_name: r.read("middleName", field("middleName"), normalize::text),
            last_name: r.read("lastName", field("lastName"), normalize::text),
            nickname: r.read("nickname", field("nickname"), normalize::text),
            email: r.read("email", field("email"), normalize::email),
            phones,
            birth_date: r.read("birthDate", field("birthDate"), normalize::date),
            addresses,
            business_ids: r.set("businessIds", field("businessIds")),
            identifiers: r.identifiers("identifiers", field("identifiers")),
            groups: r.set("groups", field("groups")),
            opt_out: r.read("optOut", field("optOut"), normalize::boolean),
            created_at,
            updated_at,
            attributes,
        };
        Ok(Mapped::Customer(Box::new(CustomerEvent {
            customer,
            order_at,
            sent_at,
            profile,
            merged_into,
            merged_from,
            warnings: r.into_warnings(),
        })))
    }
}

/// `active` or `inactive` in any case. `merged`, as Clientele itself
/// shows an absorbed record, is read as `inactive`: the merge is carried
/// by `mergedInto`, and the directory shows it.
fn status(v: &Json) -> Result<Option<Status>, Problem> {
    let Some(s) = normalize::text(v)? else {
        return Ok(None);
    };
    match s.to_ascii_lowercase().as_str() {
        "active" => Ok(Some(Status::Active)),
        "inactive" | "merged" => Ok(Some(Status::Inactive)),
        _ => Err(Problem::UnknownStatus),
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestCaseError};
    use serde_json::{Value, json};

    use super::*;
    use crate::sources::Kind;
    use crate::sources::testing::{self, arb_json, pointers, warned};

    fn settings() -> SourceSettings {
        testing::settings("backfill", TimeZone::UTC)
    }

    fn envelope(payload: Value) -> Value {
        json!({
            "id": "evt_1",
            "createdDate": "2026-04-24T18:38:22.000Z",
            "type": "customer",
            "action": "updated",
            "payload": payload,
        })
    }

    fn event(body: &Value) -> CustomerEvent {
        testing::event(&ClienteleEnvelope, body, &settings())
    }

    fn reason(body: &Value) -> String {
        testing::reason(&ClienteleEnvelope, body, &settings())
    }

    #[test]
    fn canonical_fields_map_one_to_one() {
        let e = event(&envelope(json!({
            "customerId": "c-1",
            "account": "shop-1",
            "status": "inactive",
            "platformStatus": "Closed",
            "firstName": "Mia", "middleName": "E", "lastName": "Wallace", "nickname": "M",
            "email": "Mia@Example.com",
            "phones": [{"kind": "mobile", "raw": "914-555-1212"}],
            "birthDate": "1970-05-01",
            "addresses": [{"kind": "home", "street1": "1 Main St", "street2": "Apt 2", "city": "Los Angeles",
                           "regionCode": "CA", "regionName": "California", "postalCode": "90001",
                           "countryCode": "US", "countryName": "United States", "primary": "true"}],
            "businessIds": ["b2", "b1"],
            "identifiers": [{"kind": "State_Medical_ID", "value": " MED-7 "},
                            {"kind": "drivers_license", "value": "D123"},
                            {"kind": "drivers_license", "value": "D123"}],
            "groups": ["VIP"],
            "optOut": false,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-04-24T11:38:21.000-07:00",
            "attributes": {"tier": "gold"},
        })));
        assert_eq!(
            e.customer,
            CustomerRef {
                id: "backfill:c-1".into(),
                source: "backfill".into(),
                external_id: "c-1".into(),
                account: Some("shop-1".into()),
            }
        );
        assert_eq!(e.order_at.unwrap().to_string(), "2026-04-24T18:38:21.000Z");
        assert_eq!(e.sent_at.unwrap().to_string(), "2026-04-24T18:38:22.000Z");
        assert_eq!(e.warnings, vec![]);
        assert_eq!(
            serde_json::to_value(&e.profile).unwrap(),
            json!({
                "account": "shop-1",
                "status": "inactive",
                "platformStatus": "Closed",
                "firstName": "Mia", "middleName": "E", "lastName": "Wallace", "nickname": "M",
                "email": "mia@example.com",
                "phones": [{"kind": "mobile", "e164": "+19145551212", "raw": "914-555-1212"}],
                "birthDate": "1970-05-01",
                "addresses": [{"kind": "home", "street1": "1 Main St", "street2": "Apt 2",
                               "city": "Los Angeles", "regionCode": "US-CA", "regionName": "California",
                               "postalCode": "90001", "countryCode": "US",
                               "countryName": "United States", "primary": true}],
                "businessIds": ["b1", "b2"],
                "identifiers": [{"kind": "drivers_license", "value": "D123"},
                                {"kind": "state_medical_id", "value": "MED-7"}],
                "groups": ["VIP"],
                "optOut": false,
                "createdAt": "2026-01-01T00:00:00.000Z",
                "updatedAt": "2026-04-24T18:38:21.000Z",
                "attributes": {"tier": "gold"},
            })
        );
    }

    #[test]
    fn identifiers_without_a_kind_or_a_value_are_left_out() {
        let e = event(&envelope(json!({
            "customerId": "c-1",
            "updatedAt": "2026-04-24T11:38:21.000Z",
            "identifiers": [{"value": "D1"}, {"kind": "passport", "value": "N/A"}, "D2",
                            {"kind": "passport", "value": 7}],
        })));
        assert_eq!(
            e.profile.identifiers,
            [crate::model::Identifier {
                kind: "passport".into(),
                value: "7".into()
            }]
        );
        let fields: Vec<_> = e.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, ["identifiers[2]", "identifiers[0].kind"]);
    }

    #[test]
    fn token_is_bearer_and_id_the_envelope_id() {
        assert_eq!(ClienteleEnvelope.token_header(), TokenHeader::Bearer);
        assert_eq!(
            testing::envelope_id(&ClienteleEnvelope, &envelope(json!({}))).as_deref(),
            Some("evt_1")
        );
    }

    #[test]
    fn other_event_types_are_ignored() {
        let mut body = envelope(json!({"customerId": "c-1"}));
        body["type"] = json!("order");
        assert_eq!(
            testing::map(&ClienteleEnvelope, &body, &settings()),
            Ok(Mapped::Ignored {
                what: "clientele order event".into()
            })
        );
    }

    #[test]
    fn unmappable_bodies_name_the_field() {
        let mut no_type = envelope(json!({"customerId": "c-1"}));
        no_type.as_object_mut().unwrap().remove("type");
        let cases = [
            (json!(null), "body is missing"),
            (json!(3), "body is not an object"),
            (no_type, "type is missing"),
            (envelope(Value::Null), "payload is missing"),
            (envelope(json!(["c-1"])), "payload is not an object"),
            (envelope(json!({"customerId": ""})), "payload.customerId is missing"),
            (
                envelope(json!({"customerId": [1]})),
                "payload.customerId is not a string or a whole number",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(reason(&body), expected);
        }
    }

    #[test]
    fn no_usable_time_is_unmappable() {
        let mut body = envelope(json!({"customerId": "c-1", "updatedAt": "now"}));
        body["createdDate"] = json!(null);
        assert_eq!(
            reason(&body),
            "no usable time for ordering: payload.updatedAt, payload.createdAt and createdDate \
             are missing or unreadable"
        );
        // It names its customer: an erasure reaches it.
        assert_eq!(
            testing::quarantined_customer(&ClienteleEnvelope, &body, &settings()).as_deref(),
            Some("backfill:c-1")
        );
    }

    #[test]
    fn integer_id_and_the_source_account() {
        let source = SourceSettings {
            account: Some("main".into()),
            ..settings()
        };
        let Ok(Mapped::Customer(e)) = testing::map(&ClienteleEnvelope, &envelope(json!({"customerId": 42})), &source)
        else {
            panic!("expected a customer");
        };
        assert_eq!(e.customer.id, "backfill:42");
        assert_eq!(e.customer.account.as_deref(), Some("main"));
        assert_eq!(e.profile.account.as_deref(), Some("main"));
        assert_eq!(e.profile.status, Status::Active);
    }

    #[test]
    fn phones_take_raw_or_e164_and_the_primary_address_country() {
        let e = event(&envelope(json!({
            "customerId": "c-1",
            "addresses": [
                {"kind": "work", "countryCode": "US", "city": "Boston"},
                {"kind": "home", "countryCode": "GB", "city": "London", "primary": true},
            ],
            "phones": [
                {"kind": "home", "raw": "020 7946 0958"},
                {"kind": "mobile", "e164": "+19145551212"},
                {"raw": "", "e164": null},
                "+19145551212",
                {"raw": "ask reception"},
                {"kind": "fax", "raw": false, "e164": "+19145551212"},
            ],
        })));
        let phones: Vec<(&str, Option<&str>, &str)> = e
            .profile
            .phones
            .iter()
            .map(|p| (p.kind.as_str(), p.e164.as_deref(), p.raw.as_str()))
            .collect();
        assert_eq!(
            phones,
            [
                ("home", Some("+442079460958"), "020 7946 0958"),
                ("mobile", Some("+19145551212"), "+19145551212"),
                ("other", None, "ask reception"),
                ("fax", Some("+19145551212"), "+19145551212"),
            ]
        );
        assert_eq!(warned(&e), ["phones[3]", "phones[5].raw"]);
    }

    #[test]
    fn status_values() {
        for (status, expected) in [
            (json!("Active"), Status::Active),
            (json!("INACTIVE"), Status::Inactive),
            (json!("merged"), Status::Inactive),
            (json!(null), Status::Active),
        ] {
            let e = event(&envelope(json!({"customerId": "c-1", "status": status})));
            assert_eq!(e.profile.status, expected);
        }
        let e = event(&envelope(json!({"customerId": "c-1", "status": "banned"})));
        assert_eq!(e.profile.status, Status::Active);
        assert_eq!(warned(&e), ["status"]);
    }

    #[test]
    fn merge_links_name_customers_of_the_same_source() {
        let e = event(&envelope(json!({
            "customerId": "c-1",
            "mergedInto": "c-0",
            "mergedFrom": ["c-3", 2, "c-1"],
        })));
        assert_eq!(e.merged_into.as_ref().unwrap().id, "backfill:c-0");
        let from: Vec<&str> = e.merged_from.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(from, ["backfill:2", "backfill:c-3"]);
        assert_eq!(warned(&e), ["mergedFrom"]);
    }

    #[test]
    fn unknown_fields_join_attributes_and_bookkeeping_is_skipped() {
        let e = event(&envelope(json!({
            "customerId": "c-1",
            "id": "backfill:c-1",
            "version": 3,
            "changedAt": "2026-04-24T18:38:22.000Z",
            "loyalty": {"points": 10, "card": ""},
            "tier": "silver",
            "attributes": {"tier": "gold", "vip": "TRUE", "note": "N/A"},
        })));
        assert_eq!(
            Value::Object(e.profile.attributes),
            json!({"loyalty": {"points": 10}, "tier": "gold", "vip": true})
        );
        let e = event(&envelope(json!({"customerId": "c-1", "attributes": "gold"})));
        assert_eq!(warned(&e), ["attributes"]);
    }

    /// What Clientele sends out, sent back in, reads as the same customer:
    /// a backfill from another Clientele loses nothing.
    #[test]
    fn an_outbound_payload_reads_back_as_the_same_profile() {
        let treez = SourceSettings {
            name: "treez".into(),
            ..settings()
        };
        let body: Value = serde_json::from_str(include_str!("../../tests/fixtures/treez-customer.json")).unwrap();
        let Ok(Mapped::Customer(original)) = testing::map(Kind::Treez.adapter(), &body, &treez) else {
            panic!("expected a customer");
        };
        let mut payload = serde_json::to_value(&original.profile).unwrap();
        payload["customerId"] = json!(original.customer.external_id);
        payload["mergedInto"] = Value::Null;
        payload["mergedFrom"] = json!([]);
        let e = event(&envelope(payload));
        assert_eq!(e.warnings, vec![]);
        assert_eq!(e.profile, original.profile);
    }
    // Hostile bodies: `map` never panics, and what it maps keeps the
    // canonical invariants (the shared strategies and checks are in
    // `testing.rs`). Each
    // property runs proptest's default 256 cases (`PROPTEST_CASES` for a
    // longer run), with XorShift: ChaCha dominates the time in debug builds.

    /// Strings hostile to this platform's fields, besides `testing`'s own.
    const HOSTILE: &[&str] = &["merged", "inactive", "c-1"];

    /// An envelope with every canonical field, the one to mutate.
    fn seed() -> Value {
        envelope(json!({
            "customerId": "c-1",
            "account": "shop-1",
            "status": "inactive",
            "platformStatus": "Closed",
            "firstName": "Mia", "middleName": "E", "lastName": "Wallace", "nickname": "M",
            "email": "Mia@Example.com",
            "phones": [{"kind": "mobile", "raw": "914-555-1212"}, {"kind": "home", "e164": "+442079460958"}],
            "birthDate": "1970-05-01",
            "addresses": [{"kind": "home", "street1": "1 Main St", "street2": "Apt 2", "city": "Toronto",
                           "regionCode": "ON", "regionName": "Ontario", "postalCode": "M5V 2T6",
                           "countryCode": "CA", "countryName": "Canada", "primary": true}],
            "businessIds": ["b2", "b1"],
            "identifiers": [{"kind": "drivers_license", "value": "D123"}, {"kind": "passport", "value": 42}],
            "groups": ["VIP"],
            "optOut": false,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-04-24T11:38:21.000-07:00",
            "mergedInto": "c-0",
            "mergedFrom": ["c-2", "c-3"],
            "attributes": {"tier": "gold", "visits": [1, 2]},
            "loyalty": {"points": 10},
        }))
    }

    #[test]
    fn the_seed_to_mutate_maps_cleanly() {
        let e = event(&seed());
        assert_eq!(e.warnings, vec![]);
        assert_eq!(e.profile.addresses[0].region_code.as_deref(), Some("CA-ON"));
        assert_eq!((e.profile.phones.len(), e.merged_from.len()), (2, 2));
    }

    /// [`testing::check_mapping`], with what is clientele's own.
    fn check(body: &Value, source: &SourceSettings, planted: &Value) -> Result<(), TestCaseError> {
        testing::check_mapping(&ClienteleEnvelope, body, source, planted, |event| {
            let c = &event.customer;
            prop_assert_eq!(&c.id, &format!("{}:{}", source.name, c.external_id));
            prop_assert!(event.order_at.is_some() || event.sent_at.is_some());
            prop_assert!(event.profile.status != Status::Merged);
            testing::check_links(event, &format!("{}:", source.name))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]

        #[test]
        fn map_never_panics_on_any_json(body in arb_json(HOSTILE), source in testing::arb_settings("backfill", Some("main"))) {
            check(&body, &source, &body)?;
        }

        #[test]
        fn map_never_panics_on_any_customer_payload(
            payload in prop::collection::btree_map(prop::sample::select(MAPPED), arb_json(HOSTILE), 0..MAPPED.len()),
            created in prop_oneof![arb_json(HOSTILE), Just(json!("2026-04-24T18:38:22.000Z"))],
            source in testing::arb_settings("backfill", Some("main")),
        ) {
            let payload: serde_json::Map<String, Value> = payload.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut body = envelope(Value::Object(payload));
            body["createdDate"] = created;
            check(&body, &source, &body["payload"])?;
        }

        /// Real bodies with one or two fields replaced reach deeper into
        /// the mapping than random ones.
        #[test]
        fn map_keeps_its_invariants_when_seed_fields_are_replaced(
            edits in prop::collection::vec((any::<prop::sample::Index>(), arb_json(HOSTILE)), 1..=2),
            source in testing::arb_settings("backfill", Some("main")),
        ) {
            let mut all = Vec::new();
            pointers(&seed(), "", &mut all);
            let mut body = seed();
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
