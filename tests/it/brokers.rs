//! Destinations beyond HTTP (SPEC §15), against the real servers: NATS
//! with JetStream, RabbitMQ and Redis. Each test subscribes a broker URL,
//! makes changes through the webhook API, consumes what was published
//! with the broker's own client, and checks that every change arrives,
//! signed, in order per customer; the restart tests stop the broker in the
//! middle of the stream and lose nothing.
//!
//! The shared servers (NATS 127.0.0.1:4222, RabbitMQ 5672 guest/guest,
//! Redis 6379; `.ci/brokers.sh` starts them) are used by tests that leave
//! them running; a restart test starts a broker of its own on a free port
//! with its own data directory (NATS, Redis), or, for RabbitMQ, cuts and
//! restores the connection with the TCP proxy of `util` (a second RabbitMQ
//! node is heavy to start). Without a server a test prints a note and
//! skips; with `CI=true` it fails instead.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::proxy::Proxy;
use crate::util::{self, Received, Setup, TestApp, assert_signed, error_code, treez, with};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NATS: &str = "127.0.0.1:4222";
const AMQP: &str = "127.0.0.1:5672";
const REDIS: &str = "127.0.0.1:6379";

/// How long a test waits for what the app sends, through a broker outage
/// and the breaker's pauses: a guard against hangs, never a synchronization.
const PATIENCE: Duration = Duration::from_secs(90);

/// Customers and versions of each in a stream of changes.
const CUSTOMERS: usize = 4;
const VERSIONS: usize = 4;

/// Retries quick and many, so that an outage of a few seconds kills
/// nothing.
/// Short retries for a long outage: every change outlives a broker's restart.
fn delivery() -> Setup {
    let mut schedule = vec!["100ms", "100ms", "200ms", "200ms", "500ms", "500ms"];
    schedule.extend(["1s"; 24]);
    TestApp::builder().delivery_schedule(&schedule).delivery_timeout("2s")
}

/// Whether a server accepts connections at `address`. When it does not:
/// `false` with a note, or, under CI, a failure.
async fn available(what: &str, address: &str) -> bool {
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    );
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is not accepting connections at {address}: CI must run the broker tests (.ci/brokers.sh starts it)"
        );
        eprintln!("note: {what} is not running at {address}; skipping (.ci/brokers.sh starts it)");
    }
    up
}

