//! Erasure (SPEC §5, GDPR art. 17): what `DELETE /api/v1/customers/{id}`
//! removes, from the API, from subscribers, and from the store itself.

use crate::util;

use std::time::{Duration, Instant};

use clientele::app;
use clientele::model::UtcMillis;
use clientele::outbound::Claim;
use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{Behaviour, TestApp, TestReceiver, treez, with};

const T1: &str = "2026-04-01T00:00:00Z";
const T2: &str = "2026-05-01T00:00:00Z";

/// A Treez customer with personal data that can be searched for in the store.
fn jules(id: &str, last_update: &str) -> Value {
    let body = with(treez("shop", id, last_update), "/data/first_name", json!("Jeroboam"));
    let body = with(body, "/data/last_name", json!("Quillfeather"));
    let body = with(body, "/data/email", json!("jeroboam.quillfeather@example.com"));
    let body = with(body, "/data/phone", json!("9145550199"));
    let body = with(body, "/data/drivers_license", json!("DLQX7781234"));
    let body = with(body, "/data/state_medical_id", json!("MEDZ55501"));
    with(body, "/data/addresses/0/street1", json!("77 ZANZIBAR TERRACE"))
}

const JULES_PII: [&str; 8] = [
    "Jeroboam",
    "Quillfeather",
    // A word of the name as the name search keeps it, folded.
    "quillfeather",
    "jeroboam.quillfeather@example.com",
    "9145550199",
    "DLQX7781234",
    "MEDZ55501",
    "ZANZIBAR TERRACE",
];

/// The phone Jules moves to in a later delivery.
const NEW_PHONE: &str = "2125550123";

async fn erase(app: &TestApp, id: &str) -> StatusCode {
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/customers/{id}")))
        .bearer_auth(util::ADMIN)
        .send()
        .await
        .expect("an answer");
    response.status()
}

