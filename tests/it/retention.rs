//! Retention and compaction (SPEC §12): what compaction drops past its
//! age, what it keeps (a rebuild after it equals the live directory), and
//! retries of a dropped delivery inside the dedupe window. The clock is
//! moved by compacting the stopped app's store "later" (a pass takes its
//! time), or by serving on a simulated clock moved by hand between
//! deliveries, never by sleeping.

use crate::util;

use std::time::Duration;

use clientele::app;
use clientele::clock::Clock;
use clientele::config::RetentionSettings;
use clientele::model::UtcMillis;
use clientele::retention::{self, Compacted};
use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TestApp, treez, vagaro, with};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// One pass over the store of `dir`, as if it ran `days` from now.
async fn compact_later(dir: &std::path::Path, settings: RetentionSettings, days: u32) -> Compacted {
    compact_at(dir, settings, UtcMillis::now().saturating_add(DAY * days)).await
}

/// One pass over the store of `dir` at `now`.
async fn compact_at(dir: &std::path::Path, settings: RetentionSettings, now: UtcMillis) -> Compacted {
    let config = TestApp::builder().config(dir);
    let store = app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    let compacted = retention::compact(store.as_ref(), &settings, now, Duration::ZERO)
        .await
        .expect("a compaction pass");
    store.close().await;
    compacted
}

/// Every customer without `changedAt` (a rebuild stamps its own), by id.
async fn directory(app: &TestApp) -> Vec<Value> {
    let mut customers = app.directory().await;
    for c in &mut customers {
        c.as_object_mut().unwrap().remove("changedAt");
    }
    customers.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    customers
}

fn merged(body: Value, absorbed: Value, into: Value) -> Value {
    let body = with(body, "/data/merged_customer_ids", absorbed);
    with(body, "/data/merged_into_customer_id", into)
}

async fn delivered(app: &TestApp, source: &str, body: &Value) -> Value {
    let (status, answer) = app.deliver_json(source, body).await;
    assert!(status.is_success(), "{status}: {answer}");
    answer
}

#[tokio::test]
async fn a_rebuild_after_compaction_equals_the_live_directory() {
    let app = TestApp::spawn().await;
    // 3904: created, updated, a stale update, a retry; then it absorbs 77,
    // whose own last word came before.
    let first = treez("shop", "3904", "2026-04-24T11:38:21.000-07:00");
    delivered(&app, "treez", &first).await;
    let newer = with(
        first.clone(),
        "/data/last_update",
        json!("2026-04-25T09:00:00.000-07:00"),
    );
    let newer = with(newer, "/data/first_name", json!("Marsellus"));
    delivered(&app, "treez", &newer).await;
    let stale = with(
        first.clone(),
        "/data/last_update",
        json!("2026-04-20T09:00:00.000-07:00"),
    );
    assert_eq!(delivered(&app, "treez", &stale).await["outcome"], "stale");
    assert_eq!(delivered(&app, "treez", &newer).await["status"], "duplicate");
    let absorbed = treez("shop", "77", "2026-04-25T08:00:00.000-07:00");
    delivered(&app, "treez", &merged(absorbed, json!([]), json!("3904"))).await;
    let merge = with(
        newer.clone(),
        "/data/last_update",
        json!("2026-04-26T09:00:00.000-07:00"),
    );
    delivered(&app, "treez", &merged(merge, json!(["77"]), Value::Null)).await;
    // A stale event that claims a merge: its claim is what the link holds.
    let claim = treez("shop", "12", "2026-04-01T00:00:00.000-07:00");
    delivered(&app, "treez", &merged(claim.clone(), json!(["13"]), Value::Null)).await;
    let later = with(claim, "/data/last_update", json!("2026-04-02T00:00:00.000-07:00"));
    delivered(&app, "treez", &later).await;
    // Vagaro: two updates of one customer, one erased customer.
    delivered(&app, "vagaro", &vagaro("evt-1", "V1", "2026-01-01T00:00:00Z")).await;
    delivered(&app, "vagaro", &vagaro("evt-2", "V1", "2026-02-01T00:00:00Z")).await;
    delivered(&app, "vagaro", &vagaro("evt-3", "V2", "2026-01-01T00:00:00Z")).await;
    let erased = app
        .client
        .delete(app.url("/api/v1/customers/vagaro:V2"))
        .bearer_auth(util::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    // Kept, not applied: quarantined and ignored.
    let (status, _) = app.deliver("treez", r#"{"event_type": "CUSTOMER", "data": {}}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let appointment = json!({"id": "appt-1", "createdDate": "2024-03-15T00:00:00Z", "type": "appointment",
                             "action": "created", "payload": {}});
    delivered(&app, "vagaro", &appointment).await;
    let live = directory(&app).await;
    let kept_before = app.events(None).await.len();
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let compacted = compact_later(&dir, RetentionSettings::default(), 100).await;
    // Two superseded snapshots of 3904 and its stale one, V1's superseded
    // one, the erased V2's, the quarantined and the ignored ones. Kept:
    // each record's snapshot (3904's merge, 77's, 12's later one, V1's
    // second) and the stale-keyed claim behind the link 12 → 13.
    assert_eq!((compacted.events, compacted.bodies), (7, 0), "{compacted:?}");
    // Nothing more to drop: a pass is idempotent.
    assert_eq!(
        compact_later(&dir, RetentionSettings::default(), 100).await,
        Compacted::default()
    );

    let rebuilt = TestApp::builder().rebuild(&dir).await;
    assert_eq!((rebuilt.replayed, rebuilt.skipped), (5, 0));
    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(directory(&app).await, live);
    assert_eq!(app.events(None).await.len(), kept_before - 7);
    assert_eq!(app.get("/api/v1/customers/vagaro:V2").await.0, StatusCode::NOT_FOUND);
    app.stop().await;
    drop(temp);
}

