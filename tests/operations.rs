//! Running Clientele as an operator does: the real binary, its logs, its
//! shutdown, `rebuild`, and `/metrics`.

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TREEZ_EXAMPLE, TREEZ_TOKEN, TestApp, VAGARO_EXAMPLE, VAGARO_TOKEN, config_text, with};

const HOOK_TOKEN: &str = "hook-token-7f3a";
const HOOK_SECRET: &str = "whsec_c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY=";

/// Personal data and secrets of the requests below: none may be logged.
const NEVER_LOGGED: [&str; 13] = [
    HOOK_TOKEN,
    HOOK_SECRET,
    "Winnfield",
    "Jules",
    "SHEPHERD",
    "1948-02-12",
    "Johnny",
    "Edgecombe",
    "9145551212",
    "+19145551212",
    "jules@example.com",
    TREEZ_TOKEN,
    VAGARO_TOKEN,
];

/// The real binary serving `config`, its stderr read line by line.
struct Serving {
    child: std::process::Child,
    address: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    reader: std::thread::JoinHandle<()>,
}

impl Serving {
    /// Starts `clientele serve` on the test configuration of `dir` in
    /// `log_format`, and waits for the address it listens on.
    fn start(dir: &Path, log_format: &str) -> Self {
        let config = dir.join("clientele.toml");
        std::fs::write(&config, config_text(dir, "")).unwrap();
        let mut child = util::binary()
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "trace")
            .env("CLIENTELE_LOG_FORMAT", log_format)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the clientele binary starts");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut log = Vec::new();
        let address = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("clientele logs its address");
            log.push(line.clone());
            let address = line
                .split_once("address=")
                .or_else(|| line.split_once("\"address\":\""))
                .and_then(|(_, rest)| rest.split(['"', ' ']).next());
            if let Some(address) = address {
                break address.to_owned();
            }
        };
        Self {
            child,
            address,
            lines,
            log,
            reader,
        }
    }

    /// Stops the binary with SIGTERM; returns its whole log, a line each.
    fn stop(mut self) -> Vec<String> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        let status = self.child.wait().expect("clientele exits");
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
        self.reader.join().unwrap();
        self.log.extend(self.lines.try_iter());
        self.log
    }
}

#[tokio::test]
async fn the_binary_logs_no_personal_data_or_secrets_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serving::start(dir.path(), "text");
    let address = server.address.clone();
    let client = util::client();
    let post = |source: &str, token: (&str, &str), body: String| {
        client
            .post(format!("http://{address}/webhooks/{source}"))
            .header(token.0, token.1)
            .body(body)
            .send()
    };
    let treez = with(
        with(
            serde_json::from_str(TREEZ_EXAMPLE).unwrap(),
            "/data/email",
            json!("Jules@Example.com"),
        ),
        "/data/phone",
        json!("9145551212"),
    );
    let bearer = format!("Bearer {TREEZ_TOKEN}");
    let deliveries = [
        post("treez", ("authorization", &bearer), treez.to_string()),
        post("treez", ("authorization", &bearer), treez.to_string()),
        post(
            "vagaro",
            ("x-vagaro-signature", VAGARO_TOKEN),
            VAGARO_EXAMPLE.to_owned(),
        ),
        post("vagaro", ("x-vagaro-signature", "wrong"), VAGARO_EXAMPLE.to_owned()),
        post(
            "treez",
            ("authorization", &bearer),
            with(treez.clone(), "/data/customer_id", Value::Null).to_string(),
        ),
        post("treez", ("authorization", &bearer), "{not json".to_owned()),
    ];
    let mut statuses = Vec::new();
    for delivery in deliveries {
        statuses.push(delivery.await.expect("an answer").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 401, 202, 400]);

    // A subscription whose URL and secret are secrets too, then an erasure.
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(util::ADMIN).send();
    let subscription = json!({"url": format!("http://127.0.0.1:9/hook?token={HOOK_TOKEN}"), "secret": HOOK_SECRET});
    let created = admin(
        client
            .post(format!("http://{address}/api/v1/subscriptions"))
            .json(&subscription),
    );
    assert_eq!(created.await.unwrap().status(), 201);
    let erased = admin(client.delete(format!("http://{address}/api/v1/customers/treez:partnersandbox3:3904")));
    assert_eq!(erased.await.unwrap().status(), 204);

    let log = server.stop().join("\n");
    assert!(log.contains("stopped"), "shutdown is logged:\n{log}");
    assert!(log.contains("delivery kept"), "deliveries are logged at debug:\n{log}");
    for secret in NEVER_LOGGED {
        assert!(
            !log.to_lowercase().contains(&secret.to_lowercase()),
            "{secret:?} was logged:\n{log}"
        );
    }
}

