//! Treez's "Customer webhooks" (seed 004): `POST` with `Authorization:
//! Bearer …`, body `{event_type, dispensary_short_name, data}` where `data`
//! is one customer snapshot, sent on creation, on any profile change and
//! for each side of a merge.
//!
//! The bodies carry no event id (the ingest layer hashes them) and no
//! envelope time, so the customer's `last_update` alone orders them.
//! Product and ticket bodies and `{"test": true}` pings arrive at the same
//! URL and are acknowledged as ignored. Field values go through
//! `crate::model::normalize`; merge links become [`CustomerRef`]s that the
//! directory (`crate::store`) records as facts.

use serde_json::Value;

use crate::model::json::Json;
use crate::model::normalize::{self, AddressFields, Reader, UtcMillis, required};
use crate::model::{CustomerEvent, CustomerRef, Identifier, Profile, Status};
use crate::sources::{Adapter, Mapped, SourceSettings, TokenHeader, Unmappable};

pub struct Treez;

/// `data` fields with a place in the canonical customer; the rest are kept
/// as `attributes`.
const MAPPED: &[&str] = &[
    "customer_id",
    "status",
    "first_name",
    "middle_name",
    "last_name",
    "nickname",
    "email",
    "birthday",
    "phone",
    "signup_date",
    "last_update",
    "opt_out",
    "customer_groups",
    "addresses",
    "merged_customer_ids",
    "merged_into_customer_id",
    "last_visit_date",
    "drivers_license",
    "state_medical_id",
];

/// What Treez sends as `last_visit_date` for a customer who never visited.
const NEVER_VISITED: &str = "2000-01-01 00:00:00.000";

impl Adapter for Treez {
    fn token_header(&self) -> TokenHeader {
        TokenHeader::Bearer
    }

    fn envelope_id(&self, _body: &Json) -> Option<String> {
        None
    }

