//! Ingest answers over HTTP (SPEC §3, §8): which deliveries are refused and
//! leave nothing behind, which are kept as quarantined or ignored, how
//! retries are recognised, and what is kept with an accepted event.

use crate::util;

use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{
    ADMIN, CLIENTELE_TOKEN, TREEZ_TOKEN, TestApp, VAGARO_TOKEN, error_code, gzip, post_chunked, send, set, treez,
    vagaro, with, without,
};

const T1: &str = "2026-04-24T11:38:21.000-07:00";

/// A Treez body whose JSON is nested `depth` levels deep (the body object
/// is level 1), with a scalar at the bottom so that nothing normalizes
/// the nesting away.
fn treez_nested(id: &str, depth: usize) -> String {
    let body = set(treez("deep", id, T1), "/data/notes", json!("NEST"));
    let arrays = depth - 2;
    let nested = format!("{}1{}", "[".repeat(arrays), "]".repeat(arrays));
    body.to_string().replace("\"NEST\"", &nested)
}

/// The sorted keys of a JSON object.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("an object").keys().cloned().collect();
    keys.sort();
    keys
}

/// `body` padded (in an attribute) to exactly `size` bytes.
fn treez_of_size(id: &str, size: usize) -> String {
    let base = set(treez("big", id, T1), "/data/padding", json!("")).to_string();
    assert!(base.len() <= size);
    let body = set(
        treez("big", id, T1),
        "/data/padding",
        json!("x".repeat(size - base.len())),
    );
    let text = body.to_string();
    assert_eq!(text.len(), size);
    text
}

// Refused deliveries: nothing kept.

