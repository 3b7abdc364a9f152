//! The customer directory over HTTP (SPEC §4, §5): ordering of snapshots,
//! business associations, Treez merges and their resolution, the list
//! filters and paging, and convergence whatever the arrival order.

use crate::util;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TestApp, error_code, ids, treez, vagaro, with, without_bookkeeping};

const T1: &str = "2026-04-01T00:00:00Z";
const T2: &str = "2026-05-01T00:00:00Z";
const T3: &str = "2026-06-01T00:00:00Z";

/// A Treez snapshot of `id` in dispensary `account` named `first`.
fn person(account: &str, id: &str, first: &str, last_update: &str) -> Value {
    with(treez(account, id, last_update), "/data/first_name", json!(first))
}

/// Treez's survivor side of a merge: `id` absorbed `absorbed`.
fn survivor(account: &str, id: &str, absorbed: &[&str], last_update: &str) -> Value {
    let body = with(person(account, id, "Sam", last_update), "/data/status", json!("MERGED"));
    with(body, "/data/merged_customer_ids", json!(absorbed))
}

/// Treez's absorbed side of a merge: `id` went into `into`.
fn absorbed(account: &str, id: &str, into: &str, last_update: &str) -> Value {
    let body = with(
        person(account, id, "Lee", last_update),
        "/data/status",
        json!("DEACTIVATED"),
    );
    with(body, "/data/merged_into_customer_id", json!(into))
}

/// Delivers and expects `200 accepted`; returns the answer.
async fn accept(app: &TestApp, source: &str, body: &Value) -> Value {
    let (status, answer) = app.deliver_json(source, body).await;
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer
}

/// `GET /api/v1/customers/{id}?resolve=true`, which must not hang.
async fn resolve(app: &TestApp, id: &str) -> Value {
    let path = format!("/api/v1/customers/{id}");
    let request = app.get_query(&path, &[("resolve", "true")]);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("resolve answers within 10 s");
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The whole directory without bookkeeping, by id.
async fn converged_view(app: &TestApp) -> Vec<Value> {
    let mut records: Vec<Value> = app.directory().await.iter().map(without_bookkeeping).collect();
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    records
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

// Order.

#[tokio::test]
async fn an_older_snapshot_after_a_newer_one_is_stale_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let newer = with(person("ooo", "1", "Jules", T2), "/data/last_name", json!("Newer"));
    let older = with(person("ooo", "1", "Julius", T1), "/data/last_name", json!("Older"));
    let older = with(older, "/data/email", json!("old@example.com"));
    let first = accept(&app, "treez", &newer).await;
    assert_eq!(first["outcome"], "applied");
    let second = accept(&app, "treez", &older).await;
    assert_eq!(second["outcome"], "stale", "{second}");
    assert_ne!(second["eventId"], first["eventId"]);

    let record = app.customer("treez:ooo:1").await;
    assert_eq!(record["firstName"], "Jules");
    assert_eq!(record["lastName"], "Newer");
    assert_eq!(record["email"], Value::Null);
    assert_eq!(record["updatedAt"], "2026-05-01T00:00:00.000Z");
    assert_eq!(record["version"], 1);

    let history = app.history("treez:ooo:1").await;
    let seen: Vec<_> = history
        .iter()
        .map(|h| (h["eventId"].clone(), h["outcome"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (first["eventId"].clone(), json!("applied")),
            (second["eventId"].clone(), json!("stale"))
        ]
    );
    assert_eq!(history[1]["changes"], json!({}), "a stale event changes nothing");

    // The other order ends in the same record.
    let other = TestApp::spawn().await;
    assert_eq!(accept(&other, "treez", &older).await["outcome"], "applied");
    assert_eq!(accept(&other, "treez", &newer).await["outcome"], "applied");
    let again = other.customer("treez:ooo:1").await;
    assert_eq!(without_bookkeeping(&again), without_bookkeeping(&record));
    assert_eq!(again["version"], 2);
}

#[tokio::test]
async fn an_identical_newer_snapshot_is_unchanged_and_still_moves_the_order_forward() {
    let app = TestApp::spawn().await;
    let id = "vagaro:U1";
    let base = vagaro("u-1", "U1", "2023-08-10T08:50:00Z");
    let first = accept(
        &app,
        "vagaro",
        &with(base.clone(), "/createdDate", json!("2024-03-15T00:00:00Z")),
    )
    .await;
    assert_eq!(first["outcome"], "applied");
    // The same snapshot in a later envelope: newer, but says nothing new.
    let same = with(
        with(base.clone(), "/id", json!("u-2")),
        "/createdDate",
        json!("2024-03-17T00:00:00Z"),
    );
    let second = accept(&app, "vagaro", &same).await;
    assert_eq!(second["outcome"], "unchanged", "{second}");
    let record = app.customer(id).await;
    assert_eq!(record["version"], 1);
    // An envelope between the two, with other fields, is now older.
    let between = with(
        with(base, "/id", json!("u-3")),
        "/createdDate",
        json!("2024-03-16T00:00:00Z"),
    );
    let between = with(between, "/payload/customerFirstName", json!("Jane"));
    let third = accept(&app, "vagaro", &between).await;
    assert_eq!(third["outcome"], "stale", "{third}");
    assert_eq!(app.customer(id).await, record);

    let outcomes: Vec<_> = app.history(id).await.iter().map(|h| h["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("applied"), json!("unchanged"), json!("stale")]);
}

#[tokio::test]
async fn offsetless_treez_times_are_ordered_in_the_source_timezone() {
    // 11:00 in Los Angeles is 18:00Z: later than 17:30Z, though it reads
    // earlier.
    let app = TestApp::spawn().await;
    let local = person("tzo", "1", "Local", "2026-04-24 11:00:00.000");
    let utc = person("tzo", "1", "Utc", "2026-04-24T17:30:00Z");
    accept(&app, "treez", &local).await;
    assert_eq!(accept(&app, "treez", &utc).await["outcome"], "stale");
    let record = app.customer("treez:tzo:1").await;
    assert_eq!(record["firstName"], "Local");
    assert_eq!(record["updatedAt"], "2026-04-24T18:00:00.000Z");
}

#[tokio::test]
async fn a_snapshot_that_only_changes_updated_at_is_applied() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &person("upd", "1", "Jules", T1)).await;
    let answer = accept(&app, "treez", &person("upd", "1", "Jules", T2)).await;
    assert_eq!(answer["outcome"], "applied");
    let record = app.customer("treez:upd:1").await;
    assert_eq!(record["version"], 2);
    assert_eq!(record["updatedAt"], "2026-05-01T00:00:00.000Z");
    let history = app.history("treez:upd:1").await;
    assert_eq!(
        history[1]["changes"],
        json!({"updatedAt": {"from": "2026-04-01T00:00:00.000Z", "to": "2026-05-01T00:00:00.000Z"}})
    );
}

#[tokio::test]
async fn a_retried_stale_event_is_a_duplicate_not_another_entry() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &person("rs", "1", "New", T2)).await;
    let old = person("rs", "1", "Old", T1);
    let stale = accept(&app, "treez", &old).await;
    let (_, again) = app.deliver_json("treez", &old).await;
    assert_eq!(again, json!({"status": "duplicate", "eventId": stale["eventId"]}));
    assert_eq!(app.history("treez:rs:1").await.len(), 2);
}