#[tokio::test]
async fn an_erased_customer_is_gone_from_the_api_and_its_events_are_redacted() {
    let app = TestApp::spawn().await;
    let (_, first) = app.deliver_json("treez", &jules("1", T1)).await;
    app.deliver_json("treez", &jules("1", T2)).await;
    // A stale snapshot changes no field, but its raw body is the customer's.
    let (_, stale) = app.deliver_json("treez", &jules("1", "2026-03-01T00:00:00Z")).await;
    assert_eq!(stale["outcome"], "stale");
    let id = "treez:shop:1";

    assert_eq!(erase(&app, id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/customers/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/customers/{id}/events")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, event) = app
        .get(&format!("/api/v1/events/{}", first["eventId"].as_str().unwrap()))
        .await;
    assert_eq!(event["redacted"], true);
    assert_eq!(event["body"], Value::Null);
    assert_eq!(event["headers"], json!({}));
    let listed = app.events(None).await;
    assert_eq!(listed.len(), 3, "redacted events stay listed");
    assert!(listed.iter().all(|e| e["redacted"] == true));
}

#[tokio::test]
async fn erasing_again_is_204_and_an_unknown_customer_is_404() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("2", T1)).await;
    assert_eq!(erase(&app, "treez:shop:2").await, StatusCode::NO_CONTENT);
    assert_eq!(erase(&app, "treez:shop:2").await, StatusCode::NO_CONTENT);
    assert_eq!(erase(&app, "treez:shop:nobody").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn later_deliveries_for_an_erased_customer_are_suppressed_and_kept_nowhere() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("3", T1)).await;
    erase(&app, "treez:shop:3").await;
    let kept = app.events(None).await.len();

    let (status, answer) = app.deliver_json("treez", &jules("3", T2)).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"status": "suppressed"})));
    // Even a retry of the very delivery that was kept before the erasure.
    let (_, answer) = app.deliver_json("treez", &jules("3", T1)).await;
    assert_eq!(answer, json!({"status": "suppressed"}));
    assert_eq!(app.events(None).await.len(), kept, "nothing of them is kept");
    assert_eq!(app.get("/api/v1/customers/treez:shop:3").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subscribers_get_a_deleted_message_without_personal_data_and_pending_messages_are_cancelled() {
    let app = TestApp::builder()
        .delivery_schedule(&["1h"])
        .delivery_timeout("2s")
        .spawn()
        .await;
    let healthy = TestReceiver::start(Behaviour::Healthy).await;
    let failing = TestReceiver::start(Behaviour::always(500)).await;
    let (ok, _) = app.subscribe_url(&healthy.url()).await;
    let (stuck, _) = app.subscribe_url(&failing.url()).await;
    app.deliver_json("treez", &jules("4", T1)).await;
    // The failing subscriber's message waits an hour for its retry.
    app.wait_for_messages(&stuck, "a failed attempt", |m| {
        m.len() == 1 && m[0]["attempts"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;

    assert_eq!(erase(&app, "treez:shop:4").await, StatusCode::NO_CONTENT);
    let received = healthy.wait_for(2).await;
    let deleted = &received[1].body;
    assert_eq!(deleted["action"], "deleted");
    assert_eq!(
        deleted["payload"],
        json!({"id": "treez:shop:4", "source": "treez", "externalId": "4", "version": 2})
    );
    let raw = String::from_utf8_lossy(&received[1].raw);
    for pii in JULES_PII {
        assert!(!raw.contains(pii), "{pii} sent in the deleted message");
    }
    let stuck_messages = app.messages(&stuck, None).await;
    let statuses: Vec<&Value> = stuck_messages.iter().map(|m| &m["status"]).collect();
    assert_eq!(
        statuses,
        [&json!("cancelled"), &json!("pending")],
        "created cancelled, deleted queued"
    );
    let cancelled = stuck_messages[0]["id"].as_str().expect("a message id");
    let (status, answer) = app.post_admin(&format!("/api/v1/messages/{cancelled}/retry")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a cancelled message is never sent again: {answer}"
    );
    assert_eq!(util::error_code(&answer), "cancelled");
    app.wait_all(&ok, 2, "delivered").await;
}

#[tokio::test]
async fn erasing_an_absorbed_record_updates_its_survivor_and_tells_subscribers() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start(Behaviour::Healthy).await;
    let survivor = with(treez("shop", "S", T2), "/data/merged_customer_ids", json!(["L"]));
    let survivor = with(survivor, "/data/status", json!("MERGED"));
    app.deliver_json("treez", &survivor).await;
    app.deliver_json("treez", &jules("L", T1)).await;
    assert_eq!(
        app.customer("treez:shop:S").await["mergedFrom"],
        json!(["treez:shop:L"])
    );
    app.subscribe_url(&receiver.url()).await;

    assert_eq!(erase(&app, "treez:shop:L").await, StatusCode::NO_CONTENT);
    let s = app.customer("treez:shop:S").await;
    assert_eq!(s["mergedFrom"], json!([]));
    let received = receiver.wait_for(2).await;
    let actions: Vec<(&Value, &Value)> = received
        .iter()
        .map(|r| (&r.body["action"], &r.body["payload"]["id"]))
        .collect();
    assert!(
        actions.contains(&(&json!("updated"), &json!("treez:shop:S"))),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(&json!("deleted"), &json!("treez:shop:L"))),
        "{actions:?}"
    );
    // A later delivery naming the erased record again does not bring it back.
    let again = with(survivor.clone(), "/data/last_update", json!("2026-06-01T00:00:00Z"));
    app.deliver_json("treez", &again).await;
    assert_eq!(app.customer("treez:shop:S").await["mergedFrom"], json!([]));
    assert_eq!(app.get("/api/v1/customers/treez:shop:L").await.0, StatusCode::NOT_FOUND);
}

/// Asserts that none of the erased customer's personal data is anywhere in
/// what the store keeps, and that text that was kept is found (so the scan
/// works).
async fn assert_erased_from_the_store(dir: &std::path::Path, when: &str) {
    let everything = util::stored_bytes(dir).await;
    let contains = |needle: &str| everything.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("Brightwaterson"), "{when}: the scan finds what was kept");
    for pii in JULES_PII.iter().chain([&NEW_PHONE]) {
        assert!(!contains(pii), "{when}: {pii} is still in the store after the erasure");
    }
}

#[tokio::test]
async fn erased_personal_data_is_gone_from_everything_the_store_keeps() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("5", T1)).await;
    // A new phone: the lookup rows of both numbers come and go.
    app.deliver_json("treez", &with(jules("5", T2), "/data/phone", json!(NEW_PHONE)))
        .await;
    // Another customer, kept: proves the scan would find text that is there.
    let kept = with(treez("shop", "6", T1), "/data/last_name", json!("Brightwaterson"));
    let kept = with(kept, "/data/caregiver_name_1", json!("Zebulonquist"));
    app.deliver_json("treez", &kept).await;
    assert_eq!(erase(&app, "treez:shop:5").await, StatusCode::NO_CONTENT);
    // At once, while the service runs (on SQLite, the WAL too), and after it
    // stops.
    assert_erased_from_the_store(&app.dir, "running").await;
    let dir = app.dir.clone();
    let temp = app.stop().await;
    assert_erased_from_the_store(&dir, "stopped").await;
    let everything = util::stored_bytes(&dir).await;
    // The kept customer's name as its search word (folded): the scan reads
    // the name search's rows.
    assert!(everything.windows(14).any(|w| w == b"brightwaterson"));
    // Only in the kept customer's raw body, which the store compresses:
    // the scan reads inside compressed rows.
    assert!(everything.windows(12).any(|w| w == b"Zebulonquist"));
    drop(temp);
}

