//! Several instances on one Postgres store (SPEC §7: "several `clientele
//! serve` instances share one database behind a load balancer"): races
//! between them settle as one instance would, each outbound message is sent
//! by one of them, a crashed instance's claims are taken over, and an
//! instance that loses its database answers `503` and recovers by itself.
//!
//! Only the Postgres store is shared: on any other, each test says it is
//! skipped and passes.

use crate::util;

use std::sync::Arc;
use std::time::Instant;

use clientele::app;
use clientele::model::UtcMillis;
use clientele::outbound::Claim;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use util::proxy::Proxy;
use util::{
    SAFETY, TestApp, TestReceiver, TestStore, error_code, postgres, source_auth, treez, vagaro, with,
    without_bookkeeping,
};

const T1: &str = "2026-04-01T00:00:00Z";

/// Whether the suite runs on a store that instances share; if not, says
/// that the test is skipped.
fn shared_store() -> bool {
    let shared = TestStore::chosen() == TestStore::Postgres;
    if !shared {
        let test = std::thread::current().name().unwrap_or("this test").to_owned();
        println!("{test}: skipped, several instances need CLIENTELE_TEST_STORE=postgres");
    }
    shared
}

/// Two instances on one fresh store.
async fn two_instances() -> (Arc<TestApp>, Arc<TestApp>) {
    let a = TestApp::spawn().await;
    let b = TestApp::builder().spawn_in(&a.dir).await;
    (Arc::new(a), Arc::new(b))
}