// Names.

/// Vagaro's customer `id` named `first last` at its `n`th change.
fn named(n: u32, id: &str, first: &str, last: &str) -> Value {
    let body = vagaro(&format!("n-{id}-{n}"), id, &format!("2023-08-1{n}T08:50:00Z"));
    let body = with(body, "/payload/customerFirstName", json!(first));
    with(body, "/payload/customerLastName", json!(last))
}

/// The customers whose names hold every word of `name`, by id.
async fn by_name(app: &TestApp, name: &str) -> Vec<String> {
    let mut found = app.customer_ids(&[("name", name)]).await;
    found.sort();
    found
}

#[tokio::test]
async fn customers_are_found_by_every_word_of_their_current_names() {
    let app = TestApp::spawn().await;
    accept(&app, "vagaro", &named(1, "N1", "Ada", "Lovelace")).await;
    accept(&app, "vagaro", &named(1, "N2", "Élodie", "Lovelace-Byron")).await;
    accept(&app, "vagaro", &named(1, "N3", "ada", "King")).await;
    assert_eq!(by_name(&app, "lovelace").await, ["vagaro:N1", "vagaro:N2"]);
    assert_eq!(by_name(&app, "ADA  Lovelace").await, ["vagaro:N1"]);
    assert_eq!(by_name(&app, "Lovelace, Ada").await, ["vagaro:N1"]);
    assert_eq!(by_name(&app, "elodie byron").await, ["vagaro:N2"]);
    assert_eq!(by_name(&app, "Ada").await, ["vagaro:N1", "vagaro:N3"]);
    assert_eq!(by_name(&app, "ada lovelace king").await, Vec::<String>::new());
    assert_eq!(by_name(&app, "love").await, Vec::<String>::new(), "words, not prefixes");
    assert_eq!(
        by_name(&app, "--").await,
        Vec::<String>::new(),
        "no word matches no one"
    );

    accept(&app, "vagaro", &named(2, "N1", "Ada", "King")).await;
    assert_eq!(by_name(&app, "lovelace").await, ["vagaro:N2"]);
    assert_eq!(by_name(&app, "king ada").await, ["vagaro:N1", "vagaro:N3"]);
}

/// A store kept before names were looked up (no `customer_names` rows,
/// the backfill's position at its start) finds them at its next start.
#[tokio::test]
async fn the_names_of_customers_kept_before_are_found_after_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let app = TestApp::builder().spawn_in(dir.path()).await;
    for n in 0..3 {
        accept(
            &app,
            "vagaro",
            &named(1, &format!("B{n}"), "Grace", &format!("Hopper{n}")),
        )
        .await;
    }
    app.stop().await;
    // Postgres keeps a customer's keys in one row, names' after `n:`.
    let (forget_names, forget_b2) = match util::TestStore::chosen() {
        util::TestStore::Sqlite => (
            "DELETE FROM customer_names",
            "DELETE FROM customer_names WHERE customer_id = 'vagaro:B2'",
        ),
        util::TestStore::Postgres => (
            "UPDATE customer_keys SET keys = ARRAY(SELECT k FROM unnest(keys) k WHERE k NOT LIKE 'n:%')",
            "DELETE FROM customer_keys WHERE customer_id = 'vagaro:B2'",
        ),
    };
    util::execute(
        dir.path(),
        &[
            forget_names,
            "INSERT INTO backfills (name, after) VALUES ('customer_names', 'vagaro:B0')",
        ],
    )
    .await;
    let app = TestApp::builder().spawn_in(dir.path()).await;
    assert_eq!(
        by_name(&app, "grace").await,
        ["vagaro:B1", "vagaro:B2"],
        "from the position kept"
    );
    assert_eq!(by_name(&app, "hopper2").await, ["vagaro:B2"]);
    app.stop().await;
    util::execute(dir.path(), &[forget_b2]).await;
    let app = TestApp::builder().spawn_in(dir.path()).await;
    assert_eq!(
        by_name(&app, "grace").await,
        ["vagaro:B1"],
        "done once: the position is gone"
    );
    app.stop().await;
}