#[tokio::test]
async fn a_rebuild_after_an_erasure_keeps_the_customer_erased() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("7", T1)).await;
    app.deliver_json("treez", &jules("8", T1)).await;
    erase(&app, "treez:shop:7").await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let rebuilt = TestApp::builder().rebuild(&dir).await;
    assert_eq!((rebuilt.replayed, rebuilt.skipped), (1, 1));
    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.get("/api/v1/customers/treez:shop:7").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.customer("treez:shop:8").await["id"], "treez:shop:8");
    app.stop().await;
    drop(temp);
}

/// A rebuild empties the records but keeps the outbox: an erasure after it
/// still reaches the envelopes written before it, as well as the ones
/// written since.
#[tokio::test]
async fn erased_personal_data_is_gone_after_a_rebuild_too() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("9", T1)).await;
    let kept = with(treez("shop", "10", T1), "/data/last_name", json!("Brightwaterson"));
    app.deliver_json("treez", &kept).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    TestApp::builder().rebuild(&dir).await;
    let app = TestApp::builder().spawn_in(&dir).await;
    app.deliver_json("treez", &with(jules("9", T2), "/data/phone", json!(NEW_PHONE)))
        .await;
    assert_eq!(erase(&app, "treez:shop:9").await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/customers/treez:shop:9/events").await.0,
        StatusCode::NOT_FOUND
    );

    assert_erased_from_the_store(&app.dir, "running").await;
    app.stop().await;
    assert_erased_from_the_store(&dir, "stopped").await;
    drop(temp);
}

/// A rebuild cannot replay the events of a source no longer configured:
/// their customers stay as they were, served and erasable (with their raw
/// events), instead of leaving the directory with their bodies kept.
#[tokio::test]
async fn the_customers_of_a_source_a_rebuild_cannot_replay_stay_erasable() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("11", T1)).await;
    app.deliver_json("treez", &with(jules("11", T2), "/data/phone", json!(NEW_PHONE)))
        .await;
    let kept = with(treez("shop", "12", T1), "/data/last_name", json!("Brightwaterson"));
    app.deliver_json("treez", &kept).await;
    let vagaro = util::vagaro("evt-rebuild-1", "V1", T1);
    app.deliver_json("vagaro", &vagaro).await;
    let record = app.customer("treez:shop:11").await;
    let history = app.history("treez:shop:11").await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // The treez source renamed: its events are no one's to replay.
    let renamed = TestApp::builder().source_setting("treez", "name", "dispensary");
    let rebuilt = renamed.rebuild(&dir).await;
    assert_eq!((rebuilt.replayed, rebuilt.skipped), (1, 3));

    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.customer("treez:shop:11").await, record);
    assert_eq!(app.history("treez:shop:11").await, history);
    assert_eq!(app.customer_ids(&[("phone", NEW_PHONE)]).await, ["treez:shop:11"]);
    assert_eq!(erase(&app, "treez:shop:11").await, StatusCode::NO_CONTENT);
    let redacted = app
        .events(None)
        .await
        .into_iter()
        .filter(|e| e["redacted"] == json!(true))
        .count();
    assert_eq!(redacted, 2, "both of the erased customer's events are redacted");

    assert_erased_from_the_store(&app.dir, "running").await;
    app.stop().await;
    assert_erased_from_the_store(&dir, "stopped").await;
    drop(temp);
}

