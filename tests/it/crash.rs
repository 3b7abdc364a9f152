//! Crash safety: the real binary, under concurrent load, is killed with SIGKILL and restarted on the same data.
//! Every delivery answered `200` must still be kept, in the directory and in the raw log, and only once; and the
//! outbox must resume, so that every change reaches the subscriber (at least once, in version order).

use crate::util;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use util::{ADMIN, Behaviour, Received, SAFETY, TREEZ_TOKEN, TestApp, TestReceiver, summary, treez, with};

/// Short retries, and a short timeout: a send the crash interrupts is leased for the timeout and 5 s more, and only
/// then sent again.
fn config_text(dir: &std::path::Path) -> String {
    TestApp::builder()
        .delivery_schedule(&["50ms"; 5])
        .delivery_timeout("2s")
        .config_text(dir)
}

/// Concurrent senders.
const TASKS: usize = 8;
/// Deliveries each sender sends at most (the API lists up to 1000 per page; the kill comes long before).
const PER_TASK: usize = 100;
/// Acknowledged deliveries before the kill.
const ACKED_BEFORE_KILL: usize = 120;
/// Messages the subscriber answers at once before it starts to hang, so that the crash finds messages delivered,
/// messages being sent and messages waiting.
const ANSWERED_BEFORE_HANG: usize = 10;

const ACCOUNT: &str = "crashtest";
const CREATED_AT: &str = "2026-04-24T11:38:21.000-07:00";
const UPDATED_AT: &str = "2026-04-25T11:38:21.000-07:00";

