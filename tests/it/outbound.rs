//! Outbound webhooks (SPEC §6, §8 "Outbound"): subscriptions, the signed
//! envelope subscribers get for every real change of the directory, and
//! delivery: retries on the schedule, timeouts, `Retry-After`, `410 Gone`,
//! dead messages and manual retries, per-customer order, replay, restarts,
//! and metrics.
//!
//! A [`TestReceiver`] plays the subscriber; signatures are checked with the
//! `standardwebhooks` crate, independently of Clientele's signing code. Tests
//! wait for requests or poll the message API (with a safety deadline that
//! only guards against hangs); the only timing they assert is lower bounds.

use crate::util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clientele::model::UtcMillis;
use clientele::outbound::Message;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use util::{
    Behaviour, Down, Received, Setup, TestApp, TestReceiver, assert_signed, error_code, summary, treez, vagaro, with,
};

const T1: &str = "2026-04-01T00:00:00Z";
const T2: &str = "2026-05-01T00:00:00Z";
const T3: &str = "2026-06-01T00:00:00Z";

/// Retries after the waits of `schedule`, each attempt given `timeout`.
fn delivery(schedule: &[&str], timeout: &str) -> Setup {
    TestApp::builder().delivery_schedule(schedule).delivery_timeout(timeout)
}

/// Three quick retries, so that a message is dead after four attempts.
fn quick() -> Setup {
    delivery(&["10ms", "10ms", "10ms"], "2s")
}

/// A Treez snapshot of `id` in dispensary `account` named `first`.
fn person(account: &str, id: &str, first: &str, last_update: &str) -> Value {
    with(treez(account, id, last_update), "/data/first_name", json!(first))
}

/// Treez's survivor side of a merge: `id` absorbed `absorbed`.
fn survivor(account: &str, id: &str, absorbed: &[&str], last_update: &str) -> Value {
    let body = with(person(account, id, "Sam", last_update), "/data/status", json!("MERGED"));
    with(body, "/data/merged_customer_ids", json!(absorbed))
}

/// A Vagaro customer `C1` snapshot as envelope `event`, modified at
/// `modified`, in businesses `businesses`.
fn vagaro_customer(event: &str, modified: &str, last_name: &str, businesses: &[&str]) -> Value {
    let body = with(vagaro(event, "C1", modified), "/payload/businessIds", json!(businesses));
    with(body, "/payload/customerLastName", json!(last_name))
}

/// Delivers and expects `200 accepted`; returns the answer.
async fn accept(app: &TestApp, source: &str, body: &Value) -> Value {
    let (status, answer) = app.deliver_json(source, body).await;
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer
}

/// A record without `changedAt`, which an outbound payload need not carry.
fn comparable(record: &Value) -> Value {
    let mut record = record.clone();
    record.as_object_mut().expect("a record").remove("changedAt");
    record
}