#[tokio::test]
async fn an_unknown_source_is_404_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let request = app
        .webhook("shopify")
        .bearer_auth(TREEZ_TOKEN)
        .body(treez("a", "404", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    error_code(&body);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_missing_token_is_401_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = send(app.webhook("treez").body(treez("a", "401", T1).to_string())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    error_code(&body);
    let (status, body) = send(app.webhook("vagaro").body(util::VAGARO_EXAMPLE)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    error_code(&body);
    // An empty header is no token either.
    let request = app
        .webhook("vagaro")
        .header("X-Vagaro-Signature", "")
        .body(util::VAGARO_EXAMPLE);
    assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_wrong_token_is_401_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let body = treez("a", "401w", T1).to_string();
    for token in [
        "wrong",
        "treez-toke",
        "treez-token-and-more",
        VAGARO_TOKEN,
        CLIENTELE_TOKEN,
    ] {
        let (status, answer) = send(app.webhook("treez").bearer_auth(token).body(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}: {answer}");
        error_code(&answer);
    }
    let request = app
        .webhook("vagaro")
        .header("X-Vagaro-Signature", TREEZ_TOKEN)
        .body(util::VAGARO_EXAMPLE);
    assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_vagaro_token_sent_as_a_bearer_token_is_401() {
    let app = TestApp::spawn().await;
    let request = app
        .webhook("vagaro")
        .bearer_auth(VAGARO_TOKEN)
        .body(util::VAGARO_EXAMPLE);
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    error_code(&body);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn an_auth_header_setting_moves_where_the_token_is_read() {
    let app = TestApp::builder()
        .source_setting("treez", "auth_header", "X-Treez-Token")
        .spawn()
        .await;
    let request = app
        .webhook("treez")
        .header("X-Treez-Token", TREEZ_TOKEN)
        .body(treez("ah", "1", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The kind's own header is no longer read.
    let request = app
        .webhook("treez")
        .bearer_auth(TREEZ_TOKEN)
        .body(treez("ah", "2", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let request = app
        .webhook("treez")
        .header("X-Treez-Token", "wrong")
        .body(treez("ah", "3", T1).to_string());
    assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.events(None).await.len(), 1);
}

#[tokio::test]
async fn a_second_configured_treez_token_is_accepted() {
    let app = TestApp::spawn().await;
    let request = app
        .webhook("treez")
        .bearer_auth("treez-next-token")
        .body(treez("rot", "1", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["customerId"], "treez:rot:1");
    app.customer("treez:rot:1").await;
}

/// The scheme's name is case-insensitive (RFC 9110), for sources and the
/// API alike.
#[tokio::test]
async fn a_bearer_token_is_read_whatever_the_case_of_the_scheme() {
    let app = TestApp::spawn().await;
    let request = app
        .webhook("treez")
        .header("Authorization", format!("bearer {TREEZ_TOKEN}"))
        .body(treez("case", "1", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let request = app
        .client
        .get(app.url("/api/v1/customers/treez:case:1"))
        .header("Authorization", format!("BEARER {}", util::ADMIN));
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_source_token_is_not_an_admin_token() {
    let app = TestApp::spawn().await;
    for token in [TREEZ_TOKEN, "treez-next-token", VAGARO_TOKEN] {
        let (status, body) = send(app.client.get(app.url("/api/v1/customers")).bearer_auth(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}: {body}");
        error_code(&body);
    }
    let (status, body) = send(app.client.get(app.url("/api/v1/events"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");
    error_code(&body);
    let request = app
        .client
        .post(app.url("/api/v1/events/evt_x/reprocess"))
        .bearer_auth(TREEZ_TOKEN);
    assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_admin_token_is_not_a_source_token() {
    let app = TestApp::spawn().await;
    let request = app
        .webhook("treez")
        .bearer_auth(ADMIN)
        .body(treez("adm", "1", T1).to_string());
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    error_code(&body);
    let request = app
        .webhook("vagaro")
        .header("X-Vagaro-Signature", ADMIN)
        .body(util::VAGARO_EXAMPLE);
    assert_eq!(send(request).await.0, StatusCode::UNAUTHORIZED);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_sender_outside_allow_ips_is_403_even_without_a_token() {
    // Appended to the last source, treez; the test client is 127.0.0.1.
    let app = TestApp::builder()
        .source_setting("treez", "allow_ips", vec!["10.0.0.0/8"])
        .spawn()
        .await;
    let body = treez("ip", "1", T1).to_string();
    let (status, answer) = send(app.webhook("treez").bearer_auth(TREEZ_TOKEN).body(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "right token: {answer}");
    error_code(&answer);
    // 403 comes before 401: the address is checked before the token.
    let (status, answer) = send(app.webhook("treez").body(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token: {answer}");
    let (status, _) = send(app.webhook("treez").bearer_auth("wrong").body(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong token");
    app.assert_nothing_kept().await;

    // The restriction is treez's alone.
    let (status, answer) = app.deliver("vagaro", util::VAGARO_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_sender_inside_allow_ips_is_served() {
    let app = TestApp::builder()
        .source_setting("treez", "allow_ips", vec!["10.0.0.0/8", "127.0.0.0/8"])
        .spawn()
        .await;
    let (status, answer) = app.deliver_json("treez", &treez("ip", "2", T1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Still a token check after the address check.
    let (status, _) = send(app.webhook("treez").body(treez("ip", "3", T1).to_string())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_of_size("413", 65537)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    error_code(&body);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_chunked_body_over_max_body_bytes_is_413_and_keeps_nothing() {
    // No Content-Length: the limit has to hold while reading.
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {TREEZ_TOKEN}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let body = treez_of_size("413c", 200_000).into_bytes();
    let (status, answer) = post_chunked(app.address, "/webhooks/treez", &headers, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    error_code(&answer);
    app.assert_nothing_kept().await;

    // A small chunked body is read as usual.
    let body = treez("chunk", "ok", T1).to_string().into_bytes();
    let (status, answer) = post_chunked(app.address, "/webhooks/treez", &headers, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["customerId"], "treez:chunk:ok");
}

#[tokio::test]
async fn a_body_of_exactly_max_body_bytes_is_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_of_size("limit", 65536)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customerId"], "treez:big:limit");
}

#[tokio::test]
async fn a_gzip_bomb_is_413_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let plain = treez_of_size("bomb", 1_000_000);
    let bomb = gzip(plain.as_bytes());
    assert!(bomb.len() < 65536, "the compressed body itself is within the limit");
    let (status, body) = app.deliver_with("treez", &[("Content-Encoding", "gzip")], bomb).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    error_code(&body);
    // One byte over, decompressed.
    let just_over = gzip(treez_of_size("bomb", 65537).as_bytes());
    let (status, _) = app
        .deliver_with("treez", &[("Content-Encoding", "gzip")], just_over)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_gzip_body_is_accepted_and_kept_decompressed() {
    let app = TestApp::spawn().await;
    let sent = treez("gz", "1", T1);
    let (status, body) = app
        .deliver_with(
            "treez",
            &[("Content-Encoding", "gzip")],
            gzip(sent.to_string().as_bytes()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(app.customer("treez:gz:1").await["lastName"], "Winnfield");
    let event = app.event(body["eventId"].as_str().unwrap()).await;
    assert_eq!(event["body"], sent);
    // The same delivery, plain this time, is the same JSON value: a retry.
    let (status, again) = app.deliver_json("treez", &sent).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"status": "duplicate", "eventId": body["eventId"]}));
}

#[tokio::test]
async fn a_multi_member_gzip_body_is_read_as_the_concatenation_of_its_members() {
    let app = TestApp::spawn().await;
    let sent = treez("gz", "members", T1);
    let text = sent.to_string();
    let (head, tail) = text.split_at(text.len() / 2);
    let members = [gzip(head.as_bytes()), gzip(tail.as_bytes())].concat();
    let (status, body) = app
        .deliver_with("treez", &[("Content-Encoding", "gzip")], members)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.event(body["eventId"].as_str().unwrap()).await["body"], sent);
}

#[tokio::test]
async fn garbage_after_a_gzip_member_is_400_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let member = gzip(treez("gz", "trailing", T1).to_string().as_bytes());
    for garbage in [&b"garbage"[..], b"\0\0\0\0", b"\x1f", b"\x1f\x8b\x08\0"] {
        let body = [member.as_slice(), garbage].concat();
        let (status, answer) = app.deliver_with("treez", &[("Content-Encoding", "gzip")], body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage:?}: {answer}");
        assert_eq!(error_code(&answer), "bad_encoding", "{garbage:?}");
    }
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_gzip_bomb_split_into_members_is_413_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let text = treez_of_size("members", 200_000);
    let members: Vec<u8> = text.as_bytes().chunks(20_000).flat_map(gzip).collect();
    assert!(members.len() < 65536, "the compressed body itself is within the limit");
    let (status, body) = app
        .deliver_with("treez", &[("Content-Encoding", "gzip")], members)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_body_that_is_not_gzip_but_says_so_is_400_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let plain = treez("gz", "bad", T1).to_string().into_bytes();
    let (status, body) = app.deliver_with("treez", &[("Content-Encoding", "gzip")], plain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_code(&body);
    // A gzip stream cut short is not gzip either.
    let mut cut = gzip(treez("gz", "cut", T1).to_string().as_bytes());
    cut.truncate(cut.len() / 2);
    let (status, body) = app.deliver_with("treez", &[("Content-Encoding", "gzip")], cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    for body in ["not json", "{\"event_type\": \"CUSTOMER\",", "", "{} {}"] {
        let (status, answer) = app.deliver("treez", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {answer}");
        error_code(&answer);
    }
    let (status, _) = app.deliver("vagaro", "<xml/>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn json_nested_deeper_than_128_levels_is_400_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_nested("129", 129)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_code(&body);
    let (status, _) = app.deliver("treez", &treez_nested("1000", 1000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.assert_nothing_kept().await;
}

#[tokio::test]
async fn json_nested_100_levels_deep_is_kept() {
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_nested("100", 100)).await;
    assert!(status.is_success(), "{status}: {body}");
    assert!(
        ["accepted", "quarantined"].contains(&body["status"].as_str().unwrap_or_default()),
        "{body}"
    );
    app.event(body["eventId"].as_str().unwrap()).await;
}

#[tokio::test]
async fn json_nested_exactly_128_levels_deep_is_not_refused() {
    // "Deeper than 128 levels is a 400" (SPEC §8): 128 itself is not.
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_nested("128", 128)).await;
    assert!(status.is_success(), "{status}: {body}");
}

#[tokio::test]
async fn a_deeply_nested_body_that_is_accepted_stays_readable() {
    // Whatever ingest accepts, the API can show: the history entry holds the
    // body's attributes two levels deeper (`changes.attributes.to`).
    let app = TestApp::spawn().await;
    let (status, body) = app.deliver("treez", &treez_nested("127", 127)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    let id = body["eventId"].as_str().unwrap();
    let (status, event) = app.get(&format!("/api/v1/events/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    let (status, record) = app.get("/api/v1/customers/treez:deep:127").await;
    assert_eq!(status, StatusCode::OK, "{record}");
    let (status, history) = app.get("/api/v1/customers/treez:deep:127/events").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["data"].as_array().map(Vec::len), Some(1));
}

// Kept but not applied: quarantined and ignored.

#[tokio::test]
async fn unmappable_json_is_quarantined_with_a_reason_and_listed() {
    let app = TestApp::spawn().await;
    let no_treez_id = without(treez("q", "1", T1), "/data/customer_id");
    let no_vagaro_id = without(vagaro("q-v-1", "X", "2023-08-10T08:50:00Z"), "/payload/customerId");
    let array = json!([treez("q", "2", T1)]);
    let no_time = with(
        with(treez("q", "3", T1), "/data/last_update", json!("not a time")),
        "/data/signup_date",
        json!(null),
    );
    let object_id = with(treez("q", "4", T1), "/data/customer_id", json!({"id": 4}));
    let na_id = with(treez("q", "5", T1), "/data/customer_id", json!(" N/A "));
    let (null, number) = (json!(null), json!(42));
    let cases = [
        ("treez", &no_treez_id, Some("customer_id")),
        ("vagaro", &no_vagaro_id, Some("customerId")),
        ("treez", &array, None),
        ("treez", &no_time, None),
        ("treez", &object_id, Some("customer_id")),
        ("treez", &na_id, Some("customer_id")),
        ("treez", &null, None),
        ("vagaro", &number, None),
    ];
    let mut quarantined = Vec::new();
    for (source, body, names) in cases {
        let (status, answer) = app.deliver_json(source, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}: {answer}");
        let keys = keys(&answer);
        assert_eq!(keys, ["eventId", "reason", "status"], "{answer}");
        assert_eq!(answer["status"], "quarantined");
        let reason = answer["reason"].as_str().unwrap();
        assert!(!reason.is_empty());
        if let Some(name) = names {
            assert!(reason.contains(name), "{reason:?} names {name}");
        }
        quarantined.push((answer["eventId"].as_str().unwrap().to_owned(), body.clone()));
    }

    let listed = app.events(Some("quarantined")).await;
    assert_eq!(listed.len(), quarantined.len(), "{listed:?}");
    for ((id, body), event) in quarantined.iter().zip(&listed) {
        assert_eq!(&event["eventId"], id, "listed in arrival order");
        assert_eq!(event["status"], "quarantined");
        assert!(event["reason"].as_str().is_some_and(|r| !r.is_empty()), "{event}");
        // The raw body is kept for a reprocess.
        assert_eq!(&app.event(id).await["body"], body);
    }
    assert_eq!(app.events(Some("accepted")).await, Vec::<Value>::new());
    assert_eq!(app.directory().await, Vec::<Value>::new());

    // An accepted event is listed as accepted, and only there.
    let (_, answer) = app.deliver_json("treez", &treez("q", "6", T1)).await;
    let accepted = app.events(Some("accepted")).await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["eventId"], answer["eventId"]);
    assert_eq!(app.events(Some("quarantined")).await.len(), quarantined.len());
}

/// The sum of `clientele_deliveries_total` samples for `source` and `status`.
async fn deliveries_counted(app: &TestApp, source: &str, status: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("a response")
        .text()
        .await
        .expect("a body");
    let (source, status) = (format!("source=\"{source}\""), format!("status=\"{status}\""));
    text.lines()
        .filter(|l| l.starts_with("clientele_deliveries_total{") && l.contains(&source) && l.contains(&status))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_quarantined_delivery_is_counted_in_metrics() {
    // The recorder is process-wide and other tests run alongside: the
    // count can only have grown by at least ours.
    let app = TestApp::spawn().await;
    let before = deliveries_counted(&app, "treez", "quarantined").await;
    let body = without(treez("q", "metrics", T1), "/data/customer_id");
    let (status, _) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let after = deliveries_counted(&app, "treez", "quarantined").await;
    assert!(after >= before + 1.0, "{before} -> {after}");
}

#[tokio::test]
async fn a_retried_quarantined_delivery_is_a_duplicate() {
    let app = TestApp::spawn().await;
    let body = without(treez("q", "retry", T1), "/data/customer_id");
    let (status, first) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, json!({"status": "duplicate", "eventId": first["eventId"]}));
    let listed = app.events(None).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "quarantined");
    assert_eq!(listed[0]["duplicates"], 1);
}

#[tokio::test]
async fn events_of_other_types_are_ignored_and_their_retries_are_duplicates() {
    let app = TestApp::spawn().await;
    let appointment = json!({
        "id": "appt-1", "createdDate": "2024-03-15T00:00:00Z", "type": "appointment", "action": "created",
        "payload": {"appointmentId": "A1", "customerId": "C1", "businessId": "B1",
                    "startTime": "2024-03-16T10:00:00Z"},
    });
    let product = json!({"event_type": "PRODUCT", "dispensary_short_name": "shop",
                         "data": {"product_id": "p1", "name": "Gummies"}});
    let ticket = json!({"event_type": "TICKET", "dispensary_short_name": "shop",
                        "data": {"ticket_id": "t1", "customer_id": "3904"}});
    let ticket_status = json!({"event_type": "TICKET_STATUS", "dispensary_short_name": "shop",
                               "data": {"ticket_id": "t1", "status": "COMPLETED"}});
    let ping = json!({"test": true, "dispensary_short_name": "x"});
    let cases = [
        ("vagaro", appointment),
        ("treez", product),
        ("treez", ticket),
        ("treez", ticket_status),
        ("treez", ping),
    ];
    let mut ids = Vec::new();
    for (source, body) in &cases {
        let (status, answer) = app.deliver_json(source, body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        let keys = keys(&answer);
        assert_eq!(keys, ["eventId", "status"], "{answer}");
        assert_eq!(answer["status"], "ignored", "{body}");
        let id = answer["eventId"].clone();
        assert!(!ids.contains(&id), "a new event each");
        ids.push(id);
    }
    for ((source, body), id) in cases.iter().zip(&ids) {
        let (status, again) = app.deliver_json(source, body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, json!({"status": "duplicate", "eventId": id}), "{body}");
    }
    let listed = app.events(Some("ignored")).await;
    let listed_ids: Vec<_> = listed.iter().map(|e| e["eventId"].clone()).collect();
    assert_eq!(listed_ids, ids);
    assert!(listed.iter().all(|e| e["duplicates"] == 1), "{listed:?}");
    assert_eq!(
        app.directory().await,
        Vec::<Value>::new(),
        "an ignored event changes no customer"
    );
}

// Retries: the dedupe key.

#[tokio::test]
async fn a_webhook_id_header_overrides_the_content_hash() {
    let app = TestApp::spawn().await;
    let body = treez("wh", "1", T1);
    let h1 = [("webhook-id", "msg_1")];
    let (status, first) = app.deliver_with("treez", &h1, body.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["outcome"], "applied");
    // The same body under another webhook-id is another delivery.
    let (status, second) = app
        .deliver_with("treez", &[("webhook-id", "msg_2")], body.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["status"], "accepted", "{second}");
    assert_ne!(second["eventId"], first["eventId"]);
    // Another body under the first webhook-id is a retry of it.
    let changed = with(body.clone(), "/data/first_name", json!("Vincent"));
    let changed = with(changed, "/data/last_update", json!("2026-05-01T00:00:00Z"));
    let (status, third) = app.deliver_with("treez", &h1, changed.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third, json!({"status": "duplicate", "eventId": first["eventId"]}));
    assert_eq!(app.customer("treez:wh:1").await["firstName"], "Jules");
    assert_eq!(app.events(None).await.len(), 2);
    assert_eq!(app.event(first["eventId"].as_str().unwrap()).await["duplicates"], 1);
}

#[tokio::test]
async fn an_idempotency_key_header_overrides_the_envelope_id() {
    let app = TestApp::spawn().await;
    let body = vagaro("env-1", "IK1", "2023-08-10T08:50:00Z");
    let (status, first) = app
        .deliver_with("vagaro", &[("idempotency-key", "key-1")], body.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // Same envelope id, another key: another delivery.
    let (status, second) = app
        .deliver_with("vagaro", &[("idempotency-key", "key-2")], body.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["status"], "accepted", "{second}");
    assert_ne!(second["eventId"], first["eventId"]);
    // Another envelope id and body, the first key: a retry.
    let other = with(
        vagaro("env-2", "IK1", "2023-09-01T00:00:00Z"),
        "/payload/customerFirstName",
        json!("Jane"),
    );
    let (status, third) = app
        .deliver_with(
            "vagaro",
            &[("idempotency-key", "key-1")],
            other.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third, json!({"status": "duplicate", "eventId": first["eventId"]}));
    assert_eq!(app.customer("vagaro:IK1").await["firstName"], "Johnny");
    assert_eq!(app.events(None).await.len(), 2);
}

#[tokio::test]
async fn a_webhook_id_wins_over_an_idempotency_key() {
    let app = TestApp::spawn().await;
    let body = treez("wh", "both", T1).to_string().into_bytes();
    let (_, first) = app
        .deliver_with(
            "treez",
            &[("webhook-id", "msg_b"), ("idempotency-key", "k1")],
            body.clone(),
        )
        .await;
    assert_eq!(first["status"], "accepted", "{first}");
    let (status, again) = app
        .deliver_with("treez", &[("webhook-id", "msg_b"), ("idempotency-key", "k2")], body)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"status": "duplicate", "eventId": first["eventId"]}));
}

#[tokio::test]
async fn a_vagaro_retry_with_the_same_envelope_id_is_a_duplicate() {
    let app = TestApp::spawn().await;
    let body = vagaro("env-r", "R1", "2023-08-10T08:50:00Z");
    let (_, first) = app.deliver_json("vagaro", &body).await;
    assert_eq!(first["status"], "accepted", "{first}");
    // Vagaro's id names the delivery: a changed body under it is still a retry.
    let changed = with(body, "/payload/customerFirstName", json!("Other"));
    let (status, again) = app.deliver_json("vagaro", &changed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"status": "duplicate", "eventId": first["eventId"]}));
    assert_eq!(app.customer("vagaro:R1").await["firstName"], "Johnny");
}

// Reprocessing.

#[tokio::test]
async fn a_quarantined_event_is_reprocessed_after_a_config_fix() {
    let app = TestApp::spawn().await;
    let body = without(treez("unused", "77", T1), "/dispensary_short_name");
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("account"), "{answer}");
    let event_id = answer["eventId"].as_str().unwrap().to_owned();
    // Without the fix, a reprocess quarantines it again.
    let (status, again) = app.post_admin(&format!("/api/v1/events/{event_id}/reprocess")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "quarantined");

    let dir = app.dir.clone();
    let temp = app.stop().await;
    let app = TestApp::builder()
        .source_setting("treez", "account", "shop")
        .spawn_in(&dir)
        .await;
    let (status, fixed) = app.post_admin(&format!("/api/v1/events/{event_id}/reprocess")).await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["status"], "accepted", "{fixed}");
    assert_eq!(fixed["eventId"], event_id.as_str());
    assert_eq!(fixed["customerId"], "treez:shop:77");
    let customer = app.customer("treez:shop:77").await;
    assert_eq!(customer["account"], "shop");
    assert_eq!(customer["lastName"], "Winnfield");
    let event = app.event(&event_id).await;
    assert_eq!(event["status"], "accepted", "{event}");
    assert_eq!(event["customerId"], "treez:shop:77");
    assert_eq!(app.events(Some("quarantined")).await, Vec::<Value>::new());
    assert_eq!(app.history("treez:shop:77").await.len(), 1);
    // The platform's retry of it is still a duplicate.
    let (status, retry) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(retry, json!({"status": "duplicate", "eventId": event_id}));
    app.stop().await;
    drop(temp);
}

/// The record's own event, reprocessed with nothing changed, changes
/// nothing: it is `unchanged` (not `stale`: no newer event holds it).
#[tokio::test]
async fn reprocessing_the_event_a_record_holds_is_unchanged() {
    let app = TestApp::spawn().await;
    let (_, answer) = app.deliver_json("treez", &treez("shop", "78", T1)).await;
    let event_id = answer["eventId"].as_str().unwrap();
    let before = app.customer("treez:shop:78").await;
    let (status, again) = app.post_admin(&format!("/api/v1/events/{event_id}/reprocess")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["outcome"], "unchanged", "{again}");
    assert_eq!(app.customer("treez:shop:78").await, before);
}

#[tokio::test]
async fn reprocessing_an_unknown_event_is_404() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post_admin("/api/v1/events/evt_nope/reprocess").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    error_code(&body);
    let (status, body) = app.get("/api/v1/events/evt_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    error_code(&body);
}

// What is kept with an accepted event.

#[tokio::test]
async fn an_unparseable_field_becomes_null_with_a_warning_and_the_rest_applies() {
    let app = TestApp::spawn().await;
    let body = with(treez("warn", "1", T1), "/data/birthday", json!("1990-02-30"));
    let body = with(body, "/data/opt_out", json!("yes"));
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["outcome"], "applied");
    let customer = app.customer("treez:warn:1").await;
    assert_eq!(customer["birthDate"], Value::Null);
    assert_eq!(customer["optOut"], Value::Null);
    assert_eq!(customer["firstName"], "Jules");
    assert_eq!(customer["groups"], json!(["SENIOR"]));
    let history = app.history("treez:warn:1").await;
    assert_eq!(history.len(), 1);
    let warnings = history[0]["warnings"].as_array().expect("warnings on the entry");
    let fields: Vec<String> = warnings
        .iter()
        .map(|w| w["field"].as_str().unwrap_or_default().to_ascii_lowercase())
        .collect();
    assert_eq!(fields.len(), 2, "{warnings:?}");
    assert!(fields.iter().any(|f| f.contains("birth")), "{warnings:?}");
    assert!(fields.iter().any(|f| f.contains("opt")), "{warnings:?}");
    // The raw values stay in the raw event.
    let event = app.event(answer["eventId"].as_str().unwrap()).await;
    assert_eq!(event["body"]["data"]["birthday"], "1990-02-30");
    assert_eq!(event["body"]["data"]["opt_out"], "yes");
}

#[tokio::test]
async fn an_offsetless_time_is_read_in_the_source_timezone_and_an_overlap_takes_the_earlier_instant() {
    // treez's timezone is America/Los_Angeles; 2026-11-01 01:30 happens
    // twice there (PDT, then PST).
    let app = TestApp::spawn().await;
    let body = with(
        treez("tz", "1", "2026-11-01 01:30:00.000"),
        "/data/signup_date",
        json!("2026-04-24 11:38:21.500"),
    );
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let customer = app.customer("treez:tz:1").await;
    assert_eq!(customer["updatedAt"], "2026-11-01T08:30:00.000Z");
    assert_eq!(customer["createdAt"], "2026-04-24T18:38:21.500Z");
}

#[tokio::test]
async fn the_last_instant_of_year_9999_is_kept_and_can_be_asked_for() {
    // Platforms send the end of year 9999 as "never".
    let never = "9999-12-31T23:59:59.999Z";
    let app = TestApp::spawn().await;
    let body = with(treez("never", "1", T1), "/data/last_visit_date", json!(never));
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(app.customer("treez:never:1").await["attributes"]["lastVisitAt"], never);
    let warnings = &app.history("treez:never:1").await[0]["warnings"];
    assert!(warnings.as_array().is_none_or(Vec::is_empty), "{warnings}");
    let (status, page) = app.get_query("/api/v1/customers", &[("changedSince", never)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn a_clean_event_has_no_warnings() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &treez("warn", "clean", T1)).await;
    let history = app.history("treez:warn:clean").await;
    let warnings = &history[0]["warnings"];
    assert!(
        warnings.is_null() || warnings.as_array().is_some_and(Vec::is_empty),
        "{warnings}"
    );
}

#[tokio::test]
async fn the_headers_of_interest_are_kept_with_the_event_and_no_others() {
    let app = TestApp::spawn().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = app
        .webhook("treez")
        .bearer_auth(TREEZ_TOKEN)
        .header("traceparent", traceparent)
        .header("user-agent", "Treez-Webhooks/1.0")
        .header("content-type", "application/json; charset=utf-8")
        .header("x-forwarded-for", "203.0.113.9")
        .body(treez("hdr", "1", T1).to_string());
    let (status, answer) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let event = app.event(answer["eventId"].as_str().unwrap()).await;
    assert_eq!(
        event["headers"],
        json!({
            "traceparent": traceparent,
            "user-agent": "Treez-Webhooks/1.0",
            "content-type": "application/json; charset=utf-8",
        })
    );
    // The same in the list.
    let listed = app.events(None).await;
    assert_eq!(listed[0]["headers"], event["headers"]);
    assert!(!event.to_string().contains(TREEZ_TOKEN), "the token is never kept");
}

#[tokio::test]
async fn an_accepted_answer_names_the_event_and_the_customer() {
    let app = TestApp::spawn().await;
    let (status, answer) = app.deliver_json("treez", &treez("ans", "1", T1)).await;
    assert_eq!(status, StatusCode::OK);
    let keys = keys(&answer);
    assert_eq!(keys, ["customerId", "eventId", "outcome", "status"], "{answer}");
    let event = app.event(answer["eventId"].as_str().unwrap()).await;
    assert_eq!(event["status"], "accepted");
    assert_eq!(event["source"], "treez");
    assert_eq!(event["customerId"], "treez:ans:1");
    assert_eq!(event["duplicates"], 0);
}

#[tokio::test]
async fn a_source_over_its_rate_limit_is_429_with_retry_after_and_keeps_nothing() {
    // One delivery a second, for the treez source only (appended to it).
    let app = TestApp::builder()
        .source_setting("treez", "rate_limit", 1)
        .spawn()
        .await;
    let mut limited = Vec::new();
    for i in 0..5 {
        let body = treez("rl", &i.to_string(), "2026-04-01T00:00:00Z");
        let response = app
            .client
            .post(app.url("/webhooks/treez"))
            .bearer_auth(util::TREEZ_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "1");
            let (_, body) = util::read(response).await;
            assert_eq!(body["error"]["code"], "rate_limited");
            limited.push(i);
        }
    }
    assert!(
        !limited.is_empty() && !limited.contains(&0),
        "the burst of one passes, then 429: {limited:?}"
    );
    assert_eq!(app.events(None).await.len(), 5 - limited.len(), "a 429 keeps nothing");
    // Other sources are not limited.
    for i in 0..5 {
        let body = vagaro(&format!("rl-v-{i}"), "V", "2023-08-10T08:50:00Z");
        assert_eq!(app.deliver_json("vagaro", &body).await.0, StatusCode::OK);
    }
}

// Concurrent deliveries (on Postgres, kept in groups: one transaction for
// the deliveries that wait together).

/// What a set of deliveries left: each answer's status, counted, and the
/// directory without its bookkeeping, by id.
async fn left_by(app: &TestApp, answers: &[(StatusCode, Value)]) -> (Vec<(String, usize)>, Vec<Value>, usize) {
    let mut statuses = std::collections::BTreeMap::new();
    for (code, answer) in answers {
        assert_eq!(*code, StatusCode::OK, "{answer}");
        *statuses
            .entry(answer["status"].as_str().expect("a status").to_owned())
            .or_insert(0) += 1;
    }
    let mut records: Vec<Value> = app.directory().await.iter().map(util::without_bookkeeping).collect();
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    (statuses.into_iter().collect(), records, app.events(None).await.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_sent_at_once_leave_what_the_same_sent_one_at_a_time_leave() {
    // Snapshots of a few customers of each platform in scrambled time
    // order, each with a name and a phone of its own; a quarter of them
    // retried; both sides of a Treez merge.
    let mut bodies: Vec<(&str, Value)> = Vec::new();
    for i in 0..40 {
        let minute = (i * 7) % 60;
        let at = format!("2026-04-24T10:{minute:02}:00.000-07:00");
        let body = with(
            treez("group", &(i % 5).to_string(), &at),
            "/data/first_name",
            json!(format!("Name{i}")),
        );
        bodies.push(("treez", with(body, "/data/phone", json!(format!("914555{i:04}")))));
        let at = format!("2026-04-24T10:{minute:02}:00Z");
        let body = vagaro(&format!("group-{i}"), &format!("V{}", i % 3), &at);
        bodies.push((
            "vagaro",
            set(body, "/payload/customerFirstName", json!(format!("Name{i}"))),
        ));
    }
    let retries: Vec<_> = bodies.iter().step_by(4).cloned().collect();
    bodies.extend(retries);
    let survivor = with(treez("group", "100", T1), "/data/status", json!("MERGED"));
    bodies.push((
        "treez",
        with(survivor, "/data/merged_customer_ids", json!(["0", "200"])),
    ));
    let absorbed = with(treez("group", "200", T1), "/data/status", json!("DEACTIVATED"));
    bodies.push(("treez", with(absorbed, "/data/merged_into_customer_id", json!("100"))));

    let at_once = std::sync::Arc::new(TestApp::spawn().await);
    let sending: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|(source, body)| {
            let app = at_once.clone();
            tokio::spawn(async move { app.deliver_json(source, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for answer in sending {
        answers.push(answer.await.expect("a delivery"));
    }
    let one_at_a_time = TestApp::spawn().await;
    let mut in_order = Vec::new();
    for (source, body) in &bodies {
        in_order.push(one_at_a_time.deliver_json(source, body).await);
    }

    let expected = left_by(&one_at_a_time, &in_order).await;
    assert_eq!(
        expected.0,
        [("accepted".to_owned(), 82), ("duplicate".to_owned(), 20)],
        "each delivery kept once, each retry a duplicate"
    );
    assert_eq!(expected.1.len(), 10);
    assert_eq!(left_by(&at_once, &answers).await, expected);
    assert_eq!(at_once.customer("treez:group:0").await["mergedInto"], "treez:group:100");
}

/// A delivery the store refuses (on Postgres, an 8,000-character email
/// that no index takes) fails alone: the deliveries kept in the same
/// transaction with it are kept and answered, whether they came at once
/// as webhooks or in one batch of an import; a batch's retries within it
/// are its duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_store_refuses_does_not_fail_those_kept_with_it() {
    let postgres = util::TestStore::chosen() == util::TestStore::Postgres;
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let unindexable: String = (0..125u32)
        .map(|i| format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes())))
        .collect();
    let bad = with(
        treez("refused", "bad", T1),
        "/data/email",
        json!(format!("a@{unindexable}")),
    );
    let mut bodies: Vec<Value> = (0..30).map(|i| treez("refused", &i.to_string(), T1)).collect();
    bodies.insert(15, bad.clone());
    let sending: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let app = app.clone();
            tokio::spawn(async move { app.deliver_json("treez", &body).await })
        })
        .collect();
    for (i, answer) in sending.into_iter().enumerate() {
        let (code, answer) = answer.await.expect("a delivery");
        if i == 15 && postgres {
            assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
        } else {
            assert_eq!(code, StatusCode::OK, "{answer}");
            assert_eq!(answer["status"], "accepted", "{answer}");
        }
    }
    assert_eq!(app.directory().await.len(), if postgres { 30 } else { 31 });

    let record = |body: Value| json!({"bodyRaw": body.to_string()});
    let import = |records: Vec<Value>| {
        let app = app.clone();
        async move {
            send(
                app.client
                    .post(app.url("/api/v1/sources/treez/import"))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "records": records })),
            )
            .await
        }
    };
    let first = treez("batch", "1", T1);
    let (code, answer) = import(vec![
        record(first.clone()),
        record(treez("batch", "2", T1)),
        record(first),
    ])
    .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let outcomes: Vec<&str> = answer["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| o["outcome"].as_str().expect("an outcome"))
        .collect();
    assert_eq!(outcomes, ["applied", "applied", "duplicate"]);
    let kept = app.events(None).await;
    let first_kept = kept
        .iter()
        .find(|e| e["customerId"] == "treez:batch:1")
        .expect("the first record's event");
    assert_eq!(first_kept["duplicates"], 1, "{first_kept}");

    let bad = set(bad, "/data/customer_id", json!("bad-too"));
    let records = vec![
        record(treez("batch", "3", T1)),
        record(bad),
        record(treez("batch", "4", T1)),
    ];
    let (code, answer) = import(records).await;
    assert_eq!(
        code,
        if postgres {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        },
        "{answer}"
    );
    for id in ["treez:batch:3", "treez:batch:4"] {
        assert_eq!(app.customer(id).await["id"], id);
    }
}

#[tokio::test]
async fn retries_are_counted_without_reading_every_event_whatever_the_statistics_say() {
    if util::TestStore::chosen() != util::TestStore::Postgres {
        println!("skipped: the planner's statistics are Postgres's");
        return;
    }
    let app = TestApp::spawn().await;
    let mut db = util::postgres::store_connection(&app.dir).await;
    let body = treez("plans", "1", T1);
    let (status, first) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "accepted", "{first}");
    // Statistics taken while one event and one customer were kept, and no
    // autovacuum to catch up.
    for sql in [
        "ALTER TABLE events SET (autovacuum_enabled = false)",
        "ALTER TABLE customers SET (autovacuum_enabled = false)",
        "ANALYZE events",
        "ANALYZE customers",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
    // Postgres plans a prepared statement once, after its fifth execution
    // on a connection: 200 retries load their customer and run the
    // retries' count more than five times on each of the connections
    // groups of deliveries run on while each table holds one row.
    let retry = |n: usize| {
        let (app, body, first) = (&app, &body, &first);
        async move {
            for _ in 0..n {
                let (status, again) = app.deliver_json("treez", body).await;
                assert_eq!(status, StatusCode::OK, "{again}");
                assert_eq!(again["status"], "duplicate", "{again}");
                assert_eq!(again["eventId"], first["eventId"]);
            }
        }
    };
    retry(200).await;
    for sql in [
        "INSERT INTO events (id, source, dedupe_key, received_at, headers, status)
         SELECT 'evt_' || i, 'other', int8send(i), '2026-01-01T00:00:00.000Z', '{}', 'accepted'
         FROM generate_series(1, 50000) i",
        "INSERT INTO customers (id, source, external_id, status, merged_from, version, changed_at, change_seq)
         SELECT 'other:' || i, 'other', i::text, 'active', '[]', 1, '2026-01-01T00:00:00.000Z', -i
         FROM generate_series(1, 50000) i",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
    retry(30).await;
    drop(db);
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // A connection reports what it read when it closes: once the 230
    // retries' updates are counted, so is every scan of their connections.
    let schema = util::postgres::schema(&dir);
    let mut db = util::postgres::store_connection(&dir).await;
    let read = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
        )
        .bind(schema.clone())
        .bind(table)
    };
    let mut updated: i64 = 0;
    for _ in 0..600 {
        updated = sqlx::query_scalar(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'",
        )
        .bind(&schema)
        .fetch_one(&mut db)
        .await
        .expect("the table's counts");
        if updated >= 230 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        updated >= 230,
        "the store's connections did not report their counts: {updated} updates"
    );
    let scanned = read("events").fetch_one(&mut db).await.expect("events' counts");
    assert!(
        scanned < 50_000,
        "the retries' count read {scanned} events by scanning the table: a plan made while it held one event"
    );
    let scanned = read("customers").fetch_one(&mut db).await.expect("customers' counts");
    assert!(
        scanned < 50_000,
        "loading the retries' customer read {scanned} customers by scanning the table: a plan made while it held one"
    );
    drop(temp);
}
