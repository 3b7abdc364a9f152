//! The shapes of what Clientele sends and answers, as snapshots (`insta`,
//! files in `snapshots/`): the outbound envelope of each action (SPEC §6),
//! and the API's answers for a customer, a kept event and an error (SPEC
//! §3–5). Ids and times, which differ from run to run, are redacted; every
//! other field, its name, type and place, is fixed by the snapshot, on both
//! stores. A change of shape fails here and shows as a diff: accept it with
//! `cargo insta review` (or `INSTA_UPDATE=always cargo test --test it
//! shapes::`) only when the contract changed on purpose.

use crate::util;

use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{Received, TestApp, TestReceiver, treez, with};

const T1: &str = "2026-04-01T00:00:00Z";
const T2: &str = "2026-05-01T00:00:00Z";

/// A Treez snapshot of `id` in dispensary `shape` named `first`.
fn person(id: &str, first: &str, last_update: &str) -> Value {
    with(treez("shape", id, last_update), "/data/first_name", json!(first))
}

async fn accept(app: &TestApp, body: &Value) -> Value {
    let (status, answer) = app.deliver_json("treez", body).await;
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    answer
}

/// The envelope of `customer`'s `action` among what was received.
fn envelope(received: &[Received], customer: &str, action: &str) -> Value {
    received
        .iter()
        .find(|r| r.customer() == customer && r.action() == action)
        .unwrap_or_else(|| panic!("{customer} {action} in {:#?}", util::summary(received)))
        .body
        .clone()
}

#[tokio::test]
async fn the_envelope_of_each_action_keeps_its_shape() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    app.subscribe_url(&receiver.url()).await;

    accept(&app, &person("1", "Jules", T1)).await;
    accept(&app, &person("1", "Julius", T2)).await;
    accept(&app, &person("2", "Sam", T1)).await;
    let survivor = with(person("2", "Sam", T2), "/data/status", json!("MERGED"));
    accept(&app, &with(survivor, "/data/merged_customer_ids", json!(["1"]))).await;
    accept(&app, &person("3", "Vincent", T1)).await;
    let (status, _) = app.delete("/api/v1/customers/treez:shape:3").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.wait_drained().await;
    let received = receiver.received();

    for (name, customer, action) in [
        ("envelope_created", "treez:shape:1", "created"),
        ("envelope_updated", "treez:shape:1", "updated"),
        ("envelope_merged", "treez:shape:1", "merged"),
        ("envelope_deleted", "treez:shape:3", "deleted"),
    ] {
        insta::assert_json_snapshot!(name, envelope(&received, customer, action), {
            ".id" => "[event id]",
            ".createdDate" => "[time]",
            ".payload.changedAt" => "[time]",
        });
    }
}

#[tokio::test]
async fn the_answers_for_a_customer_an_event_and_an_error_keep_their_shape() {
    let app = TestApp::spawn().await;
    let answer = accept(&app, &person("1", "Jules", T1)).await;
    insta::assert_json_snapshot!("ingest_accepted", answer, {
        ".eventId" => "[event id]",
    });

    insta::assert_json_snapshot!("customer", app.customer("treez:shape:1").await, {
        ".changedAt" => "[time]",
    });

    let event_id = answer["eventId"].as_str().expect("an event id");
    insta::assert_json_snapshot!("event", app.event(event_id).await, {
        ".eventId" => "[event id]",
        ".receivedAt" => "[time]",
    });

    let (status, missing) = app.get("/api/v1/customers/treez:shape:404").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("error_not_found", missing);
    let (status, refused) = app.deliver("treez", "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!("error_bad_request", refused);
}
