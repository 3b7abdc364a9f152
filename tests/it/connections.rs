//! Slow, stalled and malformed connections, over raw TCP: what a slowloris
//! or a broken client sends, byte for byte. A half-sent head is closed, a
//! stalled body is answered `408` and gives its ingest slot back, an
//! oversized head is answered `431` in the JSON error shape, and what
//! hyper refuses itself is still answered with its status.
//!
//! The timeouts are set to 200 ms in these tests; each answer or close is
//! awaited for [`WITHIN`], a guard against hangs, never a measure.

use crate::util;

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use util::{ADMIN, Setup, TREEZ_EXAMPLE, TREEZ_TOKEN, TestApp, error_code, parse_answer};

/// The short timeouts of these tests.
fn short() -> Setup {
    TestApp::builder()
        .http("header_timeout", "200ms")
        .http("body_timeout", "200ms")
}
/// How long the server may take to answer or close.
const WITHIN: Duration = Duration::from_secs(10);

/// Opens a connection to `app` and sends `bytes` on it.
async fn open(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.expect("a connection");
    stream.write_all(bytes).await.expect("the request is sent");
    stream
}

/// Everything the server sends until it closes the connection.
async fn until_closed(mut stream: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WITHIN, async {
        let mut buffer = [0; 8192];
        // A reset closes it as well as an orderly end.
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server closes the connection within {WITHIN:?}; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// A delivery's head to Treez with its token, announcing `length` bytes.
fn delivery_head(length: usize) -> String {
    format!(
        "POST /webhooks/treez HTTP/1.1\r\nHost: clientele\r\nAuthorization: Bearer {TREEZ_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// `GET /healthz` with `headers` (whole lines, CRLF-terminated).
fn health_check(headers: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: clientele\r\n{headers}\r\n")
}

#[tokio::test]
async fn a_half_sent_head_is_closed_after_header_timeout() {
    let app = short().spawn().await;
    let stream = open(&app, b"POST /webhooks/treez HTTP/1.1\r\nHost: clientele\r\nAuthor").await;
    assert_eq!(until_closed(stream).await, b"", "closed without an answer");
    let silent = open(&app, b"").await;
    assert_eq!(until_closed(silent).await, b"", "a connection that sends nothing too");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_timeout() {
    let app = short().spawn().await;
    let stream = open(&app, health_check("").as_bytes()).await;
    let (status, body) = parse_answer(&until_closed(stream).await);
    assert_eq!((status, &body["status"]), (StatusCode::OK, &"ok".into()), "{body}");
}

#[tokio::test]
async fn stalled_bodies_are_answered_408_and_free_every_ingest_slot() {
    // The heads are read however loaded the machine is: only the bodies stall.
    let app = short().http("header_timeout", "10s").spawn().await;
    let body = TREEZ_EXAMPLE.as_bytes();
    let mut stalled = JoinSet::new();
    for _ in 0..clientele::http::INGEST_SLOTS {
        let mut request = delivery_head(body.len()).into_bytes();
        request.extend_from_slice(&body[..body.len() / 2]);
        let stream = open(&app, &request).await;
        stalled.spawn(until_closed(stream));
    }
    while let Some(answer) = stalled.join_next().await {
        let (status, body) = parse_answer(&answer.expect("the stalled delivery"));
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
        assert_eq!(error_code(&body), "timeout");
    }
    app.assert_nothing_kept().await;
    let (status, answer) = app.deliver("treez", TREEZ_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "every slot was freed: {answer}");
}

#[tokio::test]
async fn a_stalled_api_body_is_answered_408() {
    let app = short().spawn().await;
    let request = format!(
        "POST /api/v1/subscriptions HTTP/1.1\r\nHost: clientele\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\": \"http://"
    );
    let stream = open(&app, request.as_bytes()).await;
    let (status, body) = parse_answer(&until_closed(stream).await);
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(error_code(&body), "timeout");
    let (status, subscriptions) = app.get("/api/v1/subscriptions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subscriptions["data"], serde_json::json!([]), "nothing was created");
}

#[tokio::test]
async fn a_head_past_the_limits_is_answered_431_in_json() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "150 header lines",
            (0..150).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect(),
        ),
        (
            "100 KB of header lines",
            format!("X-Filler: {}\r\n", "x".repeat(100_000)),
        ),
    ];
    for (case, headers) in cases {
        let stream = open(&app, health_check(&headers).as_bytes()).await;
        let (status, body) = parse_answer(&until_closed(stream).await);
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{case}: {body}");
        assert_eq!(error_code(&body), "headers_too_large", "{case}");
    }
}

/// Past hyper's own bounds, and for requests it cannot parse, hyper answers
/// before Clientele sees the request: the status is right but its body is
/// empty (docs/decisions.md says why). Conflicting lengths must stay
/// refused: they are how requests are smuggled past a proxy.
#[tokio::test]
async fn what_hyper_refuses_itself_is_still_answered_with_its_status() {
    let app = TestApp::spawn().await;
    let conflicting =
        "POST /webhooks/treez HTTP/1.1\r\nHost: clientele\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
            .to_owned();
    let cases = [
        ("conflicting Content-Length", conflicting, StatusCode::BAD_REQUEST),
        (
            "a malformed request line",
            "GET /healthz HTTP/9\r\n\r\n".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a 70 KB request-target",
            format!("GET /{} HTTP/1.1\r\nHost: clientele\r\n\r\n", "x".repeat(70_000)),
            StatusCode::URI_TOO_LONG,
        ),
        (
            "300 headers",
            health_check(&"X-Filler: x\r\n".repeat(300)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
    ];
    for (case, request, expected) in cases {
        let stream = open(&app, request.as_bytes()).await;
        let answer = until_closed(stream).await;
        let head = String::from_utf8_lossy(&answer);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {}", expected.as_u16())),
            "{case}: {head:?}"
        );
    }
}