#[tokio::test]
async fn nothing_younger_than_its_age_is_dropped() {
    let app = TestApp::spawn().await;
    delivered(&app, "vagaro", &vagaro("evt-1", "V1", "2026-01-01T00:00:00Z")).await;
    delivered(&app, "vagaro", &vagaro("evt-2", "V1", "2026-02-01T00:00:00Z")).await;
    app.deliver("treez", r#"{"event_type": "CUSTOMER", "data": {}}"#).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;
    // 29 days on: the quarantined body (30d) and the superseded one (90d)
    // are still young.
    assert_eq!(
        compact_later(&dir, RetentionSettings::default(), 29).await,
        Compacted::default()
    );
    // 31 days on: the quarantined one goes (its dedupe age is 30d too).
    let compacted = compact_later(&dir, RetentionSettings::default(), 31).await;
    assert_eq!((compacted.events, compacted.bodies), (1, 0));
    drop(temp);
}

#[tokio::test]
async fn a_retry_of_a_compacted_delivery_is_a_duplicate_inside_the_dedupe_window() {
    let settings = RetentionSettings {
        raw_events: DAY,
        ..RetentionSettings::default()
    };
    let app = TestApp::spawn().await;
    let old = vagaro("evt-1", "V1", "2026-01-01T00:00:00Z");
    let first = delivered(&app, "vagaro", &old).await;
    delivered(&app, "vagaro", &vagaro("evt-2", "V1", "2026-02-01T00:00:00Z")).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // Past raw_events, inside dedupe: the body goes, its dedupe record stays.
    let compacted = compact_later(&dir, settings, 2).await;
    assert_eq!((compacted.events, compacted.bodies), (0, 1));
    let app = TestApp::builder().spawn_in(&dir).await;
    let again = delivered(&app, "vagaro", &old).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["eventId"], first["eventId"]);
    let dir = app.dir.clone();
    app.stop().await;

    // Past dedupe too: the row goes, and a retry is a new (stale) delivery.
    let compacted = compact_later(&dir, settings, 31).await;
    assert_eq!((compacted.events, compacted.bodies), (1, 0));
    let app = TestApp::builder().spawn_in(&dir).await;
    let again = delivered(&app, "vagaro", &old).await;
    assert_eq!(again["outcome"], "stale", "{again}");
    app.stop().await;
    drop(temp);
}

