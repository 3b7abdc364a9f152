//! Running Clientele as an operator does: the real binary, its logs, its
//! shutdown, `rebuild`, and `/metrics`.

use crate::util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TREEZ_EXAMPLE, TREEZ_TOKEN, TestApp, VAGARO_EXAMPLE, VAGARO_TOKEN, with};

const HOOK_TOKEN: &str = "hook-token-7f3a";
const HOOK_SECRET: &str = "whsec_c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3";

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

/// How long the binary may take to start or to stop: a guard against
/// hangs.
const SAFETY: Duration = Duration::from_secs(30);

/// `clientele serve` running on a configuration file, its log read on a
/// thread.
struct Serving {
    child: Child,
    address: String,
    log: Vec<String>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    /// Starts the binary on the configuration `text` (kept in `dir`) at
    /// log level `level`, and waits for the address it logs.
    fn start(dir: &Path, text: &str, level: &str) -> Self {
        let config = dir.join("clientele.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = util::binary()
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", level)
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
            let line = lines.recv_timeout(SAFETY).expect("clientele logs its address");
            let address = util::logged_address(&line);
            log.push(line);
            if let Some(address) = address {
                break address;
            }
        };
        Self {
            child,
            address,
            log,
            lines,
            reader: Some(reader),
        }
    }

    /// Sends SIGTERM and waits (within [`SAFETY`]) for the exit; returns
    /// how it exited and its whole log.
    fn terminate(&mut self) -> (ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        let deadline = Instant::now() + SAFETY;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "clientele exits within {SAFETY:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log.extend(self.lines.try_iter());
        (status, self.log.join("\n"))
    }
}

impl Drop for Serving {
    /// A failing test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_logs_no_personal_data_or_secrets_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut serving = Serving::start(dir.path(), &TestApp::builder().config_text(dir.path()), "trace");
    let address = serving.address.clone();

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