/// Whether `program` can be run; a note, or under CI a failure, if not.
fn installed(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not installed: CI must run the broker restart tests"
        );
        eprintln!("note: {program} is not installed; skipping");
    }
    found
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Version `version` (from 0) of customer `customer`: a new first name,
/// updated a day later each time.
async fn change(app: &TestApp, customer: usize, version: usize) {
    let body = treez(
        "brokers",
        &format!("c{customer}"),
        &format!("2026-04-{:02}T00:00:00Z", version + 1),
    );
    let body = with(body, "/data/first_name", json!(format!("Name{version}")));
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Versions `versions` of every customer, interleaved.
async fn changes(app: &TestApp, versions: std::ops::Range<usize>) {
    for version in versions {
        for customer in 0..CUSTOMERS {
            change(app, customer, version).await;
        }
    }
}

/// Makes every change and waits until the subscription delivered them
/// all; returns its messages.
async fn stream(app: &TestApp, subscription: &str) -> Vec<Value> {
    changes(app, 0..VERSIONS).await;
    all_delivered(app, subscription, CUSTOMERS * VERSIONS).await
}

/// A broker a test takes away in the middle of a stream and gives back.
trait Outage {
    fn down(&mut self);
    /// Back, and accepting connections.
    async fn up(&mut self);
}

/// Makes every change with `broker` going down in the middle: half before,
/// half while it is down (until an attempt has failed); then brings it back
/// and waits until the subscription delivered them all. Returns its
/// messages.
async fn stream_through_outage(app: &TestApp, subscription: &str, broker: &mut impl Outage) -> Vec<Value> {
    changes(app, 0..VERSIONS / 2).await;
    all_delivered(app, subscription, CUSTOMERS * VERSIONS / 2).await;
    broker.down();
    changes(app, VERSIONS / 2..VERSIONS).await;
    a_failed_attempt(app, subscription).await;
    broker.up().await;
    all_delivered(app, subscription, CUSTOMERS * VERSIONS).await
}

/// Polls a subscription's messages until `done` holds; returns them.
async fn wait_messages(app: &TestApp, subscription: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let messages = app.messages(subscription, None).await;
        if done(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {PATIENCE:?}: {}",
            serde_json::to_string_pretty(&messages).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_delivered(app: &TestApp, subscription: &str, count: usize) -> Vec<Value> {
    wait_messages(app, subscription, &format!("{count} messages delivered"), |m| {
        m.len() == count && m.iter().all(|m| m["status"] == "delivered")
    })
    .await
}

/// The first attempt of a subscription's only message, once it has one.
async fn first_attempt(app: &TestApp, subscription: &str) -> Value {
    let messages = wait_messages(app, subscription, "an attempt", |m| {
        m.first()
            .is_some_and(|m| m["attempts"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    messages[0]["attempts"][0].clone()
}

/// What a broker holds, as the HTTP receiver would have got it: headers
/// and the body.
fn received(headers: Vec<(String, String)>, raw: Vec<u8>) -> Received {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).expect("a header name"),
            HeaderValue::from_str(&value).expect("a header value"),
        );
    }
    Received {
        at: Instant::now(),
        headers: map,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
        status: 200,
        delay: None,
    }
}

/// Checks that each message of `got` went where its action routes it (the
/// JetStream subject, the RabbitMQ routing key), with its webhook id in
/// the header `id` (the broker's own message id); returns the messages.
fn routed(got: Vec<(String, Received)>, route: impl Fn(&str) -> String, id: &str) -> Vec<Received> {
    got.into_iter()
        .map(|(to, message)| {
            assert_eq!(to, route(message.action()));
            assert_eq!(message.header(id), message.webhook_id());
            message
        })
        .collect()
}

/// Asserts that `got` holds every delivered message of `messages` (a
/// repeat allowed: at least once), each signed with `secret`, each
/// customer's in version order.
fn assert_complete_in_order_signed(got: &[Received], messages: &[Value], secret: &str) {
    let sent: HashSet<&str> = messages.iter().map(|m| m["eventId"].as_str().unwrap()).collect();
    let arrived: HashSet<&str> = got.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(arrived, sent, "every change arrives, and nothing else");
    assert_eq!(sent.len(), CUSTOMERS * VERSIONS, "every change made a message");
    let mut versions: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for message in got {
        assert_signed(secret, message);
        assert_eq!(
            message.webhook_id(),
            message.body["id"],
            "webhook-id is the envelope id"
        );
        versions.entry(message.customer()).or_default().push(message.version());
    }
    assert_eq!(versions.len(), CUSTOMERS);
    for (customer, versions) in versions {
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "{customer}'s messages arrive in version order: {versions:?}"
        );
    }
}

// NATS JetStream.

async fn nats_client(address: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(address).await.expect("a NATS connection");
    async_nats::jetstream::new(client)
}

/// A stream capturing `prefix.>`.
async fn nats_stream(js: &async_nats::jetstream::Context, name: &str, prefix: &str) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("a JetStream stream");
}

/// Every message of stream `name`, with its subject.
async fn nats_messages(js: &async_nats::jetstream::Context, name: &str) -> Vec<(String, Received)> {
    let mut stream = js.get_stream(name).await.expect("the stream");
    let count = stream.info().await.expect("the stream's info").state.messages;
    let mut got = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.expect("a stored message");
        let headers = message
            .headers
            .iter()
            .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.to_string())))
            .collect();
        got.push((message.subject.to_string(), received(headers, message.payload.to_vec())));
    }
    got
}

#[tokio::test]
async fn every_change_reaches_a_jetstream_stream_signed_in_order_per_customer() {
    if !available("NATS", NATS).await {
        return;
    }
    let js = nats_client(NATS).await;
    let (name, prefix) = (unique("CLIENTELE_"), unique("clientele_"));
    nats_stream(&js, &name, &prefix).await;
    let app = delivery().spawn().await;
    let (sub, secret) = app.subscribe_url(&format!("nats://{NATS}/{prefix}")).await;
    let messages = stream(&app, &sub).await;
    let got = nats_messages(&js, &name).await;
    js.delete_stream(&name).await.expect("the stream deleted");
    let got = routed(got, |action| format!("{prefix}.customer.{action}"), "nats-msg-id");
    assert_eq!(got.len(), messages.len(), "JetStream drops no duplicate it need not");
    assert_complete_in_order_signed(&got, &messages, &secret);
}

#[tokio::test]
async fn a_subject_no_stream_captures_is_a_failed_attempt_with_the_broker_s_reason() {
    if !available("NATS", NATS).await {
        return;
    }
    let app = delivery().spawn().await;
    let (sub, _) = app
        .subscribe_url(&format!("nats://{NATS}/{}", unique("nowhere_")))
        .await;
    change(&app, 0, 0).await;
    let attempt = first_attempt(&app, &sub).await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("no stream"), "{attempt}");
    assert_eq!(attempt["statusCode"], Value::Null);
}