/// The shortest ages allowed to `dedupe` (a platform's retry window) and
/// a day for the rest, as `bench/retention.sh` runs.
const SHORT: RetentionSettings = RetentionSettings {
    raw_events: DAY,
    quarantine: DAY,
    dedupe: Duration::from_secs(3 * 24 * 3600),
    messages: DAY,
    history: Some(DAY),
};

#[tokio::test]
async fn on_a_moved_clock_the_dedupe_records_of_deliveries_past_dedupe_go() {
    let (clock, hand) = Clock::simulated();
    let app = TestApp::builder().clock(&clock).spawn().await;
    // Day 0: V1's first snapshot. Day 2: two newer ones, the first of them
    // superseded at once by the second.
    let day_0 = vagaro("evt-1", "V1", "2026-01-01T00:00:00Z");
    let first = delivered(&app, "vagaro", &day_0).await;
    hand.advance(2 * DAY);
    let day_2 = vagaro("evt-2", "V1", "2026-02-01T00:00:00Z");
    let second = delivered(&app, "vagaro", &day_2).await;
    delivered(&app, "vagaro", &vagaro("evt-3", "V1", "2026-03-01T00:00:00Z")).await;
    // Inside dedupe, both are retries.
    assert_eq!(delivered(&app, "vagaro", &day_0).await["eventId"], first["eventId"]);
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // Day 4: day 0's row is past dedupe (3d) and goes; day 2's is past
    // raw_events (1d) only: its body goes, its row stays. Had the
    // deliveries been stamped by the system's clock, both rows would go.
    hand.advance(2 * DAY);
    let compacted = compact_at(&dir, SHORT, clock.now()).await;
    assert_eq!((compacted.events, compacted.bodies), (1, 1), "{compacted:?}");
    let app = TestApp::builder().clock(&clock).spawn_in(&dir).await;
    let again = delivered(&app, "vagaro", &day_2).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["eventId"], second["eventId"]);
    let again = delivered(&app, "vagaro", &day_0).await;
    assert_eq!(again["outcome"], "stale", "a new delivery: {again}");
    assert_ne!(again["eventId"], first["eventId"]);
    app.stop().await;
    drop(temp);
}

#[tokio::test]
async fn the_store_s_size_is_in_metrics() {
    let app = TestApp::spawn().await;
    delivered(&app, "vagaro", &vagaro("evt-1", "V1", "2026-01-01T00:00:00Z")).await;
    let metrics = || async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = metrics().await;
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("clientele_store_bytes "))
        .unwrap_or_else(|| panic!("clientele_store_bytes missing from:\n{text}"))
        .parse()
        .unwrap();
    assert!(bytes > 10_000, "{bytes}");
    // Per table, once the compactor's first pass (at start) has measured.
    let series = r#"clientele_store_table_bytes{table="events"}"#;
    for _ in 0..100 {
        if metrics().await.contains(series) {
            app.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} missing from:\n{}", metrics().await);
}

/// The size of the store of `dir`: its files as the file system holds
/// them (SQLite), or its tables (Postgres).
async fn store_bytes(dir: &std::path::Path) -> u64 {
    let config = TestApp::builder().config(dir);
    let store = app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    let bytes = store.store_bytes().await.expect("its size");
    store.close().await;
    bytes
}

#[tokio::test]
async fn compaction_gives_the_space_back() {
    let app = TestApp::spawn().await;
    // A customer updated 300 times: 299 superseded bodies, each padded
    // with letters that compress badly.
    for i in 0..300u64 {
        let modified = format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60);
        let body = vagaro(&format!("evt-{i}"), "V1", &modified);
        let noise: String = (0..400u64)
            .map(|j| char::from(b'a' + ((i * 7919 + j * 104_729 + j * j) % 26) as u8))
            .collect();
        delivered(&app, "vagaro", &util::set(body, "/payload/noise", json!(noise))).await;
    }
    let dir = app.dir.clone();
    let temp = app.stop().await;
    let before = store_bytes(&dir).await;

    let compacted = compact_later(&dir, RetentionSettings::default(), 100).await;
    assert_eq!(compacted.events, 299);
    let after = store_bytes(&dir).await;
    if util::TestStore::chosen() == util::TestStore::Sqlite {
        // Given back to the file system (incremental vacuum), not only
        // free for reuse inside the file.
        assert!(compacted.reclaimed > 0, "{compacted:?}");
        assert!(after < before, "{before} → {after}");
    } else {
        // Postgres reuses the space once autovacuum has passed: Clientele
        // gives nothing back itself.
        assert_eq!(compacted.reclaimed, 0);
    }
    drop(temp);
}