/// The real binary, running as a child process with its log read on a thread.
struct Server {
    child: Child,
    address: String,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `clientele serve --config {config}` and waits for the address it logs.
    async fn start(config: PathBuf) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(&config))
            .await
            .expect("the start")
    }

    fn start_blocking(config: &Path) -> Self {
        let mut child = util::binary()
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the clientele binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, received) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = lines.send(line);
            }
        });
        let address = loop {
            let line = received
                .recv_timeout(SAFETY)
                .unwrap_or_else(|_| panic!("clientele logs its address; log:\n{}", log.lock().unwrap().join("\n")));
            if let Some(address) = util::logged_address(&line) {
                break address;
            }
        };
        Self {
            child,
            address,
            client: util::client(),
            log,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Posts a Treez delivery; `Err` when no answer came (the process died).
    async fn deliver(&self, body: &str) -> Result<(StatusCode, Value), reqwest::Error> {
        deliver(&self.client, &self.address, body).await
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        util::send(self.client.get(self.url(path)).bearer_auth(ADMIN).query(query)).await
    }

    /// Every item of a paged list, following `nextCursor`.
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "1000")];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor));
            }
            let (code, body) = self.get(path, &query).await;
            assert_eq!(code, StatusCode::OK, "{path}: {body}");
            items.extend(body["data"].as_array().expect("a data array").iter().cloned());
            match body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// Kills the process with SIGKILL: no shutdown of any kind.
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("clientele exits")
    }

    /// Stops the process with SIGTERM and returns how it exited and its log.
    fn terminate(&mut self) -> (ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        let status = self.child.wait().expect("clientele exits");
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.log())
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    /// A failing test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn deliver(client: &reqwest::Client, address: &str, body: &str) -> Result<(StatusCode, Value), reqwest::Error> {
    let response = client
        .post(format!("http://{address}/webhooks/treez"))
        .bearer_auth(TREEZ_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// One delivery of the load and what became of it.
#[derive(Debug)]
struct Sent {
    body: String,
    /// The directory id of its customer.
    customer: String,
    /// The record version it makes when applied: 1 creates the customer, 2 updates it.
    version: u64,
    /// `Some` when answered (with its status and body); `None` when no answer came.
    answer: Option<(StatusCode, Value)>,
}

impl Sent {
    fn acknowledged(&self) -> bool {
        matches!(&self.answer, Some((StatusCode::OK, _)))
    }

    fn event_id(&self) -> &str {
        let (_, body) = self.answer.as_ref().expect("an answer");
        body["eventId"].as_str().expect("an eventId")
    }
}

/// One sender: creates customers and updates each after its creation was acknowledged, one delivery at a time,
/// until the first delivery without a `200` (the server died).
async fn load(address: String, task: usize, acked: Arc<watch::Sender<usize>>) -> Vec<Sent> {
    let client = reqwest::Client::builder().timeout(SAFETY).build().expect("a client");
    let mut sent = Vec::new();
    for i in 0..PER_TASK {
        let id = (100_000 * (task + 1) + i / 2).to_string();
        let version = if i % 2 == 0 { 1 } else { 2 };
        let body = match version {
            1 => treez(ACCOUNT, &id, CREATED_AT),
            _ => with(treez(ACCOUNT, &id, UPDATED_AT), "/data/first_name", json!("Vincent")),
        }
        .to_string();
        let answer = deliver(&client, &address, &body).await.ok();
        let delivery = Sent {
            body,
            customer: format!("treez:{ACCOUNT}:{id}"),
            version,
            answer,
        };
        let acknowledged = delivery.acknowledged();
        sent.push(delivery);
        if !acknowledged {
            break;
        }
        acked.send_modify(|n| *n += 1);
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_acknowledged_delivery_and_the_outbox_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let mut server = Server::start(config.clone()).await;

    let receiver = TestReceiver::healthy().await;
    let (code, subscription) = util::send(
        server
            .client
            .post(server.url("/api/v1/subscriptions"))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": receiver.url() })),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{subscription}");
    let subscription = subscription["id"].as_str().expect("a subscription id").to_owned();

    // The load, and the kill in the middle of it: after some messages were delivered, while at least one is being
    // sent (the subscriber hangs), and once enough deliveries were acknowledged.
    let acked = Arc::new(watch::channel(0usize).0);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(load(server.address.clone(), task, acked.clone())))
        .collect();
    receiver.wait_for(ANSWERED_BEFORE_HANG).await;
    receiver.set(Behaviour::SlowFirst {
        times: usize::MAX,
        delay: Duration::from_secs(600),
    });
    receiver
        .wait_until("a send in progress", |r| r.iter().any(|r| r.delay.is_some()))
        .await;
    tokio::time::timeout(SAFETY, acked.subscribe().wait_for(|n| *n >= ACKED_BEFORE_KILL))
        .await
        .unwrap_or_else(|_| panic!("{ACKED_BEFORE_KILL} acknowledged deliveries within {SAFETY:?}"))
        .expect("the senders' counter lives");
    let status = server.kill();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    let received_before_kill = receiver.received().len();
    receiver.set(Behaviour::Healthy);
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("a sender"));
    }
    for delivery in &sent {
        if let Some((code, body)) = &delivery.answer {
            assert_eq!(*code, StatusCode::OK, "only 200s or no answer under load: {body}");
            assert_eq!(body["status"], "accepted", "{body}");
            assert_eq!(body["outcome"], "applied", "{body}");
            assert_eq!(body["customerId"], delivery.customer.as_str(), "{body}");
        }
    }
    let (acknowledged, unacknowledged): (Vec<&Sent>, Vec<&Sent>) = sent.iter().partition(|s| s.acknowledged());
    assert!(acknowledged.len() >= ACKED_BEFORE_KILL);

    // Restarted on the same data.
    let mut server = Server::start(config.clone()).await;

    // Every acknowledged delivery is in the raw log, accepted, with its body, and in the directory.
    let mut acked_ids = BTreeSet::new();
    for delivery in &acknowledged {
        let event_id = delivery.event_id();
        assert!(
            acked_ids.insert(event_id),
            "two acknowledged deliveries share {event_id}"
        );
        let (code, event) = server.get(&format!("/api/v1/events/{event_id}"), &[]).await;
        assert_eq!(code, StatusCode::OK, "acknowledged {event_id} is kept: {event}");
        assert_eq!(event["status"], "accepted", "{event}");
        assert_eq!(event["customerId"], delivery.customer.as_str(), "{event}");
        let sent_body: Value = serde_json::from_str(&delivery.body).unwrap();
        assert_eq!(event["body"], sent_body, "the raw body of {event_id}");
        let (code, customer) = server
            .get(&format!("/api/v1/customers/{}", delivery.customer), &[])
            .await;
        assert_eq!(
            code,
            StatusCode::OK,
            "acknowledged {} exists: {customer}",
            delivery.customer
        );
        assert!(
            customer["version"].as_u64().unwrap_or(0) >= delivery.version,
            "acknowledged v{} of {}: {customer}",
            delivery.version,
            delivery.customer
        );
        if delivery.version == 2 {
            assert_eq!(customer["firstName"], "Vincent", "{customer}");
        }
    }

    // Nothing more than was sent, nothing twice.
    let events = server.all("/api/v1/events").await;
    let kept: BTreeSet<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().expect("an eventId"))
        .collect();
    let keys: BTreeSet<&str> = events
        .iter()
        .map(|e| e["dedupeKey"].as_str().expect("a dedupeKey"))
        .collect();
    assert_eq!(kept.len(), events.len(), "event ids are unique");
    assert_eq!(keys.len(), events.len(), "one event per delivery");
    assert!(acked_ids.is_subset(&kept));
    assert!(
        events.len() <= sent.len(),
        "{} events from {} deliveries",
        events.len(),
        sent.len()
    );
    for event in &events {
        assert_eq!(event["status"], "accepted", "{event}");
        assert_eq!(event["duplicates"], 0, "{event}");
    }
    let directory = server.all("/api/v1/customers?includeMerged=true").await;
    let versions: BTreeMap<String, u64> = directory
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["version"].as_u64().unwrap()))
        .collect();
    let customers_of_events: BTreeSet<&str> = events.iter().filter_map(|e| e["customerId"].as_str()).collect();
    assert_eq!(
        versions.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        customers_of_events,
        "the directory holds the customers of the kept events"
    );
    let changes: u64 = versions.values().sum();
    assert_eq!(changes as usize, events.len(), "each kept delivery made one change");

    // The outbox resumes: every change is delivered, the ones the crash interrupted included.
    util::wait_outbox(&server.client, &server.url(""), "drained", util::Outbox::drained).await;
    let messages = server
        .all(&format!("/api/v1/subscriptions/{subscription}/messages"))
        .await;
    assert_eq!(messages.len(), events.len(), "one message per kept event");
    assert!(
        messages.iter().all(|m| m["status"] == "delivered"),
        "every message delivered: {}",
        serde_json::to_string_pretty(&messages).unwrap()
    );
    let expected: BTreeSet<(String, u64)> = versions
        .iter()
        .flat_map(|(customer, version)| (1..=*version).map(move |v| (customer.clone(), v)))
        .collect();
    let listed: BTreeSet<(String, u64)> = messages
        .iter()
        .map(|m| {
            (
                m["customerId"].as_str().unwrap().to_owned(),
                m["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, expected, "one message per change");
    let received = receiver.received();
    let answered: Vec<&Received> = received.iter().filter(|r| r.succeeded()).collect();
    let mut arrivals: HashMap<&str, usize> = HashMap::new();
    for request in &answered {
        *arrivals.entry(request.webhook_id()).or_default() += 1;
    }
    for message in &messages {
        let id = message["eventId"].as_str().unwrap();
        assert!(
            arrivals.contains_key(id),
            "message {id} was answered 200 by the subscriber: {message}; received {:#?}",
            summary(&received)
        );
    }
    let mut delivered: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for request in &answered {
        delivered
            .entry(request.customer())
            .or_default()
            .push((request.version() as u64, request.action()));
    }
    for delivery in &acknowledged {
        let action = if delivery.version == 1 { "created" } else { "updated" };
        let got = delivered.get(delivery.customer.as_str()).cloned().unwrap_or_default();
        assert!(
            got.contains(&(delivery.version, action)),
            "acknowledged v{} of {} reached the subscriber: {got:?}",
            delivery.version,
            delivery.customer
        );
        assert!(
            got.windows(2).all(|w| w[0].0 <= w[1].0),
            "{}'s messages arrive in version order: {got:?}",
            delivery.customer
        );
    }

    // Retries of what was acknowledged are duplicates; of what was not, either duplicates (kept just before the
    // kill) or accepted now.
    for delivery in &acknowledged {
        let (code, body) = server.deliver(&delivery.body).await.expect("an answer");
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "duplicate", "{body}");
        assert_eq!(body["eventId"], delivery.event_id(), "{body}");
    }
    let mut kept_unacknowledged = 0;
    for delivery in &unacknowledged {
        let (code, body) = server.deliver(&delivery.body).await.expect("an answer");
        assert_eq!(code, StatusCode::OK, "{body}");
        match body["status"].as_str() {
            Some("duplicate") => {
                let id = body["eventId"].as_str().unwrap();
                assert!(kept.contains(id), "{id} was kept before the restart");
                kept_unacknowledged += 1;
            }
            _ => assert_eq!(body["status"], "accepted", "{body}"),
        }
    }
    assert_eq!(
        events.len(),
        acknowledged.len() + kept_unacknowledged,
        "kept: the acknowledged deliveries, and the unacknowledged ones committed before the kill"
    );

    let redelivered = arrivals.values().filter(|n| **n > 1).count();
    let before_kill = &received[..received_before_kill];
    let answered_before_kill = before_kill.iter().filter(|r| r.succeeded()).count();
    let interrupted: BTreeSet<&str> = before_kill
        .iter()
        .filter(|r| r.delay.is_some())
        .map(|r| r.webhook_id())
        .collect();
    eprintln!(
        "sent {} deliveries, {} acknowledged, {} unanswered ({} of them kept); after the restart {} events and {} \
         customers; {} messages: {} answered before the kill, {} being sent at the kill (all sent again), {} waiting; \
         the subscriber got {} requests, {} answered 200, {} distinct webhook-ids, {} of them answered 200 twice",
        sent.len(),
        acknowledged.len(),
        unacknowledged.len(),
        kept_unacknowledged,
        events.len(),
        versions.len(),
        messages.len(),
        answered_before_kill,
        interrupted.len(),
        messages.len() - answered_before_kill - interrupted.len(),
        received.len(),
        answered.len(),
        arrivals.len(),
        redelivered
    );

    let (status, log) = server.terminate();
    assert!(status.success(), "a clean exit on SIGTERM: {status}\n{log}");
    assert!(log.contains("stopped"), "shutdown is logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_while_a_source_is_paused_loses_no_held_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clientele.toml");
    std::fs::write(&config, TestApp::builder().config_text(dir.path())).unwrap();
    let mut server = Server::start(config.clone()).await;
    let admin = |server: &Server, method: reqwest::Method, path: &str, body: Value| {
        server
            .client
            .request(method, server.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
    };
    let (code, created) = util::send(admin(
        &server,
        reqwest::Method::POST,
        "/api/v1/sources",
        json!({"name": "paused", "kind": "treez", "enabled": false}),
    ))
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    const HELD: usize = 20;
    for i in 0..HELD {
        let body = treez(ACCOUNT, &format!("held-{i}"), UPDATED_AT);
        let (code, answer) = util::send(
            server
                .client
                .post(server.url("/webhooks/paused"))
                .bearer_auth(&token)
                .json(&body),
        )
        .await;
        assert_eq!(
            (code, answer["status"].clone()),
            (StatusCode::ACCEPTED, json!("held")),
            "{answer}"
        );
    }
    let status = server.kill();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");

    let server = Server::start(config).await;
    let (code, answer) = util::send(admin(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/sources/paused",
        json!({"enabled": true}),
    ))
    .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let deadline = Instant::now() + SAFETY;
    for i in 0..HELD {
        let id = format!("paused:{ACCOUNT}:held-{i}");
        loop {
            let (code, _) = server.get(&format!("/api/v1/customers/{id}"), &[]).await;
            if code == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "held {id} applied within {SAFETY:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