/// Jules's body with no usable time for ordering: quarantined, though it
/// names the customer.
fn jules_untimed(id: &str) -> Value {
    with(jules(id, "not a time"), "/data/signup_date", json!("nor this"))
}

#[tokio::test]
async fn a_delivery_for_an_erased_customer_is_suppressed_even_when_it_cannot_be_mapped() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("13", T1)).await;
    assert_eq!(erase(&app, "treez:shop:13").await, StatusCode::NO_CONTENT);
    let (status, answer) = app.deliver_json("treez", &jules_untimed("13")).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (StatusCode::OK, json!("suppressed"))
    );
    assert_eq!(
        app.events(None).await.len(),
        1,
        "only the erased customer's redacted event"
    );
}

#[tokio::test]
async fn an_erasure_redacts_the_quarantined_bodies_that_named_the_customer() {
    let app = TestApp::spawn().await;
    let (status, quarantined) = app.deliver_json("treez", &jules_untimed("14")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{quarantined}");
    app.deliver_json("treez", &jules("14", T1)).await;
    let kept = with(treez("shop", "15", T1), "/data/last_name", json!("Brightwaterson"));
    app.deliver_json("treez", &kept).await;
    assert_eq!(erase(&app, "treez:shop:14").await, StatusCode::NO_CONTENT);
    let event = app.event(quarantined["eventId"].as_str().unwrap()).await;
    assert_eq!(event["redacted"], json!(true), "{event}");
    assert_erased_from_the_store(&app.dir, "running").await;
    app.stop().await;
}

/// An id the directory never held, whose bodies were all quarantined, is
/// still someone's personal data to erase.
#[tokio::test]
async fn a_customer_known_only_from_quarantined_bodies_can_be_erased() {
    let app = TestApp::spawn().await;
    let (_, quarantined) = app.deliver_json("treez", &jules_untimed("16")).await;
    assert_eq!(erase(&app, "treez:shop:16").await, StatusCode::NO_CONTENT);
    let event = app.event(quarantined["eventId"].as_str().unwrap()).await;
    assert_eq!(event["redacted"], json!(true), "{event}");
    assert_eq!(
        erase(&app, "treez:shop:16").await,
        StatusCode::NO_CONTENT,
        "already erased"
    );
    let (_, answer) = app.deliver_json("treez", &jules("16", T1)).await;
    assert_eq!(answer["status"], "suppressed");
    assert_eq!(erase(&app, "treez:shop:17").await, StatusCode::NOT_FOUND);
}

/// A body quarantined before its customer could be named (no account),
/// kept after the customer's erasure, reprocessed once the source names
/// one: suppressed, and redacted as a delivery for it would not be kept.
#[tokio::test]
async fn reprocessing_a_body_into_an_erased_customer_redacts_it() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("18", T1)).await;
    assert_eq!(erase(&app, "treez:shop:18").await, StatusCode::NO_CONTENT);
    // After the erasure: no customer id can be read from it, so it is kept.
    let anonymous = util::without(jules("18", T1), "/dispensary_short_name");
    let (status, quarantined) = app.deliver_json("treez", &anonymous).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{quarantined}");
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let app = TestApp::builder()
        .source_setting("treez", "account", "shop")
        .spawn_in(&dir)
        .await;
    let event_id = quarantined["eventId"].as_str().unwrap();
    let (status, answer) = app.post_admin(&format!("/api/v1/events/{event_id}/reprocess")).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (StatusCode::OK, json!("suppressed")),
        "{answer}"
    );
    assert_eq!(app.event(event_id).await["redacted"], json!(true));
    app.stop().await;
    drop(temp);
}

/// A Treez ticket, an event type the directory ignores, whose `customer`
/// says `customer`.
fn ticket(number: &str, customer: Value) -> Value {
    json!({
        "event_type": "TICKET",
        "dispensary_short_name": "shop",
        "data": {"ticket_id": number, "customer": customer, "items": [{"name": "Pre-roll", "quantity": 1}]},
    })
}