/// A `nats-server` of the test's own, with JetStream in `dir`.
struct OwnServer {
    child: Option<Child>,
    command: Vec<String>,
    address: SocketAddr,
}

impl OwnServer {
    fn start(program: &str, args: Vec<String>, address: SocketAddr) -> Self {
        let mut server = Self {
            child: None,
            command: std::iter::once(program.to_owned()).chain(args).collect(),
            address,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        self.child = Some(child);
    }

    async fn accepting(&self) {
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(self.address).await.is_err() {
            assert!(Instant::now() < deadline, "{} accepts connections", self.command[0]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Outage for OwnServer {
    fn down(&mut self) {
        self.kill();
    }

    async fn up(&mut self) {
        self.spawn();
        self.accepting().await;
    }
}

/// RabbitMQ cut off and restored by the proxy in front of it.
impl Outage for Proxy {
    fn down(&mut self) {
        Proxy::down(self);
    }

    async fn up(&mut self) {
        Proxy::up(self);
    }
}

/// A port free now on loopback.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.local_addr().expect("a bound port").port()
}

/// Waits until some message has a failed attempt: the broker is seen down.
async fn a_failed_attempt(app: &TestApp, subscription: &str) {
    wait_messages(app, subscription, "a failed attempt while the broker is down", |m| {
        m.iter().any(|m| {
            m["attempts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| !a["error"].is_null()))
        })
    })
    .await;
}

#[tokio::test]
async fn a_nats_server_restarted_in_the_middle_of_a_stream_loses_nothing() {
    if !installed("nats-server") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
        .map(str::to_owned)
        .into_iter()
        .chain([dir.path().display().to_string()])
        .collect();
    let mut server = OwnServer::start("nats-server", args, address);
    server.accepting().await;
    let js = nats_client(&address.to_string()).await;
    nats_stream(&js, "RESTART", "restart").await;
    let app = delivery().spawn().await;
    let (sub, secret) = app.subscribe_url(&format!("nats://{address}/restart")).await;
    let messages = stream_through_outage(&app, &sub, &mut server).await;
    let js = nats_client(&address.to_string()).await;
    let got = nats_messages(&js, "RESTART").await;
    let got = routed(got, |action| format!("restart.customer.{action}"), "nats-msg-id");
    assert_complete_in_order_signed(&got, &messages, &secret);
    app.stop().await;
}

// RabbitMQ.

async fn amqp_channel(address: &str) -> (Connection, lapin::Channel) {
    let connection = Connection::connect(
        &format!("amqp://guest:guest@{address}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect("a RabbitMQ connection");
    let channel = connection.create_channel().await.expect("a channel");
    (connection, channel)
}

/// A topic exchange of the test's and a queue bound to all it routes.
async fn amqp_exchange(channel: &lapin::Channel, exchange: &str) -> String {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("an exchange");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("a queue");
    let name = queue.name().to_string();
    channel
        .queue_bind(
            name.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the queue bound");
    name
}

/// Everything in `queue`, with routing keys; checks each is persistent.
async fn amqp_messages(channel: &lapin::Channel, queue: &str) -> Vec<(String, Received)> {
    let mut got = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let delivery = message.delivery;
        assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
        let mut headers: Vec<(String, String)> = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(name, value)| match value {
                        AMQPValue::LongString(s) => {
                            Some((name.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned()))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(id) = delivery.properties.message_id() {
            headers.push(("message-id".into(), id.to_string()));
        }
        got.push((delivery.routing_key.to_string(), received(headers, delivery.data)));
    }
    got
}

#[tokio::test]
async fn every_change_reaches_a_rabbitmq_exchange_confirmed_signed_in_order_per_customer() {
    if !available("RabbitMQ", AMQP).await {
        return;
    }
    let (_connection, channel) = amqp_channel(AMQP).await;
    let exchange = unique("clientele-");
    let queue = amqp_exchange(&channel, &exchange).await;
    let app = delivery().spawn().await;
    let (sub, secret) = app
        .subscribe_url(&format!("amqp://guest:guest@{AMQP}/%2f?exchange={exchange}"))
        .await;
    let messages = stream(&app, &sub).await;
    let got = amqp_messages(&channel, &queue).await;
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("the exchange deleted");
    let got = routed(got, |action| format!("customer.{action}"), "message-id");
    assert_eq!(got.len(), messages.len());
    assert_complete_in_order_signed(&got, &messages, &secret);
}

#[tokio::test]
async fn a_missing_exchange_refused_credentials_and_an_unbound_key_are_failed_attempts_with_reasons() {
    if !available("RabbitMQ", AMQP).await {
        return;
    }
    let app = delivery().spawn().await;
    let missing = unique("missing-");
    let (no_exchange, _) = app
        .subscribe_url(&format!("amqp://guest:guest@{AMQP}/%2f?exchange={missing}"))
        .await;
    let (refused, _) = app
        .subscribe_url(&format!("amqp://guest:wr0ngpassw0rd@{AMQP}/%2f?exchange=amq.topic"))
        .await;
    let (unbound, _) = app
        .subscribe_url(&format!("amqp://guest:guest@{AMQP}/%2f?exchange=amq.topic"))
        .await;
    change(&app, 0, 0).await;

    let attempt = first_attempt(&app, &no_exchange).await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("NOT_FOUND") && error.contains(&missing), "{attempt}");
    let attempt = first_attempt(&app, &refused).await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty() && !error.contains("wr0ngpassw0rd"), "{attempt}");
    let attempt = first_attempt(&app, &unbound).await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("NO_ROUTE") && error.contains("customer.created"),
        "{attempt}"
    );

    let (_, listed) = app.get("/api/v1/subscriptions").await;
    assert!(!listed.to_string().contains("wr0ngpassw0rd"), "{listed}");
    assert!(listed.to_string().contains("guest:***@"), "{listed}");
}

/// RabbitMQ cut off in the middle of a stream (a TCP proxy stands in for a
/// restart: a second RabbitMQ node is heavy to start in a test): the
/// connection breaks, attempts fail, and once it is back every change
/// arrives.
#[tokio::test]
async fn a_rabbitmq_connection_cut_in_the_middle_of_a_stream_loses_nothing() {
    if !available("RabbitMQ", AMQP).await {
        return;
    }
    let (_connection, channel) = amqp_channel(AMQP).await;
    let exchange = unique("clientele-");
    let queue = amqp_exchange(&channel, &exchange).await;
    let mut proxy = Proxy::start(("127.0.0.1".to_owned(), 5672)).await;
    let app = delivery().spawn().await;
    let url = format!("amqp://guest:guest@{}/%2f?exchange={exchange}", proxy.address());
    let (sub, secret) = app.subscribe_url(&url).await;
    let messages = stream_through_outage(&app, &sub, &mut proxy).await;
    let got = amqp_messages(&channel, &queue).await;
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("the exchange deleted");
    let got = routed(got, |action| format!("customer.{action}"), "message-id");
    assert_complete_in_order_signed(&got, &messages, &secret);
    app.stop().await;
}

/// lapin logged every message RabbitMQ returned, envelope and all, as a
/// warning; and the broker clients log frames at trace level. The binary at
/// `RUST_LOG=trace` publishes a message that comes back: no customer data
/// in its log.
#[tokio::test]
async fn a_message_rabbitmq_returns_leaves_no_customer_data_in_the_log_however_verbose() {
    if !available("RabbitMQ", AMQP).await {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("clientele.toml");
    std::fs::write(&config, delivery().config_text(dir.path())).expect("the config written");
    let log = dir.path().join("stderr.log");
    let mut child = util::binary()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("the clientele binary starts");
    let deadline = Instant::now() + PATIENCE;
    let address = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(address) = text.lines().find_map(util::logged_address) {
            break address;
        }
        assert!(Instant::now() < deadline, "clientele logs its address: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = util::client();
    let created = client
        .post(format!("http://{address}/api/v1/subscriptions"))
        .bearer_auth(util::ADMIN)
        .json(&json!({ "url": format!("amqp://guest:guest@{AMQP}/%2f?exchange=amq.topic") }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(created.status(), StatusCode::CREATED);
    let name = "Zebulonius";
    let body = with(
        treez("brokers", "logged", "2026-04-01T00:00:00Z"),
        "/data/first_name",
        json!(name),
    );
    let delivered = client
        .post(format!("http://{address}/webhooks/treez"))
        .bearer_auth(util::TREEZ_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("an answer");
    assert_eq!(delivered.status(), StatusCode::OK);
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("outcome=\"retried\"")
    {
        assert!(Instant::now() < deadline, "the returned message is a failed attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("the log");
    let as_bytes = name.bytes().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
    for never in [name, as_bytes.as_str(), "guest:guest"] {
        assert!(!text.contains(never), "{never:?} was logged:\n{text}");
    }
}

// Redis Streams.

async fn redis_connection(address: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{address}/"))
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a Redis connection")
}

/// Every entry of `stream`: its fields as headers, `body` as the body.
async fn redis_entries(address: &str, stream: &str) -> Vec<Received> {
    let mut connection = redis_connection(address).await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let body = fields
                .iter()
                .find(|(name, _)| name == "body")
                .map(|(_, body)| body.clone().into_bytes())
                .expect("a body field");
            let headers = fields.into_iter().filter(|(name, _)| name != "body").collect();
            received(headers, body)
        })
        .collect()
}

#[tokio::test]
async fn every_change_reaches_a_redis_stream_signed_in_order_per_customer() {
    if !available("Redis", REDIS).await {
        return;
    }
    let name = unique("clientele:");
    let app = delivery().spawn().await;
    let (sub, secret) = app.subscribe_url(&format!("redis://{REDIS}/{name}")).await;
    let messages = stream(&app, &sub).await;
    let got = redis_entries(REDIS, &name).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&name)
        .query_async(&mut redis_connection(REDIS).await)
        .await
        .expect("DEL");
    assert_eq!(got.len(), messages.len());
    for entry in &got {
        assert_eq!(entry.header("content-type"), "application/json");
    }
    assert_complete_in_order_signed(&got, &messages, &secret);
}

#[tokio::test]
async fn a_redis_key_of_another_type_is_a_failed_attempt_with_the_broker_s_reason() {
    if !available("Redis", REDIS).await {
        return;
    }
    let key = unique("clientele:string:");
    let mut connection = redis_connection(REDIS).await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query_async(&mut connection)
        .await
        .expect("SET");
    let app = delivery().spawn().await;
    let (sub, _) = app.subscribe_url(&format!("redis://{REDIS}/{key}")).await;
    change(&app, 0, 0).await;
    let attempt = first_attempt(&app, &sub).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("DEL");
    assert!(
        attempt["error"].as_str().unwrap_or_default().contains("WRONGTYPE"),
        "{attempt}"
    );
}

#[tokio::test]
async fn a_redis_server_restarted_in_the_middle_of_a_stream_loses_nothing() {
    if !installed("redis-server") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = redis_args(port, dir.path());
    let mut server = OwnServer::start("redis-server", args, address);
    server.accepting().await;
    let app = delivery().spawn().await;
    let (sub, secret) = app.subscribe_url(&format!("redis://{address}/restart")).await;
    let messages = stream_through_outage(&app, &sub, &mut server).await;
    let got = redis_entries(&address.to_string(), "restart").await;
    assert_complete_in_order_signed(&got, &messages, &secret);
    app.stop().await;
}

/// A Redis that keeps every entry through a kill (append-only, fsync
/// always) in `dir`.
fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

// Bad input and outbound safety, which need no broker.

#[tokio::test]
async fn broker_urls_lacking_a_prefix_exchange_or_stream_or_of_an_unknown_scheme_are_refused_with_400() {
    let app = TestApp::spawn().await;
    for (url, says) in [
        ("nats://127.0.0.1:4222", "subject prefix"),
        ("nats://127.0.0.1:4222/a.*", "subject prefix"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "exchange"),
        ("redis://127.0.0.1:6379/", "stream"),
        ("kafka://127.0.0.1:9092/topic", "nats://"),
        ("nats:///prefix", "host"),
    ] {
        let (status, body) = app
            .admin_json(reqwest::Method::POST, "/api/v1/subscriptions", &json!({ "url": url }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(error_code(&body), "invalid_request", "{url}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{url}: {body}"
        );
    }
}

#[tokio::test]
async fn a_broker_on_a_non_public_address_is_refused_at_creation_and_when_connecting() {
    let app = TestApp::builder()
        .delivery("allow_private", Vec::<String>::new())
        .delivery_schedule(&["1h"])
        .spawn()
        .await;
    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            &json!({ "url": "redis://127.0.0.1:6379/s" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for (version, url) in [
        "redis://localhost:6379/s",
        "nats://localhost:4222/p",
        "amqp://localhost/?exchange=x",
    ]
    .into_iter()
    .enumerate()
    {
        let (sub, _) = app.subscribe_url(url).await;
        change(&app, 0, version).await;
        let attempt = first_attempt(&app, &sub).await;
        assert_eq!(attempt["error"], "destination not allowed", "{url}: {attempt}");
        app.delete(&format!("/api/v1/subscriptions/{sub}")).await;
    }
}