    fn map(&self, body: &Json, source: &SourceSettings) -> Result<Mapped, Unmappable> {
        let body = required("body", Some(body), normalize::object).map_err(Unmappable::new)?;
        if let Some(Ok(Some(true))) = body.get("test").map(normalize::boolean) {
            return Ok(Mapped::Ignored {
                what: "treez test ping".into(),
            });
        }
        let event_type = required("event_type", body.get("event_type"), normalize::text).map_err(Unmappable::new)?;
        if !event_type.eq_ignore_ascii_case("CUSTOMER") {
            return Ok(Mapped::Ignored {
                what: format!("treez {event_type} event"),
            });
        }
        let account = match required(
            "dispensary_short_name",
            body.get("dispensary_short_name"),
            normalize::text,
        ) {
            Ok(account) => account,
            Err(reason) => source
                .account
                .clone()
                .ok_or_else(|| Unmappable::new(format!("{reason} and the source sets no account")))?,
        };
        // The id is `{source}:{account}:{customer_id}`: an account with a
        // `:` would let two accounts' customers share one id.
        if account.contains(':') {
            return Err(Unmappable::new("dispensary_short_name contains ':'"));
        }
        let data = required("data", body.get("data"), normalize::object).map_err(Unmappable::new)?;
        let external_id =
            required("data.customer_id", data.get("customer_id"), normalize::id).map_err(Unmappable::new)?;
        let to_ref = |id: String| CustomerRef {
            id: format!("{}:{account}:{id}", source.name),
            source: source.name.clone(),
            external_id: id,
            account: Some(account.clone()),
        };
        let customer = to_ref(external_id);
        let unmappable = Unmappable::of(&customer.id);

        let mut r = Reader::new();
        let tz = &source.timezone;
        let field = |name: &str| data.get(name);
        let created_at = r.read("createdAt", field("signup_date"), |v| normalize::timestamp(v, tz));
        let updated_at = r.read("updatedAt", field("last_update"), |v| normalize::timestamp(v, tz));
        let order_at = updated_at.or(created_at);
        if order_at.is_none() {
            return Err(unmappable(
                "no usable time for ordering: data.last_update and data.signup_date are missing \
                 or unreadable"
                    .into(),
            ));
        }

        let (merged_into, merged_from) = r
            .merge_links(
                &customer,
                field("merged_into_customer_id"),
                field("merged_customer_ids"),
                to_ref,
            )
            .map_err(unmappable)?;

        let platform_status = r
            .read("platformStatus", field("status"), normalize::text)
            .map(|s| s.to_uppercase());
        // MERGED is a survivor that absorbed others and stays active; an
        // absorbed DEACTIVATED profile shows as merged once the directory
        // holds its link. Unknown values are kept in `platformStatus` only.
        let status = match platform_status.as_deref() {
            Some("DEACTIVATED") => Status::Inactive,
            _ => Status::Active,
        };

        let addresses = r
            .objects("addresses", field("addresses"))
            .into_iter()
            .filter_map(|(at, a)| {
                let kind = r.kind(&at, a.get("type"));
                let fields = AddressFields {
                    street1: a.get("street1"),
                    street2: a.get("street2"),
                    city: a.get("city"),
                    region_code: a.get("state"),
                    postal_code: a.get("zipcode"),
                    primary: a.get("primary"),
                    ..AddressFields::default()
                };
                r.address(&at, kind, fields, source.default_country)
            })
            .collect();

        let mut attributes = normalize::attributes(data.iter().filter(|(name, _)| !MAPPED.contains(name)));
        let never_visited = UtcMillis::parse_in(NEVER_VISITED, tz).ok();
        let last_visit = r
            .read("attributes.lastVisitAt", field("last_visit_date"), |v| {
                normalize::timestamp(v, tz)
            })
            .filter(|t| Some(*t) != never_visited);
        if let Some(t) = last_visit {
            attributes.insert("lastVisitAt".into(), Value::String(t.to_string()));
        }

        let profile = Profile {
            account: Some(account.clone()),
            status,
            platform_status,
            first_name: r.read("firstName", field("first_name"), normalize::text),
            middle_name: r.read("middleName", field("middle_name"), normalize::text),
            last_name: r.read("lastName", field("last_name"), normalize::text),
            nickname: r.read("nickname", field("nickname"), normalize::text),
            email: r.read("email", field("email"), normalize::email),
            phones: r
                .read("phones.primary", field("phone"), |v| {
                    normalize::phone("primary", v, source.default_country)
                })
                .into_iter()
                .collect(),
            birth_date: r.read("birthDate", field("birthday"), normalize::date),
            addresses,
            business_ids: Vec::new(),
            identifiers: identifiers(&mut r, field),
            groups: r.set("groups", field("customer_groups")),
            opt_out: r.read("optOut", field("opt_out"), normalize::boolean),
            created_at,
            updated_at,
            attributes,
        };
        Ok(Mapped::Customer(Box::new(CustomerEvent {
            customer,
            order_at,
            sent_at: None,
            profile,
            merged_into,
            merged_from,
            warnings: r.into_warnings(),
        })))
    }
}

