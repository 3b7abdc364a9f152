//! Outbound safety (SPEC §16): Clientele calls public destinations only,
//! unless `[delivery] allow_private` lists a network; a refused
//! destination is a failed attempt that tells nothing of what listens
//! there; subscription URLs are checked at creation as far as they can be
//! without DNS, and their credentials are masked in every listing.
//!
//! The suite's configuration allows `127.0.0.1/32`, where its receivers
//! listen; these tests take that away where they check refusals.

use crate::util;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use util::{Down, Setup, Silent, TestApp, TestReceiver, UntrustedTls, error_code, treez};

const T1: &str = "2026-04-01T00:00:00Z";

/// One attempt per message, for the tests' purpose.
fn one_attempt() -> Setup {
    TestApp::builder().delivery_schedule(&["1h"]).delivery_timeout("2s")
}
/// The same, with no private network allowed.
fn refusing() -> Setup {
    one_attempt().delivery("allow_private", Vec::<&str>::new())
}

/// Waits until every message of `subscription` has had an attempt; returns
/// the first attempt of each.
async fn first_attempts(app: &TestApp, subscription: &str) -> Vec<Value> {
    let messages = app
        .wait_for_messages(subscription, "an attempt", |m| {
            !m.is_empty()
                && m.iter()
                    .all(|m| m["attempts"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
    messages.iter().map(|m| m["attempts"][0].clone()).collect()
}

/// What an attempt says, without its time and duration.
fn said(attempt: &Value) -> Value {
    json!({"statusCode": attempt["statusCode"], "error": attempt["error"]})
}

fn refused() -> Value {
    json!({"statusCode": null, "error": "destination not allowed"})
}

/// A name that resolves to loopback is refused when connecting, whatever
/// listens on the port: a closed port, a silent service and an HTTP
/// receiver give the same attempt (no port scan of the host's network).
#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_alike_whatever_listens_there() {
    let app = refusing().spawn().await;
    let closed = Down::new();
    let silent = Silent::start().await;
    let http = TestReceiver::healthy().await;
    let mut subscriptions = Vec::new();
    for port in [closed.port(), silent.port(), http.port()] {
        let (id, _) = app.subscribe_url(&format!("http://localhost:{port}/hook")).await;
        subscriptions.push(id);
    }
    app.deliver_json("treez", &treez("ssrf", "1", T1)).await;
    for subscription in &subscriptions {
        let attempts = first_attempts(&app, subscription).await;
        assert_eq!(said(&attempts[0]), refused(), "{subscription}");
    }
    assert_eq!(silent.accepted(), 0, "nothing was connected to");
    assert!(http.received().is_empty(), "nothing was sent");
}

/// An IP-literal host is not resolved, so it is checked apart: a
/// subscription made while loopback was allowed is refused once it is not.
#[tokio::test]
async fn an_ip_literal_destination_is_refused_when_connecting_too() {
    let receiver = TestReceiver::healthy().await;
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(&receiver.url()).await;
    app.set_enabled(&subscription, false).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let app = refusing().spawn_in(&dir).await;
    app.set_enabled(&subscription, true).await;
    app.deliver_json("treez", &treez("ssrf", "2", T1)).await;
    let attempts = first_attempts(&app, &subscription).await;
    assert_eq!(said(&attempts[0]), refused());
    assert!(receiver.received().is_empty(), "nothing was sent");
    app.stop().await;
    drop(temp);
}

async fn create(app: &TestApp, url: &str) -> (StatusCode, Value) {
    app.admin_json(Method::POST, "/api/v1/subscriptions", &json!({ "url": url }))
        .await
}

#[tokio::test]
async fn creation_refuses_non_public_addresses_other_schemes_and_long_urls() {
    let app = refusing().spawn().await;
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let refused = [
        "http://127.0.0.1/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://0177.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        &long,
    ];
    for url in refused {
        let (status, body) = create(&app, url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(error_code(&body), "invalid_request", "{url}");
    }
    // A name needs DNS, which is asked when connecting.
    for url in [
        "https://example.com/hook",
        "http://93.184.215.14:8080/hook",
        "http://metadata.google.internal/",
    ] {
        let (status, body) = create(&app, url).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
}

#[tokio::test]
async fn allow_private_lets_the_listed_networks_through_and_no_more() {
    // The suite's configuration allows 127.0.0.1/32.
    let app = TestApp::spawn().await;
    let (status, body) = create(&app, "http://127.0.0.1:9/hook").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = create(&app, "http://127.0.0.2:9/hook").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn credentials_in_a_subscription_url_are_masked_in_every_listing() {
    let app = TestApp::spawn().await;
    let url = "http://hook-user:hook-pass-5e1f@127.0.0.1:9/hook?x=1";
    let created = app.subscribe(json!({ "url": url })).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let listings = [
        created,
        app.get("/api/v1/subscriptions").await.1,
        app.get(&format!("/api/v1/subscriptions/{id}")).await.1,
        app.set_enabled(&id, false).await,
    ];
    for listing in listings {
        let text = listing.to_string();
        assert!(!text.contains("hook-pass-5e1f"), "the password is listed: {text}");
        assert!(
            text.contains("http://hook-user:***@127.0.0.1:9/hook?x=1"),
            "the URL is listed, masked: {text}"
        );
    }
}

/// The first attempt of a message to a TLS server no client trusts, and
/// the server.
async fn attempt_untrusted_tls() -> (Value, UntrustedTls) {
    let app = one_attempt().spawn().await;
    let server = UntrustedTls::start();
    let (subscription, _) = app.subscribe_url(&server.url()).await;
    app.deliver_json("treez", &treez("tls", "1", T1)).await;
    let attempts = first_attempts(&app, &subscription).await;
    (attempts[0].clone(), server)
}

/// A TLS failure was reported as "cannot connect": it says what failed,
/// and nothing of the URL.
#[tokio::test]
async fn a_tls_failure_says_what_failed_without_the_url() {
    let (attempt, _) = attempt_untrusted_tls().await;
    assert_eq!(
        said(&attempt),
        json!({"statusCode": null, "error": "TLS handshake failed: certificate not trusted"})
    );
}

/// A receiver that speaks only HTTP/2 could not be reached: the client
/// offers it over TLS (ALPN), beside HTTP/1.1.
#[tokio::test]
async fn receivers_are_offered_http2_over_tls() {
    let (_, server) = attempt_untrusted_tls().await;
    assert_eq!(server.offered(), [["h2", "http/1.1"]]);
}
