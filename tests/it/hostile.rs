//! Hostile input over HTTP: bodies no platform should send, sent to the
//! real server for every source kind. Whatever arrives, a response arrives
//! (the connection is never dropped), it is never a 5xx, and it is clear:
//! the `status` of a kept event (accepted, quarantined, ignored, duplicate)
//! or an `error.code`. Each test ends by checking that the service is still
//! ready and its directory still lists.
//!
//! The unit-level fuzzing (arbitrary bytes and JSON through the parser, the
//! normalizers and each adapter) is in the property tests beside the code;
//! this is the corpus of known-nasty cases, end to end.

use crate::util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TestApp, error_code, gzip, segment, set, source_auth, treez, vagaro, with};

const T1: &str = "2026-04-24T11:38:21.000-07:00";
const SOURCES: [&str; 3] = ["vagaro", "treez", "clientele"];
/// The wrong types every field is replaced with in turn.
const WRONG_TYPES: [&str; 6] = ["[]", "{}", "true", "12345", "-1.5", "null"];
const SQL: &str = "'; DROP TABLE customers; --";
/// How long one answer may take: a guard against hangs, never a measure.
/// Generous: a merge of `MAX_MERGED` customers on Postgres took 10 s on a
/// loaded 2-core machine, and every area's tests run side by side in the
/// one test binary.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// A Clientele envelope with every canonical field, for customer `id`.
fn clientele(id: &str) -> Value {
    json!({
        "id": "env",
        "createdDate": "2026-04-24T18:38:22.000Z",
        "type": "customer",
        "action": "updated",
        "payload": {
            "customerId": id,
            "account": "shop-1",
            "status": "active",
            "platformStatus": "Open",
            "firstName": "Mia", "middleName": "E", "lastName": "Wallace", "nickname": "M",
            "email": "mia@example.com",
            "phones": [{"kind": "mobile", "raw": "914-555-1212"}],
            "birthDate": "1970-05-01",
            "addresses": [{"kind": "home", "street1": "1 Main St", "city": "Toronto", "regionCode": "ON",
                           "postalCode": "M5V 2T6", "countryCode": "CA", "primary": true}],
            "businessIds": ["b1"],
            "groups": ["VIP"],
            "optOut": false,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": T1,
            "mergedInto": null,
            "mergedFrom": [],
            "attributes": {"tier": "gold"},
        },
    })
}

/// Each source's example body for customer `id` (of account `hostile` for
/// Treez).
fn example(source: &str, id: &str) -> Value {
    match source {
        "vagaro" => vagaro("env", id, "2023-08-10T08:50:00Z"),
        "treez" => treez("hostile", id, T1),
        _ => clientele(id),
    }
}

/// Where each source's example holds the customer's data and its id.
fn customer_object(source: &str) -> &'static str {
    if source == "treez" { "/data" } else { "/payload" }
}

fn id_pointer(source: &str) -> &'static str {
    match source {
        "treez" => "/data/customer_id",
        _ => "/payload/customerId",
    }
}

/// The first-name field of each source's example, and its value there.
fn first_name(source: &str) -> (&'static str, &'static str) {
    match source {
        "vagaro" => ("customerFirstName", "Johnny"),
        "treez" => ("first_name", "Jules"),
        _ => ("firstName", "Mia"),
    }
}

/// `source`'s example for customer `id` with its first name set to `name`.
fn with_first_name(source: &str, id: &str, name: Value) -> Value {
    let (first, _) = first_name(source);
    with(
        example(source, id),
        &format!("{}/{first}", customer_object(source)),
        name,
    )
}

/// `text` with `bytes` inserted at byte `at`.
fn splice(text: &str, at: usize, bytes: &[u8]) -> Vec<u8> {
    let (head, tail) = text.as_bytes().split_at(at);
    [head, bytes, tail].concat()
}

/// The directory id of `source`'s customer `id` as [`example`] sends it.
fn customer_id(source: &str, id: &str) -> String {
    match source {
        "treez" => format!("treez:hostile:{id}"),
        _ => format!("{source}:{id}"),
    }
}