/// The customer's government ids (SPEC §11), sorted like every set.
fn identifiers<'v>(r: &mut Reader, field: impl Fn(&str) -> Option<&'v Json<'v>>) -> Vec<Identifier> {
    let mut ids: Vec<Identifier> = ["drivers_license", "state_medical_id"]
        .into_iter()
        .filter_map(|kind| r.identifier(format_args!("identifiers.{kind}"), kind, field(kind)))
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestCaseError};
    use serde_json::json;

    use super::*;
    use crate::model::Customer;
    use crate::sources::testing::{self, arb_json, pointers, warned};

    fn settings() -> SourceSettings {
        testing::settings("treez", TimeZone::get("America/Los_Angeles").unwrap())
    }

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/treez-customer.json")).unwrap()
    }

    fn with(data: Value) -> Value {
        testing::overlay(fixture(), "data", data)
    }

    fn event(body: &Value) -> CustomerEvent {
        testing::event(&Treez, body, &settings())
    }

    fn reason(body: &Value) -> String {
        testing::reason(&Treez, body, &settings())
    }

    fn ids(refs: &[CustomerRef]) -> Vec<&str> {
        refs.iter().map(|r| r.id.as_str()).collect()
    }

    /// SPEC §4's example customer, which is the seed's sample body.
    const SPEC_EXAMPLE: &str = r#"{
      "id": "treez:partnersandbox3:3904",
      "source": "treez",
      "externalId": "3904",
      "account": "partnersandbox3",
      "status": "active",
      "platformStatus": "ACTIVE",
      "firstName": "Jules", "middleName": null, "lastName": "Winnfield", "nickname": null,
      "email": null,
      "phones": [],
      "birthDate": "1948-02-12",
      "addresses": [{"kind": "address_of_record", "street1": "2515 SHEPHERD WAY", "street2": null,
                     "city": "INGLEWOOD", "regionCode": "US-CA", "regionName": null,
                     "postalCode": "90301", "countryCode": "US", "countryName": null, "primary": true}],
      "businessIds": [],
      "groups": ["SENIOR"],
      "optOut": true,
      "createdAt": "2026-04-24T18:38:21.000Z",
      "updatedAt": "2026-04-24T18:38:21.000Z",
      "mergedInto": null,
      "mergedFrom": [],
      "attributes": {"verification_status": "VERIFICATION_PENDING", "patient_type": "ADULT"},
      "version": 1
    }"#;

    #[test]
    fn seed_sample_is_the_spec_example_customer() {
        let e = event(&fixture());
        assert_eq!(e.warnings, vec![]);
        assert_eq!(e.order_at.unwrap().to_string(), "2026-04-24T18:38:21.000Z");
        assert_eq!(e.sent_at, None);
        let customer = Customer {
            id: e.customer.id,
            source: e.customer.source,
            external_id: e.customer.external_id,
            profile: e.profile,
            merged_into: e.merged_into.map(|r| r.id),
            merged_from: e.merged_from.into_iter().map(|r| r.id).collect(),
            version: 1,
            changed_at: UtcMillis::now(),
        };
        let actual = serde_json::to_value(&customer).unwrap();
        let expected: Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
        for (name, value) in expected.as_object().unwrap() {
            if name == "attributes" {
                for (attribute, value) in value.as_object().unwrap() {
                    assert_eq!(&actual[name][attribute], value, "attributes.{attribute}");
                }
            } else {
                assert_eq!(&actual[name], value, "{name}");
            }
        }
        assert_eq!(
            actual["attributes"],
            json!({
                "verification_status": "VERIFICATION_PENDING",
                "verification_reasons": [{
                    "verification_reason": "NEW",
                    "verification_reason_description": "NEW_INTAKE_CUSTOMER"
                }],
                "is_caregiver": false,
                "rewards_balance": 0,
                "rewards_type": "POINTS",
                "gender": "U",
                "banned": false,
                "warning_1": false,
                "warning_2": false,
                "patient_type": "ADULT"
            })
        );
    }

    #[test]
    fn drivers_license_and_state_medical_id_are_identifiers() {
        let e = event(&with(
            json!({"drivers_license": " D1234567 ", "state_medical_id": 9876}),
        ));
        assert_eq!(e.warnings, vec![]);
        assert_eq!(
            serde_json::to_value(&e.profile.identifiers).unwrap(),
            json!([{"kind": "drivers_license", "value": "D1234567"},
                   {"kind": "state_medical_id", "value": "9876"}])
        );
        assert!(e.profile.attributes.get("drivers_license").is_none());
        // The seed's own `null` and `"N/A"` are no identifier.
        assert_eq!(event(&fixture()).profile.identifiers, vec![]);
        let bad = event(&with(json!({"drivers_license": {"no": 1}})));
        assert_eq!(bad.profile.identifiers, vec![]);
        assert_eq!(bad.warnings[0].field, "identifiers.drivers_license");
    }

    #[test]
    fn token_is_bearer_and_bodies_carry_no_id() {
        assert_eq!(Treez.token_header(), TokenHeader::Bearer);
        assert_eq!(testing::envelope_id(&Treez, &fixture()), None);
    }

    #[test]
    fn test_pings_and_other_event_types_are_ignored() {
        let ping = json!({"test": true, "dispensary_short_name": "partnersandbox3"});
        assert_eq!(
            testing::map(&Treez, &ping, &settings()),
            Ok(Mapped::Ignored {
                what: "treez test ping".into()
            })
        );
        for kind in ["PRODUCT", "TICKET", "TICKET_STATUS"] {
            let mut body = fixture();
            body["event_type"] = json!(kind);
            assert_eq!(
                testing::map(&Treez, &body, &settings()),
                Ok(Mapped::Ignored {
                    what: format!("treez {kind} event")
                })
            );
        }
    }

    #[test]
    fn test_false_is_a_customer_event() {
        let mut body = fixture();
        body["test"] = json!(false);
        body["event_type"] = json!("customer");
        assert_eq!(event(&body).customer.external_id, "3904");
    }

    #[test]
    fn integer_customer_id_is_a_string() {
        let e = event(&with(json!({"customer_id": 19})));
        assert_eq!(e.customer.id, "treez:partnersandbox3:19");
        assert_eq!(e.customer.external_id, "19");
    }

    #[test]
    fn account_falls_back_to_the_source_setting() {
        let mut body = fixture();
        body.as_object_mut().unwrap().remove("dispensary_short_name");
        assert_eq!(
            reason(&body),
            "dispensary_short_name is missing and the source sets no account"
        );
        let source = SourceSettings {
            account: Some("acme".into()),
            ..settings()
        };
        let Ok(Mapped::Customer(e)) = testing::map(&Treez, &body, &source) else {
            panic!("expected a customer");
        };
        assert_eq!(e.customer.id, "treez:acme:3904");
        assert_eq!(e.customer.account.as_deref(), Some("acme"));
        assert_eq!(e.profile.account.as_deref(), Some("acme"));
    }

    #[test]
    fn unmappable_bodies_name_the_field() {
        let mut no_type = fixture();
        no_type.as_object_mut().unwrap().remove("event_type");
        let mut no_data = fixture();
        no_data.as_object_mut().unwrap().remove("data");
        let mut bad_data = fixture();
        bad_data["data"] = json!([]);
        let cases = [
            (json!("CUSTOMER"), "body is not an object"),
            (no_type, "event_type is missing"),
            (no_data, "data is missing"),
            (bad_data, "data is not an object"),
            (with(json!({"customer_id": "N/A"})), "data.customer_id is missing"),
            (
                with(json!({"customer_id": true})),
                "data.customer_id is not a string or a whole number",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(reason(&body), expected);
        }
    }

    #[test]
    fn no_usable_time_is_unmappable() {
        let body = with(json!({"last_update": "2026-13-01 00:00:00", "signup_date": null}));
        assert_eq!(
            reason(&body),
            "no usable time for ordering: data.last_update and data.signup_date are missing or \
             unreadable"
        );
        // It names its customer: an erasure reaches it.
        let id = event(&fixture()).customer.id;
        assert_eq!(testing::quarantined_customer(&Treez, &body, &settings()), Some(id));
        let anonymous = with(json!({"customer_id": null}));
        assert_eq!(testing::quarantined_customer(&Treez, &anonymous, &settings()), None);
    }

    #[test]
    fn order_time_falls_back_to_signup_date_read_in_the_source_zone() {
        let e = event(&with(
            json!({"last_update": null, "signup_date": "2026-01-05 09:00:00.000"}),
        ));
        assert_eq!(e.order_at.unwrap().to_string(), "2026-01-05T17:00:00.000Z");
        assert_eq!(e.profile.updated_at, None);
    }

    #[test]
    fn status_keeps_the_platform_value() {
        let cases = [
            (json!("ACTIVE"), Status::Active, Some("ACTIVE")),
            (json!("MERGED"), Status::Active, Some("MERGED")),
            (json!("deactivated"), Status::Inactive, Some("DEACTIVATED")),
            (json!("SUSPENDED"), Status::Active, Some("SUSPENDED")),
            (Value::Null, Status::Active, None),
        ];
        for (status, expected, platform) in cases {
            let e = event(&with(json!({ "status": status })));
            assert_eq!(
                (e.profile.status, e.profile.platform_status.as_deref()),
                (expected, platform)
            );
        }
    }

    #[test]
    fn survivor_lists_absorbed_customers() {
        let e = event(&with(json!({
            "status": "MERGED",
            "merged_customer_ids": ["3907", 3905, "3905", ""],
        })));
        assert_eq!(
            ids(&e.merged_from),
            ["treez:partnersandbox3:3905", "treez:partnersandbox3:3907"]
        );
        assert_eq!(e.merged_from[0].external_id, "3905");
        assert_eq!(e.merged_from[0].account.as_deref(), Some("partnersandbox3"));
        assert_eq!(e.merged_into, None);
        assert_eq!(e.profile.status, Status::Active);
    }

    #[test]
    fn absorbed_customer_names_its_survivor() {
        let e = event(&with(json!({"status": "DEACTIVATED", "merged_into_customer_id": 3903})));
        assert_eq!(e.merged_into.unwrap().id, "treez:partnersandbox3:3903");
        assert_eq!(e.merged_from, vec![]);
        assert_eq!(e.profile.status, Status::Inactive);
    }

    #[test]
    fn self_references_are_dropped_with_warnings() {
        let e = event(&with(json!({
            "merged_into_customer_id": "3904",
            "merged_customer_ids": [3904, 3905],
        })));
        assert_eq!(e.merged_into, None);
        assert_eq!(ids(&e.merged_from), ["treez:partnersandbox3:3905"]);
        assert_eq!(warned(&e), ["mergedInto", "mergedFrom"]);
    }

    #[test]
    fn last_visit_is_an_attribute_unless_never() {
        let e = event(&with(json!({"last_visit_date": "2026-04-20 10:00:00.000"})));
        assert_eq!(e.profile.attributes["lastVisitAt"], json!("2026-04-20T17:00:00.000Z"));
        assert!(!e.profile.attributes.contains_key("last_visit_date"));
        let e = event(&fixture());
        assert!(!e.profile.attributes.contains_key("lastVisitAt"));
        let e = event(&with(json!({"last_visit_date": "a while ago"})));
        assert!(!e.profile.attributes.contains_key("lastVisitAt"));
        assert_eq!(warned(&e), ["attributes.lastVisitAt"]);
    }

    #[test]
    fn fields_are_normalized() {
        let e = event(&with(json!({
            "email": "  Jules@Example.COM ",
            "phone": "(914) 555-1212",
            "opt_out": false,
            "nickname": " Jay ",
            "customer_groups": ["VETERAN", "SENIOR", "VETERAN"],
            "addresses": [
                {"type": "home", "street1": "1 Main St", "state": "ny", "zipcode": 10030},
                {"street1": "", "street2": null, "city": "N/A", "primary": true}
            ],
        })));
        let p = &e.profile;
        assert_eq!(p.email.as_deref(), Some("jules@example.com"));
        assert_eq!(p.nickname.as_deref(), Some("Jay"));
        assert_eq!(p.opt_out, Some(false));
        assert_eq!(p.groups, ["SENIOR", "VETERAN"]);
        assert_eq!(p.phones.len(), 1);
        assert_eq!(
            (
                p.phones[0].kind.as_str(),
                p.phones[0].e164.as_deref(),
                p.phones[0].raw.as_str()
            ),
            ("primary", Some("+19145551212"), "(914) 555-1212")
        );
        assert_eq!(p.addresses.len(), 1, "the empty address is dropped");
        let a = &p.addresses[0];
        assert_eq!(a.kind, "home");
        assert_eq!(a.region_code.as_deref(), Some("US-NY"));
        assert_eq!(a.postal_code.as_deref(), Some("10030"));
        assert!(!a.primary);
    }

    #[test]
    fn unreadable_fields_are_null_with_warnings() {
        let e = event(&with(json!({
            "opt_out": "yes",
            "birthday": "2023-02-30",
            "first_name": {"given": "Jules"},
            "addresses": [7, {"type": "home", "state": "ZZ", "city": "INGLEWOOD"}],
            "customer_groups": "SENIOR",
        })));
        let p = &e.profile;
        assert_eq!(
            (p.opt_out, p.birth_date.as_deref(), p.first_name.as_deref()),
            (None, None, None)
        );
        assert_eq!(p.addresses.len(), 1);
        assert_eq!(p.addresses[0].region_code, None);
        assert_eq!(p.groups, Vec::<String>::new());
        assert_eq!(
            warned(&e),
            [
                "addresses[0]",
                "addresses[1].regionCode",
                "firstName",
                "birthDate",
                "groups",
                "optOut"
            ]
        );
        assert_eq!(e.customer.id, "treez:partnersandbox3:3904");
    }
    // Hostile bodies: `map` never panics, and what it maps keeps the
    // canonical invariants (the shared strategies and checks are in
    // `testing.rs`). Each
    // property runs proptest's default 256 cases (`PROPTEST_CASES` for a
    // longer run), with XorShift: ChaCha dominates the time in debug builds.

    /// Strings hostile to this platform's fields, besides `testing`'s own.
    const HOSTILE: &[&str] = &["PRODUCT", "DEACTIVATED", "MERGED", "3904"];

    /// [`testing::check_mapping`], with what is treez's own.
    fn check(body: &Value, source: &SourceSettings, planted: &Value) -> Result<(), TestCaseError> {
        testing::check_mapping(&Treez, body, source, planted, |event| {
            let c = &event.customer;
            let account = c.account.as_deref().unwrap_or_default();
            prop_assert!(!account.is_empty() && account == account.trim());
            let prefix = format!("{}:{account}:", source.name);
            prop_assert_eq!(&c.id, &format!("{prefix}{}", c.external_id));
            prop_assert!(event.order_at.is_some() && event.sent_at.is_none());
            testing::check_links(event, &prefix)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]

        #[test]
        fn map_never_panics_on_any_json(body in arb_json(HOSTILE), source in testing::arb_settings("treez", Some("acme"))) {
            check(&body, &source, &body)?;
        }

        #[test]
        fn map_never_panics_on_any_customer_data(
            data in prop::collection::btree_map(prop::sample::select(MAPPED), arb_json(HOSTILE), 0..MAPPED.len()),
            updated in prop_oneof![arb_json(HOSTILE), Just(json!("2026-04-24 11:38:21.000"))],
            account in prop_oneof![arb_json(HOSTILE), Just(json!("partnersandbox3"))],
            source in testing::arb_settings("treez", Some("acme")),
        ) {
            let mut data: serde_json::Map<String, Value> = data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            data.entry("last_update").or_insert(updated);
            let body = json!({"event_type": "CUSTOMER", "dispensary_short_name": account, "data": data});
            check(&body, &source, &body)?;
        }

        /// Real bodies with one or two fields replaced reach deeper into
        /// the mapping than random ones.
        #[test]
        fn map_keeps_its_invariants_when_seed_fields_are_replaced(
            edits in prop::collection::vec((any::<prop::sample::Index>(), arb_json(HOSTILE)), 1..=2),
            source in testing::arb_settings("treez", Some("acme")),
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
