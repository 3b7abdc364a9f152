//! Rebuilding the directory without a maintenance window (SPEC §12): a
//! rebuild is swapped in at once or not at all, one runs at a time, the
//! running server rebuilds when asked (`POST /api/v1/rebuild`, which
//! `clientele rebuild` sends when `serve` holds the embedded store), and
//! no subscriber ever gets a version lower than one it got.

use crate::util;

use std::collections::HashMap;

use clientele::store::StoreError;
use reqwest::StatusCode;
use serde_json::{Value, json};
use util::{TestApp, TestReceiver, treez, with};

const T1: &str = "2026-04-01T00:00:00Z";
const T2: &str = "2026-05-01T00:00:00Z";
const T3: &str = "2026-06-01T00:00:00Z";

/// The directory without what only its bookkeeping says (a rebuild
/// writes every record again: `changedAt` moves, `version` never goes
/// down), by id.
fn contents(directory: Vec<Value>) -> Vec<Value> {
    let mut customers: Vec<Value> = directory.iter().map(util::without_bookkeeping).collect();
    customers.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    customers
}

/// Some customers, one changed twice.
async fn a_directory(app: &TestApp) {
    for (id, at) in [("1", T1), ("2", T1), ("1", T2), ("3", T1), ("1", T3)] {
        let body = with(treez("shop", id, at), "/data/last_name", json!(format!("Name{id}{at}")));
        let (status, answer) = app.deliver_json("treez", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

/// A rebuild stopped after its first event (as a killed process stops:
/// its connection and what it built go) leaves the previous directory,
/// history and versions, served as they were; and no lock behind: the
/// next rebuild runs, and equals the live directory.
#[tokio::test]
async fn an_interrupted_rebuild_leaves_the_previous_directory() {
    let app = TestApp::spawn().await;
    a_directory(&app).await;
    let directory = app.directory().await;
    let history = app.history("treez:shop:1").await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let (store, names, remap) = util::store_to_rebuild(&dir).await;
    let mut rebuild = store.begin_rebuild(names, remap).await.expect("a rebuild begins");
    assert!(rebuild.replay(1).await.expect("one event replayed"), "more events wait");
    drop(rebuild);
    store.close().await;

    let app = TestApp::builder().spawn_in(&dir).await;
    assert_eq!(app.directory().await, directory, "the previous directory is served");
    assert_eq!(app.history("treez:shop:1").await, history);
    let (status, rebuilt) = app.post_admin("/api/v1/rebuild").await;
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    assert_eq!(rebuilt, json!({"replayed": 5, "skipped": 0}));
    assert_eq!(
        contents(app.directory().await),
        contents(directory),
        "a rebuild equals the live directory"
    );
    app.stop().await;
    drop(temp);
}

/// One rebuild at a time: a second one is refused while the first runs,
/// and runs once it ended.
#[tokio::test]
async fn a_second_rebuild_at_once_is_refused() {
    let app = TestApp::spawn().await;
    a_directory(&app).await;
    let dir = app.dir.clone();
    let temp = app.stop().await;

    let (store, names, remap) = util::store_to_rebuild(&dir).await;
    let first = store
        .begin_rebuild(names.clone(), remap.clone())
        .await
        .expect("a rebuild begins");
    let second = store.begin_rebuild(names.clone(), remap.clone()).await;
    let refused = second.err().expect("a second rebuild is refused");
    assert!(matches!(refused, StoreError::Rebuilding), "{refused}");
    assert_eq!(
        refused.to_string(),
        "a rebuild of the directory is already running: wait for it to finish"
    );
    let rebuilt = first.finish(100).await.expect("the first finishes");
    assert_eq!(rebuilt.replayed, 5);
    let again = store
        .begin_rebuild(names, remap)
        .await
        .expect("a rebuild begins once the first ended");
    drop(again);
    store.close().await;
    drop(temp);
}

/// While the server runs: ingest goes on before and after, the rebuild
/// (asked over HTTP, audited) equals the live directory, and the next
/// change of a customer comes after every version subscribers got, even
/// when the replay counted fewer changes than were sent (an erasure
/// unlinked a merge: the survivor's version went up, its events did not).
#[tokio::test]
async fn a_rebuild_while_serving_keeps_every_version_subscribers_got() {
    let receiver = TestReceiver::healthy().await;
    let app = TestApp::spawn().await;
    let (subscription, _) = app.subscribe_url(&receiver.url()).await;
    a_directory(&app).await;
    // S absorbed L, then L was erased: S lost the link, and its version
    // went up by a change no event of S's makes again.
    let survivor = with(treez("shop", "S", T2), "/data/merged_customer_ids", json!(["L"]));
    app.deliver_json("treez", &with(survivor, "/data/status", json!("MERGED")))
        .await;
    app.deliver_json("treez", &treez("shop", "L", T1)).await;
    assert_eq!(
        app.delete("/api/v1/customers/treez:shop:L").await.0,
        StatusCode::NO_CONTENT
    );
    app.wait_drained().await;
    let versions: HashMap<String, i64> = receiver
        .received()
        .iter()
        .map(|r| (r.customer().to_owned(), r.version()))
        .fold(HashMap::new(), |mut highest, (id, v)| {
            let entry = highest.entry(id).or_insert(v);
            *entry = (*entry).max(v);
            highest
        });
    let directory: Vec<Value> = app.directory().await;

    let (status, rebuilt) = app.post_admin("/api/v1/rebuild").await;
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    assert_eq!(contents(app.directory().await), contents(directory));
    for customer in app.directory().await {
        let id = customer["id"].as_str().unwrap();
        if let Some(sent) = versions.get(id) {
            assert!(
                customer["version"].as_i64().unwrap() >= *sent,
                "{id} went down: {customer}"
            );
        }
    }
    let (_, audit) = app.get("/api/v1/audit").await;
    assert!(audit.to_string().contains("directory.rebuild"), "{audit}");

    let before = receiver.received().len();
    let changed = with(
        treez("shop", "S", "2026-07-01T00:00:00Z"),
        "/data/last_name",
        json!("After"),
    );
    let (status, _) = app.deliver_json("treez", &changed).await;
    assert_eq!(status, StatusCode::OK);
    let received = receiver.wait_for(before + 1).await;
    let last = received.last().expect("the change");
    assert_eq!(last.customer(), "treez:shop:S");
    let sent = versions["treez:shop:S"];
    assert!(last.version() > sent, "{} after {sent}", last.version());
    let _ = subscription;
    app.stop().await;
}

/// `clientele rebuild` while `serve` holds the embedded store asks the
/// server, which rebuilds; on Postgres it rebuilds from its own process,
/// beside the serving instance.
#[tokio::test]
async fn the_rebuild_command_runs_while_serve_runs() {
    let app = TestApp::spawn().await;
    a_directory(&app).await;
    let directory = app.directory().await;
    let text = TestApp::builder()
        .setting("listen", app.address.to_string())
        .config_text(&app.dir);
    let config = app.dir.join("clientele.toml");
    std::fs::write(&config, text).expect("the configuration written");
    let output = tokio::task::spawn_blocking(move || {
        util::binary()
            .args(["rebuild", "--config", config.to_str().unwrap()])
            .output()
            .expect("the binary runs")
    })
    .await
    .expect("the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("directory rebuilt"), "{stderr}");
    assert_eq!(contents(app.directory().await), contents(directory));
    let (status, _) = app.deliver_json("treez", &treez("shop", "4", T1)).await;
    assert_eq!(status, StatusCode::OK, "ingest goes on");
    app.stop().await;
}

/// Ingest goes on while a rebuild runs: every delivery is answered `200`,
/// and the directory swapped in holds each one, those that arrived while
/// it was being built included (replayed at the swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_during_a_rebuild_are_kept_in_the_rebuilt_directory() {
    let app = TestApp::spawn().await;
    let serving = &app;
    let deliver = |n: usize| {
        let body = with(
            treez("shop", &format!("c{n}"), T1),
            "/data/last_name",
            json!(format!("N{n}")),
        );
        async move {
            let (status, answer) = serving.deliver_json("treez", &body).await;
            assert_eq!(status, StatusCode::OK, "delivery {n}: {answer}");
        }
    };
    const BEFORE: usize = 300;
    for n in 0..BEFORE {
        deliver(n).await;
    }
    let rebuilding = tokio::spawn({
        let request = app.client.post(app.url("/api/v1/rebuild")).bearer_auth(util::ADMIN);
        async move { util::read(request.send().await.expect("an answer")).await }
    });
    let mut n = BEFORE;
    while !rebuilding.is_finished() && n < 900 {
        deliver(n).await;
        n += 1;
    }
    let (status, rebuilt) = rebuilding.await.expect("the rebuild's request");
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    let replayed = rebuilt["replayed"].as_u64().unwrap() as usize;
    assert!(replayed >= BEFORE, "{rebuilt}");
    deliver(n).await;
    let directory = app.directory().await;
    assert_eq!(directory.len(), n + 1, "every delivery is in the directory");
    for customer in &directory {
        let id = customer["id"].as_str().unwrap();
        let n = id.trim_start_matches("treez:shop:c");
        assert_eq!(customer["lastName"], format!("N{n}"), "{customer}");
    }
    println!("{} delivered during the rebuild, which replayed {replayed}", n - BEFORE);
    app.stop().await;
}