/// A fresh delivery id for each request, so that no hostile body is taken
/// for a retry of another.
fn delivery_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("hostile-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A delivery of `body` to `source` with its token and its own
/// `webhook-id`.
fn delivery(app: &TestApp, source: &str, body: impl Into<Vec<u8>>) -> reqwest::RequestBuilder {
    source_auth(source, app.webhook(source))
        .header("webhook-id", delivery_id())
        .header("content-type", "application/json")
        .body(body.into())
}

/// Sends `request`, asserting that an answer arrives, in time.
async fn send_in_time(case: &str, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = tokio::time::timeout(ANSWER_WITHIN, request.send())
        .await
        .unwrap_or_else(|_| panic!("{case}: no answer within {ANSWER_WITHIN:?}"))
        .unwrap_or_else(|e| panic!("{case}: the connection failed: {e}"));
    util::read(response).await
}

/// Asserts a clear answer: never a 5xx; a kept event's `status` with the
/// HTTP status that goes with it, or a 4xx with `{"error":{"code",
/// "message"}}`. Returns the `status` or the error code.
fn assert_clear(case: &str, status: StatusCode, body: &Value) -> String {
    assert!(!status.is_server_error(), "{case}: {status} {body}");
    let Some(kept) = body.get("status") else {
        assert!(status.is_client_error(), "{case}: {status} {body}");
        return error_code(body);
    };
    let expected = match kept.as_str() {
        Some("accepted" | "ignored" | "duplicate") => StatusCode::OK,
        Some("quarantined") => {
            let reason = body["reason"].as_str().unwrap_or_default();
            assert!(!reason.is_empty(), "{case}: a quarantine names its reason: {body}");
            StatusCode::ACCEPTED
        }
        _ => panic!("{case}: {status} {body}"),
    };
    assert_eq!(status, expected, "{case}: {body}");
    assert!(body["eventId"].is_string(), "{case}: {body}");
    kept.as_str().unwrap_or_default().to_owned()
}

/// Delivers `body` to `source` and asserts a clear answer; returns it.
async fn deliver(app: &TestApp, source: &str, case: &str, body: impl Into<Vec<u8>>) -> (String, Value) {
    let case = format!("{source}, {case}");
    let (status, answer) = send_in_time(&case, delivery(app, source, body)).await;
    (assert_clear(&case, status, &answer), answer)
}

/// Delivers many bodies at once (the writer batches them), asserting a
/// clear answer to each; returns the answers in order.
async fn deliver_all(app: &TestApp, cases: Vec<(String, &str, Vec<u8>)>) -> Vec<(String, Value)> {
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (case, source, body)) in cases.into_iter().enumerate() {
        let request = delivery(app, source, body);
        let in_flight = in_flight.clone();
        let case = format!("{source}, {case}");
        tasks.spawn(async move {
            let _slot = in_flight.acquire_owned().await.expect("the semaphore stays open");
            let (status, body) = send_in_time(&case, request).await;
            (i, assert_clear(&case, status, &body), body)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(i, ..)| *i);
    answers.into_iter().map(|(_, status, body)| (status, body)).collect()
}

/// Asserts that the service survived: ready, and its directory lists.
async fn assert_still_serving(app: &TestApp) {
    let (status, body) = send_in_time("/readyz", app.client.get(app.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "/readyz: {body}");
    let (status, body) = app.get_query("/api/v1/customers", &[("limit", "1000")]).await;
    assert_eq!(status, StatusCode::OK, "the directory lists: {body}");
    assert!(body["data"].is_array(), "{body}");
}

/// A customer record by directory id (any characters).
async fn record(app: &TestApp, id: &str) -> (StatusCode, Value) {
    app.get(&format!("/api/v1/customers/{}", segment(id))).await
}

/// The warnings of the history entry written by `event_id`.
async fn warnings(app: &TestApp, id: &str, event_id: &Value) -> Vec<String> {
    let (status, body) = app.get(&format!("/api/v1/customers/{}/events", segment(id))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entry = body["data"]
        .as_array()
        .expect("a data array")
        .iter()
        .find(|e| e["eventId"] == *event_id)
        .unwrap_or_else(|| panic!("a history entry for {event_id} in {body}"))
        .clone();
    entry["warnings"]
        .as_array()
        .expect("a warnings array")
        .iter()
        .map(|w| w["field"].as_str().expect("a field").to_owned())
        .collect()
}

/// `source`'s example with an unmapped field holding `nested`, raw JSON
/// text spliced in.
fn with_raw_field(source: &str, id: &str, nested: &str) -> String {
    let body = set(
        example(source, id),
        &format!("{}/notes", customer_object(source)),
        json!("SPLICE"),
    );
    body.to_string().replace("\"SPLICE\"", nested)
}

/// Nesting `levels` deep in total, the example's own two levels included,
/// as arrays or as objects.
fn nested(levels: usize, objects: bool) -> String {
    let inner = levels - 2;
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(inner), "}".repeat(inner))
    } else {
        format!("{}1{}", "[".repeat(inner), "]".repeat(inner))
    }
}

// Depth.

#[tokio::test]
async fn json_nested_129_levels_is_400_and_128_levels_is_kept_for_every_source() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        for objects in [false, true] {
            let body = with_raw_field(source, "deep", &nested(129, objects));
            let (code, _) = deliver(&app, source, "129 levels", body).await;
            assert_eq!(code, "invalid_json");
            let body = with_raw_field(source, "deep", &nested(128, objects));
            let (status, _) = deliver(&app, source, "128 levels", body).await;
            assert_eq!(status, "accepted");
        }
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn json_nested_10000_levels_is_400_at_once_without_overflowing_the_stack() {
    let app = TestApp::spawn().await;
    let deep = 10_000;
    let bodies = [
        ("arrays", with_raw_field("treez", "deep", &nested(deep, false))),
        ("objects", with_raw_field("treez", "deep", &nested(deep, true))),
        ("only opened", "[".repeat(deep)),
        (
            "opened in a value",
            format!(r#"{{"event_type": "CUSTOMER", "data": {}"#, r#"{"a":"#.repeat(deep)),
        ),
        (
            "mixed",
            format!("{}1{}", r#"[{"a":"#.repeat(deep / 2), "}]".repeat(deep / 2)),
        ),
        (
            "closed but never opened",
            format!("{}{}", "]".repeat(deep), "[".repeat(deep)),
        ),
    ];
    for source in SOURCES {
        for (case, body) in &bodies {
            let started = Instant::now();
            let (code, _) = deliver(&app, source, case, body.clone()).await;
            assert_eq!(code, "invalid_json", "{case}");
            let gzipped = delivery(&app, source, gzip(body.as_bytes())).header("content-encoding", "gzip");
            let case = format!("{source}, {case}, gzipped");
            let (status, answer) = send_in_time(&case, gzipped).await;
            assert_eq!(assert_clear(&case, status, &answer), "invalid_json", "{case}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{case}: {:?}",
                started.elapsed()
            );
        }
    }
    app.assert_nothing_kept().await;
    assert_still_serving(&app).await;
}

// Bytes that are not JSON text.

#[tokio::test]
async fn bytes_that_are_not_one_json_text_are_400_and_keep_nothing() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        let text = example(source, "utf8").to_string();
        let (_, name) = first_name(source);
        let spliced = |bytes: &[u8]| splice(&text, text.find(name).expect("the example's first name"), bytes);
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a lone 0xFF", spliced(b"\xff")),
            ("Latin-1", spliced(b"Jos\xe9 ")),
            ("an overlong slash", spliced(b"\xc0\xaf")),
            ("an encoded surrogate", spliced(b"\xed\xa0\x80")),
            ("a code point past U+10FFFF", spliced(b"\xf4\x90\x80\x80")),
            (
                "a truncated sequence at the end",
                [text.as_bytes(), b"\xe2\x82"].concat(),
            ),
            (
                "in a key",
                splice(&text, text.find("\"type\"").expect("a type key") + 3, b"\xff"),
            ),
            ("UTF-16", utf16),
            ("a raw NUL byte in a string", spliced(b"\0")),
            (
                "a raw NUL byte between tokens",
                text.replacen(",", ",\0", 1).into_bytes(),
            ),
            ("nothing", Vec::new()),
            ("only whitespace", b" \r\n\t ".to_vec()),
            ("two documents", [text.as_bytes(), text.as_bytes()].concat()),
        ];
        for (case, body) in cases {
            let (code, answer) = deliver(&app, source, case, body).await;
            assert_eq!(code, "invalid_json", "{source}, {case}: {answer}");
        }
    }
    app.assert_nothing_kept().await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn json_that_is_not_an_object_is_quarantined() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        let bodies = [
            ("null", "null".to_owned()),
            ("a number", "0".to_owned()),
            ("a string", r#""customer""#.to_owned()),
            ("an empty list", "[]".to_owned()),
            ("a boolean", "true".to_owned()),
            ("a batch", format!("[{}]", example(source, "batch"))),
        ];
        for (case, body) in bodies {
            let (status, answer) = deliver(&app, source, case, body).await;
            assert_eq!(status, "quarantined", "{source}, {case}: {answer}");
        }
    }
    assert_still_serving(&app).await;
}

// Strange but valid strings.

#[tokio::test]
async fn nul_characters_are_removed_from_strings_and_kept_in_the_raw_body() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        let names = customer_object(source);
        let (first, _) = first_name(source);
        let body = with(
            example(source, "nul\u{0}id"),
            &format!("{names}/{first}"),
            json!("Ju\u{0}les"),
        );
        let body = set(body, &format!("{names}/\u{0}"), json!("\u{0}x"));
        let (status, answer) = deliver(&app, source, "NULs", body.to_string()).await;
        assert_eq!(status, "accepted", "{answer}");
        let id = customer_id(source, "nulid");
        assert_eq!(answer["customerId"], id);
        let (status, customer) = record(&app, &id).await;
        assert_eq!(status, StatusCode::OK, "{customer}");
        assert_eq!(customer["firstName"], "Jules");
        assert_eq!(customer["attributes"]["\u{0}"], "x", "keys are kept as sent");
        let event = app.event(answer["eventId"].as_str().unwrap()).await;
        assert!(event["body"].to_string().contains("Ju\\u0000les"), "{event}");
    }
    // A NUL alone is no id at all.
    let body = with(example("treez", "x"), "/data/customer_id", json!("\u{0}"));
    let (status, answer) = deliver(&app, "treez", "a NUL id", body.to_string()).await;
    assert_eq!(status, "quarantined", "{answer}");
    // Every field that the store indexes or lists as text.
    let nul = json!("a\u{0}b");
    let cases = [
        ("vagaro", with(example("vagaro", "v"), "/id", nul.clone())),
        ("vagaro", with(example("vagaro", "v"), "/type", nul.clone())),
        ("vagaro", set(example("vagaro", "v"), "/payload/email", nul.clone())),
        (
            "vagaro",
            set(example("vagaro", "v"), "/payload/businessIds", json!([nul])),
        ),
        (
            "vagaro",
            set(example("vagaro", "v"), "/payload/businessGroupId", nul.clone()),
        ),
        (
            "treez",
            with(example("treez", "t"), "/dispensary_short_name", nul.clone()),
        ),
        ("treez", with(example("treez", "t"), "/event_type", nul.clone())),
        (
            "treez",
            set(example("treez", "t"), "/data/merged_customer_ids", json!([nul])),
        ),
    ];
    for (source, body) in cases {
        let (status, answer) = deliver(&app, source, "a NUL in an indexed field", body.to_string()).await;
        assert!(
            ["accepted", "ignored", "quarantined"].contains(&status.as_str()),
            "{answer}"
        );
    }
    assert_still_serving(&app).await;
}