/// The status codes of a message's attempts.
fn attempt_codes(message: &Value) -> Vec<Value> {
    message["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("attempts: {message}"))
        .iter()
        .map(|a| a["statusCode"].clone())
        .collect()
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an RFC 3339 time: {value}"))
}

// Subscriptions.

#[tokio::test]
async fn subscriptions_are_created_listed_fetched_disabled_and_deleted() {
    let app = TestApp::spawn().await;
    let created = app.subscribe(json!({"url": "https://example.com/hooks"})).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("sub_"), "{created}");
    assert_eq!(created["url"], "https://example.com/hooks");
    let secret = created["secret"].as_str().expect("a secret");
    assert!(secret.starts_with("whsec_"), "{created}");
    let key = BASE64.decode(&secret["whsec_".len()..]).expect("whsec_ + base64");
    assert!(
        key.len() >= 24,
        "a generated key has at least 24 bytes (SPEC §16): {secret}"
    );
    let every_action = json!(["created", "updated", "merged", "deleted"]);
    assert!(
        created["actions"] == json!([]) || created["actions"] == every_action,
        "absent actions: all: {created}"
    );
    assert!(created["sources"].is_array(), "{created}");
    assert_eq!(created["enabled"], true);
    timestamp(&created["createdAt"]);
    let other = app.subscribe(json!({"url": "http://example.com/other"})).await;
    assert_ne!(
        other["secret"], created["secret"],
        "each subscription gets its own secret"
    );

    // The secret is shown once, at creation.
    let mut shown = created.clone();
    shown.as_object_mut().unwrap().remove("secret");
    let (status, one) = app.get(&format!("/api/v1/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one, shown);
    let (status, list) = app.get("/api/v1/subscriptions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list["data"].as_array().expect("a data array");
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed.contains(&shown), "{list}");
    assert!(listed.iter().all(|s| s.get("secret").is_none()), "{list}");

    let disabled = app.set_enabled(&id, false).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["id"], id);
    assert!(disabled.get("secret").is_none(), "{disabled}");
    assert_eq!(
        app.get(&format!("/api/v1/subscriptions/{id}")).await.1["enabled"],
        false
    );
    assert_eq!(app.set_enabled(&id, true).await["enabled"], true);

    let (status, body) = app.delete(&format!("/api/v1/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get(&format!("/api/v1/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    error_code(&body);
    let (_, list) = app.get("/api/v1/subscriptions").await;
    assert_eq!(util::ids(&list["data"]), [other["id"].as_str().unwrap()]);
    let (status, _) = app.delete(&format!("/api/v1/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/subscriptions/{id}"),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_subscription_keeps_the_actions_and_sources_it_was_given() {
    let app = TestApp::spawn().await;
    let created = app
        .subscribe(json!({"url": "http://example.com/h", "actions": ["updated", "merged"], "sources": ["treez"]}))
        .await;
    assert_eq!(created["actions"], json!(["updated", "merged"]));
    assert_eq!(created["sources"], json!(["treez"]));
    let (_, fetched) = app
        .get(&format!("/api/v1/subscriptions/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(fetched["actions"], json!(["updated", "merged"]));
    assert_eq!(fetched["sources"], json!(["treez"]));
}

#[tokio::test]
async fn a_secret_of_fewer_than_24_bytes_of_key_is_refused_naming_the_field_and_the_rule() {
    let app = TestApp::spawn().await;
    let url = "https://example.com/h";
    for short in [
        "x".to_owned(),
        "whsec_eA==".to_owned(),
        "k".repeat(23),
        format!("whsec_{}", BASE64.encode([7; 23])),
    ] {
        let request = json!({"url": url, "secret": short});
        let (status, body) = app.admin_json(Method::POST, "/api/v1/subscriptions", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{short}: {body}");
        assert_eq!(error_code(&body), "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("secret") && message.contains("24 bytes"),
            "{message}"
        );
    }
    let (_, list) = app.get("/api/v1/subscriptions").await;
    assert_eq!(list["data"], json!([]), "nothing was created");
    for enough in ["k".repeat(24), format!("whsec_{}", BASE64.encode([7; 24]))] {
        let created = app.subscribe(json!({"url": url, "secret": enough})).await;
        assert_eq!(created["secret"], enough);
    }
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_with_400() {
    let app = TestApp::spawn().await;
    for request in [
        json!({"url": "ftp://example.com/hooks"}),
        json!({"url": "not a url"}),
        json!({"url": "https://example.com/h", "actions": ["exploded"]}),
        json!({"url": "https://example.com/h", "sources": ["shopify"]}),
    ] {
        let (status, body) = app.admin_json(Method::POST, "/api/v1/subscriptions", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        error_code(&body);
    }
    let (_, list) = app.get("/api/v1/subscriptions").await;
    assert_eq!(list["data"], json!([]), "nothing was created");

    let anonymous = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .json(&json!({"url": "https://example.com/h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/api/v1/subscriptions/sub_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// What subscribers get.

#[tokio::test]
async fn a_subscriber_gets_created_then_updated_signed_with_the_whole_customer_and_its_changes() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (sub, secret) = app.subscribe_url(&receiver.url()).await;

    accept(
        &app,
        "vagaro",
        &vagaro_customer("o-1", "2023-08-10T08:50:00Z", "Smith", &["123", "456"]),
    )
    .await;
    let first = receiver.wait_for(1).await.remove(0);
    let record_v1 = app.customer("vagaro:C1").await;
    accept(
        &app,
        "vagaro",
        &vagaro_customer("o-2", "2023-08-11T08:50:00Z", "Smyth", &["789", "123"]),
    )
    .await;
    let received = receiver.wait_for(2).await;
    assert_eq!(received.len(), 2, "{:#?}", summary(&received));
    let second = &received[1];
    let record_v2 = app.customer("vagaro:C1").await;

    for request in [&first, second] {
        assert_signed(&secret, request);
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(
            request.webhook_id(),
            request.body["id"],
            "webhook-id is the envelope id"
        );
        assert!(request.webhook_id().starts_with("evt_"), "{}", request.webhook_id());
        let sent_at: i64 = request.header("webhook-timestamp").parse().unwrap();
        let now = jiff::Timestamp::now().as_second();
        assert!(
            (now - sent_at).abs() < 300,
            "webhook-timestamp {sent_at} is now ({now})"
        );
        assert_eq!(request.body["type"], "customer");
        assert!(request.body["createdDate"].as_str().unwrap_or_default().ends_with('Z'));
        timestamp(&request.body["createdDate"]);
        assert!(request.body["changes"].is_object(), "{}", request.body);
    }
    assert_ne!(first.webhook_id(), second.webhook_id());

    assert_eq!(first.action(), "created");
    assert_eq!(
        comparable(&first.body["payload"]),
        comparable(&record_v1),
        "the whole customer, v1"
    );
    assert_eq!(first.version(), 1);
    assert_eq!(
        first.body["changes"],
        json!({}),
        "a creation's payload is the whole news: its fields are not repeated as changes"
    );
    assert_eq!(second.action(), "updated");
    assert_eq!(
        comparable(&second.body["payload"]),
        comparable(&record_v2),
        "the whole customer, v2"
    );
    assert_eq!(second.version(), 2);
    assert_eq!(
        second.body["changes"],
        json!({
            "lastName": {"from": "Smith", "to": "Smyth"},
            "businessIds": {"added": ["789"], "removed": ["456"]},
            "updatedAt": {"from": "2023-08-10T08:50:00.000Z", "to": "2023-08-11T08:50:00.000Z"},
        })
    );
    let history = app.history("vagaro:C1").await;
    assert_eq!(second.body["changes"], history[1]["changes"], "the history's changes");

    let messages = app.wait_all(&sub, 2, "delivered").await;
    for (message, request) in messages.iter().zip([&first, second]) {
        assert!(
            message["id"].as_str().unwrap_or_default().starts_with("msg_"),
            "{message}"
        );
        assert_eq!(message["eventId"], request.webhook_id());
        assert_eq!(message["subscriptionId"], sub);
        assert_eq!(message["customerId"], "vagaro:C1");
        assert_eq!(message["version"], request.version());
        assert_eq!(message["action"], request.action());
        assert_eq!(message["nextAttemptAt"], Value::Null);
        assert_eq!(attempt_codes(message), [json!(200)]);
        let attempt = &message["attempts"][0];
        timestamp(&attempt["at"]);
        assert_eq!(attempt["error"], Value::Null, "{message}");
        assert!(attempt["durationMs"].is_number(), "{message}");
    }
    assert_eq!(app.messages(&sub, Some("delivered")).await, messages);
    assert_eq!(app.messages(&sub, Some("pending")).await, Vec::<Value>::new());
    assert_eq!(app.messages(&sub, Some("dead")).await, Vec::<Value>::new());
}

#[tokio::test]
async fn every_subscriber_gets_the_same_event_id_signed_with_its_own_secret() {
    let app = TestApp::spawn().await;
    let (one, two) = (TestReceiver::healthy().await, TestReceiver::healthy().await);
    let raw_secret = "a raw secret, not base64!";
    let created = app.subscribe(json!({"url": one.url(), "secret": raw_secret})).await;
    assert_eq!(created["secret"], raw_secret, "a given secret is kept as given");
    let given = format!("whsec_{}", BASE64.encode(b"twenty-four key bytes..."));
    let created = app.subscribe(json!({"url": two.url(), "secret": given})).await;
    assert_eq!(created["secret"], given, "a given secret is kept as given");

    accept(&app, "treez", &person("se", "1", "Jules", T1)).await;
    let (a, b) = (one.wait_for(1).await.remove(0), two.wait_for(1).await.remove(0));
    assert_eq!(a.webhook_id(), b.webhook_id());
    assert_eq!(a.body, b.body);
    // Without the prefix, the secret's own bytes are the key.
    assert_signed(raw_secret, &a);
    assert_signed(&given, &b);
}

#[tokio::test]
async fn duplicate_stale_and_unchanged_deliveries_send_nothing() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;

    let first = person("dup", "1", "Jules", T2);
    assert_eq!(accept(&app, "treez", &first).await["outcome"], "applied");
    let (_, again) = app.deliver_json("treez", &first).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    let older = person("dup", "1", "Julius", T1);
    assert_eq!(accept(&app, "treez", &older).await["outcome"], "stale");
    let vagaro_first = vagaro("u-1", "U1", "2023-08-10T08:50:00Z");
    accept(&app, "vagaro", &vagaro_first).await;
    let same_later = with(
        with(vagaro_first, "/id", json!("u-2")),
        "/createdDate",
        json!("2024-03-17T00:00:00Z"),
    );
    assert_eq!(accept(&app, "vagaro", &same_later).await["outcome"], "unchanged");
    // Once the outbox is drained, anything they queued would have been sent.
    app.wait_drained().await;
    let mut seen: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| (r.customer().to_owned(), r.version()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("treez:dup:1".to_owned(), 1), ("vagaro:U1".to_owned(), 1)]);
    // A real change after them is sent.
    accept(&app, "treez", &person("dup", "1", "Jim", T3)).await;
    app.wait_drained().await;
    let kept: Vec<_> = app
        .messages(&sub, None)
        .await
        .iter()
        .map(|m| (m["customerId"].clone(), m["version"].clone(), m["action"].clone()))
        .collect();
    assert_eq!(
        kept,
        [
            (json!("treez:dup:1"), json!(1), json!("created")),
            (json!("vagaro:U1"), json!(1), json!("created")),
            (json!("treez:dup:1"), json!(2), json!("updated")),
        ]
    );
}

#[tokio::test]
async fn subscriptions_filter_by_action_and_by_source() {
    let app = TestApp::spawn().await;
    let (all, updates, treez_only) = (
        TestReceiver::healthy().await,
        TestReceiver::healthy().await,
        TestReceiver::healthy().await,
    );
    let (all_sub, all_secret) = app.subscribe_url(&all.url()).await;
    let updates_sub = app
        .subscribe(json!({"url": updates.url(), "actions": ["updated"]}))
        .await;
    let treez_sub = app
        .subscribe(json!({"url": treez_only.url(), "sources": ["treez"]}))
        .await;

    accept(&app, "vagaro", &vagaro("f-1", "F1", "2023-08-10T08:50:00Z")).await;
    accept(&app, "vagaro", &vagaro("f-2", "F1", "2023-08-11T08:50:00Z")).await;
    accept(&app, "treez", &person("flt", "1", "Jules", T1)).await;
    accept(&app, "treez", &person("flt", "1", "Jim", T2)).await;

    let what = |r: &[Received]| -> Vec<(String, String)> {
        r.iter()
            .map(|r| (r.customer().to_owned(), r.action().to_owned()))
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter().map(|(c, a)| (c.to_string(), a.to_string())).collect()
    };
    let mut to_all = what(&all.wait_for(4).await);
    to_all.sort();
    assert_eq!(
        to_all,
        pairs(&[
            ("treez:flt:1", "created"),
            ("treez:flt:1", "updated"),
            ("vagaro:F1", "created"),
            ("vagaro:F1", "updated")
        ])
    );
    let mut to_updates = what(&updates.wait_for(2).await);
    to_updates.sort();
    assert_eq!(
        to_updates,
        pairs(&[("treez:flt:1", "updated"), ("vagaro:F1", "updated")])
    );
    assert_eq!(
        what(&treez_only.wait_for(2).await),
        pairs(&[("treez:flt:1", "created"), ("treez:flt:1", "updated")])
    );
    // The outbox holds nothing else for the filtered subscriptions.
    let count = |s: &Value| s["id"].as_str().unwrap().to_owned();
    assert_eq!(app.messages(&count(&updates_sub), None).await.len(), 2);
    assert_eq!(app.messages(&count(&treez_sub), None).await.len(), 2);
    assert_eq!(app.messages(&all_sub, None).await.len(), 4);

    // One change, two subscribers: one event id, each signed with its own
    // secret.
    let vagaro_update = |r: &[Received]| {
        r.iter()
            .find(|r| r.customer() == "vagaro:F1" && r.action() == "updated")
            .cloned()
            .unwrap()
    };
    let (a, b) = (vagaro_update(&all.received()), vagaro_update(&updates.received()));
    assert_eq!(a.webhook_id(), b.webhook_id());
    assert_signed(&all_secret, &a);
    assert_signed(updates_sub["secret"].as_str().unwrap(), &b);
}

#[tokio::test]
async fn merges_send_one_created_for_a_stub_and_merged_for_an_absorbed_record() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    let (s, l, stub) = ("treez:mg:s", "treez:mg:l", "treez:mg:stub");

    accept(&app, "treez", &person("mg", "l", "Lee", T1)).await;
    accept(&app, "treez", &person("mg", "s", "Sam", T1)).await;
    accept(&app, "treez", &survivor("mg", "s", &["l", "stub"], T2)).await;

    app.wait_drained().await;
    let messages = app.messages(&sub, None).await;
    let mut actions: BTreeMap<String, Vec<(Value, Value)>> = BTreeMap::new();
    for m in &messages {
        actions
            .entry(m["customerId"].as_str().unwrap().to_owned())
            .or_default()
            .push((m["action"].clone(), m["version"].clone()));
    }
    assert_eq!(actions[l], [(json!("created"), json!(1)), (json!("merged"), json!(2))]);
    assert_eq!(actions[s], [(json!("created"), json!(1)), (json!("updated"), json!(2))]);
    assert_eq!(
        actions[stub],
        [(json!("created"), json!(1))],
        "one message for a stub, not two"
    );
    assert_eq!(actions.len(), 3);

    let received = receiver.received();
    assert_eq!(received.len(), 5, "{:#?}", summary(&received));
    let find = |id: &str, action: &str| {
        received
            .iter()
            .find(|r| r.customer() == id && r.action() == action)
            .unwrap_or_else(|| panic!("{id} {action} in {:#?}", summary(&received)))
    };
    let stub_created = find(stub, "created");
    assert_eq!(stub_created.body["payload"]["status"], "merged");
    assert_eq!(stub_created.body["payload"]["mergedInto"], s);
    assert_eq!(
        comparable(&stub_created.body["payload"]),
        comparable(&app.customer(stub).await)
    );
    let merged = find(l, "merged");
    assert_eq!(merged.body["payload"]["status"], "merged");
    assert_eq!(merged.body["payload"]["mergedInto"], s);
    assert_eq!(merged.body["changes"]["mergedInto"], json!({"from": null, "to": s}));
    let survivor_updated = find(s, "updated");
    assert_eq!(survivor_updated.body["payload"]["mergedFrom"], json!([l, stub]));
    assert_eq!(
        survivor_updated.body["changes"]["mergedFrom"],
        json!({"added": [l, stub], "removed": []})
    );
}

// Retries.

#[tokio::test]
async fn a_flaky_subscriber_gets_the_same_webhook_id_until_it_answers_2xx() {
    let app = quick().spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailFirst { times: 2, status: 500 }).await;
    let (sub, secret) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("fl", "1", "Jules", T1)).await;

    let received = receiver.wait_for(3).await;
    let id = received[0].webhook_id();
    for request in &received {
        assert_eq!(request.webhook_id(), id, "{:#?}", summary(&received));
        assert_eq!(request.body["id"], id);
        assert_signed(&secret, request);
    }
    let messages = app.wait_all(&sub, 1, "delivered").await;
    assert_eq!(attempt_codes(&messages[0]), [json!(500), json!(500), json!(200)]);
    assert_eq!(messages[0]["eventId"], id);
    assert_eq!(messages[0]["nextAttemptAt"], Value::Null);
    assert_eq!(receiver.received().len(), 3, "nothing after the success");
}

#[tokio::test]
async fn a_slow_subscriber_times_out_and_is_retried() {
    let app = delivery(&["10ms", "10ms"], "300ms").spawn().await;
    let receiver = TestReceiver::start(Behaviour::SlowFirst {
        times: 1,
        delay: Duration::from_secs(3),
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("slow", "1", "Jules", T1)).await;

    let received = receiver.wait_for(2).await;
    assert_eq!(received[0].webhook_id(), received[1].webhook_id());
    let messages = app.wait_all(&sub, 1, "delivered").await;
    let attempts = messages[0]["attempts"].as_array().unwrap();
    assert_eq!(
        attempt_codes(&messages[0]),
        [Value::Null, json!(200)],
        "{}",
        messages[0]
    );
    let error = attempts[0]["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        ["time", "300ms", "0.3s"].iter().any(|w| error.contains(w)),
        "an error that names the timeout: {}",
        attempts[0]
    );
    assert!(
        attempts[0]["durationMs"].as_f64().unwrap_or_default() >= 299.0,
        "the attempt waited the timeout: {}",
        attempts[0]
    );
    assert_eq!(attempts[1]["error"], Value::Null);
}

#[tokio::test]
async fn a_down_subscriber_s_message_is_dead_after_the_last_retry() {
    let app = delivery(&["10ms", "10ms"], "2s").spawn().await;
    let down = Down::new();
    let (sub, _) = app.subscribe_url(down.url()).await;
    accept(&app, "treez", &person("down", "1", "Jules", T1)).await;

    let messages = app.wait_all(&sub, 1, "dead").await;
    let message = &messages[0];
    assert_eq!(
        attempt_codes(message),
        [Value::Null, Value::Null, Value::Null],
        "{message}"
    );
    for attempt in message["attempts"].as_array().unwrap() {
        assert!(
            !attempt["error"].as_str().unwrap_or_default().is_empty(),
            "a network error is named: {attempt}"
        );
    }
    assert_eq!(message["nextAttemptAt"], Value::Null);
    assert_eq!(app.messages(&sub, Some("dead")).await, messages);
    assert_eq!(app.messages(&sub, Some("pending")).await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_dead_message_is_sent_again_by_a_manual_retry() {
    let app = quick().spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailFirst { times: 4, status: 500 }).await;
    let (sub, secret) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("mr", "1", "Jules", T1)).await;

    let dead = app.wait_all(&sub, 1, "dead").await.remove(0);
    assert_eq!(attempt_codes(&dead), vec![json!(500); 4], "first try and three retries");
    assert_eq!(receiver.received().len(), 4);

    let (status, body) = app
        .post_admin(&format!("/api/v1/messages/{}/retry", dead["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"status": "pending"}));
    let received = receiver.wait_for(5).await;
    assert_signed(&secret, &received[4]);
    assert!(
        received.iter().all(|r| r.webhook_id() == dead["eventId"]),
        "{:#?}",
        summary(&received)
    );
    let delivered = app.wait_all(&sub, 1, "delivered").await.remove(0);
    assert_eq!(delivered["id"], dead["id"]);
    assert_eq!(attempt_codes(&delivered).last(), Some(&json!(200)));
    assert_eq!(attempt_codes(&delivered).len(), 5);

    // A delivered message can be sent again too.
    let (status, _) = app
        .post_admin(&format!("/api/v1/messages/{}/retry", dead["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(receiver.wait_for(6).await[5].webhook_id(), dead["eventId"]);
    let (status, _) = app.post_admin("/api/v1/messages/msg_nope/retry").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_retry_while_the_message_is_being_sent_sends_it_again() {
    // The first send is still waiting for its answer when the retry is
    // asked for: the retry must not be lost when that send is recorded.
    let app = delivery(&["10ms"], "1s").spawn().await;
    let receiver = TestReceiver::start(Behaviour::SlowFirst {
        times: 1,
        delay: Duration::from_millis(500),
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("rif", "1", "Jules", T1)).await;
    let first = receiver.wait_for(1).await.remove(0);
    let message = app.messages(&sub, None).await.remove(0);

    let (status, body) = app
        .post_admin(&format!("/api/v1/messages/{}/retry", message["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_messages(&sub, "two attempts, delivered", |m| {
        m[0]["status"] == "delivered" && attempt_codes(&m[0]).len() == 2
    })
    .await;
    let received = receiver.wait_for(2).await;
    assert_eq!(received[1].webhook_id(), first.webhook_id());
}

#[tokio::test]
async fn retry_after_on_429_and_503_is_waited_for() {
    let app = delivery(&["10ms", "10ms"], "2s").spawn().await;
    let too_many = TestReceiver::start(Behaviour::RetryAfterOnce {
        status: 429,
        seconds: 1,
    })
    .await;
    let unavailable = TestReceiver::start(Behaviour::RetryAfterOnce {
        status: 503,
        seconds: 1,
    })
    .await;
    let (first, _) = app.subscribe_url(&too_many.url()).await;
    let (second, _) = app.subscribe_url(&unavailable.url()).await;
    accept(&app, "treez", &person("ra", "1", "Jules", T1)).await;

    for (receiver, sub) in [(&too_many, &first), (&unavailable, &second)] {
        let received = receiver.wait_for(2).await;
        let waited = received[1].at - received[0].at;
        // The app counts from reading the answer, after our first arrival;
        // 10 ms allow for times rounded to milliseconds in the store.
        assert!(
            waited >= Duration::from_millis(990),
            "the retry waited Retry-After (1 s), not the schedule's 10 ms: {waited:?}"
        );
        assert_eq!(received[0].webhook_id(), received[1].webhook_id());
        let messages = app.wait_all(sub, 1, "delivered").await;
        assert_eq!(attempt_codes(&messages[0]), [json!(received[0].status), json!(200)]);
    }
}

/// How long the next attempt waits after a first one that a subscriber
/// answered `status` with `Retry-After: {retry_after}`, on `schedule`:
/// read from the next attempt's time, not by waiting for it.
async fn wait_after_retry_after(schedule: &str, status: u16, retry_after: u64) -> Duration {
    let app = delivery(&[schedule], "2s").spawn().await;
    let receiver = TestReceiver::start(Behaviour::RetryAfterOnce {
        status,
        seconds: retry_after,
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("lw", "1", "Jules", T1)).await;
    let message = app
        .wait_for_messages(&sub, "a first failed attempt", |m| {
            m.len() == 1 && attempt_codes(&m[0]).len() == 1
        })
        .await
        .remove(0);
    assert_eq!(message["status"], "pending", "{message}");
    assert_eq!(attempt_codes(&message), [json!(status)]);
    timestamp(&message["nextAttemptAt"])
        .duration_since(timestamp(&message["attempts"][0]["at"]))
        .try_into()
        .expect("a wait ahead")
}

#[tokio::test]
async fn the_longer_of_retry_after_and_the_schedule_is_waited() {
    for (schedule, retry_after, at_least) in [("1h", 1, 3600.0), ("10ms", 7200, 7200.0)] {
        let wait = wait_after_retry_after(schedule, 429, retry_after).await.as_secs_f64();
        assert!(
            wait >= at_least - 1.0,
            "schedule {schedule}, Retry-After {retry_after}: the next attempt waits {wait} s"
        );
    }
}

/// A `Retry-After` past what a timestamp holds (about 2.5·10¹¹ s) once
/// panicked the send: the attempt went unrecorded and the message was sent
/// again every lease, forever. It is a failed attempt like any other, and
/// the wait is capped at a day.
#[tokio::test]
async fn a_huge_retry_after_is_recorded_and_waits_a_day_at_most() {
    let wait = wait_after_retry_after("10ms", 503, 10_u64.pow(12)).await;
    assert!(
        wait.as_secs_f64() <= 24.0 * 3600.0 + 1.0,
        "the next attempt waits {wait:?}, more than a day"
    );
}

#[tokio::test]
async fn gone_kills_the_message_and_disables_the_subscription_until_it_is_enabled() {
    // The first try answers 500; while the retry waits, a second change is
    // queued behind it; the retry answers 410.
    let app = delivery(&["500ms", "10ms", "10ms"], "2s").spawn().await;
    let gone = TestReceiver::start(Behaviour::Statuses(vec![500, 410])).await;
    let control = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&gone.url()).await;
    app.subscribe_url(&control.url()).await;

    accept(&app, "treez", &person("gone", "1", "Jules", T1)).await;
    gone.wait_for(1).await;
    accept(&app, "treez", &person("gone", "1", "Jim", T2)).await;
    let messages = app
        .wait_for_messages(&sub, "the first message dead", |m| {
            m.len() == 2 && m[0]["status"] == "dead"
        })
        .await;
    assert_eq!(
        attempt_codes(&messages[0]),
        [json!(500), json!(410)],
        "410 is not retried"
    );
    assert_eq!(messages[1]["status"], "pending", "{}", messages[1]);
    let (_, subscription) = app.get(&format!("/api/v1/subscriptions/{sub}")).await;
    assert_eq!(subscription["enabled"], false, "{subscription}");

    // Another customer's change reaches a healthy subscriber; the disabled
    // one gets nothing meanwhile.
    accept(&app, "treez", &person("gone", "2", "Jo", T1)).await;
    control
        .wait_until("the other customer", |r| {
            r.iter().any(|r| r.customer() == "treez:gone:2")
        })
        .await;
    assert_eq!(gone.received().len(), 2, "{:#?}", summary(&gone.received()));
    let messages = app.messages(&sub, None).await;
    assert_eq!(messages[1]["status"], "pending");
    assert_eq!(attempt_codes(&messages[1]), Vec::<Value>::new(), "v2 was not tried");

    assert_eq!(app.set_enabled(&sub, true).await["enabled"], true);
    let received = gone
        .wait_until("v2 after enabling", |r| {
            r.iter().any(|r| r.customer() == "treez:gone:1" && r.version() == 2)
        })
        .await;
    let versions: Vec<i64> = received
        .iter()
        .filter(|r| r.customer() == "treez:gone:1")
        .map(Received::version)
        .collect();
    assert_eq!(versions, [1, 1, 2], "the dead v1 is not sent again");
    let messages = app
        .wait_for_messages(&sub, "v2 delivered", |m| m.len() >= 2 && m[1]["status"] == "delivered")
        .await;
    assert_eq!(messages[0]["status"], "dead");
}

#[tokio::test]
async fn changes_while_a_subscription_is_disabled_are_sent_once_it_is_enabled() {
    let app = quick().spawn().await;
    let paused = TestReceiver::healthy().await;
    let control = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&paused.url()).await;
    let (control_sub, _) = app.subscribe_url(&control.url()).await;
    app.set_enabled(&sub, false).await;

    accept(&app, "treez", &person("dis", "1", "Jules", T1)).await;
    let sent = control.wait_for(1).await.remove(0);
    assert_eq!(paused.received().len(), 0, "nothing is sent to a disabled subscription");

    // The control's message was fanned out: the disabled subscription's
    // cursor waits where it was disabled.
    app.wait_all(&control_sub, 1, "delivered").await;
    assert_eq!(
        app.messages(&sub, None).await.len(),
        0,
        "the change waits in the outbox"
    );
    app.set_enabled(&sub, true).await;
    app.wait_all(&sub, 1, "delivered").await;
    let received = paused.wait_for(1).await;
    assert_eq!(received[0].webhook_id(), sent.webhook_id());
}

// Order.

#[tokio::test]
async fn a_failing_customer_holds_back_only_its_own_later_messages() {
    let app = delivery(&["100ms"; 20], "2s").spawn().await;
    let (a, b) = ("treez:ord:a", "treez:ord:b");
    let receiver = TestReceiver::start(Behaviour::FailCustomer {
        customer: a.into(),
        times: usize::MAX,
        status: 500,
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;

    accept(&app, "treez", &person("ord", "a", "Ann", T1)).await;
    accept(&app, "treez", &person("ord", "a", "Anne", T2)).await;
    accept(&app, "treez", &person("ord", "b", "Bob", T1)).await;
    // B gets through while A keeps failing.
    receiver
        .wait_until("B delivered while A fails twice", |r| {
            r.iter().any(|r| r.customer() == b && r.succeeded()) && r.iter().filter(|r| r.customer() == a).count() >= 2
        })
        .await;
    receiver.set(Behaviour::Healthy);
    let received = receiver
        .wait_until("A v2 delivered", |r| {
            r.iter().any(|r| r.customer() == a && r.version() == 2 && r.succeeded())
        })
        .await;

    let for_a: Vec<&Received> = received.iter().filter(|r| r.customer() == a).collect();
    let first_success = for_a.iter().position(|r| r.succeeded()).unwrap();
    assert!(
        for_a[..=first_success].iter().all(|r| r.version() == 1),
        "A v2 is not sent before A v1 is delivered: {:#?}",
        summary(&received)
    );
    assert!(first_success >= 2, "{:#?}", summary(&received));
    let b_at = received.iter().find(|r| r.customer() == b).unwrap().at;
    assert!(b_at < for_a[first_success].at, "{:#?}", summary(&received));

    let messages = app.wait_all(&sub, 3, "delivered").await;
    let a_v1 = messages
        .iter()
        .find(|m| m["customerId"] == a && m["version"] == 1)
        .unwrap();
    assert!(attempt_codes(a_v1).len() >= 3, "{a_v1}");
}

#[tokio::test]
async fn a_dead_message_does_not_hold_back_the_customer_s_later_versions() {
    let app = delivery(&["10ms", "10ms"], "2s").spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailCustomer {
        customer: "treez:dh:1".into(),
        times: 3,
        status: 500,
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("dh", "1", "Jules", T1)).await;
    accept(&app, "treez", &person("dh", "1", "Jim", T2)).await;

    let messages = app
        .wait_for_messages(&sub, "v1 dead, v2 delivered", |m| {
            m.len() == 2 && m[0]["status"] == "dead" && m[1]["status"] == "delivered"
        })
        .await;
    assert_eq!(messages[0]["version"], 1);
    assert_eq!(attempt_codes(&messages[0]), vec![json!(500); 3]);
    let versions: Vec<i64> = receiver.received().iter().map(Received::version).collect();
    assert_eq!(versions, [1, 1, 1, 2]);
}

#[tokio::test]
async fn a_hung_subscriber_does_not_delay_a_healthy_one() {
    let app = delivery(&["10ms"], "30s").spawn().await;
    let hung = TestReceiver::start(Behaviour::SlowFirst {
        times: usize::MAX,
        delay: Duration::from_secs(60),
    })
    .await;
    app.subscribe_url(&hung.url()).await;
    accept(&app, "treez", &person("hang", "1", "Jules", T1)).await;
    hung.wait_for(1).await;

    // The hung request is still open (timeout 30 s) when the next change
    // comes.
    let healthy = TestReceiver::healthy().await;
    app.subscribe_url(&healthy.url()).await;
    accept(&app, "treez", &person("hang", "2", "Jim", T1)).await;
    let received = healthy.wait_for(1).await;
    assert_eq!(received[0].customer(), "treez:hang:2");
}

#[tokio::test]
async fn a_down_subscriber_waiting_for_its_retry_does_not_delay_a_healthy_one() {
    let app = delivery(&["1h"], "2s").spawn().await;
    let subscriber = Down::new();
    let (down, _) = app.subscribe_url(subscriber.url()).await;
    accept(&app, "treez", &person("dn", "1", "Jules", T1)).await;
    let waiting = app
        .wait_for_messages(&down, "a first failed attempt", |m| {
            m.len() == 1 && attempt_codes(&m[0]).len() == 1
        })
        .await
        .remove(0);
    assert_eq!(waiting["status"], "pending");
    let tried = timestamp(&waiting["attempts"][0]["at"]);
    let next = timestamp(&waiting["nextAttemptAt"]);
    let wait = next.duration_since(tried).as_secs_f64();
    assert!(
        (3599.0..=3965.0).contains(&wait),
        "the next attempt is 1 h (+ up to 10% jitter) after the first: {wait} s"
    );

    let healthy = TestReceiver::healthy().await;
    let (fine, _) = app.subscribe_url(&healthy.url()).await;
    accept(&app, "treez", &person("dn", "2", "Jim", T1)).await;
    assert_eq!(healthy.wait_for(1).await[0].customer(), "treez:dn:2");
    app.wait_all(&fine, 1, "delivered").await;
}

// Replay and restarts.

#[tokio::test]
async fn replay_resends_the_changes_since_a_time_with_their_event_ids() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (sub, secret) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("rp", "1", "Jules", T1)).await;
    let first = receiver.wait_for(1).await.remove(0);
    // Just after the first change, and before the next ones.
    let since = timestamp(&first.body["createdDate"]) + jiff::SignedDuration::from_millis(1);
    while jiff::Timestamp::now() <= since + jiff::SignedDuration::from_millis(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let since = since.to_string();
    accept(&app, "treez", &person("rp", "1", "Jim", T2)).await;
    accept(&app, "treez", &person("rp", "2", "Jo", T1)).await;
    let before = receiver.wait_for(3).await;
    // Every send finished and recorded (see also
    // `a_retry_while_the_message_is_being_sent_sends_it_again`).
    app.wait_all(&sub, 3, "delivered").await;

    let path = format!("/api/v1/subscriptions/{sub}/replay");
    let (status, body) = util::send(
        app.client
            .post(app.url(&path))
            .bearer_auth(util::ADMIN)
            .query(&[("since", since.as_str())]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"messages": 2}));

    let received = receiver.wait_for(5).await;
    let mut replayed: Vec<&str> = received[3..].iter().map(Received::webhook_id).collect();
    let mut original: Vec<&str> = before[1..].iter().map(Received::webhook_id).collect();
    replayed.sort();
    original.sort();
    assert_eq!(replayed, original, "{:#?}", summary(&received));
    for again in &received[3..] {
        assert_signed(&secret, again);
        let first = before.iter().find(|r| r.webhook_id() == again.webhook_id()).unwrap();
        assert_eq!(again.body, first.body, "the same envelope");
    }

    let future = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap()
        .to_string();
    let (status, body) = util::send(
        app.client
            .post(app.url(&path))
            .bearer_auth(util::ADMIN)
            .query(&[("since", future.as_str())]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"messages": 0}));
}

#[tokio::test]
async fn pending_messages_resume_after_a_restart() {
    let extra = delivery(&["1s"], "2s");
    let app = extra.clone().spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailFirst { times: 1, status: 503 }).await;
    let (sub, secret) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("rs", "1", "Jules", T1)).await;
    receiver.wait_for(1).await;

    let temp = app.stop().await.expect("the app's store directory");
    let restarted = Instant::now();
    let app = extra.spawn_in(temp.path()).await;
    let received = receiver.wait_for(2).await;
    assert!(
        received[1].at >= restarted,
        "the second attempt comes from the restarted app"
    );
    assert_eq!(received[0].webhook_id(), received[1].webhook_id());
    assert_signed(&secret, &received[1]);
    let messages = app.wait_all(&sub, 1, "delivered").await;
    assert_eq!(attempt_codes(&messages[0]), [json!(503), json!(200)]);
}

// Metrics.

#[tokio::test]
async fn metrics_count_outcomes_attempt_times_and_the_backlog() {
    let app = delivery(&["10ms"], "2s").spawn().await;
    let flaky = TestReceiver::start(Behaviour::FailFirst { times: 1, status: 500 }).await;
    let (retried, _) = app.subscribe_url(&flaky.url()).await;
    let down = Down::new();
    let (dead, _) = app.subscribe_url(down.url()).await;
    accept(&app, "treez", &person("met", "1", "Jules", T1)).await;
    app.wait_all(&retried, 1, "delivered").await;
    app.wait_all(&dead, 1, "dead").await;

    // The backlog is read from the store at each scrape.
    app.wait_drained().await;
    let backlog = format!(r#"clientele_outbox_backlog{{subscription="{retried}"}} 0"#);
    let text = app.metrics().await;
    // Other tests in this binary deliver too: check presence, not counts.
    for series in [
        r#"clientele_messages_total{outcome="delivered"}"#,
        r#"clientele_messages_total{outcome="retried"}"#,
        r#"clientele_messages_total{outcome="dead"}"#,
        "clientele_delivery_attempt_seconds_bucket",
        "clientele_delivery_attempt_seconds_count",
        &backlog,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
}

/// A deleted subscription's backlog series once stayed in `/metrics`
/// forever (at zero): the backlog lists the subscriptions there are.
#[tokio::test]
async fn a_deleted_subscription_leaves_no_backlog_series() {
    let app = TestApp::spawn().await;
    let (sub, _) = app.subscribe_url(Down::new().url()).await;
    let series = format!(r#"clientele_outbox_backlog{{subscription="{sub}"}}"#);
    assert!(app.metrics().await.contains(&series), "{series} is listed");
    let (status, body) = app.delete(&format!("/api/v1/subscriptions/{sub}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let text = app.metrics().await;
    assert!(!text.contains(&series), "{series} outlived its subscription:\n{text}");
}

#[tokio::test]
async fn a_replay_to_a_new_subscription_sends_each_customer_s_versions_in_order() {
    // Versions 1 and 2 happened before the subscription, version 3 after:
    // the replay makes new messages for 1 and 2 and sends 3 again, and the
    // subscriber still gets them in version order.
    let app = TestApp::spawn().await;
    accept(&app, "treez", &person("ro", "1", "Ann", T1)).await;
    accept(&app, "treez", &person("ro", "1", "Bea", T2)).await;
    let receiver = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("ro", "1", "Cy", "2026-06-01T00:00:00Z")).await;
    receiver.wait_for(1).await;
    app.wait_all(&sub, 1, "delivered").await;

    let path = format!("/api/v1/subscriptions/{sub}/replay");
    let (status, body) = util::send(
        app.client
            .post(app.url(&path))
            .bearer_auth(util::ADMIN)
            .query(&[("since", "2000-01-01T00:00:00Z")]),
    )
    .await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"messages": 3})));
    let received = receiver.wait_for(4).await;
    let versions: Vec<&Value> = received[1..].iter().map(|r| &r.body["payload"]["version"]).collect();
    assert_eq!(versions, [&json!(1), &json!(2), &json!(3)], "{:#?}", summary(&received));
}

#[tokio::test]
async fn a_customer_s_later_messages_wait_without_a_due_time_behind_a_failing_one() {
    // Only the first pending message of a customer is scheduled: a subscriber
    // that is down for long leaves one due message per customer, not a line
    // of due-but-blocked ones that every claim would walk.
    let app = delivery(&["1h"], "2s").spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailCustomer {
        customer: "treez:hol:1".into(),
        times: 1,
        status: 500,
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &person("hol", "1", "Ann", T1)).await;
    app.wait_for_messages(&sub, "a failed first attempt", |m| {
        m.len() == 1 && m[0]["attempts"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    accept(&app, "treez", &person("hol", "1", "Bea", T2)).await;
    let messages = app
        .wait_for_messages(&sub, "the second change fanned out", |m| m.len() == 2)
        .await;
    assert!(messages.iter().all(|m| m["status"] == "pending"), "{messages:?}");
    assert!(
        messages[0]["nextAttemptAt"].is_string(),
        "the first waits for its retry: {}",
        messages[0]
    );
    assert_eq!(
        messages[1]["nextAttemptAt"],
        Value::Null,
        "the second waits for the first: {}",
        messages[1]
    );

    // Once the first is delivered (a manual retry), the second goes out.
    let (status, _) = app
        .post_admin(&format!(
            "/api/v1/messages/{}/retry",
            messages[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.wait_all(&sub, 2, "delivered").await;
    let received = receiver.wait_for(3).await;
    let versions: Vec<&Value> = received.iter().map(|r| &r.body["payload"]["version"]).collect();
    assert_eq!(versions, [&json!(1), &json!(1), &json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_silent_subscribers_do_not_hold_back_a_healthy_one() {
    // Silent subscribers accept the connection and answer after a minute;
    // the timeout is 30 s. Each has eight messages to send: enough to fill
    // every slot of a dispatcher that shares 64 among them first come,
    // first served.
    let app = delivery(&["1h"], "30s").spawn().await;
    let silent = TestReceiver::start(Behaviour::SlowFirst {
        times: usize::MAX,
        delay: Duration::from_secs(60),
    })
    .await;
    for i in 0..100 {
        app.subscribe_url(&format!("{}/silent/{i}", silent.url())).await;
    }
    for i in 0..8 {
        accept(&app, "treez", &person("sil", &i.to_string(), "Jules", T1)).await;
    }
    silent.wait_for(64).await;

    let healthy = TestReceiver::healthy().await;
    app.subscribe_url(&healthy.url()).await;
    accept(&app, "treez", &person("sil", "h", "Jim", T1)).await;
    // Within the safety deadline, well under the 30 s timeout: before any
    // silent send has timed out.
    let received = healthy.wait_for(1).await;
    assert_eq!(received[0].customer(), "treez:sil:h");
}

#[tokio::test]
async fn an_erasure_before_a_disabled_subscription_catches_up_cancels_what_it_missed() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    app.set_enabled(&sub, false).await;
    accept(&app, "treez", &person("era", "1", "Jules", T1)).await;
    let (status, _) = app.delete("/api/v1/customers/treez:era:1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    app.set_enabled(&sub, true).await;
    let messages = app
        .wait_for_messages(&sub, "the missed changes fanned out, the deleted one sent", |m| {
            m.len() == 2 && m[1]["status"] == "delivered"
        })
        .await;
    assert_eq!(messages[0]["status"], "cancelled", "{messages:?}");
    assert_eq!(messages[1]["action"], "deleted", "{messages:?}");
    let received = receiver.wait_for(1).await;
    assert_eq!(received.len(), 1, "{:#?}", summary(&received));
    assert_eq!(received[0].action(), "deleted");
    assert!(!String::from_utf8_lossy(&received[0].raw).contains("Jules"));
}

#[tokio::test]
async fn a_claim_reads_what_it_returns_whatever_the_statistics_say() {
    if util::TestStore::chosen() != util::TestStore::Postgres {
        println!("skipped: the planner's statistics are Postgres's");
        return;
    }
    let app = TestApp::spawn().await;
    let dir = app.dir.clone();
    let temp = app.stop().await;
    let mut db = util::postgres::store_connection(&dir).await;
    // Statistics taken while nothing was pending, then a burst: 100,000
    // pending messages of 10 subscriptions, in lines of 10 per customer,
    // whose 10,000 heads are due; no autovacuum to catch up.
    for sql in [
        "ALTER TABLE messages SET (autovacuum_enabled = false)",
        "ANALYZE messages",
        "INSERT INTO subscriptions (id, url, secret, actions, sources, enabled, created_at)
         SELECT 'sub_' || i, 'http://127.0.0.1:9/', 'secret', '[]', '[]', TRUE, '2026-01-01T00:00:00.000Z'
         FROM generate_series(0, 9) i",
        "INSERT INTO messages (id, subscription_id, outbox_seq, customer_id, status, next_attempt_at)
         SELECT 'msg_' || i, 'sub_' || (i % 10), i, 'c' || (i / 100), 'pending',
                CASE WHEN i % 100 < 10 THEN 0 END
         FROM generate_series(0, 99999) i",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {}",
        clientele::store::postgres::CLAIM
    ))
    .bind(1_i64)
    .bind(Vec::<String>::new())
    .bind(Vec::<i64>::new())
    .bind(8_i64)
    .fetch_all(&mut db)
    .await
    .expect("the claim's plan");
    let read = util::postgres::rows_read(&plan);
    let returned = util::postgres::rows_returned(&plan);
    let plan = plan.join("\n");
    assert_eq!(returned, 80, "eight of each subscription:\n{plan}");
    assert!(read < 2_000, "the claim read {read} rows for 80 of 100,000:\n{plan}");
    drop(temp);
}

/// A claim of every due message whose lease has already run out.
fn expired_claim() -> clientele::outbound::Claim {
    let now = UtcMillis::now();
    clientele::outbound::Claim {
        now,
        lease_until: now,
        limit: 64,
        shares: Default::default(),
        per_subscription: 8,
        busy: Default::default(),
        sending: Default::default(),
    }
}

/// The store of `app`, stopped, opened again in the test: the store, its
/// directory, and what keeps the directory.
async fn reopened(
    app: TestApp,
) -> (
    std::sync::Arc<dyn clientele::store::Store>,
    std::path::PathBuf,
    Option<tempfile::TempDir>,
) {
    let dir = app.dir.clone();
    let temp = app.stop().await;
    let config = TestApp::builder().config(&dir);
    let store = clientele::app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    (store, dir, temp)
}

/// The store of an app stopped with `subscription` disabled, so that
/// nothing was sent, opened again with the subscription enabled and the
/// outbox fanned out: the test claims and records by hand, no dispatcher
/// running. Also the store's directory, and what keeps it.
async fn by_hand(
    app: TestApp,
    subscription: &str,
) -> (
    std::sync::Arc<dyn clientele::store::Store>,
    std::path::PathBuf,
    Option<tempfile::TempDir>,
) {
    let (store, dir, temp) = reopened(app).await;
    store
        .set_subscription_enabled(subscription.to_owned(), true)
        .await
        .expect("the subscription is enabled");
    while store.fan_out().await.expect("a fan-out") {}
    (store, dir, temp)
}

/// An attempt answered `status_code`, made at `at`.
fn attempt(status_code: u16, at: UtcMillis) -> clientele::outbound::Attempt {
    clientele::outbound::Attempt {
        at,
        status_code: Some(status_code),
        error: None,
        duration_ms: 1,
    }
}

/// A subscription's messages, in order, as the store lists them.
async fn listed(store: &std::sync::Arc<dyn clientele::store::Store>, subscription: &str) -> Vec<Message> {
    store
        .messages(clientele::store::MessageQuery {
            subscription_id: subscription.to_owned(),
            customer_id: None,
            status: None,
            limit: 10,
            after: None,
        })
        .await
        .expect("the messages")
        .items
}

/// Customer `a` and `b`, two versions of `a`'s and of `b`'s (just one
/// version of `b` unless `b_twice`), their messages to a subscription
/// nothing sends to: the store by hand ([`by_hand`]), and each message's
/// `seq` by customer and version.
async fn two_lines(
    b_twice: bool,
) -> (
    std::sync::Arc<dyn clientele::store::Store>,
    String,
    impl Fn(&str, u64) -> i64,
    Option<tempfile::TempDir>,
) {
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(Down::new().url()).await;
    app.set_enabled(&subscription, false).await;
    accept(&app, "treez", &person("ord", "a", "Ann", T1)).await;
    accept(&app, "treez", &person("ord", "a", "Anne", T2)).await;
    accept(&app, "treez", &person("ord", "b", "Bob", T1)).await;
    if b_twice {
        accept(&app, "treez", &person("ord", "b", "Bobby", T2)).await;
    }
    let (store, _, temp) = by_hand(app, &subscription).await;
    let messages = listed(&store, &subscription).await;
    let seq = move |customer: &str, version: u64| {
        messages
            .iter()
            .find(|m| m.customer_id == format!("treez:ord:{customer}") && m.version == version)
            .expect("the message")
            .seq
    };
    (store, subscription, seq, temp)
}

/// The claimed message `seq`.
fn claimed(claim: &[clientele::outbound::Due], seq: i64) -> clientele::outbound::Due {
    claim
        .iter()
        .find(|d| d.seq == seq)
        .cloned()
        .expect("the message claimed")
}

/// One batch of attempts, of two customers' lines, each line's stale
/// claim (its lease ran out) before the later claim of the same message:
/// each stale attempt is listed and moves nothing, each later one decides,
/// as if recorded one at a time.
#[tokio::test]
async fn a_batch_of_stale_and_live_attempts_of_two_lines_records_each_as_alone() {
    use clientele::outbound::{MessageStatus, Next, Recorded};

    let (store, subscription, seq, temp) = two_lines(false).await;
    let stale = store.claim_due(expired_claim()).await.expect("a claim");
    let later = store.claim_due(expired_claim()).await.expect("a claim");
    let (now, at_a, at_b) = (UtcMillis::now(), UtcMillis::now(), UtcMillis::now());
    let retry_at = now.saturating_add(Duration::from_secs(3600));
    let record = |claim: &[clientele::outbound::Due], seq, attempt, next| Recorded {
        message: claimed(claim, seq),
        attempt,
        next,
    };
    let gone = Next::Dead {
        disable_subscription: true,
    };
    store
        .record_attempts(vec![
            record(&stale, seq("a", 1), attempt(410, now), gone),
            record(&later, seq("a", 1), attempt(200, at_a), Next::Delivered),
            record(&stale, seq("b", 1), attempt(200, now), Next::Delivered),
            record(&later, seq("b", 1), attempt(500, at_b), Next::Retry { at: retry_at }),
        ])
        .await
        .expect("the batch is recorded");

    let messages = listed(&store, &subscription).await;
    let message = |seq| messages.iter().find(|m| m.seq == seq).expect("the message");
    let (a1, a2, b1) = (message(seq("a", 1)), message(seq("a", 2)), message(seq("b", 1)));
    assert_eq!((a1.status, a1.attempts.len()), (MessageStatus::Delivered, 2), "{a1:?}");
    assert_eq!(
        (a2.status, a2.next_attempt_at),
        (MessageStatus::Pending, Some(at_a)),
        "a's next version is due once the first is delivered"
    );
    assert_eq!(
        (b1.status, b1.next_attempt_at, b1.attempts.len()),
        (MessageStatus::Pending, Some(retry_at), 2),
        "the later claim's failure decides, not the stale success"
    );
    let enabled = store.subscription(subscription).await.expect("read");
    assert!(
        enabled.expect("the subscription").enabled,
        "a stale 410 disables nothing"
    );
    store.close().await;
    drop(temp);
}

/// Two messages of one line out at once (a manual retry made the first
/// pending again while the second was being sent) and recorded in one
/// batch, in either order: as one at a time, in the batch's order. On
/// `a`'s line the second fails first and waits behind the first, which
/// then is delivered and makes it due at once; on `b`'s the first is
/// delivered first, then the second's failure sets its retry.
#[tokio::test]
async fn two_attempts_of_one_line_in_a_batch_are_recorded_in_its_order() {
    use clientele::outbound::{MessageStatus, Next, Recorded};
    use clientele::store::Retry;

    let (store, subscription, seq, temp) = two_lines(true).await;
    let first = store.claim_due(expired_claim()).await.expect("a claim");
    let delivered = |seq| Recorded {
        message: claimed(&first, seq),
        attempt: attempt(200, UtcMillis::now()),
        next: Next::Delivered,
    };
    store
        .record_attempts(vec![delivered(seq("a", 1)), delivered(seq("b", 1))])
        .await
        .expect("the first versions are delivered");
    let second = store.claim_due(expired_claim()).await.expect("a claim");
    for message in listed(&store, &subscription).await {
        if message.version == 1 {
            assert_eq!(store.retry_message(message.id).await.expect("a retry"), Retry::Queued);
        }
    }
    let again = store.claim_due(expired_claim()).await.expect("a claim");
    let (at_a, at_b) = (UtcMillis::now(), UtcMillis::now());
    let retry_at = at_a.saturating_add(Duration::from_secs(3600));
    let failed = |seq| Recorded {
        message: claimed(&second, seq),
        attempt: attempt(500, UtcMillis::now()),
        next: Next::Retry { at: retry_at },
    };
    let delivered = |seq, at| Recorded {
        message: claimed(&again, seq),
        attempt: attempt(200, at),
        next: Next::Delivered,
    };
    store
        .record_attempts(vec![
            failed(seq("a", 2)),
            delivered(seq("a", 1), at_a),
            delivered(seq("b", 1), at_b),
            failed(seq("b", 2)),
        ])
        .await
        .expect("the batch is recorded");

    let messages = listed(&store, &subscription).await;
    let message = |seq| messages.iter().find(|m| m.seq == seq).expect("the message");
    for customer in ["a", "b"] {
        let first = message(seq(customer, 1));
        assert_eq!(
            (first.status, first.attempts.len()),
            (MessageStatus::Delivered, 2),
            "{first:?}"
        );
    }
    let (a2, b2) = (message(seq("a", 2)), message(seq("b", 2)));
    assert_eq!(
        (a2.status, a2.next_attempt_at),
        (MessageStatus::Pending, Some(at_a)),
        "{a2:?}"
    );
    assert_eq!(
        (b2.status, b2.next_attempt_at),
        (MessageStatus::Pending, Some(retry_at)),
        "{b2:?}"
    );
    store.close().await;
    drop(temp);
}

/// A send that outlived its lease, whose message another claim took since,
/// records its attempt (it happened) but moves nothing: not a `410 Gone`
/// that would kill the message and disable the subscription while the
/// later claim's send is under way. That send decides.
#[tokio::test]
async fn a_send_that_outlived_its_lease_moves_nothing_over_a_later_claim() {
    use clientele::outbound::{MessageStatus, Next, Recorded};

    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(Down::new().url()).await;
    app.set_enabled(&subscription, false).await;
    app.deliver_json("treez", &treez("shop", "1", T1)).await;
    let (store, _, temp) = by_hand(app, &subscription).await;
    let stale = store.claim_due(expired_claim()).await.expect("a claim").remove(0);
    let later = store.claim_due(expired_claim()).await.expect("a claim").remove(0);
    assert_eq!(later.seq, stale.seq, "the lease ran out: the message is claimed again");
    assert_ne!(later.claim, stale.claim, "each claim has its own token");

    let gone = Next::Dead {
        disable_subscription: true,
    };
    store
        .record_attempts(vec![Recorded {
            message: stale,
            attempt: attempt(410, UtcMillis::now()),
            next: gone,
        }])
        .await
        .expect("the stale attempt is recorded");
    let message = || async { listed(&store, &subscription).await.remove(0) };
    let seen = message().await;
    assert_eq!(seen.status, MessageStatus::Pending, "the later claim still holds it");
    assert_eq!(seen.attempts.len(), 1, "the stale attempt is listed");
    let enabled = store.subscription(subscription.clone()).await.expect("read");
    assert!(
        enabled.expect("the subscription").enabled,
        "a stale 410 disables nothing"
    );

    store
        .record_attempts(vec![Recorded {
            message: later,
            attempt: attempt(200, UtcMillis::now()),
            next: Next::Delivered,
        }])
        .await
        .expect("the later attempt is recorded");
    let seen = message().await;
    assert_eq!(seen.status, MessageStatus::Delivered, "the claim's holder decides");
    assert_eq!(seen.attempts.len(), 2);
    store.close().await;
    drop(temp);
}

/// Whether the suite runs on Postgres, where several sessions write at
/// once; the embedded store has one writer, each operation one
/// transaction, so these races cannot happen there.
fn several_writers() -> bool {
    let several = util::TestStore::chosen() == util::TestStore::Postgres;
    if !several {
        let test = std::thread::current().name().unwrap_or("this test").to_owned();
        println!("{test}: skipped, one writer on the embedded store (CLIENTELE_TEST_STORE=postgres races)");
    }
    several
}

/// Messages or attempts left without their subscription or message.
async fn orphans(dir: &std::path::Path) -> i64 {
    let mut db = util::postgres::store_connection(dir).await;
    sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM messages WHERE subscription_id NOT IN (SELECT id FROM subscriptions))
              + (SELECT COUNT(*) FROM attempts WHERE message_seq NOT IN (SELECT seq FROM messages))",
    )
    .fetch_one(&mut db)
    .await
    .expect("the orphans")
}

/// An attempt whose recording waits for its customer's lock while the
/// subscription is deleted records nothing once it gets the lock: no
/// attempt is left without its message.
#[tokio::test]
async fn an_attempt_recorded_as_its_subscription_is_deleted_leaves_no_orphan() {
    use clientele::outbound::{Next, Recorded};
    if !several_writers() {
        return;
    }
    const CUSTOMER: &str = "treez:shop:orphaned-attempt";
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(Down::new().url()).await;
    app.set_enabled(&subscription, false).await;
    app.deliver_json("treez", &treez("shop", "orphaned-attempt", T1)).await;
    let (store, dir, temp) = by_hand(app, &subscription).await;
    let due = store.claim_due(expired_claim()).await.expect("a claim").remove(0);

    let mut db = util::postgres::store_connection(&dir).await;
    util::postgres::lock_customer(&mut db, CUSTOMER).await;
    let recording = tokio::spawn({
        let store = store.clone();
        async move {
            let next = Next::Retry { at: UtcMillis::now() };
            store
                .record_attempts(vec![Recorded {
                    message: due,
                    attempt: attempt(500, UtcMillis::now()),
                    next,
                }])
                .await
        }
    });
    util::postgres::wait_for_a_waiter(&mut db, CUSTOMER).await;
    assert!(store.delete_subscription(subscription).await.expect("a deletion"));
    sqlx::query("COMMIT").execute(&mut db).await.expect("the lock released");
    recording.await.expect("the task").expect("the attempt settles");
    assert_eq!(orphans(&dir).await, 0);
    store.close().await;
    drop(temp);
}

/// Outbox rows take their places in the feed in commit order: a writer
/// waits for the transaction that holds the places before its own, and
/// the places a writer took and rolled back are a gap that holds back
/// neither the subscribers nor the count of rows not fanned out.
#[tokio::test]
async fn a_change_takes_its_place_after_a_writer_that_rolled_back_and_is_sent() {
    if !several_writers() {
        return;
    }
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    app.subscribe_url(&receiver.url()).await;
    accept(&app, "treez", &treez("shop", "before-the-gap", T1)).await;
    receiver.wait_for(1).await;

    let mut db = util::postgres::store_connection(&app.dir).await;
    util::postgres::lock_publishing(&mut db).await;
    sqlx::query("SELECT nextval('outbox_places') FROM generate_series(1, 3)")
        .execute(&mut db)
        .await
        .expect("three places");
    let mut waiter = util::postgres::store_connection(&app.dir).await;
    let body = treez("shop", "after-the-gap", T1);
    let ((status, answer), ()) = tokio::join!(app.deliver_json("treez", &body), async {
        util::postgres::wait_for_a_publisher(&mut waiter).await;
        sqlx::query("ROLLBACK")
            .execute(&mut db)
            .await
            .expect("the places given up");
    });
    assert_eq!(status, StatusCode::OK, "{answer}");

    let received = receiver.wait_for(2).await;
    let customers: Vec<&str> = received.iter().map(|r| r.customer()).collect();
    assert_eq!(customers, ["treez:shop:before-the-gap", "treez:shop:after-the-gap"]);
    let places: Vec<i64> = sqlx::query_scalar("SELECT published FROM outbox ORDER BY published")
        .fetch_all(&mut db)
        .await
        .expect("the places");
    assert_eq!(places.len(), 2, "{places:?}");
    assert_eq!(places[1] - places[0], 4, "after the three given up: {places:?}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("\nclientele_outbox_unfanned 0\n"), "{metrics}");
}

/// A replay that waits for a customer's lock while its subscription is
/// deleted: the deletion waits for it and takes its messages along.
#[tokio::test]
async fn a_replay_as_its_subscription_is_deleted_leaves_no_orphan() {
    if !several_writers() {
        return;
    }
    const CUSTOMER: &str = "treez:shop:orphaned-replay";
    let receiver = TestReceiver::healthy().await;
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(&receiver.url()).await;
    app.deliver_json("treez", &treez("shop", "orphaned-replay", T1)).await;
    app.wait_all(&subscription, 1, "delivered").await;
    let (store, dir, temp) = reopened(app).await;

    let mut db = util::postgres::store_connection(&dir).await;
    util::postgres::lock_customer(&mut db, CUSTOMER).await;
    let since: UtcMillis = "2000-01-01T00:00:00Z".parse().expect("a time");
    let replaying = tokio::spawn({
        let (store, subscription) = (store.clone(), subscription.clone());
        async move { store.replay(subscription, since).await }
    });
    util::postgres::wait_for_a_waiter(&mut db, CUSTOMER).await;
    let deleting = tokio::spawn({
        let store = store.clone();
        async move { store.delete_subscription(subscription).await }
    });
    sqlx::query("COMMIT").execute(&mut db).await.expect("the lock released");
    replaying.await.expect("the task").expect("the replay");
    assert!(deleting.await.expect("the task").expect("the deletion"));
    assert_eq!(orphans(&dir).await, 0);
    store.close().await;
    drop(temp);
}