/// A Postgres store of version 22 kept its lookups a row a key, in three
/// tables; version 23 moves them into one row of keys a customer. Here a
/// store's keys are put back as version 22 kept them, and the next start
/// migrates them: every customer is found as before.
#[tokio::test]
async fn postgres_lookups_kept_a_row_a_key_are_found_after_the_migration() {
    if util::TestStore::chosen() != util::TestStore::Postgres {
        println!("skipped: a Postgres store's migration");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let app = TestApp::builder().spawn_in(dir.path()).await;
    let customer = |id: &str, business: &str, phone: &str| {
        let body = named(1, id, "Ada", &format!("Lovelace{id}"));
        let body = with(body, "/payload/businessIds", json!([business, "shared"]));
        with(body, "/payload/mobilePhone", json!(phone))
    };
    accept(&app, "vagaro", &customer("K1", "b1", "9145551212")).await;
    accept(&app, "vagaro", &customer("K2", "b2", "9145551313")).await;
    app.stop().await;
    util::execute(
        dir.path(),
        &[
            "CREATE TABLE customer_phones (e164 TEXT NOT NULL, customer_id TEXT NOT NULL, PRIMARY KEY (e164, customer_id))",
            "CREATE TABLE customer_businesses (business_id TEXT NOT NULL, customer_id TEXT NOT NULL,
                                               PRIMARY KEY (business_id, customer_id))",
            "CREATE TABLE customer_names (word TEXT NOT NULL, customer_id TEXT NOT NULL, PRIMARY KEY (word, customer_id))",
            "INSERT INTO customer_phones SELECT substr(k, 3), customer_id FROM customer_keys, unnest(keys) k WHERE k LIKE 'p:%'",
            "INSERT INTO customer_businesses
             SELECT substr(k, 3), customer_id FROM customer_keys, unnest(keys) k WHERE k LIKE 'b:%'",
            "INSERT INTO customer_names SELECT substr(k, 3), customer_id FROM customer_keys, unnest(keys) k WHERE k LIKE 'n:%'",
            "DROP TABLE customer_keys",
            "DELETE FROM clientele_schema WHERE version = 23",
        ],
    )
    .await;
    let app = TestApp::builder().spawn_in(dir.path()).await;
    assert_eq!(app.customer_ids(&[("phone", "+1 914 555 1313")]).await, ["vagaro:K2"]);
    assert_eq!(app.customer_ids(&[("businessId", "b1")]).await, ["vagaro:K1"]);
    assert_eq!(
        app.customer_ids(&[("businessId", "shared")]).await,
        ["vagaro:K1", "vagaro:K2"]
    );
    assert_eq!(by_name(&app, "ada lovelacek1").await, ["vagaro:K1"]);
    assert_eq!(by_name(&app, "ada").await, ["vagaro:K1", "vagaro:K2"]);
    // And written as version 23 keeps them from then on.
    accept(&app, "vagaro", &customer("K3", "b3", "9145551414")).await;
    assert_eq!(app.customer_ids(&[("businessId", "shared")]).await.len(), 3);
    app.stop().await;
}

// Business associations.

#[tokio::test]
async fn vagaro_business_ids_are_the_whole_current_set() {
    let app = TestApp::spawn().await;
    let id = "vagaro:B1";
    let step = |n: u32, ids: Value| {
        let body = vagaro(&format!("b-{n}"), "B1", &format!("2023-08-1{n}T08:50:00Z"));
        with(body, "/payload/businessIds", ids)
    };
    let with_456 = [("businessId", "456")];

    accept(&app, "vagaro", &step(1, json!(["123"]))).await;
    assert_eq!(app.customer_ids(&with_456).await, Vec::<String>::new());
    accept(&app, "vagaro", &step(2, json!(["123", "456", "789"]))).await;
    assert_eq!(app.customer_ids(&with_456).await, [id]);
    assert_eq!(app.customer(id).await["businessIds"], json!(["123", "456", "789"]));
    accept(&app, "vagaro", &step(3, json!(["123", "789"]))).await;
    assert_eq!(app.customer_ids(&with_456).await, Vec::<String>::new());
    assert_eq!(app.customer_ids(&[("businessId", "789")]).await, [id]);
    assert_eq!(app.customer_ids(&[("businessId", "123")]).await, [id]);
    assert_eq!(app.customer(id).await["businessIds"], json!(["123", "789"]));

    let changes: Vec<_> = app
        .history(id)
        .await
        .iter()
        .map(|h| h["changes"]["businessIds"].clone())
        .collect();
    assert_eq!(
        changes,
        [
            json!({"added": ["123"], "removed": []}),
            json!({"added": ["456", "789"], "removed": []}),
            json!({"added": [], "removed": ["456"]}),
        ]
    );
}