/// Vagaro's customer `id` on `day`'s delivery `event`, named `name`.
fn named(event: &str, id: &str, modified: &str, name: &str) -> Value {
    util::set(vagaro(event, id, modified), "/payload/customerLastName", json!(name))
}

#[tokio::test]
async fn envelopes_and_history_past_their_age_go_and_an_erasure_still_finds_what_stays() {
    let (clock, hand) = Clock::simulated();
    let app = TestApp::builder().clock(&clock).spawn().await;
    // V3's messages are never taken: its envelope stays while they wait.
    let receiver = util::TestReceiver::start(util::Behaviour::FailCustomer {
        customer: "vagaro:V3".into(),
        times: usize::MAX,
        status: 503,
    })
    .await;
    let (subscription, _) = app.subscribe_url(&receiver.url()).await;
    // Day 0: V1 twice, V3 once. Day 2: V1 again.
    delivered(
        &app,
        "vagaro",
        &named("evt-1", "V1", "2026-01-01T00:00:00Z", "Quillbright"),
    )
    .await;
    delivered(
        &app,
        "vagaro",
        &named("evt-2", "V1", "2026-02-01T00:00:00Z", "Quillbright"),
    )
    .await;
    delivered(
        &app,
        "vagaro",
        &named("evt-3", "V3", "2026-01-01T00:00:00Z", "Thistlewaite"),
    )
    .await;
    hand.advance(2 * DAY);
    let latest = delivered(
        &app,
        "vagaro",
        &named("evt-4", "V1", "2026-03-01T00:00:00Z", "Quillbright"),
    )
    .await;
    // Kept: proves the scan at the end finds what is there.
    delivered(
        &app,
        "vagaro",
        &named("evt-5", "V5", "2026-01-01T00:00:00Z", "Marrowdale"),
    )
    .await;
    app.wait_fanned_out().await;
    app.wait_for_messages(&subscription, "V1's three and V5's delivered", |messages| {
        messages.iter().filter(|m| m["status"] == "delivered").count() == 4
    })
    .await;
    app.wait_resolved().await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // Day 2, a day's ages: day 0's two delivered messages go, then V1's
    // two envelopes of day 0; V3's stays for its waiting message, V1's of
    // day 2 is young. V1's first two history entries go (their bodies,
    // superseded, went first); V3's stays with its applied body.
    let compacted = compact_at(&dir, SHORT, clock.now()).await;
    assert_eq!((compacted.messages, compacted.history), (2, 2), "{compacted:?}");
    assert!(compacted.envelopes >= 2, "{compacted:?}");
    let app = TestApp::builder().clock(&clock).spawn_in(&dir).await;
    let history = app.history("vagaro:V1").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["eventId"], latest["eventId"]);
    assert_eq!(app.history("vagaro:V3").await.len(), 1);
    // The changes kept: V3's, V1's latest and V5's.
    let path = format!("/api/v1/subscriptions/{subscription}/replay");
    let (status, body) = util::send(
        app.client
            .post(app.url(&path))
            .bearer_auth(util::ADMIN)
            .query(&[("since", "2020-01-01T00:00:00Z")]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"messages": 3}));

    // An erasure finds every envelope and entry kept: their chains (on
    // SQLite) start at the oldest kept.
    for id in ["vagaro:V1", "vagaro:V3"] {
        let (status, _) = app.delete(&format!("/api/v1/customers/{id}")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let dir = app.dir.clone();
    app.stop().await;
    let everything = util::stored_bytes(&dir).await;
    assert!(everything.windows(10).any(|w| w == b"Marrowdale"));
    for name in ["Quillbright", "Thistlewaite"] {
        assert!(
            !everything.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} is still in the store after its erasure"
        );
    }
    drop(temp);
}