/// Delivers `body`, expecting it kept with `status`; returns its event id.
async fn kept(app: &TestApp, source: &str, body: &Value, status: &str) -> String {
    let (_, answer) = app.deliver_json(source, body).await;
    assert_eq!(answer["status"], status, "{answer}");
    answer["eventId"].as_str().expect("an event id").to_owned()
}

async fn assert_redacted(app: &TestApp, event_ids: &[String], redacted: bool) {
    for event_id in event_ids {
        let event = app.event(event_id).await;
        assert_eq!(event["redacted"], json!(redacted), "{event}");
        assert_eq!(event["body"].is_null(), redacted, "{event}");
    }
}

/// Bodies the directory does not apply are not in the customer's history:
/// an erasure finds the ones naming its platform id, email or phone.
#[tokio::test]
async fn an_erasure_redacts_the_ignored_events_that_name_the_customer() {
    let app = TestApp::spawn().await;
    app.deliver_json("treez", &jules("30", T1)).await;
    let naming = [
        ticket("T1", json!({"customer_id": "30", "first_name": "Jeroboam"})),
        ticket(
            "T2",
            json!({"email": "Jeroboam.Quillfeather@example.com", "name": "Jeroboam Quillfeather"}),
        ),
        ticket(
            "T3",
            json!({"phone": "(914) 555-0199", "address": "77 ZANZIBAR TERRACE"}),
        ),
    ];
    let mut named = Vec::new();
    for body in &naming {
        named.push(kept(&app, "treez", body, "ignored").await);
    }
    let other = ticket("T4", json!({"customer_id": "31", "last_name": "Brightwaterson"}));
    let other = vec![kept(&app, "treez", &other, "ignored").await];

    assert_eq!(erase(&app, "treez:shop:30").await, StatusCode::NO_CONTENT);
    assert_redacted(&app, &named, true).await;
    assert_redacted(&app, &other, false).await;
    assert_erased_from_the_store(&app.dir, "running").await;
    app.stop().await;
}

/// A Vagaro appointment names its customer by id; a Treez body without
/// its dispensary yields no customer id but names it all the same.
#[tokio::test]
async fn an_erasure_redacts_appointments_and_quarantined_bodies_without_an_id_that_name_the_customer() {
    let app = TestApp::spawn().await;
    let customer = util::vagaro("v-32", "V32", T1);
    let customer = with(customer, "/payload/customerFirstName", json!("Jeroboam"));
    let customer = with(customer, "/payload/email", json!("jeroboam.quillfeather@example.com"));
    let customer = with(customer, "/payload/mobilePhone", json!("9145550199"));
    app.deliver_json("vagaro", &customer).await;
    let appointment = json!({
        "id": "appt-32",
        "createdDate": T1,
        "type": "appointment",
        "action": "created",
        "payload": {"appointmentId": "A32", "customerId": "V32", "serviceTitle": "Cut", "notes": "Jeroboam, 77 ZANZIBAR TERRACE"},
    });
    let mut named = vec![kept(&app, "vagaro", &appointment, "ignored").await];
    app.deliver_json("treez", &jules("33", T1)).await;
    let anonymous = util::without(jules("33", T1), "/dispensary_short_name");
    named.push(kept(&app, "treez", &anonymous, "quarantined").await);
    let other = with(treez("shop", "34", T1), "/data/last_name", json!("Brightwaterson"));
    app.deliver_json("treez", &other).await;

    assert_eq!(erase(&app, "vagaro:V32").await, StatusCode::NO_CONTENT);
    assert_redacted(&app, &named[..1], true).await;
    assert_redacted(&app, &named[1..], false).await;
    assert_eq!(erase(&app, "treez:shop:33").await, StatusCode::NO_CONTENT);
    assert_redacted(&app, &named, true).await;
    assert_erased_from_the_store(&app.dir, "running").await;
    app.stop().await;
}