/// A NUL never reaches the store from the API, on any store (Postgres
/// refuses it in text): an id in the path with one is no one's (`404`), a
/// query parameter or a JSON string with one is a bad request (`400`).
#[tokio::test]
async fn a_nul_in_an_api_path_query_or_body_is_answered_alike_on_every_store() {
    let app = TestApp::spawn().await;
    let (status, answer) = deliver(&app, "treez", "a customer", example("treez", "n").to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let id = customer_id("treez", "n");
    let subscription = app.subscribe(json!({"url": "http://127.0.0.1:9/hook"})).await;
    let subscription = subscription["id"].as_str().expect("an id");
    let admin =
        |method: reqwest::Method, path: &str| app.client.request(method, app.url(path)).bearer_auth(util::ADMIN);
    let (get, post, patch, delete) = (
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    );
    let since = "since=2026-01-01T00:00:00Z";
    let lookups = [
        (get.clone(), format!("/api/v1/customers/{id}%00")),
        (get.clone(), "/api/v1/customers/%00".to_owned()),
        (get.clone(), format!("/api/v1/customers/{id}%00/events")),
        (delete.clone(), format!("/api/v1/customers/{id}%00")),
        (get.clone(), "/api/v1/events/evt_%00".to_owned()),
        (post.clone(), "/api/v1/events/evt_%00/reprocess".to_owned()),
        (delete.clone(), "/api/v1/events/evt_%00".to_owned()),
        (get.clone(), format!("/api/v1/subscriptions/{subscription}%00")),
        (delete.clone(), format!("/api/v1/subscriptions/{subscription}%00")),
        (patch.clone(), format!("/api/v1/subscriptions/{subscription}%00")),
        (get.clone(), format!("/api/v1/subscriptions/{subscription}%00/messages")),
        (
            post.clone(),
            format!("/api/v1/subscriptions/{subscription}%00/replay?{since}"),
        ),
        (post.clone(), "/api/v1/messages/msg_%00/retry".to_owned()),
    ];
    for (method, path) in lookups {
        let request = admin(method.clone(), &path).json(&json!({"enabled": true}));
        let (status, body) = send_in_time(&path, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(error_code(&body), "not_found", "{method} {path}");
    }
    let queries = [
        "/api/v1/customers?source=treez%00",
        "/api/v1/customers?account=hostile%00",
        "/api/v1/customers?email=a%00b",
        "/api/v1/customers?businessId=%00",
        "/api/v1/customers?phone=914%00",
        "/api/v1/customers?cursor=1%00",
        "/api/v1/customers?changedSince=2026-01-01T00:00:00Z%00",
        "/api/v1/events?status=ignored%00",
        "/api/v1/events?limit=1%00",
    ];
    let history = format!("/api/v1/customers/{id}/events?cursor=%00");
    let messages = format!("/api/v1/subscriptions/{subscription}/messages?status=%00");
    for path in queries.into_iter().chain([history.as_str(), messages.as_str()]) {
        let (status, body) = send_in_time(path, admin(get.clone(), path)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(error_code(&body), "bad_parameter", "{path}");
    }
    let bodies = [
        json!({"url": "http://127.0.0.1:9/hook", "secret": "s\u{0}cret"}),
        json!({"url": "http://127.0.0.1:9/\u{0}"}),
        json!({"url": "http://127.0.0.1:9/hook", "sources": ["treez\u{0}"]}),
    ];
    for body in bodies {
        let request = admin(post.clone(), "/api/v1/subscriptions").json(&body);
        let (status, answer) = send_in_time("a subscription", request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(error_code(&answer), "invalid_request", "{body}");
    }
    assert_eq!(
        app.get("/api/v1/subscriptions").await.1["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_lone_surrogate_escape_reads_as_u_fffd_with_a_warning_and_the_body_is_kept_as_sent() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        let sent = with_first_name(source, "surrogate", json!("HALF"))
            .to_string()
            .replace("\"HALF\"", r#""Ana\ud83d""#);
        // Without a webhook-id: Treez deliveries are known by their content hash.
        let (status, answer) = app.deliver(source, &sent).await;
        assert_eq!(status, StatusCode::OK, "{source}: {answer}");
        assert_eq!(answer["status"], "accepted", "{source}: {answer}");
        let id = customer_id(source, "surrogate");
        assert_eq!(record(&app, &id).await.1["firstName"], "Ana\u{fffd}", "{source}");
        assert_eq!(warnings(&app, &id, &answer["eventId"]).await, ["body"], "{source}");
        let event_id = answer["eventId"].as_str().unwrap();
        assert_eq!(
            app.event(event_id).await["body"],
            Value::String(sent.clone()),
            "{source}"
        );
        let (_, retry) = app.deliver(source, &sent).await;
        assert_eq!(retry, json!({"status": "duplicate", "eventId": event_id}), "{source}");
        let (status, again) = app.post_admin(&format!("/api/v1/events/{event_id}/reprocess")).await;
        assert_eq!(status, StatusCode::OK, "{source}: {again}");
        assert_eq!(again["outcome"], "unchanged", "{source}: {again}");
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn names_of_only_zero_width_characters_are_null_like_empty_ones() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        for (i, invisible) in [
            "\u{200B}",
            "\u{200C}",
            "\u{200D}",
            "\u{2060}",
            "\u{FEFF}",
            "\u{FEFF}\u{200B} ",
        ]
        .iter()
        .enumerate()
        {
            let id = format!("zw{i}");
            let body = with_first_name(source, &id, json!(invisible));
            let (status, answer) = deliver(&app, source, invisible, body.to_string()).await;
            assert_eq!(status, "accepted", "{answer}");
            let customer = record(&app, &customer_id(source, &id)).await.1;
            assert_eq!(customer["firstName"], Value::Null, "{source}, {invisible:?}");
        }
        let body = with_first_name(source, "zw-around", json!("\u{FEFF}Ana\u{200B}"));
        deliver(&app, source, "around", body.to_string()).await;
        let customer = record(&app, &customer_id(source, "zw-around")).await.1;
        assert_eq!(customer["firstName"], "Ana", "{source}");
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn sql_in_strings_is_kept_as_text_and_the_store_survives() {
    let app = TestApp::spawn().await;
    let body = set(treez(SQL, SQL, T1), "/data/first_name", json!(SQL));
    let body = set(body, "/data/email", json!(SQL));
    let body = set(body, "/data/customer_groups", json!([SQL, "x' OR '1'='1"]));
    let body = set(body, "/data/Robert'); DROP TABLE events;--", json!(SQL));
    let (status, answer) = deliver(&app, "treez", "SQL in every string", body.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let treez_id = format!("treez:{SQL}:{SQL}");
    assert_eq!(answer["customerId"], treez_id);
    let body = with(
        vagaro("'; DELETE FROM events; --", SQL, T1),
        "/payload/businessIds",
        json!([SQL]),
    );
    let (status, _) = deliver(&app, "vagaro", "SQL in every string", body.to_string()).await;
    assert_eq!(status, "accepted");
    let body = with(clientele(SQL), "/payload/account", json!(SQL));
    let (status, _) = deliver(&app, "clientele", "SQL in every string", body.to_string()).await;
    assert_eq!(status, "accepted");
    let body = with(treez("a", "1", T1), "/event_type", json!(SQL));
    let (status, _) = deliver(&app, "treez", "SQL as the event type", body.to_string()).await;
    assert_eq!(status, "ignored");

    let (status, customer) = record(&app, &treez_id).await;
    assert_eq!(status, StatusCode::OK, "{customer}");
    assert_eq!(
        (&customer["firstName"], &customer["email"], &customer["account"]),
        (&json!(SQL), &json!(SQL.to_lowercase()), &json!(SQL))
    );
    assert_eq!(customer["groups"], json!([SQL, "x' OR '1'='1"]));
    assert_eq!(customer["attributes"]["Robert'); DROP TABLE events;--"], json!(SQL));
    // SQL in the API's parameters is a value too, or a 400.
    for (name, value, found) in [
        ("account", SQL, 2),
        ("email", &*SQL.to_lowercase(), 1),
        ("businessId", SQL, 1),
        ("source", "treez' OR '1'='1", 0),
        ("account", "' OR 1=1 --", 0),
    ] {
        let (status, page) = app.get_query("/api/v1/customers", &[(name, value)]).await;
        assert_eq!(status, StatusCode::OK, "{name}={value}: {page}");
        assert_eq!(
            page["data"].as_array().map(Vec::len),
            Some(found),
            "{name}={value}: {page}"
        );
    }
    for (name, value) in [
        ("limit", "1 OR 1=1"),
        ("cursor", "0; DROP TABLE customers"),
        ("status", SQL),
    ] {
        let path = if name == "status" {
            "/api/v1/events"
        } else {
            "/api/v1/customers"
        };
        let (status, body) = app.get_query(path, &[(name, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={value}: {body}");
        assert_eq!(error_code(&body), "bad_parameter");
    }
    let (status, body) = record(&app, "' OR '1'='1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(app.directory().await.len(), 3, "every customer is still there");
    assert_eq!(app.events(None).await.len(), 4, "every event is still there");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn duplicate_keys_take_the_last_value() {
    let app = TestApp::spawn().await;
    let text = treez("dup", "first", T1).to_string();
    let doubled = text
        .replacen(
            r#""customer_id":"first""#,
            r#""customer_id":"first","customer_id":"last""#,
            1,
        )
        .replacen(
            r#""event_type":"CUSTOMER""#,
            r#""event_type":"PRODUCT","event_type":"CUSTOMER""#,
            1,
        );
    assert_ne!(doubled, text, "the keys were doubled");
    // Without a webhook-id: the dedupe key is the hash of the JSON value.
    let request = source_auth("treez", app.webhook("treez")).body(doubled);
    let (status, answer) = send_in_time("treez, duplicate keys", request).await;
    assert_eq!(
        assert_clear("treez, duplicate keys", status, &answer),
        "accepted",
        "{answer}"
    );
    assert_eq!(answer["customerId"], "treez:dup:last");
    assert_eq!(record(&app, "treez:dup:first").await.0, StatusCode::NOT_FOUND);
    // The same JSON value without the overridden keys is the same delivery.
    let last_only = treez("dup", "last", T1).to_string();
    let request = source_auth("treez", app.webhook("treez")).body(last_only);
    let (status, reply) = send_in_time("the body without duplicates", request).await;
    assert_eq!(assert_clear("duplicates", status, &reply), "duplicate", "{reply}");

    let text = vagaro("env-a", "dup", T1).to_string();
    let doubled = text.replacen(r#""id":"env-a""#, r#""id":"env-a","id":"env-b""#, 1);
    let request = source_auth("vagaro", app.webhook("vagaro")).body(doubled);
    let (status, reply) = send_in_time("vagaro, duplicate envelope ids", request).await;
    assert_eq!(assert_clear("vagaro", status, &reply), "accepted", "{reply}");
    let event = app.event(reply["eventId"].as_str().unwrap()).await;
    assert_eq!(event["body"]["id"], "env-b");
    assert_still_serving(&app).await;
}

// Numbers.

#[tokio::test]
async fn numbers_beyond_f64_are_400_and_inexact_ids_are_quarantined() {
    let app = TestApp::spawn().await;
    let digits = "9".repeat(300);
    for source in SOURCES {
        for huge in ["1e400", "-1e400", "1E+99999"] {
            let body = with_raw_field(source, "big", huge);
            let (code, answer) = deliver(&app, source, huge, body).await;
            assert_eq!(code, "invalid_json", "{answer}");
        }
        for (case, number) in [
            ("300 digits", digits.as_str()),
            ("past u64", "18446744073709551616"),
            ("i64::MIN", "-9223372036854775808"),
            ("the smallest double", "5e-324"),
            ("minus zero", "-0"),
        ] {
            let body = with_raw_field(source, "big", number);
            let (status, answer) = deliver(&app, source, case, body).await;
            assert_eq!(status, "accepted", "{case}: {answer}");
            // An id must be a string or a whole number JSON holds exactly:
            // a rounded one could alias another customer.
            let exact = serde_json::from_str::<Value>(number).is_ok_and(|n| n.is_i64() || n.is_u64());
            let body = example(source, "x").to_string().replace(r#""x""#, number);
            let (status, answer) = deliver(&app, source, &format!("{case} as the id"), body).await;
            let expected = if exact { "accepted" } else { "quarantined" };
            assert_eq!(status, expected, "{case} as the id: {answer}");
        }
    }
    assert_still_serving(&app).await;
}

/// Integers past `u64` arrive as `f64`s and print rounded (`1e299`), so
/// distinct ids would alias one customer.
#[tokio::test]
async fn distinct_huge_integer_ids_are_distinct_customers() {
    let app = TestApp::spawn().await;
    let (a, b) = (format!("{}1", "9".repeat(299)), format!("{}2", "9".repeat(299)));
    let mut seen = Vec::new();
    for id in [&a, &b] {
        let body = treez("huge", "x", T1).to_string().replace(r#""x""#, id);
        let (status, answer) = deliver(&app, "treez", "a 300-digit id", body).await;
        if status == "accepted" {
            seen.push(answer["customerId"].clone());
        }
    }
    assert!(
        seen.len() < 2 || seen[0] != seen[1],
        "two customers, or a quarantine, not one customer for both: {seen:?}"
    );
}

// Types.

/// The JSON pointer of every member and item of `value`.
fn pointers(value: &Value, at: &str) -> Vec<String> {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => Vec::new(),
    };
    children
        .into_iter()
        .flat_map(|(name, child)| {
            let pointer = format!("{at}/{name}");
            let mut all = vec![pointer.clone()];
            all.extend(pointers(child, &pointer));
            all
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_in_any_field_is_quarantined_or_warned_never_5xx() {
    let app = TestApp::spawn().await;
    let mut cases = Vec::new();
    for source in SOURCES {
        let example = example(source, "types");
        for pointer in pointers(&example, "") {
            for wrong in WRONG_TYPES {
                let body = with(example.clone(), &pointer, serde_json::from_str(wrong).unwrap());
                cases.push((format!("{pointer} = {wrong}"), source, body.to_string().into_bytes()));
            }
        }
    }
    assert!(cases.len() > 700, "{} cases", cases.len());
    let sent: Vec<(String, &str)> = cases.iter().map(|(case, source, _)| (case.clone(), *source)).collect();
    let answers = deliver_all(&app, cases).await;
    let mut warned = std::collections::HashMap::new();
    for source in SOURCES {
        for entry in app.history(&customer_id(source, "types")).await {
            let warnings = entry["warnings"].as_array().map_or(0, Vec::len);
            warned.insert(entry["eventId"].clone(), warnings);
        }
    }
    for ((case, source), (status, answer)) in sent.iter().zip(&answers) {
        assert_ne!(status, "duplicate", "{source}, {case}: {answer}");
        let (pointer, wrong) = case.split_once(" = ").expect("pointer = value");
        if pointer == id_pointer(source) {
            match wrong {
                "12345" => assert_eq!(answer["customerId"], customer_id(source, wrong), "{case}"),
                _ => assert_eq!(status, "quarantined", "{source}, {case}: {answer}"),
            }
        } else if wrong == "{}" && typed(source).contains(&pointer) {
            let warnings = warned.get(&answer["eventId"]).copied().unwrap_or_default();
            assert!(
                status == "quarantined" || warnings > 0,
                "{source}, {case}: neither quarantined nor warned: {answer}"
            );
        }
    }
    assert_still_serving(&app).await;
}

/// The fields of each example that hold a string, a list or a boolean:
/// an object there is a wrong type, so a warning or a quarantine.
fn typed(source: &str) -> Vec<&'static str> {
    match source {
        "vagaro" => vec![
            "/type",
            "/payload",
            "/createdDate",
            "/payload/businessIds",
            "/payload/businessIds/0",
            "/payload/customerFirstName",
            "/payload/customerLastName",
            "/payload/businessGroupId",
            "/payload/email",
            "/payload/mobilePhone",
            "/payload/dayPhone",
            "/payload/nightPhone",
            "/payload/streetAddress",
            "/payload/city",
            "/payload/regionCode",
            "/payload/regionName",
            "/payload/countryCode",
            "/payload/countryName",
            "/payload/postalCode",
            "/payload/createdDate",
            "/payload/modifiedDate",
        ],
        "treez" => vec![
            "/event_type",
            "/dispensary_short_name",
            "/data/status",
            "/data/first_name",
            "/data/middle_name",
            "/data/last_name",
            "/data/nickname",
            "/data/email",
            "/data/birthday",
            "/data/phone",
            "/data/signup_date",
            "/data/last_update",
            "/data/last_visit_date",
            "/data/opt_out",
            "/data/customer_groups",
            "/data/customer_groups/0",
            "/data/addresses",
            "/data/addresses/0/type",
            "/data/addresses/0/street1",
            "/data/addresses/0/street2",
            "/data/addresses/0/city",
            "/data/addresses/0/state",
            "/data/addresses/0/zipcode",
            "/data/addresses/0/primary",
            "/data/merged_customer_ids",
            "/data/merged_into_customer_id",
        ],
        _ => vec![
            "/type",
            "/payload",
            "/createdDate",
            "/payload/account",
            "/payload/status",
            "/payload/platformStatus",
            "/payload/firstName",
            "/payload/middleName",
            "/payload/lastName",
            "/payload/nickname",
            "/payload/email",
            "/payload/phones",
            "/payload/phones/0/kind",
            "/payload/phones/0/raw",
            "/payload/birthDate",
            "/payload/addresses",
            "/payload/addresses/0/kind",
            "/payload/addresses/0/street1",
            "/payload/addresses/0/city",
            "/payload/addresses/0/regionCode",
            "/payload/addresses/0/postalCode",
            "/payload/addresses/0/countryCode",
            "/payload/addresses/0/primary",
            "/payload/businessIds",
            "/payload/businessIds/0",
            "/payload/groups",
            "/payload/groups/0",
            "/payload/optOut",
            "/payload/createdAt",
            "/payload/updatedAt",
            "/payload/mergedInto",
            "/payload/mergedFrom",
        ],
    }
}

// Sizes.

#[tokio::test]
async fn a_50_kb_customer_id_is_accepted_and_served() {
    let app = TestApp::spawn().await;
    for source in SOURCES {
        let long = format!("{source}-{}", "x".repeat(50_000));
        let (status, answer) = deliver(&app, source, "a 50 KB id", example(source, &long).to_string()).await;
        assert_eq!(status, "accepted", "{answer}");
        let id = customer_id(source, &long);
        assert_eq!(answer["customerId"], id);
        let (status, customer) = record(&app, &id).await;
        assert_eq!(status, StatusCode::OK, "{customer}");
        assert_eq!(customer["externalId"], long);
        let (status, _) = app.get(&format!("/api/v1/customers/{}/events", segment(&id))).await;
        assert_eq!(status, StatusCode::OK);
        // max_body_bytes (64 KiB in the tests) bounds an id.
        let longer = "x".repeat(70_000);
        let (code, _) = deliver(&app, source, "a 70 KB id", example(source, &longer).to_string()).await;
        assert_eq!(code, "too_large");
    }
    // Far over the limit, the answer still arrives: the connection is not
    // cut while the sender is still sending.
    let (code, _) = deliver(&app, "treez", "8 MB", vec![b' '; 8 << 20]).await;
    assert_eq!(code, "too_large");
    let listed = app.directory().await;
    assert_eq!(listed.len(), 3);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn many_keys_long_lists_and_long_strings_within_the_limit_are_kept() {
    let app = TestApp::spawn().await;
    let keys: serde_json::Map<String, Value> = (0..4000).map(|i| (format!("k{i}"), json!(i))).collect();
    let body = set(treez("big", "keys", T1), "/data/extra", Value::Object(keys));
    let (status, answer) = deliver(&app, "treez", "4,000 keys", body.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let ids: Vec<String> = (0..6000).map(|i| format!("b{i}")).collect();
    let body = with(vagaro("env", "ids", T1), "/payload/businessIds", json!(ids));
    let (status, answer) = deliver(&app, "vagaro", "6,000 business ids", body.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let body = with(clientele("long"), "/payload/lastName", json!("W".repeat(60_000)));
    let (status, answer) = deliver(&app, "clientele", "a 60 KB name", body.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    assert_eq!(
        app.customer("vagaro:ids").await["businessIds"].as_array().map(Vec::len),
        Some(6000)
    );
    assert_eq!(
        app.customer("treez:big:keys").await["attributes"]["extra"]["k3999"],
        3999
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn ids_with_url_special_characters_are_served() {
    let app = TestApp::spawn().await;
    for id in ["a/b", "a?b=c", "a#b", "a%2Fb", "a b", "..", ".", "é😀", "\\"] {
        let (status, answer) = deliver(&app, "treez", id, treez("url", id, T1).to_string()).await;
        assert_eq!(status, "accepted", "{id}: {answer}");
        let (status, customer) = record(&app, &format!("treez:url:{id}")).await;
        assert_eq!(status, StatusCode::OK, "{id}: {customer}");
        assert_eq!(customer["externalId"], id);
    }
    assert_still_serving(&app).await;
}

// Dates.

#[tokio::test]
async fn impossible_dates_become_null_with_a_warning() {
    let app = TestApp::spawn().await;
    let impossible = [
        "2023-02-30",
        "9999-99-99",
        "0000-01-01",
        "10000-01-01",
        "+010000-01-01",
        "-000001-01-01",
        "2024-13-01",
        "1948-02-12T25:00:00",
    ];
    for (i, birthday) in impossible.iter().enumerate() {
        let id = format!("birth-{i}");
        let body = with(treez("dates", &id, T1), "/data/birthday", json!(birthday));
        let (status, answer) = deliver(&app, "treez", birthday, body.to_string()).await;
        assert_eq!(status, "accepted", "{birthday}: {answer}");
        let customer_id = format!("treez:dates:{id}");
        assert_eq!(
            record(&app, &customer_id).await.1["birthDate"],
            Value::Null,
            "{birthday}"
        );
        assert_eq!(
            warnings(&app, &customer_id, &answer["eventId"]).await,
            ["birthDate"],
            "{birthday}"
        );
    }
    let impossible_times = [
        "2023-02-30T00:00:00Z",
        "9999-99-99 99:99:99.999",
        "0000-06-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:30:00+01:00",
        "2026-01-01T00:00:00[Mars/Olympus]",
        "2026-01-01T00:00:00+99:00",
    ];
    for (i, time) in impossible_times.iter().enumerate() {
        // One impossible time: the other orders the event.
        let id = format!("time-{i}");
        let body = with(treez("dates", &id, T1), "/data/last_update", json!(time));
        let (status, answer) = deliver(&app, "treez", time, body.to_string()).await;
        assert_eq!(status, "accepted", "{time}: {answer}");
        let customer_id = format!("treez:dates:{id}");
        assert_eq!(record(&app, &customer_id).await.1["updatedAt"], Value::Null, "{time}");
        assert_eq!(
            warnings(&app, &customer_id, &answer["eventId"]).await,
            ["updatedAt"],
            "{time}"
        );
        // No usable time at all: quarantined.
        let body = with(body, "/data/signup_date", json!(time));
        let (status, _) = deliver(&app, "treez", time, body.to_string()).await;
        assert_eq!(status, "quarantined", "{time}");
        let body = vagaro("env", &id, time);
        let body = with(body, "/payload/createdDate", json!(time));
        let (status, _) = deliver(&app, "vagaro", time, body.to_string()).await;
        assert_eq!(status, "accepted", "{time}: the envelope time orders it");
        let (status, _) = deliver(
            &app,
            "vagaro",
            time,
            with(body, "/createdDate", json!(time)).to_string(),
        )
        .await;
        assert_eq!(status, "quarantined", "{time}");
    }
    assert_still_serving(&app).await;
}

// Phones.

#[tokio::test]
async fn absurd_phone_numbers_keep_raw_without_e164() {
    let app = TestApp::spawn().await;
    let absurd = [
        "9".repeat(500),
        format!("+{}", "1".repeat(499)),
        "CALL ME MAYBE".to_owned(),
        "+0".to_owned(),
        "+".to_owned(),
        "00".to_owned(),
        "😀📞😀".to_owned(),
        "+1 914 555 1212 ext. 99999999999999999999".to_owned(),
        "١٢٣٤٥٦٧٨٩٠".to_owned(),
        "\u{202e}2121 555 419".to_owned(),
    ];
    for (i, phone) in absurd.iter().enumerate() {
        let id = format!("phone-{i}");
        let body = with(treez("phones", &id, T1), "/data/phone", json!(phone));
        let (status, answer) = deliver(&app, "treez", phone, body.to_string()).await;
        assert_eq!(status, "accepted", "{phone}: {answer}");
        let customer = record(&app, &format!("treez:phones:{id}")).await.1;
        let phones = customer["phones"].as_array().expect("phones");
        assert_eq!(phones.len(), 1, "{phone}: {customer}");
        assert_eq!(phones[0]["raw"], json!(phone.trim()), "{phone}");
        let e164 = &phones[0]["e164"];
        assert!(
            e164.is_null()
                || e164
                    .as_str()
                    .and_then(|e| e.strip_prefix('+'))
                    .is_some_and(|d| d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())),
            "{phone}: {e164}"
        );
        let body = with(vagaro("env", &id, T1), "/payload/dayPhone", json!(phone));
        let (status, _) = deliver(&app, "vagaro", phone, body.to_string()).await;
        assert_eq!(status, "accepted", "{phone}");
        // As a list filter: read, or refused with a 400.
        let (status, body) = app.get_query("/api/v1/customers", &[("phone", phone)]).await;
        assert!(
            status == StatusCode::OK || error_code(&body) == "bad_parameter",
            "{phone}: {status} {body}"
        );
    }
    assert_still_serving(&app).await;
}

// Merges.

#[tokio::test]
async fn a_self_merge_makes_no_link_and_resolves_to_itself() {
    let app = TestApp::spawn().await;
    let body = treez("self", "3904", T1);
    let body = with(
        body,
        "/data/merged_customer_ids",
        json!(["3904", 3904, " 3904 ", "3905"]),
    );
    let body = with(body, "/data/merged_into_customer_id", json!(3904));
    let (status, answer) = deliver(&app, "treez", "a self-merge", body.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let id = "treez:self:3904";
    let (status, resolved) = app.get(&format!("/api/v1/customers/{id}?resolve=true")).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["id"], id);
    assert_eq!(resolved["mergedInto"], Value::Null);
    assert_eq!(resolved["mergedFrom"], json!(["treez:self:3905"]));
    assert_eq!(
        warnings(&app, id, &answer["eventId"]).await,
        ["mergedInto", "mergedFrom"]
    );

    let body = with(clientele("c-self"), "/payload/mergedInto", json!("c-self"));
    let body = with(body, "/payload/mergedFrom", json!(["c-self"]));
    let (status, _) = deliver(&app, "clientele", "a self-merge", body.to_string()).await;
    assert_eq!(status, "accepted");
    let (status, resolved) = app.get("/api/v1/customers/clientele:c-self?resolve=true").await;
    assert_eq!(
        (status, &resolved["mergedInto"]),
        (StatusCode::OK, &Value::Null),
        "{resolved}"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn merge_cycles_resolve_and_terminate() {
    let app = TestApp::spawn().await;
    // A into B and B into A, each side saying so.
    let into = |id: &str, survivor: &str| {
        let body = with(treez("cycle", id, T1), "/data/status", json!("DEACTIVATED"));
        with(body, "/data/merged_into_customer_id", json!(survivor)).to_string()
    };
    for (id, survivor) in [("a", "b"), ("b", "a"), ("x", "y"), ("y", "z"), ("z", "x")] {
        let (status, answer) = deliver(&app, "treez", "a merge in a cycle", into(id, survivor)).await;
        assert_eq!(status, "accepted", "{answer}");
    }
    // And survivors that list each other.
    for (id, absorbed) in [("p", "q"), ("q", "p")] {
        let body = with(treez("cycle", id, T1), "/data/merged_customer_ids", json!([absorbed]));
        let (status, _) = deliver(&app, "treez", "survivors in a cycle", body.to_string()).await;
        assert_eq!(status, "accepted");
    }
    for (id, last_before_the_cycle) in [("a", "b"), ("b", "a"), ("x", "z"), ("y", "x"), ("p", "q")] {
        let path = format!("/api/v1/customers/treez:cycle:{id}?resolve=true");
        let (status, resolved) = send_in_time(&path, app.client.get(app.url(&path)).bearer_auth(util::ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{resolved}");
        assert_eq!(resolved["id"], format!("treez:cycle:{last_before_the_cycle}"), "{id}");
    }
    let (status, page) = app
        .get_query("/api/v1/customers", &[("includeMerged", "true"), ("limit", "1000")])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(7));
    assert_still_serving(&app).await;
}

// Known bugs, each reproduced; run with `cargo test --test hostile -- --ignored`.

/// Treez ids join the account and the customer id with `:`, which both
/// may contain: two customers of two dispensaries get one record.
#[tokio::test]
async fn customers_of_different_treez_accounts_never_share_an_id() {
    let app = TestApp::spawn().await;
    let (_, first) = deliver(&app, "treez", "account a:b, id c", treez("a:b", "c", T1).to_string()).await;
    let other = with(treez("a", "b:c", T1), "/data/first_name", json!("Other"));
    let (status, second) = deliver(&app, "treez", "account a, id b:c", other.to_string()).await;
    assert!(
        status == "quarantined" || first["customerId"] != second["customerId"],
        "{first} and {second} are one customer"
    );
}

/// Every error is `{"error":{"code","message"}}` (SPEC §3), also when the
/// router cannot decode the path or the query.
#[tokio::test]
async fn a_path_or_query_that_cannot_be_decoded_gets_a_json_error() {
    let app = TestApp::spawn().await;
    let requests = [
        source_auth("treez", app.client.post(app.url("/webhooks/%FF"))).body("{}"),
        app.client
            .get(app.url("/api/v1/customers/%FF"))
            .bearer_auth(util::ADMIN),
        app.client.get(app.url("/api/v1/events/%FF")).bearer_auth(util::ADMIN),
        app.client
            .get(app.url("/api/v1/customers?limit=1&limit=2"))
            .bearer_auth(util::ADMIN),
    ];
    for request in requests {
        let (status, body) = send_in_time("an undecodable request", request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        error_code(&body);
    }
}

/// A merge of more customers than one event may merge is kept for review,
/// not applied (it would hold the one writer for long); one at the bound
/// is applied whole.
#[tokio::test]
async fn a_survivor_absorbing_more_than_the_bound_is_quarantined_and_the_bound_is_merged() {
    let app = TestApp::spawn().await;
    let bound = clientele::model::normalize::MAX_MERGED;
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| i.to_string()).collect() };
    let over = with(
        treez("many", "s", T1),
        "/data/merged_customer_ids",
        json!(ids(bound + 1)),
    );
    let (status, answer) = deliver(&app, "treez", "one merge too many", over.to_string()).await;
    assert_eq!(status, "quarantined", "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("mergedFrom"), "{answer}");
    assert_eq!(app.get("/api/v1/customers/treez:many:s").await.0, StatusCode::NOT_FOUND);

    let at = with(
        treez("many", "s", "2026-04-25T11:38:21.000-07:00"),
        "/data/merged_customer_ids",
        json!(ids(bound)),
    );
    let (status, answer) = deliver(&app, "treez", "as many merges as allowed", at.to_string()).await;
    assert_eq!(status, "accepted", "{answer}");
    let survivor = app.customer("treez:many:s").await;
    assert_eq!(survivor["mergedFrom"].as_array().map(Vec::len), Some(bound));
    assert_eq!(
        app.customer(&format!("treez:many:{}", bound - 1)).await["mergedInto"],
        "treez:many:s"
    );
    assert_still_serving(&app).await;
}

/// Every query parameter the API refuses is `400 bad_parameter`, with a
/// message that names it, whichever route reads it.
#[tokio::test]
async fn every_bad_query_parameter_is_bad_parameter_naming_it() {
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url("https://example.com/hook").await;
    let messages = format!("/api/v1/subscriptions/{subscription}/messages");
    let replay = format!("/api/v1/subscriptions/{subscription}/replay");
    for (path, query, named) in [
        ("/api/v1/events", "status=lost", "status"),
        (messages.as_str(), "status=lost", "status"),
        ("/api/v1/customers", "changedSince=yesterday", "changedSince"),
        (replay.as_str(), "since=yesterday", "since"),
        (replay.as_str(), "", "since"),
        ("/api/v1/customers", "limit=1&limit=2", "limit"),
        ("/api/v1/events", "limit=1&limit=2", "limit"),
        (messages.as_str(), "cursor=1&cursor=2", "cursor"),
    ] {
        let path = format!("{path}?{query}");
        let (status, body) = if path.contains("/replay") {
            app.post_admin(&path).await
        } else {
            app.get(&path).await
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(error_code(&body), "bad_parameter", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{path}: {message}");
        assert!(!message.contains("Failed to deserialize"), "{path}: {message}");
    }
}