#[tokio::test]
async fn the_same_business_ids_in_another_order_are_no_change() {
    let app = TestApp::spawn().await;
    let first = with(
        vagaro("bo-1", "B2", "2023-08-10T08:50:00Z"),
        "/payload/businessIds",
        json!(["9", "1"]),
    );
    accept(&app, "vagaro", &first).await;
    // Same snapshot time, later envelope, the set reordered.
    let second = with(
        with(first, "/id", json!("bo-2")),
        "/createdDate",
        json!("2024-04-01T00:00:00Z"),
    );
    let second = with(second, "/payload/businessIds", json!(["1", "9", "1"]));
    assert_eq!(accept(&app, "vagaro", &second).await["outcome"], "unchanged");
}

// Merges.

#[tokio::test]
async fn a_merge_gives_the_same_records_in_either_order() {
    let (s, l) = ("treez:m:100", "treez:m:200");
    let s_body = survivor("m", "100", &["200"], T2);
    let l_body = absorbed("m", "200", "100", T2);

    let forward = TestApp::spawn().await;
    accept(&forward, "treez", &s_body).await;
    accept(&forward, "treez", &l_body).await;
    let backward = TestApp::spawn().await;
    accept(&backward, "treez", &l_body).await;
    accept(&backward, "treez", &s_body).await;

    for id in [s, l] {
        assert_eq!(
            without_bookkeeping(&forward.customer(id).await),
            without_bookkeeping(&backward.customer(id).await),
            "{id}"
        );
    }
    assert_eq!(converged_view(&forward).await, converged_view(&backward).await);

    let absorbed = forward.customer(l).await;
    assert_eq!(absorbed["status"], "merged");
    assert_eq!(absorbed["platformStatus"], "DEACTIVATED");
    assert_eq!(absorbed["mergedInto"], s);
    assert_eq!(absorbed["mergedFrom"], json!([]));
    assert_eq!(absorbed["firstName"], "Lee", "the absorbed record keeps its own fields");
    let survivor = forward.customer(s).await;
    assert_eq!(survivor["status"], "active");
    assert_eq!(survivor["platformStatus"], "MERGED");
    assert_eq!(survivor["mergedInto"], Value::Null);
    assert_eq!(survivor["mergedFrom"], json!([l]));
    assert_eq!(survivor["firstName"], "Sam");
    assert_eq!(resolve(&forward, l).await["id"], s);
}

#[tokio::test]
async fn a_survivor_naming_a_never_seen_id_creates_a_stub_that_resolves() {
    let app = TestApp::spawn().await;
    let (s, stub) = ("treez:stub:1", "treez:stub:900");
    let answer = accept(&app, "treez", &survivor("stub", "1", &["900"], T1)).await;
    assert_eq!(answer["customerId"], s);

    let record = app.customer(stub).await;
    assert_eq!(record["id"], stub);
    assert_eq!(record["source"], "treez");
    assert_eq!(record["externalId"], "900");
    assert_eq!(record["account"], "stub");
    assert_eq!(record["status"], "merged");
    assert_eq!(record["mergedInto"], s);
    assert_eq!(resolve(&app, stub).await["id"], s);
    assert_eq!(resolve(&app, s).await["id"], s, "a survivor resolves to itself");
    assert_eq!(app.customer(s).await["mergedFrom"], json!([stub]));
    let (status, history) = app.get(&format!("/api/v1/customers/{stub}/events")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
}

#[tokio::test]
async fn resolve_follows_a_chain_of_merges_to_the_last_survivor() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &absorbed("ch", "a", "b", T1)).await;
    accept(&app, "treez", &absorbed("ch", "b", "c", T2)).await;
    accept(&app, "treez", &person("ch", "c", "Cy", T2)).await;
    assert_eq!(resolve(&app, "treez:ch:a").await["id"], "treez:ch:c");
    assert_eq!(resolve(&app, "treez:ch:b").await["id"], "treez:ch:c");
    assert_eq!(resolve(&app, "treez:ch:c").await["id"], "treez:ch:c");
    // Without resolve, a record is itself.
    assert_eq!(app.customer("treez:ch:a").await["mergedInto"], "treez:ch:b");
    let (status, _) = app
        .get_query("/api/v1/customers/treez:ch:a", &[("resolve", "false")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn resolve_stops_before_a_merge_cycle() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &absorbed("cy", "a", "b", T1)).await;
    accept(&app, "treez", &absorbed("cy", "b", "a", T2)).await;
    // "stops at the last record before a cycle" (SPEC §8).
    assert_eq!(resolve(&app, "treez:cy:a").await["id"], "treez:cy:b");
    assert_eq!(resolve(&app, "treez:cy:b").await["id"], "treez:cy:a");
    // A survivor claiming its own survivor closes a cycle too.
    accept(&app, "treez", &survivor("cy", "c", &["d"], T1)).await;
    accept(&app, "treez", &survivor("cy", "d", &["c"], T2)).await;
    let end = resolve(&app, "treez:cy:c").await;
    assert!(
        ["treez:cy:c", "treez:cy:d"].contains(&end["id"].as_str().unwrap()),
        "{end}"
    );
}