/// Sends every delivery at once, each to its instance; the answers, in the
/// same order.
async fn deliver_all(deliveries: Vec<(Arc<TestApp>, &'static str, Value)>) -> Vec<(StatusCode, Value)> {
    let sending: Vec<_> = deliveries
        .into_iter()
        .map(|(app, source, body)| tokio::spawn(async move { app.deliver_json(source, &body).await }))
        .collect();
    let mut answers = Vec::new();
    for answer in sending {
        answers.push(answer.await.expect("a delivery"));
    }
    answers
}

/// The whole directory without bookkeeping, by id.
async fn converged_view(app: &TestApp) -> Vec<Value> {
    let mut records: Vec<Value> = app.directory().await.iter().map(without_bookkeeping).collect();
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_raced_to_two_instances_is_accepted_once_and_counted_once_as_a_duplicate() {
    if !shared_store() {
        return;
    }
    let (a, b) = two_instances().await;
    const EVENTS: usize = 20;
    let bodies: Vec<Value> = (0..EVENTS)
        .map(|i| vagaro(&format!("race-{i}"), &format!("RACE{i}"), T1))
        .collect();
    let deliveries = bodies
        .iter()
        .flat_map(|body| [(a.clone(), "vagaro", body.clone()), (b.clone(), "vagaro", body.clone())])
        .collect();

    let answers = deliver_all(deliveries).await;
    for (body, pair) in bodies.iter().zip(answers.chunks(2)) {
        let [(a_status, a_answer), (b_status, b_answer)] = pair else {
            unreachable!("answers come in pairs")
        };
        assert_eq!(
            (*a_status, *b_status),
            (StatusCode::OK, StatusCode::OK),
            "{a_answer} {b_answer}"
        );
        let mut outcomes = [a_answer["status"].as_str(), b_answer["status"].as_str()];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [Some("accepted"), Some("duplicate")],
            "{body}: {a_answer} {b_answer}"
        );
        assert_eq!(
            a_answer["eventId"], b_answer["eventId"],
            "the duplicate names the kept event"
        );
        let event = a.event(a_answer["eventId"].as_str().unwrap()).await;
        assert_eq!(event["status"], "accepted", "{event}");
        assert_eq!(event["duplicates"], 1, "{event}");
    }
    assert_eq!(a.events(None).await.len(), EVENTS, "each delivery kept once");
    assert_eq!(a.directory().await.len(), EVENTS);
    assert_eq!(a.history("vagaro:RACE0").await.len(), 1, "applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshots_through_two_instances_converge_to_the_sequential_record() {
    if !shared_store() {
        return;
    }
    let (a, b) = two_instances().await;
    // One customer's snapshots in many orders of time, each with a name and
    // a phone of its own; and both sides of a Treez merge.
    let mut bodies: Vec<Value> = (0..24)
        .map(|i| {
            let at = format!("2026-04-24T10:{i:02}:00.000-07:00");
            let body = with(treez("race", "1", &at), "/data/first_name", json!(format!("Name{i}")));
            with(body, "/data/phone", json!(format!("914555{i:04}")))
        })
        .collect();
    let survivor = with(treez("race", "100", T1), "/data/status", json!("MERGED"));
    bodies.push(with(survivor, "/data/merged_customer_ids", json!(["200"])));
    let absorbed = with(treez("race", "200", T1), "/data/status", json!("DEACTIVATED"));
    bodies.push(with(absorbed, "/data/merged_into_customer_id", json!("100")));
    // Split across the instances, the newest and the oldest snapshots on
    // different ones, and the merge's two sides too.
    let deliveries = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| (if i % 2 == 0 { a.clone() } else { b.clone() }, "treez", body.clone()))
        .collect();

    for (status, answer) in deliver_all(deliveries).await {
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "accepted", "{answer}");
    }
    let sequential = TestApp::spawn().await;
    for body in &bodies {
        let (status, answer) = sequential.deliver_json("treez", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let expected = converged_view(&sequential).await;
    assert_eq!(expected.len(), 3);
    assert_eq!(converged_view(&a).await, expected);
    assert_eq!(converged_view(&b).await, expected);
    assert_eq!(a.customer("treez:race:1").await["firstName"], "Name23");
    assert_eq!(a.customer("treez:race:200").await["mergedInto"], "treez:race:100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_sent_once_not_once_per_instance() {
    if !shared_store() {
        return;
    }
    let (a, b) = two_instances().await;
    let receiver = TestReceiver::healthy().await;
    let (subscription, _) = a.subscribe_url(&receiver.url()).await;
    const CHANGES: usize = 30;
    let deliveries = (0..CHANGES)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            (app, "treez", treez("sent", &i.to_string(), T1))
        })
        .collect();
    for (status, answer) in deliver_all(deliveries).await {
        assert_eq!(
            (status, answer["status"].as_str()),
            (StatusCode::OK, Some("accepted")),
            "{answer}"
        );
    }

    receiver.wait_for(CHANGES).await;
    // Once every message is recorded delivered, no claim can send one again.
    let messages = b.wait_all(&subscription, CHANGES, "delivered").await;
    let received = receiver.received();
    let mut sent: Vec<&str> = received.iter().map(|r| r.webhook_id()).collect();
    sent.sort();
    let mut queued: Vec<&str> = messages.iter().map(|m| m["eventId"].as_str().unwrap()).collect();
    queued.sort();
    assert_eq!(
        sent,
        queued,
        "each message sent exactly once: {:#?}",
        util::summary(&received)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instances_claim_is_taken_over_by_another_instance() {
    if !shared_store() {
        return;
    }
    let receiver = TestReceiver::healthy().await;
    // Instance A takes a change for a subscription that is disabled, so that
    // no instance claims its message yet.
    let a = TestApp::spawn().await;
    let (subscription, secret) = a.subscribe_url(&receiver.url()).await;
    a.set_enabled(&subscription, false).await;
    let (status, answer) = a.deliver_json("treez", &treez("lease", "1", T1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let dir = a.dir.clone();
    let temp = a.stop().await;

    // An instance that enables the subscription, claims the message and
    // crashes before it sends it; its lease has run out since.
    let config = TestApp::builder().config(&dir);
    let store = app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    store
        .set_subscription_enabled(subscription.clone(), true)
        .await
        .expect("the subscription is enabled");
    store.fan_out().await.expect("a fan-out");
    let now = UtcMillis::now();
    let claimed = store
        .claim_due(Claim {
            now,
            lease_until: now,
            limit: 64,
            shares: Default::default(),
            per_subscription: 8,
            busy: Default::default(),
            sending: Default::default(),
        })
        .await
        .expect("a claim");
    assert_eq!(claimed.len(), 1, "the crashed instance held the message");
    let held = claimed[0].event_id.clone();
    drop(claimed);
    store.close().await;

    let b = TestApp::builder().spawn_in(&dir).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].webhook_id(), held);
    util::assert_signed(&secret, &received[0]);
    let messages = b.wait_all(&subscription, 1, "delivered").await;
    let attempts = messages[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "only instance B's send was an attempt: {attempts:?}");
    assert_eq!(receiver.received().len(), 1, "sent once");
    drop(temp);
}

/// One delivery of a load, and its answer.
struct Answered {
    started: Instant,
    finished: Instant,
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answered {
    fn acknowledged(&self) -> bool {
        self.status == StatusCode::OK
    }
}

/// Delivers `body` to the Vagaro source of the instance at `url` (its
/// `/webhooks/vagaro`), keeping when it was sent and answered.
async fn deliver_timed(client: &reqwest::Client, url: &str, body: &Value) -> Answered {
    let started = Instant::now();
    let request = source_auth("vagaro", client.post(url))
        .header("content-type", "application/json")
        .body(body.to_string());
    let response = request.send().await.expect("the instance answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("a text Retry-After").to_owned());
    let (_, body) = util::read(response).await;
    Answered {
        started,
        finished: Instant::now(),
        status,
        retry_after,
        body,
    }
}

/// Delivers new events to `url`, one after the other, until `stop`; every
/// answer goes into `answered`.
async fn load(
    task: usize,
    client: reqwest::Client,
    url: String,
    stop: watch::Receiver<bool>,
    answered: Arc<watch::Sender<Vec<Answered>>>,
) {
    for i in 0.. {
        if *stop.borrow() {
            break;
        }
        let body = vagaro(&format!("load-{task}-{i}"), &format!("LOAD{task}X{i}"), T1);
        let answer = deliver_timed(&client, &url, &body).await;
        answered.send_modify(|all| all.push(answer));
    }
}

/// Waits until what was answered satisfies `done`.
async fn wait_answers(answered: &watch::Sender<Vec<Answered>>, what: &str, done: impl Fn(&[Answered]) -> bool) {
    tokio::time::timeout(SAFETY, answered.subscribe().wait_for(|all| done(all)))
        .await
        .unwrap_or_else(|_| panic!("{what} within {SAFETY:?}"))
        .expect("the answers' channel lives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_loses_its_database_answers_503_and_recovers_without_losing_anything_acknowledged() {
    if !shared_store() {
        return;
    }
    const TASKS: usize = 4;
    let a = TestApp::spawn().await;
    let proxy = Proxy::start(postgres::server()).await;
    let b = TestApp::builder().spawn_behind(&proxy, &a.dir).await;
    let (stop, stopped) = watch::channel(false);
    let answered = Arc::new(watch::channel(Vec::new()).0);
    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            let url = b.url("/webhooks/vagaro");
            tokio::spawn(load(task, b.client.clone(), url, stopped.clone(), answered.clone()))
        })
        .collect();
    wait_answers(&answered, "20 acknowledged deliveries", |all| {
        all.iter().filter(|d| d.acknowledged()).count() >= 20
    })
    .await;

    proxy.down();
    let down_at = Instant::now();
    wait_answers(&answered, "answers to every sender during the outage", |all| {
        all.iter().filter(|d| d.started >= down_at).count() >= 3 * TASKS
    })
    .await;
    let ready = b.client.get(b.url("/readyz")).send().await.expect("/readyz answers");
    assert_ne!(ready.status(), StatusCode::OK, "B is not ready without its database");
    let (status, answer) = a
        .deliver_json("vagaro", &vagaro("beside-the-outage", "BESIDE", T1))
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("accepted")),
        "A carries on: {answer}"
    );
    let up_at = Instant::now();
    proxy.up();

    // Without a restart, B takes deliveries again once it reconnects.
    let deadline = Instant::now() + SAFETY;
    let mut after = Vec::new();
    for i in 0.. {
        let body = vagaro(&format!("after-{i}"), &format!("AFTER{i}"), T1);
        let answer = deliver_timed(&b.client, &b.url("/webhooks/vagaro"), &body).await;
        let acknowledged = answer.acknowledged();
        after.push(answer);
        if acknowledged {
            break;
        }
        assert!(Instant::now() < deadline, "B takes deliveries again within {SAFETY:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ready = b.client.get(b.url("/readyz")).send().await.expect("/readyz answers");
    assert_eq!(ready.status(), StatusCode::OK, "B is ready again");
    stop.send(true).expect("the senders listen");
    for sender in senders {
        sender.await.expect("a sender");
    }

    let mut all = answered.send_replace(Vec::new());
    all.extend(after);
    let during: Vec<&Answered> = all
        .iter()
        .filter(|d| d.started >= down_at && d.finished <= up_at)
        .collect();
    assert!(
        during.len() >= 3 * TASKS,
        "deliveries sent and answered during the outage"
    );
    for delivery in &all {
        if delivery.acknowledged() {
            assert_eq!(delivery.body["status"], "accepted", "{}", delivery.body);
            continue;
        }
        // The outage, whenever it struck: a 503 with the JSON shape and
        // Retry-After, never another failure.
        assert_eq!(delivery.status, StatusCode::SERVICE_UNAVAILABLE, "{}", delivery.body);
        assert_eq!(error_code(&delivery.body), "unavailable", "{}", delivery.body);
        assert_eq!(delivery.retry_after.as_deref(), Some("1"), "{}", delivery.body);
    }
    assert!(
        during.iter().all(|d| !d.acknowledged()),
        "nothing acknowledged without a database"
    );

    // Nothing acknowledged is lost: read through A, which never lost the
    // database.
    let acknowledged: Vec<&Answered> = all.iter().filter(|d| d.acknowledged()).collect();
    assert!(acknowledged.len() > 20);
    for delivery in acknowledged {
        let event = a.event(delivery.body["eventId"].as_str().expect("an event id")).await;
        assert_eq!(event["status"], "accepted", "{event}");
        assert_eq!(event["customerId"], delivery.body["customerId"], "{event}");
    }
}

/// Erasures racing merge deliveries on both instances, over a few linked
/// customers: every erasure is answered 204 (or 404, erased as a stub's
/// partner before it existed), none fails. An erasure once took its own
/// lock before its partners', deadlocked with the merges, and answered
/// 500 after its runs were used up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_racing_merges_on_two_instances_all_succeed() {
    if !shared_store() {
        return;
    }
    let (a, b) = two_instances().await;
    const IDS: usize = 12;
    // Each side of a merge, in turn: the survivor naming the absorbed, and
    // the absorbed naming the survivor.
    let merge = |i: usize, round: usize| {
        let (s, l) = (i % IDS, (i * 7 + 3) % IDS);
        let at = format!("2026-04-01T00:{:02}:{:02}Z", round % 60, i % 60);
        if round.is_multiple_of(2) {
            let body = with(treez("race", &s.to_string(), &at), "/data/status", json!("MERGED"));
            with(body, "/data/merged_customer_ids", json!([l.to_string()]))
        } else {
            let body = with(treez("race", &l.to_string(), &at), "/data/status", json!("DEACTIVATED"));
            with(body, "/data/merged_into_customer_id", json!(s.to_string()))
        }
    };
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = if worker % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut erasures = Vec::new();
            for round in 0..60 {
                let i = worker * 61 + round;
                if round % 10 == 9 {
                    let id = format!("treez:race:{}", i % IDS);
                    let (status, body) = util::send(
                        app.client
                            .delete(app.url(&format!("/api/v1/customers/{id}")))
                            .bearer_auth(util::ADMIN),
                    )
                    .await;
                    erasures.push((status, body));
                } else {
                    let (status, body) = app.deliver_json("treez", &merge(i, round)).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            }
            erasures
        }));
    }
    for task in tasks {
        for (status, body) in task.await.expect("a worker") {
            assert!(
                [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND].contains(&status),
                "an erasure answered {status}: {body}"
            );
        }
    }
}