    let (status, log) = serving.terminate();
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
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
        let text = TestApp::builder().setting("log_format", format).config_text(dir.path());
        let mut server = Serving::start(dir.path(), &text, "trace");
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
        let (status, log) = server.terminate();
        assert!(status.success(), "{format}: a clean exit on SIGTERM: {status}");
        let erased = log.lines().filter(|l| l.contains("customer erased")).count();
        assert_eq!(erased, 1, "{format}: one `customer erased` line:\n{log}");
        for line in log.lines() {
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

/// A client that stops sending mid-body holds its request open until
/// `http.body_timeout`; a stop waits for it `http.stop_timeout` at most,
/// then drops it and still closes the store cleanly.
#[tokio::test]
async fn a_body_stalled_at_sigterm_does_not_keep_the_process_from_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let bounds = TestApp::builder()
        .http("body_timeout", "1h")
        .http("stop_timeout", "200ms");
    let mut serving = Serving::start(dir.path(), &bounds.config_text(dir.path()), "info");
    let mut stalled = TcpStream::connect(&serving.address).expect("a connection");
    stalled.set_read_timeout(Some(SAFETY)).unwrap();
    let head = format!(
        "POST /webhooks/treez HTTP/1.1\r\nHost: clientele\r\nAuthorization: Bearer {TREEZ_TOKEN}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        TREEZ_EXAMPLE.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    // The interim answer comes when the handler starts reading the body.
    let mut interim = [0; 25];
    stalled.read_exact(&mut interim).expect("100 Continue");
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stalled.write_all(&TREEZ_EXAMPLE.as_bytes()[..100]).unwrap();

    let (status, log) = serving.terminate();
    assert!(status.success(), "a clean exit on SIGTERM: {status}\n{log}");
    assert!(
        log.contains("after http.stop_timeout"),
        "the dropped request is logged:\n{log}"
    );
    assert!(log.contains("stopped"), "the store was closed:\n{log}");
    let app = TestApp::builder().spawn_in(dir.path()).await;
    app.assert_nothing_kept().await;
    app.stop().await;
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
    app.wait_fanned_out().await;
    let sent = app.get(&messages).await.1["data"].as_array().unwrap().len();
    assert!(sent >= 4, "the live changes were published: {sent}");
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let rebuilt = TestApp::builder().rebuild(&dir).await;
    assert_eq!((rebuilt.replayed, rebuilt.skipped), (5, 0));

    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(directory(&app).await, live);
    assert_eq!(
        app.get("/api/v1/customers/treez:partnersandbox3:3904/events").await.1,
        histories
    );
    app.wait_fanned_out().await;
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
        r#"clientele_ingest_duration_seconds_bucket{le="0.005"}"#,
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
async fn the_openapi_document_is_served_without_a_token_and_is_the_generated_one() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let served: Value = response.json().await.unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served, serde_json::to_value(clientele::http::openapi()).unwrap());
}

/// Runs `clientele {command} --config {config}`, expecting it to fail;
/// returns what it printed.
fn failing(command: &str, config: &Path, env: &[(&str, &str)]) -> String {
    let run = util::binary()
        .args([command, "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("the clientele binary runs");
    assert!(!run.status.success());
    String::from_utf8_lossy(&run.stderr).into_owned()
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key_and_its_place_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    let secret = "never-shown-3f9a";
    // `tokens` is a list: a bare string is refused, without being shown.
    let pos = TestApp::builder()
        .source("pos", "treez")
        .source_setting("pos", "tokens", secret);
    std::fs::write(&config, pos.config_text(dir.path())).unwrap();
    let serve = |env: &[(&str, &str)]| failing("serve", &config, env);
    let log = serve(&[]);
    assert!(log.contains("clientele.toml: `sources[3].tokens`"), "{log}");
    assert!(!log.contains(secret), "{log}");
    std::fs::write(&config, TestApp::builder().config_text(dir.path())).unwrap();
    let log = serve(&[("CLIENTELE_LISTEN", "127.0.0.1:0"), ("CLIENTELE_ADMIN_TOKN", secret)]);
    assert!(
        log.contains("environment variable CLIENTELE_ADMIN_TOKN: `admin_tokn`"),
        "{log}"
    );
    assert!(!log.contains(secret), "{log}");
}

/// The binary prints an error with its causes (`{:#}`): each once.
#[test]
fn a_start_up_failure_names_each_of_its_causes_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    let log = failing("serve", &config, &[]);
    assert!(log.contains("cannot read config file"), "{log}");
    assert_eq!(log.matches("(os error 2)").count(), 1, "{log}");
    std::fs::write(&config, TestApp::builder().config_text(dir.path())).unwrap();
    let log = failing(
        "migrate",
        &config,
        &[("CLIENTELE_STORE", "postgres://postgres@127.0.0.1:1/db?sslmode=bogus")],
    );
    assert_eq!(log.matches("unknown value").count(), 1, "{log}");
    assert!(log.matches("error with configuration").count() <= 1, "{log}");
}

#[tokio::test]
async fn migrate_creates_the_store_and_serve_then_opens_it_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    std::fs::write(&config, TestApp::builder().config_text(dir.path())).unwrap();
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
    let app = TestApp::builder().spawn_in(dir.path()).await;
    let (status, answer) = app.deliver("treez", TREEZ_EXAMPLE).await;
    assert_eq!(
        (status, &answer["status"]),
        (StatusCode::OK, &json!("accepted")),
        "{answer}"
    );
    app.stop().await;
}

/// An overlapping restart on the embedded store: the second process is
/// refused at start-up with the first one's pid and what to do, in one
/// line and without a backtrace, and the first goes on serving. (Several
/// instances on one Postgres store are the point of that store: see
/// tests/instances.rs.)
#[tokio::test]
async fn a_second_process_on_an_embedded_store_is_refused_and_the_first_goes_on() {
    if util::TestStore::chosen() != util::TestStore::Sqlite {
        println!("skipped: the embedded store's lock; several instances share a Postgres store");
        return;
    }
    let app = TestApp::spawn().await;
    let (status, _) = app.deliver("treez", TREEZ_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "the first process has the store open");
    let config = app.dir.join("second.toml");
    std::fs::write(&config, TestApp::builder().config_text(&app.dir)).unwrap();
    // `rebuild` asks the running server instead (`rebuild.rs`).
    for command in ["migrate", "serve"] {
        let second = util::binary()
            .args([command, "--config"])
            .arg(&config)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("the clientele binary runs");
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "{command}: {stderr}");
        let refusal = format!("in use by another Clientele process (pid {})", std::process::id());
        assert!(stderr.contains(&refusal), "{command}: {stderr}");
        assert!(stderr.contains("stop it first"), "{command}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{command}: {stderr}");
    }
    let (status, answer) = app.deliver("vagaro", VAGARO_EXAMPLE).await;
    assert_eq!((status, &answer["status"]), (StatusCode::OK, &json!("accepted")));
    app.stop().await;
}