#[tokio::test]
async fn two_survivors_claiming_one_record_follow_the_later_claim_in_either_order() {
    let s1 = survivor("two", "s1", &["l"], T1);
    let s2 = survivor("two", "s2", &["l"], T2);
    let mut views = Vec::new();
    for order in [[&s1, &s2], [&s2, &s1]] {
        let app = TestApp::spawn().await;
        for body in order {
            accept(&app, "treez", body).await;
        }
        let absorbed = app.customer("treez:two:l").await;
        assert_eq!(
            absorbed["mergedInto"], "treez:two:s2",
            "the claim with the higher order key"
        );
        assert_eq!(absorbed["status"], "merged");
        // mergedFrom lists every claim.
        assert_eq!(app.customer("treez:two:s1").await["mergedFrom"], json!(["treez:two:l"]));
        assert_eq!(app.customer("treez:two:s2").await["mergedFrom"], json!(["treez:two:l"]));
        assert_eq!(resolve(&app, "treez:two:l").await["id"], "treez:two:s2");
        views.push(converged_view(&app).await);
    }
    assert_eq!(views[0], views[1]);
}

#[tokio::test]
async fn lists_leave_merged_records_out_unless_asked() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &survivor("lm", "s", &["l"], T2)).await;
    accept(&app, "treez", &absorbed("lm", "l", "s", T2)).await;
    accept(&app, "treez", &person("lm", "other", "Ola", T1)).await;
    let default = sorted(app.customer_ids(&[]).await);
    assert_eq!(default, ["treez:lm:other", "treez:lm:s"]);
    assert_eq!(sorted(app.customer_ids(&[("includeMerged", "false")]).await), default);
    assert_eq!(
        sorted(app.customer_ids(&[("includeMerged", "true")]).await),
        ["treez:lm:l", "treez:lm:other", "treez:lm:s"]
    );
    // The other filters honour it too.
    assert_eq!(
        sorted(app.customer_ids(&[("account", "lm"), ("source", "treez")]).await),
        default
    );
    let (status, body) = app.get_query("/api/v1/customers", &[("includeMerged", "maybe")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_merge_link_survives_later_snapshots_of_the_absorbed_record() {
    let app = TestApp::spawn().await;
    let (s, l) = ("treez:ms:s", "treez:ms:l");
    accept(&app, "treez", &survivor("ms", "s", &["l"], T2)).await;
    accept(&app, "treez", &absorbed("ms", "l", "s", T2)).await;

    // An older snapshot of L, from before the merge: stale.
    let before_merge = person("ms", "l", "Old", T1);
    assert_eq!(accept(&app, "treez", &before_merge).await["outcome"], "stale");
    let record = app.customer(l).await;
    assert_eq!(record["firstName"], "Lee");
    assert_eq!(record["status"], "merged");
    assert_eq!(record["mergedInto"], s);

    // A newer snapshot that no longer mentions the merge: its fields apply,
    // the link stays.
    let later = person("ms", "l", "Later", T3);
    assert_eq!(accept(&app, "treez", &later).await["outcome"], "applied");
    let record = app.customer(l).await;
    assert_eq!(record["firstName"], "Later");
    assert_eq!(record["platformStatus"], "ACTIVE");
    assert_eq!(record["status"], "merged");
    assert_eq!(record["mergedInto"], s);
    assert_eq!(app.customer(s).await["mergedFrom"], json!([l]));
    assert_eq!(resolve(&app, l).await["id"], s);
}

#[tokio::test]
async fn a_stub_filled_by_an_older_snapshot_keeps_its_merge_link() {
    let app = TestApp::spawn().await;
    let (s, l) = ("treez:mo:s", "treez:mo:l");
    accept(&app, "treez", &survivor("mo", "s", &["l"], T2)).await;
    // L's own snapshot from before the merge arrives late: it fills the stub.
    assert_eq!(
        accept(&app, "treez", &person("mo", "l", "Old", T1)).await["outcome"],
        "applied"
    );
    let record = app.customer(l).await;
    assert_eq!(record["firstName"], "Old");
    assert_eq!(record["status"], "merged");
    assert_eq!(record["mergedInto"], s);
    assert_eq!(resolve(&app, l).await["id"], s);
}

#[tokio::test]
async fn treez_integer_ids_become_string_ids() {
    let app = TestApp::spawn().await;
    let body = with(treez("int", "x", T1), "/data/customer_id", json!(19));
    let body = with(body, "/data/status", json!("MERGED"));
    let body = with(body, "/data/merged_customer_ids", json!([20]));
    let answer = accept(&app, "treez", &body).await;
    assert_eq!(answer["customerId"], "treez:int:19");
    let record = app.customer("treez:int:19").await;
    assert_eq!(record["externalId"], "19");
    assert_eq!(record["mergedFrom"], json!(["treez:int:20"]));
    assert_eq!(app.customer("treez:int:20").await["externalId"], "20");
    // The same customer under its string id is the same record.
    let later = with(person("int", "19", "Jules", T2), "/data/merged_customer_ids", json!([]));
    assert_eq!(accept(&app, "treez", &later).await["customerId"], "treez:int:19");
    assert_eq!(app.customer("treez:int:19").await["version"], 2);
    let mut listed = app.customer_ids(&[("includeMerged", "true")]).await;
    listed.sort();
    assert_eq!(listed, ["treez:int:19", "treez:int:20"]);
}

// The Clientele envelope.

fn envelope(event_id: &str, created: &str, payload: Value) -> Value {
    json!({"id": event_id, "createdDate": created, "type": "customer", "action": "updated", "payload": payload})
}

#[tokio::test]
async fn a_clientele_envelope_maps_its_payload_and_orders_by_updated_at() {
    let app = TestApp::spawn().await;
    let payload = json!({
        "customerId": "c-1",
        "account": "acme",
        "firstName": "  Ada ",
        "lastName": "Lovelace",
        "email": " ADA@Example.COM ",
        "phones": [{"kind": "mobile", "raw": "(914) 555-1212"}, {"kind": "work", "e164": "+442071838750"}],
        "addresses": [{"kind": "home", "street1": "1 Main St", "city": "Springfield", "regionCode": "NY",
                       "countryCode": "us", "postalCode": "10001", "primary": true}],
        "groups": ["vip"],
        "attributes": {"tier": "gold", "points": 12, "empty": ""},
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-04-01T10:00:00-07:00",
    });
    let answer = accept(
        &app,
        "clientele",
        &envelope("cl-1", "2026-04-01T17:00:01Z", payload.clone()),
    )
    .await;
    assert_eq!(answer["customerId"], "clientele:c-1");
    let record = app.customer("clientele:c-1").await;
    assert_eq!(record["source"], "clientele");
    assert_eq!(record["externalId"], "c-1");
    assert_eq!(record["account"], "acme");
    assert_eq!(record["firstName"], "Ada");
    assert_eq!(record["email"], "ada@example.com");
    let e164: Vec<_> = record["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["e164"].clone())
        .collect();
    assert_eq!(e164, [json!("+19145551212"), json!("+442071838750")]);
    assert_eq!(record["phones"][0]["raw"], "(914) 555-1212");
    assert_eq!(record["addresses"][0]["regionCode"], "US-NY");
    assert_eq!(record["addresses"][0]["countryCode"], "US");
    assert_eq!(record["groups"], json!(["vip"]));
    assert_eq!(record["attributes"]["tier"], "gold");
    assert_eq!(record["attributes"]["points"], 12);
    assert!(record["attributes"].get("empty").is_none(), "{}", record["attributes"]);
    assert_eq!(record["updatedAt"], "2026-04-01T17:00:00.000Z");
    assert_eq!(record["createdAt"], "2026-01-01T00:00:00.000Z");
    assert_eq!(
        app.customer_ids(&[("phone", "+1 914 555 1212")]).await,
        ["clientele:c-1"]
    );

    // An older updatedAt in a later envelope is stale: updatedAt orders.
    let older = with(payload.clone(), "/updatedAt", json!("2026-03-01T00:00:00Z"));
    let older = with(older, "/firstName", json!("Augusta"));
    let stale = accept(&app, "clientele", &envelope("cl-2", "2026-05-01T00:00:00Z", older)).await;
    assert_eq!(stale["outcome"], "stale");
    assert_eq!(app.customer("clientele:c-1").await["firstName"], "Ada");
    // A newer updatedAt in an earlier envelope applies.
    let newer = with(payload, "/updatedAt", json!("2026-04-02T00:00:00Z"));
    let newer = with(newer, "/lastName", json!("King"));
    let applied = accept(&app, "clientele", &envelope("cl-3", "2026-01-01T00:00:00Z", newer)).await;
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(app.customer("clientele:c-1").await["lastName"], "King");
}

// Reading the directory.

/// A list query's parameters.
type Query<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn the_list_filters_select_the_matching_customers() {
    let app = TestApp::spawn().await;
    let north = with(
        person("north", "f1", "Ann", T1),
        "/data/email",
        json!("Ann@Example.com"),
    );
    let north = with(north, "/data/phone", json!("(914) 555-1212"));
    let south = with(
        person("south", "f2", "Bob", T1),
        "/data/email",
        json!("bob@example.com"),
    );
    let south = with(south, "/data/phone", json!("2125550000"));
    // Vagaro's example has the mobile 9145551212 too.
    let salon = with(
        vagaro("fv-1", "F3", "2023-08-10T08:50:00Z"),
        "/payload/email",
        json!("cy@example.com"),
    );
    accept(&app, "treez", &north).await;
    accept(&app, "treez", &south).await;
    accept(&app, "vagaro", &salon).await;
    let (n, s, v) = ("treez:north:f1", "treez:south:f2", "vagaro:F3");

    let cases: &[(Query, &[&str])] = &[
        (&[], &[n, s, v]),
        (&[("source", "treez")], &[n, s]),
        (&[("source", "vagaro")], &[v]),
        (&[("source", "nowhere")], &[]),
        (&[("account", "north")], &[n]),
        (&[("account", "south")], &[s]),
        (&[("account", "tYKEZF-L445YEDnCx0TIfA==")], &[v]),
        (&[("email", "ann@example.com")], &[n]),
        (&[("email", "ANN@EXAMPLE.COM")], &[n]),
        (&[("email", "Ann@Example.com")], &[n]),
        (&[("email", "nobody@example.com")], &[]),
        (&[("phone", "(914) 555-1212")], &[n, v]),
        (&[("phone", "914.555.1212")], &[n, v]),
        (&[("phone", "+1 914 555 1212")], &[n, v]),
        (&[("phone", "+19145551212")], &[n, v]),
        (&[("phone", "9145551212")], &[n, v]),
        (&[("phone", "(914) 555-1212"), ("source", "treez")], &[n]),
        (&[("phone", "212-555-0000")], &[s]),
        (
            &[("source", "treez"), ("account", "north"), ("email", "ann@example.com")],
            &[n],
        ),
        (
            &[("source", "treez"), ("account", "south"), ("email", "ann@example.com")],
            &[],
        ),
    ];
    for (query, expected) in cases {
        let got = sorted(app.customer_ids(query).await);
        let expected = sorted(expected.iter().map(|s| s.to_string()).collect());
        assert_eq!(got, expected, "{query:?}");
    }
    let (status, body) = app.get_query("/api/v1/customers", &[("phone", "not a phone")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_code(&body);
}

async fn changed_at(app: &TestApp, id: &str) -> String {
    app.customer(id).await["changedAt"]
        .as_str()
        .expect("changedAt")
        .to_owned()
}

async fn changed_since(app: &TestApp, since: String) -> Vec<String> {
    sorted(app.customer_ids(&[("changedSince", since.as_str())]).await)
}

#[tokio::test]
async fn changed_since_selects_records_changed_at_or_after_it() {
    let app = TestApp::spawn().await;
    for id in ["c1", "c2", "c3"] {
        accept(&app, "treez", &person("cs", id, "Ann", T1)).await;
        // The next change is on a later millisecond: wait for the clock,
        // not for a guessed time.
        let changed: jiff::Timestamp = changed_at(&app, &format!("treez:cs:{id}")).await.parse().unwrap();
        while jiff::Timestamp::now() <= changed + jiff::SignedDuration::from_millis(1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let first = changed_at(&app, "treez:cs:c1").await;
    let second = changed_at(&app, "treez:cs:c2").await;
    assert!(first < second, "{first} < {second}");
    let since = |t: &str| changed_since(&app, t.to_owned());
    assert_eq!(since(&first).await, ["treez:cs:c1", "treez:cs:c2", "treez:cs:c3"]);
    assert_eq!(since(&second).await, ["treez:cs:c2", "treez:cs:c3"]);
    assert_eq!(since("2100-01-01T00:00:00Z").await, Vec::<String>::new());
    assert_eq!(
        since("2000-01-01T00:00:00Z").await,
        ["treez:cs:c1", "treez:cs:c2", "treez:cs:c3"]
    );
    // A late, old event still changes its record now: an incremental
    // reader sees it.
    accept(&app, "treez", &person("cs", "c1", "Annie", T2)).await;
    assert_eq!(since(&second).await, ["treez:cs:c1", "treez:cs:c2", "treez:cs:c3"]);

    let (status, body) = app
        .get_query("/api/v1/customers", &[("changedSince", "yesterday")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_code(&body);
}

#[tokio::test]
async fn pages_of_two_walk_every_customer_once() {
    let app = TestApp::spawn().await;
    for n in 1..=5 {
        accept(&app, "treez", &person("pg", &n.to_string(), "Pat", T1)).await;
    }
    let pages = app.pages("/api/v1/customers", "2").await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let seen: Vec<String> = pages.into_iter().flat_map(|page| ids(&Value::Array(page))).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(
        sorted(seen),
        (1..=5).map(|n| format!("treez:pg:{n}")).collect::<Vec<_>>()
    );

    // A page that ends exactly at the last record says so.
    let (_, all) = app.get_query("/api/v1/customers", &[("limit", "5")]).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    assert_eq!(all["nextCursor"], Value::Null);
}

/// A long history is read a page at a time (40 large entries once made
/// one answer of 35.6 MB).
#[tokio::test]
async fn a_customers_history_is_paged_like_the_lists() {
    let app = TestApp::spawn().await;
    for day in 1..=5 {
        let at = format!("2026-04-0{day}T00:00:00Z");
        accept(&app, "treez", &person("hp", "1", "Pat", &at)).await;
    }
    let path = "/api/v1/customers/treez:hp:1/events";
    let whole = app.history("treez:hp:1").await;
    assert_eq!(whole.len(), 5);
    let pages = app.pages(path, "2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), whole, "oldest first, each entry once");
    for (name, value) in [("limit", "0"), ("limit", "1001"), ("cursor", "ten")] {
        let (status, body) = app.get_query(path, &[(name, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={value}: {body}");
        assert_eq!(error_code(&body), "bad_parameter");
    }
}

#[tokio::test]
async fn a_limit_outside_1_to_1000_is_400() {
    let app = TestApp::spawn().await;
    for limit in ["0", "1001", "-1", "ten"] {
        let (status, body) = app.get_query("/api/v1/customers", &[("limit", limit)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={limit}: {body}");
        error_code(&body);
    }
    for limit in ["1", "1000"] {
        let (status, body) = app.get_query("/api/v1/customers", &[("limit", limit)]).await;
        assert_eq!(status, StatusCode::OK, "limit={limit}: {body}");
    }
}

#[tokio::test]
async fn an_unknown_customer_and_its_history_are_404() {
    let app = TestApp::spawn().await;
    accept(&app, "treez", &person("known", "1", "Kim", T1)).await;
    for path in [
        "/api/v1/customers/treez:known:2",
        "/api/v1/customers/treez:known:2/events",
        "/api/v1/customers/nothing",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        error_code(&body);
    }
    let (status, body) = app
        .get_query("/api/v1/customers/treez:known:2", &[("resolve", "true")])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

// Convergence.

/// One generated Treez snapshot: customer `p{who}`, at minute `minute`, with
/// one of a few names, and possibly one side of a merge into `p0`.
#[derive(Debug, Clone)]
struct Snapshot {
    who: usize,
    minute: u32,
    name: usize,
    merge: bool,
}

impl Snapshot {
    fn body(&self) -> Value {
        const NAMES: [&str; 3] = ["Ann", "Bob", "Cy"];
        let at = format!("2026-04-24T10:{:02}:00.000-07:00", self.minute);
        let id = format!("p{}", self.who);
        let body = person("prop", &id, NAMES[self.name], &at);
        match (self.merge, self.who) {
            (false, _) => body,
            (true, 0) => with(
                with(body, "/data/status", json!("MERGED")),
                "/data/merged_customer_ids",
                json!(["p1"]),
            ),
            (true, _) => with(
                with(body, "/data/status", json!("DEACTIVATED")),
                "/data/merged_into_customer_id",
                json!("p0"),
            ),
        }
    }
}

/// Snapshots, and an arrival order: every snapshot at least once, some
/// again, shuffled.
fn scenario() -> impl Strategy<Value = (Vec<Value>, Vec<usize>)> {
    let snapshot =
        (0..3usize, 0..4u32, 0..3usize, prop::bool::weighted(0.25)).prop_map(|(who, minute, name, merge)| Snapshot {
            who,
            minute,
            name,
            merge,
        });
    prop::collection::vec(snapshot, 2..7).prop_flat_map(|snapshots| {
        let bodies: Vec<Value> = snapshots.iter().map(Snapshot::body).collect();
        let n = bodies.len();
        let order = prop::collection::vec(0..n, 0..=n).prop_flat_map(move |again| {
            let mut order: Vec<usize> = (0..n).collect();
            order.extend(again);
            Just(order).prop_shuffle()
        });
        (Just(bodies), order)
    })
}

proptest! {
    // Failures are kept beside this file, in
    // `directory.proptest-regressions` (proptest's default would look for
    // `tests/proptest-regressions/directory.txt`, since `tests/it` has a
    // `main.rs`), and replayed first on every run.
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_directory_is_the_same_whatever_the_order_and_the_retries((bodies, order) in scenario()) {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (in_order, shuffled) = runtime.block_on(async {
            let once = TestApp::spawn().await;
            for body in &bodies {
                let (status, answer) = once.deliver_json("treez", body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
            }
            let shuffled = TestApp::spawn().await;
            for &i in &order {
                let (status, answer) = shuffled.deliver_json("treez", &bodies[i]).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert!(["accepted", "duplicate"].contains(&answer["status"].as_str().unwrap()), "{answer}");
            }
            let views = (converged_view(&once).await, converged_view(&shuffled).await);
            once.stop().await;
            shuffled.stop().await;
            views
        });
        prop_assert!(!in_order.is_empty());
        prop_assert_eq!(in_order, shuffled);
    }
}

#[tokio::test]
async fn a_changed_phone_is_found_by_the_new_number_and_no_longer_by_the_old() {
    let app = TestApp::spawn().await;
    let first = with(treez("shop", "5", T1), "/data/phone", json!("9145551212"));
    app.deliver_json("treez", &first).await;
    let second = with(treez("shop", "5", T2), "/data/phone", json!("2125550000"));
    app.deliver_json("treez", &second).await;
    assert_eq!(app.customer_ids(&[("phone", "2125550000")]).await, ["treez:shop:5"]);
    assert!(app.customer_ids(&[("phone", "9145551212")]).await.is_empty());
    // An older snapshot arriving late changes neither the record nor its lookup.
    let late = with(
        treez("shop", "5", "2026-04-15T00:00:00Z"),
        "/data/phone",
        json!("3105550000"),
    );
    app.deliver_json("treez", &late).await;
    assert!(app.customer_ids(&[("phone", "3105550000")]).await.is_empty());
    assert_eq!(app.customer_ids(&[("phone", "2125550000")]).await, ["treez:shop:5"]);
}

/// A page holds at most about 8 MiB of profiles whatever its `limit`: a
/// page of a thousand records near `max_body_bytes` each once took several
/// gigabytes of memory to answer. Cut short, it says where to go on, and
/// the pages together hold every record once.
#[tokio::test]
async fn a_page_of_large_records_is_cut_short_and_the_rest_follows() {
    let app = TestApp::spawn().await;
    const RECORDS: usize = 160;
    let notes = "n".repeat(60_000);
    for i in 0..RECORDS {
        let payload = json!({"customerId": format!("big-{i:03}"), "updatedAt": "2026-04-01T00:00:00Z", "notes": notes});
        accept(
            &app,
            "clientele",
            &envelope(&format!("big-{i}"), "2026-04-01T00:00:00Z", payload),
        )
        .await;
    }
    let (status, first) = app.get_query("/api/v1/customers", &[("limit", "1000")]).await;
    assert_eq!(status, StatusCode::OK);
    let on_first = first["data"].as_array().unwrap().len();
    assert!(on_first < RECORDS, "the first page is cut short: {on_first}");
    assert!(first["nextCursor"].is_string(), "and says where to go on");
    let ids: Vec<String> = app
        .pages("/api/v1/customers", "1000")
        .await
        .iter()
        .flatten()
        .map(|c| c["id"].as_str().expect("an id").to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (RECORDS, RECORDS), "every record once");
}