/// What no erasure reaches (a body naming no one the directory holds)
/// the operator deletes by its id.
#[tokio::test]
async fn an_operator_can_delete_a_kept_event_by_id() {
    let app = TestApp::spawn().await;
    let stray = ticket("T40", json!({"name": "Marmaduke Fitzwilliam"}));
    let stray = kept(&app, "treez", &stray, "ignored").await;
    let accepted = kept(&app, "treez", &jules("41", T1), "accepted").await;
    let path = format!("/api/v1/events/{stray}");

    for _ in 0..2 {
        let (status, answer) = app.delete(&path).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    }
    assert_redacted(&app, std::slice::from_ref(&stray), true).await;
    let listed = app.events(Some("ignored")).await;
    assert_eq!(listed[0]["redacted"], json!(true), "still listed, as redacted");
    let (status, answer) = app.post_admin(&format!("{path}/reprocess")).await;
    assert_eq!(
        (status, util::error_code(&answer)),
        (StatusCode::CONFLICT, "cannot_reprocess".into())
    );
    let (status, answer) = app.delete("/api/v1/events/evt_nothing").await;
    assert_eq!(
        (status, util::error_code(&answer)),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // An applied event's data is its customer's: erasing the customer removes it.
    let (status, answer) = app.delete(&format!("/api/v1/events/{accepted}")).await;
    assert_eq!(
        (status, util::error_code(&answer)),
        (StatusCode::CONFLICT, "cannot_delete".into())
    );
    assert_redacted(&app, &[accepted], false).await;

    let everything = util::stored_bytes(&app.dir).await;
    assert!(
        !everything.windows(10).any(|w| w == b"Marmaduke "),
        "the deleted body is gone from the store"
    );
    app.stop().await;
}

/// Erases customer `id` while its `created` message is being sent to a
/// subscriber that answers it as `behaviour` says (slowly); returns the
/// app, the subscription, and what the subscriber received once the
/// `deleted` message came too, which must be after the `created` one.
async fn erase_while_sending(id: &str, behaviour: Behaviour) -> (TestApp, String, Vec<util::Received>) {
    let app = TestApp::builder()
        .delivery_schedule(&["1h"])
        .delivery_timeout("10s")
        .spawn()
        .await;
    let slow = TestReceiver::start(behaviour).await;
    let (subscription, _) = app.subscribe_url(&slow.url()).await;
    app.deliver_json("treez", &jules(id, T1)).await;
    // The `created` message has arrived; its answer takes a while.
    slow.wait_for(1).await;
    assert_eq!(erase(&app, &format!("treez:shop:{id}")).await, StatusCode::NO_CONTENT);
    let received = slow.wait_for(2).await;
    let actions: Vec<&str> = received.iter().map(|r| r.action()).collect();
    assert_eq!(actions, ["created", "deleted"]);
    (app, subscription, received)
}

/// An erasure while a message of the customer is being sent: that attempt
/// is under way, so the `deleted` message waits for it rather than
/// overtaking it (version order per subscriber, SPEC §6).
#[tokio::test]
async fn the_deleted_message_waits_for_a_message_being_sent() {
    const DELAY: std::time::Duration = std::time::Duration::from_secs(2);
    let (app, subscription, received) =
        erase_while_sending("20", Behaviour::SlowFirst { times: 1, delay: DELAY }).await;
    assert!(
        received[1].at.duration_since(received[0].at) >= DELAY,
        "`deleted` was sent before the `created` being sent was answered"
    );
    app.wait_all(&subscription, 2, "delivered").await;
}

/// The same, when that attempt fails: the message the erasure withdrew is
/// not sent again, and the `deleted` message goes out after it.
#[tokio::test]
async fn a_message_withdrawn_while_it_was_being_sent_is_not_retried() {
    let failing = Behaviour::SlowFailFirst {
        delay: std::time::Duration::from_secs(1),
        status: 503,
    };
    let (app, subscription, _) = erase_while_sending("21", failing).await;
    let messages = app
        .wait_for_messages(&subscription, "created cancelled, deleted delivered", |m| {
            m.len() == 2 && m[0]["status"] == "cancelled" && m[1]["status"] == "delivered"
        })
        .await;
    assert_eq!(
        messages[0]["attempts"].as_array().map(Vec::len),
        Some(1),
        "{messages:?}"
    );
}

/// Retried by hand while it was being sent, then withdrawn by an erasure:
/// its failed attempt cancels it whatever the retry asked, so it is not
/// sent again after the erasure.
#[tokio::test]
async fn a_withdrawn_message_retried_during_its_send_is_not_sent_again() {
    let app = TestApp::builder()
        .delivery_schedule(&["1h"])
        .delivery_timeout("10s")
        .spawn()
        .await;
    let slow = TestReceiver::start(Behaviour::SlowFailFirst {
        delay: std::time::Duration::from_secs(2),
        status: 503,
    })
    .await;
    let (subscription, _) = app.subscribe_url(&slow.url()).await;
    app.deliver_json("treez", &jules("22", T1)).await;
    slow.wait_for(1).await;
    let created = app.messages(&subscription, None).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = app.post_admin(&format!("/api/v1/messages/{created}/retry")).await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(erase(&app, "treez:shop:22").await, StatusCode::NO_CONTENT);

    app.wait_for_messages(&subscription, "created cancelled, deleted delivered", |m| {
        m.len() == 2 && m[0]["status"] == "cancelled" && m[1]["status"] == "delivered"
    })
    .await;
    let actions: Vec<String> = slow.received().iter().map(|r| r.action().to_owned()).collect();
    assert_eq!(actions, ["created", "deleted"]);
}

/// A rebuild that can no longer map a customer's events (its source lost
/// the account they relied on) drops the record but keeps its envelopes:
/// an erasure still finds them, redacts them and cancels their messages.
#[tokio::test]
async fn an_id_whose_record_a_rebuild_dropped_is_still_erasable() {
    let delivery = TestApp::builder().delivery_schedule(&["1h"]);
    let app = delivery
        .clone()
        .source_setting("treez", "account", "shop")
        .spawn()
        .await;
    let failing = TestReceiver::start(Behaviour::always(500)).await;
    let (subscription, _) = app.subscribe_url(&failing.url()).await;
    let anonymous = util::without(jules("23", T1), "/dispensary_short_name");
    let (_, answer) = app.deliver_json("treez", &anonymous).await;
    assert_eq!(answer["customerId"], "treez:shop:23", "{answer}");
    app.wait_for_messages(&subscription, "a failed attempt", |m| {
        m.len() == 1 && m[0]["attempts"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    delivery.rebuild(&dir).await;
    let app = delivery.spawn_in(&dir).await;
    assert_eq!(
        app.get("/api/v1/customers/treez:shop:23").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(erase(&app, "treez:shop:23").await, StatusCode::NO_CONTENT);
    let messages = app.messages(&subscription, None).await;
    assert_eq!(messages[0]["status"], "cancelled", "{messages:?}");
    let (_, answer) = app.deliver_json("treez", &jules("23", T2)).await;
    assert_eq!(answer["status"], "suppressed");
    app.stop().await;
    drop(temp);
}

/// The versions of `id` in the messages queued for `subscription`, in the
/// order they were queued, once the last of them is `last`.
async fn sent_versions(app: &TestApp, subscription: &str, id: &str, last: i64) -> Vec<i64> {
    let versions = |messages: &[Value]| -> Vec<i64> {
        messages
            .iter()
            .filter(|m| m["customerId"] == id)
            .map(|m| m["version"].as_i64().expect("a version"))
            .collect()
    };
    let what = format!("{id}'s version {last} queued");
    let messages = app
        .wait_for_messages(subscription, &what, |messages| versions(messages).last() == Some(&last))
        .await;
    versions(&messages)
}

/// S absorbed L, then L was erased: the erasure's unlink gave S a version
/// no event of S accounts for. Returns the app, the subscription, and S's
/// version.
async fn survivor_unlinked_by_an_erasure() -> (TestApp, String, i64) {
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url("http://127.0.0.1:9/hook").await;
    let survivor = with(treez("shop", "S", T2), "/data/merged_customer_ids", json!(["L"]));
    app.deliver_json("treez", &with(survivor, "/data/status", json!("MERGED")))
        .await;
    app.deliver_json("treez", &jules("L", T1)).await;
    assert_eq!(erase(&app, "treez:shop:L").await, StatusCode::NO_CONTENT);
    let version = app.customer("treez:shop:S").await["version"].as_i64().unwrap();
    sent_versions(&app, &subscription, "treez:shop:S", version).await;
    (app, subscription, version)
}

/// Asserts that S's next change comes after every version sent before.
async fn assert_the_next_change_comes_after(app: &TestApp, subscription: &str, before: i64) {
    let later = with(
        treez("shop", "S", "2026-06-01T00:00:00Z"),
        "/data/status",
        json!("MERGED"),
    );
    let (status, answer) = app.deliver_json("treez", &later).await;
    assert_eq!(answer["outcome"], "applied", "{status} {answer}");
    let versions = sent_versions(app, subscription, "treez:shop:S", before + 1).await;
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[tokio::test]
async fn a_rebuild_never_lowers_a_version_an_erasure_raised() {
    let (app, subscription, version) = survivor_unlinked_by_an_erasure().await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    TestApp::builder().rebuild(&dir).await;
    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.customer("treez:shop:S").await["version"], version);
    assert_the_next_change_comes_after(&app, &subscription, version).await;
    app.stop().await;
    drop(temp);
}

/// A rebuild that stopped midway (after replaying the events that made
/// the survivor again, before the swap): changes made before it is run
/// again still come after every version sent, as nothing of it stayed.
#[tokio::test]
async fn a_change_after_an_unfinished_rebuild_comes_after_every_version_sent() {
    let (app, subscription, version) = survivor_unlinked_by_an_erasure().await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let (store, names, remap) = util::store_to_rebuild(&dir).await;
    let mut rebuild = store.begin_rebuild(names, remap).await.expect("a rebuild");
    rebuild.replay(1000).await.expect("every event replayed");
    drop(rebuild);
    store.close().await;
    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.customer("treez:shop:S").await["version"], version);
    assert_the_next_change_comes_after(&app, &subscription, version).await;
    app.stop().await;
    drop(temp);
}

/// A claim of every due message, leased for `lease`.
fn claim(lease: Duration) -> Claim {
    let now = UtcMillis::now();
    Claim {
        now,
        lease_until: UtcMillis::from_timestamp(now.as_timestamp() + lease),
        limit: 64,
        shares: Default::default(),
        per_subscription: 8,
        busy: Default::default(),
        sending: Default::default(),
    }
}

/// An erasure while a message is being sent redacts its envelope; if the
/// process then crashes, that envelope is sent again when the lease ends.
/// It once lost `createdDate`, `version` and `changes`: it keeps every
/// envelope's shape, with the personal data removed.
#[tokio::test]
async fn an_envelope_redacted_while_being_sent_keeps_the_envelope_shape() {
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(util::Down::new().url()).await;
    app.set_enabled(&subscription, false).await;
    app.deliver_json("treez", &jules("24", T1)).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    // An instance claims the `created` message, the customer is erased
    // while it is being sent, and the instance crashes.
    let config = TestApp::builder().config(&dir);
    let store = app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    store
        .set_subscription_enabled(subscription.clone(), true)
        .await
        .expect("the subscription is enabled");
    while store.fan_out().await.expect("a fan-out") {}
    const LEASE: Duration = Duration::from_secs(3);
    let sent = store.claim_due(claim(LEASE)).await.expect("a claim").remove(0);
    store.erase("treez:shop:24".to_owned()).await.expect("an erasure");

    let deadline = Instant::now() + util::SAFETY;
    let again = loop {
        let due = store.claim_due(claim(LEASE)).await.expect("a claim");
        if let Some(again) = due.into_iter().find(|d| d.seq == sent.seq) {
            break again;
        }
        assert!(
            Instant::now() < deadline,
            "the message is claimed again after its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    store.close().await;
    drop(temp);

    let before: Value = serde_json::from_str(&sent.body).expect("an envelope");
    let after: Value = serde_json::from_str(&again.body).expect("an envelope");
    assert_eq!(
        after,
        json!({
            "id": before["id"],
            "createdDate": before["createdDate"],
            "type": "customer",
            "action": "created",
            "payload": {"id": "treez:shop:24", "version": before["payload"]["version"]},
            "changes": {},
            "redacted": true,
        })
    );
    for pii in JULES_PII {
        assert!(!again.body.contains(pii), "{pii} was sent again: {}", again.body);
    }
}
