//! The platforms' own documented examples, end to end over HTTP.

use crate::util;

use reqwest::StatusCode;
use serde_json::json;
use util::{TREEZ_EXAMPLE, TestApp, VAGARO_EXAMPLE};

#[tokio::test]
async fn the_treez_example_becomes_the_spec_customer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", TREEZ_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["outcome"], "applied");
    assert_eq!(body["customerId"], "treez:partnersandbox3:3904");

    let c = app.customer("treez:partnersandbox3:3904").await;
    let expected = json!({
        "id": "treez:partnersandbox3:3904", "source": "treez", "externalId": "3904",
        "account": "partnersandbox3", "status": "active", "platformStatus": "ACTIVE",
        "firstName": "Jules", "middleName": null, "lastName": "Winnfield", "nickname": null,
        "email": null, "phones": [], "birthDate": "1948-02-12",
        "addresses": [{"kind": "address_of_record", "street1": "2515 SHEPHERD WAY", "street2": null,
                       "city": "INGLEWOOD", "regionCode": "US-CA", "regionName": null,
                       "postalCode": "90301", "countryCode": "US", "countryName": null, "primary": true}],
        "businessIds": [], "groups": ["SENIOR"], "optOut": true,
        "createdAt": "2026-04-24T18:38:21.000Z", "updatedAt": "2026-04-24T18:38:21.000Z",
        "mergedInto": null, "mergedFrom": [], "version": 1,
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&c[field], value, "{field}");
    }
    assert_eq!(c["attributes"]["verification_status"], "VERIFICATION_PENDING");
    assert_eq!(c["attributes"]["patient_type"], "ADULT");
    // "N/A", "" and the never-visited placeholder leave no attribute behind.
    for absent in [
        "state_medical_id",
        "caregiver_license_number",
        "lastVisitAt",
        "last_visit_date",
        "notes",
    ] {
        assert!(c["attributes"].get(absent).is_none(), "{absent}");
    }
}

#[tokio::test]
async fn the_vagaro_example_becomes_a_customer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("vagaro", VAGARO_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = "vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1";
    assert_eq!(body["customerId"], id);
    let c = app.customer(id).await;
    assert_eq!(c["account"], "tYKEZF-L445YEDnCx0TIfA==");
    assert_eq!(c["status"], "active");
    assert_eq!(c["platformStatus"], json!(null));
    assert_eq!(c["optOut"], json!(null));
    assert_eq!(c["firstName"], "Johnny");
    assert_eq!(
        c["phones"],
        json!([{"kind": "mobile", "e164": "+19145551212", "raw": "9145551212"}])
    );
    assert_eq!(c["addresses"][0]["regionCode"], "US-NY");
    assert_eq!(c["addresses"][0]["kind"], "primary");
    assert_eq!(c["addresses"][0]["primary"], true);
    assert_eq!(
        c["businessIds"],
        json!(["U2FsdGVkX18zRbwyUxRZaHNTYGwjKCpDdAkKP4eUDsE="])
    );
    assert_eq!(c["createdAt"], "2023-07-10T08:50:00.000Z");
    assert_eq!(c["updatedAt"], "2023-08-10T08:50:00.000Z");
}

#[tokio::test]
async fn a_retried_delivery_is_a_duplicate_that_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, first) = app.deliver("treez", TREEZ_EXAMPLE).await;
    // Same JSON value, other key order and whitespace: Treez has no event id.
    let reordered: serde_json::Value = serde_json::from_str(TREEZ_EXAMPLE).unwrap();
    let (status, again) = app
        .deliver("treez", &serde_json::to_string_pretty(&reordered).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"status": "duplicate", "eventId": first["eventId"]}));
    let (_, event) = app
        .get(&format!("/api/v1/events/{}", first["eventId"].as_str().unwrap()))
        .await;
    assert_eq!(event["duplicates"], 1);
    assert_eq!(app.customer("treez:partnersandbox3:3904").await["version"], 1);
    let (_, history) = app.get("/api/v1/customers/treez:partnersandbox3:3904/events").await;
    assert_eq!(history["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_restart_keeps_the_directory_and_the_dedupe_memory() {
    let app = TestApp::spawn().await;
    let (_, first) = app.deliver("vagaro", VAGARO_EXAMPLE).await;
    let before = app.customer("vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1").await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.customer("vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1").await, before);
    let (status, again) = app.deliver("vagaro", VAGARO_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"status": "duplicate", "eventId": first["eventId"]}));
    app.stop().await;
    drop(temp);
}
