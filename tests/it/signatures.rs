//! Outbound signatures as a subscriber checks them (SPEC §8; README: "any
//! Standard Webhooks library verifies them"): the `standardwebhooks` crate,
//! the Standard Webhooks reference library for Rust, accepts what Clientele
//! sends, for a generated `whsec_` secret and for a raw one, and refuses
//! the same request once its body, id or timestamp is changed.

use crate::util;

use axum::http::HeaderValue;
use serde_json::json;
use standardwebhooks::WebhookError;
use util::{Received, TestApp, TestReceiver, treez, verifier};

/// Verifies `request`, changed by `tamper`, with `secret`.
fn verify(secret: &str, request: &Received, tamper: impl FnOnce(&mut Received)) -> Result<(), WebhookError> {
    let mut request = request.clone();
    tamper(&mut request);
    verifier(secret).verify(&request.raw, &request.headers)
}

#[tokio::test]
async fn a_standard_webhooks_library_accepts_clientele_s_signatures_and_refuses_a_tampered_request() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::healthy().await;
    let (_, generated) = app.subscribe_url(&receiver.url()).await;
    assert!(generated.starts_with("whsec_"), "{generated}");
    let raw = "a raw secret of more than 24 bytes";
    app.subscribe(json!({"url": receiver.url(), "secret": raw})).await;
    let (status, _) = app
        .deliver_json("treez", &treez("sig", "1", "2026-04-01T00:00:00Z"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let received = receiver.wait_for(2).await;

    // Each request is signed with its own subscription's secret: exactly
    // one of the two verifies it.
    for request in &received {
        let verdicts = [generated.as_str(), raw].map(|secret| verify(secret, request, |_| {}).is_ok());
        assert_eq!(
            verdicts.iter().filter(|ok| **ok).count(),
            1,
            "one secret verifies {:?}",
            request.headers
        );
    }
    let (for_generated, for_raw) = match verify(&generated, &received[0], |_| {}) {
        Ok(()) => (&received[0], &received[1]),
        Err(_) => (&received[1], &received[0]),
    };
    verify(raw, for_raw, |_| {}).expect("a raw secret's own bytes are the key");

    for (secret, request) in [(generated.as_str(), for_generated), (raw, for_raw)] {
        let body = verify(secret, request, |r| {
            let text = String::from_utf8(r.raw.clone()).unwrap().replacen("sig", "gis", 1);
            assert_ne!(text.as_bytes(), r.raw, "the body changed");
            r.raw = text.into_bytes();
        });
        assert!(
            matches!(body, Err(WebhookError::InvalidSignature)),
            "a changed body: {body:?}"
        );
        let id = verify(secret, request, |r| {
            r.headers.insert("webhook-id", HeaderValue::from_static("evt_forged"));
        });
        assert!(
            matches!(id, Err(WebhookError::InvalidSignature)),
            "a changed id: {id:?}"
        );
        let timestamp = verify(secret, request, |r| {
            let sent: i64 = r.header("webhook-timestamp").parse().unwrap();
            r.headers.insert("webhook-timestamp", HeaderValue::from(sent + 1));
        });
        assert!(
            matches!(timestamp, Err(WebhookError::InvalidSignature)),
            "a changed timestamp: {timestamp:?}"
        );
        let other = verify(
            "whsec_b3RoZXIga2V5IGJ5dGVzIG9mIHRoZSBzYW1lIGxlbmd0aA==",
            request,
            |_| {},
        );
        assert!(
            matches!(other, Err(WebhookError::InvalidSignature)),
            "another key: {other:?}"
        );
    }
}