/// A platform chooses its customer ids: one with CR, LF or ESC once forged
/// whole lines and terminal escapes in the text log (`customer erased`).
/// Every logged value has its control characters escaped, in both formats.
#[tokio::test]
async fn control_characters_in_logged_values_cannot_forge_lines_or_escapes() {
    let forged = "7\r\n2026-01-01T00:00:00Z  INFO forged: admin token accepted\u{1b}[2J";
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Serving::start(dir.path(), format);
        let client = util::client();
        let body = with(
            serde_json::from_str(TREEZ_EXAMPLE).unwrap(),
            "/data/customer_id",
            json!(forged),
        );
        let delivered = client
            .post(format!("http://{}/webhooks/treez", server.address))
            .bearer_auth(TREEZ_TOKEN)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let (status, answer) = util::read(delivered).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = answer["customerId"].as_str().expect("a customer id");
        let erased = client
            .delete(format!(
                "http://{}/api/v1/customers/{}",
                server.address,
                util::segment(id)
            ))
            .bearer_auth(util::ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(erased.status(), StatusCode::NO_CONTENT);
        let log = server.stop();
        let erased: Vec<&String> = log.iter().filter(|l| l.contains("customer erased")).collect();
        assert_eq!(
            erased.len(),
            1,
            "{format}: one `customer erased` line:\n{}",
            log.join("\n")
        );
        for line in &log {
            assert!(
                !line.chars().any(|c| c.is_control()),
                "{format}: a control character was logged: {line:?}"
            );
            assert!(!line.starts_with("2026-01-01"), "{format}: a forged line: {line:?}");
            if format == "json" {
                assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line:?}");
            }
        }
    }
}

/// The directory without bookkeeping, for comparisons.
async fn directory(app: &TestApp) -> Vec<Value> {
    let (status, page) = app.get("/api/v1/customers?includeMerged=true&limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let mut customers: Vec<Value> = page["data"].as_array().unwrap().clone();
    for c in &mut customers {
        c.as_object_mut().unwrap().remove("changedAt");
    }
    customers.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    customers
}

#[tokio::test]
async fn rebuild_recomputes_the_live_directory_from_the_raw_events_and_publishes_nothing() {
    let app = TestApp::spawn().await;
    // A subscriber nobody answers for: its messages stay listed.
    let created = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .bearer_auth(util::ADMIN)
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    let (status, subscription) = util::read(created).await;
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    let messages = format!(
        "/api/v1/subscriptions/{}/messages?limit=1000",
        subscription["id"].as_str().unwrap()
    );
    let treez: Value = serde_json::from_str(TREEZ_EXAMPLE).unwrap();
    let updates = [
        (
            "3904",
            "2026-04-24T11:38:21.000-07:00",
            "ACTIVE",
            json!([]),
            Value::Null,
        ),
        (
            "3904",
            "2026-04-25T09:00:00.000-07:00",
            "MERGED",
            json!(["77"]),
            Value::Null,
        ),
        (
            "77",
            "2026-04-25T08:59:00.000-07:00",
            "DEACTIVATED",
            json!([]),
            json!("3904"),
        ),
        (
            "3904",
            "2026-04-20T09:00:00.000-07:00",
            "ACTIVE",
            json!([]),
            Value::Null,
        ),
    ];
    for (id, time, status, absorbed, into) in updates {
        let mut body = with(treez.clone(), "/data/customer_id", json!(id));
        body = with(body, "/data/last_update", json!(time));
        body = with(body, "/data/status", json!(status));
        body = with(body, "/data/merged_customer_ids", absorbed);
        body = with(body, "/data/merged_into_customer_id", into);
        let (status, answer) = app.deliver("treez", &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    app.deliver("vagaro", VAGARO_EXAMPLE).await;
    let (status, _) = app.deliver("treez", r#"{"event_type": "CUSTOMER", "data": {}}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let live = directory(&app).await;
    assert_eq!(live.len(), 3);
    let histories = app.get("/api/v1/customers/treez:partnersandbox3:3904/events").await.1;
    let sent = app.get(&messages).await.1["data"].as_array().unwrap().len();
    assert!(sent >= 4, "the live changes were published: {sent}");
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let rebuilt = util::rebuild(&config_text(&dir, "")).await;
    assert_eq!((rebuilt.replayed, rebuilt.skipped), (5, 0));

    let app = TestApp::spawn_in(&dir, "").await;
    assert_eq!(directory(&app).await, live);
    assert_eq!(
        app.get("/api/v1/customers/treez:partnersandbox3:3904/events").await.1,
        histories
    );
    let after = app.get(&messages).await.1["data"].as_array().unwrap().len();
    assert_eq!(after, sent, "a rebuild publishes nothing");
    app.stop().await;
    drop(temp);
}

#[tokio::test]
async fn metrics_count_deliveries_by_source_and_outcome() {
    let app = TestApp::spawn().await;
    app.deliver("treez", TREEZ_EXAMPLE).await;
    app.deliver("treez", TREEZ_EXAMPLE).await;
    app.deliver("treez", "[]").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Other tests in this binary deliver too: check presence, not counts.
    for series in [
        r#"clientele_deliveries_total{source="treez",status="applied"}"#,
        r#"clientele_deliveries_total{source="treez",status="duplicate"}"#,
        r#"clientele_deliveries_total{source="treez",status="quarantined"}"#,
        r#"clientele_ingest_duration_seconds_bucket{source="treez",le="0.005"}"#,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
}

#[tokio::test]
async fn health_needs_no_token_and_readiness_checks_the_store() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn migrate_creates_the_store_and_serve_then_opens_it_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    for run in ["first", "second"] {
        let migrated = util::binary()
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .expect("the clientele binary runs");
        let log = String::from_utf8_lossy(&migrated.stderr);
        assert!(migrated.status.success(), "{run} migrate: {log}");
        assert!(log.contains("store migrated"), "{run} migrate: {log}");
    }
    let app = TestApp::spawn_in(dir.path(), "").await;
    let (status, answer) = app.deliver("treez", TREEZ_EXAMPLE).await;
    assert_eq!(
        (status, &answer["status"]),
        (StatusCode::OK, &json!("accepted")),
        "{answer}"
    );
    app.stop().await;
}
