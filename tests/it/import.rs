//! `clientele import` and `clientele export` (SPEC §10), run as an
//! operator runs them: the real binary, on a store of its own or beside a
//! running `serve` (then, on the embedded store, through that server).

use std::path::Path;

use crate::util::{self, TREEZ_EXAMPLE, TestApp, TestStore, VAGARO_EXAMPLE};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What a run of the binary printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The count the summary line gives `outcome` (`applied`, `bad lines`).
    fn count(&self, outcome: &str) -> u64 {
        let summary = self.stdout.lines().last().unwrap_or_default();
        let after = summary
            .split_once(&format!(" {outcome} "))
            .unwrap_or_else(|| panic!("no {outcome} in {summary:?}"))
            .1;
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for {outcome} in {summary:?}"))
    }
}

/// Runs `clientele {args}` with `stdin`, off the test's runtime (a server
/// in this process may be what it talks to).
async fn clientele(args: &[&str], stdin: &str) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = util::binary()
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut input = child.stdin.take().expect("a stdin");
        input.write_all(stdin.as_bytes()).expect("stdin written");
        drop(input);
        let output = child.wait_with_output().expect("the binary ends");
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the run")
}

/// The configuration file for the store of `dir`, listening where `app`
/// does (if it runs): where an import hands its records to it.
fn config_file(dir: &Path, app: Option<&TestApp>) -> String {
    let mut setup = TestApp::builder();
    if let Some(app) = app {
        setup = setup.setting("listen", app.address.to_string());
    }
    let text = setup.config_text(dir);
    let path = dir.join("clientele.toml");
    std::fs::write(&path, text).expect("the config written");
    path.display().to_string()
}

async fn import(config: &str, source: &str, format: &str, extra: &[&str], stdin: &str) -> Run {
    let mut args = vec!["import", "--config", config, "--source", source, "--format", format];
    args.extend_from_slice(extra);
    args.push("-");
    let run = clientele(&args, stdin).await;
    assert!(run.ok, "the import failed: {}", run.stderr);
    run
}

/// A body on one line.
fn line(json: &str) -> String {
    serde_json::from_str::<Value>(json).unwrap().to_string()
}

/// A Clientele envelope for customer `id` updated at `at`, named `first`.
fn envelope(id: &str, at: &str, first: &str) -> Value {
    json!({
        "type": "customer", "action": "updated",
        "payload": {"customerId": id, "updatedAt": at, "firstName": first, "email": format!("{id}@example.com")},
    })
}

/// The directory without what only the directory's own bookkeeping says.
fn contents(directory: Vec<Value>) -> Vec<Value> {
    let mut customers: Vec<Value> = directory
        .into_iter()
        .map(|mut c| {
            let c = c.as_object_mut().unwrap();
            c.remove("version");
            c.remove("changedAt");
            Value::Object(c.clone())
        })
        .collect();
    customers.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    customers
}

#[tokio::test]
async fn the_seeds_examples_import_as_their_webhooks_would_keep_them() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let vagaro = import(&config, "vagaro", "jsonl", &[], &line(VAGARO_EXAMPLE)).await;
    assert_eq!(vagaro.count("applied"), 1, "{}", vagaro.stdout);
    // Seed 004's sample as captured: its headers and its raw body.
    let headers = json!({
        "content-type": "application/json",
        "authorization": "Bearer CHQUBXBIFOJG26KFRLL0J3HC",
        "traceparent": "00-a13ce3eb5ebd3c3b329b6b0905e51258-4a6cc846cbe46132-01",
        "user-agent": "Apache-HttpClient/4.5.14 (Java/17.0.18)",
        "Webhook-Id": "msg_treez_1",
    });
    let capture = json!({"method": "POST", "headers": headers, "bodyRaw": TREEZ_EXAMPLE});
    let treez = import(&config, "treez", "capture", &[], &capture.to_string()).await;
    assert_eq!(treez.count("applied"), 1, "{}", treez.stdout);

    let app = TestApp::builder().spawn_in(temp.path()).await;
    let johnny = app.customer("vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1").await;
    assert_eq!(johnny["firstName"], "Johnny");
    assert_eq!(johnny["phones"][0]["e164"], "+19145551212");
    let jules = app.customer("treez:partnersandbox3:3904").await;
    assert_eq!(jules["lastName"], "Winnfield");
    let events = app.events(None).await;
    let keys: Vec<&str> = events.iter().map(|e| e["dedupeKey"].as_str().unwrap()).collect();
    assert_eq!(keys, ["254FA623-D2B0-4785-A07D-A1A7059C74FF", "msg_treez_1"]);
    // The headers a delivery keeps, and no others.
    assert_eq!(
        events[1]["headers"],
        json!({
            "content-type": "application/json",
            "traceparent": "00-a13ce3eb5ebd3c3b329b6b0905e51258-4a6cc846cbe46132-01",
            "user-agent": "Apache-HttpClient/4.5.14 (Java/17.0.18)",
        })
    );
    // The same bodies sent as webhooks are the same deliveries.
    let (_, again) = app.deliver("vagaro", VAGARO_EXAMPLE).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    app.stop().await;
}

#[tokio::test]
async fn importing_twice_keeps_nothing_twice() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let records: String = (0..50)
        .map(|i| envelope(&format!("c-{i}"), "2024-01-01T00:00:00Z", "Ana").to_string() + "\n")
        .collect();
    let first = import(&config, "clientele", "jsonl", &[], &records).await;
    assert_eq!(first.count("applied"), 50, "{}", first.stdout);
    let second = import(&config, "clientele", "jsonl", &[], &records).await;
    assert_eq!(second.count("duplicate"), 50, "{}", second.stdout);
    assert_eq!(second.count("applied"), 0);
    // The embedded store held nothing before the first: that one was
    // loaded into a copy, put in place whole; the second went through the WAL.
    let staged = "the store holds no customer yet";
    let embedded = TestStore::chosen() == TestStore::Sqlite;
    assert_eq!(first.stderr.contains(staged), embedded, "{}", first.stderr);
    assert!(!second.stderr.contains(staged), "{}", second.stderr);
    assert!(!temp.path().join("clientele.db.staging").exists());

    let app = TestApp::builder().spawn_in(temp.path()).await;
    assert_eq!(app.events(None).await.len(), 50);
    assert_eq!(app.directory().await.len(), 50);
    let events = app.events(None).await;
    assert!(events.iter().all(|e| e["duplicates"] == 1), "each counted once more");
    app.stop().await;
}

#[tokio::test]
async fn an_import_while_serve_runs_goes_through_it_and_an_old_export_never_overwrites_a_newer_webhook() {
    let app = TestApp::spawn().await;
    let config = config_file(&app.dir, Some(&app));
    let newer = envelope("c-1", "2024-06-01T00:00:00Z", "Newer");
    let (status, _) = app.deliver_json("clientele", &newer).await;
    assert_eq!(status, StatusCode::OK);

    let old = envelope("c-1", "2024-01-01T00:00:00Z", "Older");
    let other = envelope("c-2", "2024-01-01T00:00:00Z", "Bo");
    let run = import(&config, "clientele", "jsonl", &[], &format!("{old}\n{other}\n")).await;
    assert_eq!(run.count("stale"), 1, "{}", run.stdout);
    assert_eq!(run.count("applied"), 1);
    if TestStore::chosen() == TestStore::Sqlite {
        assert!(run.stderr.contains("the import goes through it"), "{}", run.stderr);
    }
    assert_eq!(app.customer("clientele:c-1").await["firstName"], "Newer");
    assert_eq!(app.customer("clientele:c-2").await["firstName"], "Bo");
    // And the live webhook, sent again later, is a duplicate still.
    let (_, again) = app.deliver_json("clientele", &newer).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    app.stop().await;
}

#[tokio::test]
async fn bad_lines_are_reported_by_number_and_the_rest_is_kept() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let good = envelope("c-1", "2024-01-01T00:00:00Z", "Ana");
    let unmappable = json!({"type": "customer", "payload": {"customerId": ""}});
    let text = format!("{good}\n{{not json\n\n{unmappable}\n[1,\n");
    let run = import(&config, "clientele", "jsonl", &[], &text).await;
    assert_eq!(run.count("applied"), 1, "{}", run.stdout);
    assert_eq!(run.count("bad lines"), 2);
    assert_eq!(run.count("quarantined"), 1);
    assert!(
        run.stderr
            .contains("stdin:2: bad line, skipped: the body is not valid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("stdin:4: quarantined: payload.customerId is missing"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("stdin:5: bad line, skipped"), "{}", run.stderr);

    let csv = "customerId,updatedAt,firstName\nc-2,2024-01-01T00:00:00Z,Bo\nc-3,2024\nc-4,2024-01-01T00:00:00Z,Cy\n";
    let run = import(&config, "clientele", "csv", &[], csv).await;
    assert_eq!(run.count("applied"), 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("stdin:3: bad line, skipped: has 2 fields where the header row has 3"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn what_cannot_be_imported_at_all_stops_with_one_line_saying_what_to_do() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let cases = [
        (
            vec!["--source", "shopify", "-"],
            "error: no source named \"shopify\" is in the configuration file or was created through the API: name one of \"vagaro\", \"clientele\", \"treez\" with --source (GET /api/v1/sources lists every source)",
        ),
        (
            vec!["--source", "vagaro", "no-such-file.jsonl"],
            "error: no-such-file.jsonl: cannot read it: No such file or directory (os error 2)",
        ),
        (
            vec!["--source", "clientele", "--format", "csv", "-"],
            "error: stdin: the header row has no updatedAt column: the first row names canonical fields (customerId and updatedAt are required)",
        ),
        (
            vec!["--source", "vagaro", "--format", "csv", "-"],
            "error: --format csv reads canonical customers, as the clientele kind, but source \"vagaro\" is of kind vagaro: import them into a source of kind clientele (--format jsonl or capture read vagaro bodies)",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["import", "--config", &config];
        all.extend(args);
        let run = clientele(&all, "customerId,firstName\nc-1,Ana\n").await;
        assert!(!run.ok, "{expected}");
        assert_eq!(run.stderr.trim(), expected);
    }
}

#[tokio::test]
async fn a_dry_run_maps_and_keeps_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let text = format!("{}\n{}\nnope\n", line(VAGARO_EXAMPLE), line(TREEZ_EXAMPLE));
    let run = import(&config, "vagaro", "jsonl", &["--dry-run"], &text).await;
    assert!(run.stdout.starts_with("dry run, nothing kept: "), "{}", run.stdout);
    assert_eq!(run.count("quarantined"), 1);
    assert_eq!(run.count("bad lines"), 1);
    assert!(run.stdout.contains("mapped (dry run) 1"), "{}", run.stdout);
    let app = TestApp::builder().spawn_in(temp.path()).await;
    app.assert_nothing_kept().await;
    app.stop().await;
}

#[tokio::test]
async fn without_publish_the_directory_changes_and_subscribers_hear_nothing() {
    let app = TestApp::spawn().await;
    let config = config_file(&app.dir, Some(&app));
    let (status, subscription) = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .bearer_auth(util::ADMIN)
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let subscription: Value = subscription.json().await.unwrap();
    let messages = format!(
        "/api/v1/subscriptions/{}/messages",
        subscription["id"].as_str().unwrap()
    );

    let quiet = envelope("quiet", "2024-01-01T00:00:00Z", "Ana");
    import(&config, "clientele", "jsonl", &["--no-publish"], &format!("{quiet}\n")).await;
    let told = envelope("told", "2024-01-01T00:00:00Z", "Bo");
    import(&config, "clientele", "jsonl", &[], &format!("{told}\n")).await;

    assert_eq!(app.customer("clientele:quiet").await["firstName"], "Ana");
    // Changes fan out in order: once the second import's is queued, the
    // first's would have been.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let listed = loop {
        let (_, page) = app.get(&messages).await;
        let listed = page["data"].as_array().cloned().unwrap_or_default();
        if !listed.is_empty() || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let customers: Vec<&str> = listed.iter().map(|m| m["customerId"].as_str().unwrap_or("?")).collect();
    assert_eq!(customers, ["clientele:told"], "{listed:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_export_imported_into_a_fresh_store_gives_the_same_directory() {
    let temp = tempfile::tempdir().unwrap();
    let config = config_file(temp.path(), None);
    let records = [
        json!({"type": "customer", "payload": {
            "customerId": "c-1", "updatedAt": "2024-01-01T00:00:00Z", "firstName": "Ana", "lastName": "Lima",
            "email": "ana@example.com", "phones": [{"kind": "mobile", "raw": "914-555-1212"}],
            "addresses": [{"kind": "home", "street1": "1 Main St", "city": "Boston", "regionCode": "MA",
                           "countryCode": "US", "postalCode": "02101", "primary": true}],
            "businessIds": ["b1", "b2"], "groups": ["VIP"], "optOut": true, "birthDate": "1980-02-03",
            "attributes": {"tier": "gold"}}}),
        json!({"type": "customer", "payload": {"customerId": "c-2", "updatedAt": "2024-02-01T00:00:00Z",
               "firstName": "Bo", "status": "inactive", "createdAt": "2020-01-01T00:00:00Z"}}),
        json!({"type": "customer", "payload": {"customerId": "c-3", "updatedAt": "2024-03-01T00:00:00Z",
               "firstName": "Cy", "mergedInto": "c-1"}}),
    ];
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    import(&config, "clientele", "jsonl", &[], &text).await;
    let exported = clientele(&["export", "--config", &config], "").await;
    assert!(exported.ok, "{}", exported.stderr);
    assert_eq!(exported.stdout.lines().count(), 3, "{}", exported.stdout);
    let csv = clientele(
        &[
            "export",
            "--config",
            &config,
            "--format",
            "csv",
            "--source",
            "clientele",
        ],
        "",
    )
    .await;
    assert!(csv.ok, "{}", csv.stderr);
    let original = {
        let app = TestApp::builder().spawn_in(temp.path()).await;
        let directory = contents(app.directory().await);
        app.stop().await;
        directory
    };
    assert_eq!(original.len(), 3);

    let fresh = tempfile::tempdir().unwrap();
    let fresh_config = config_file(fresh.path(), None);
    let run = import(&fresh_config, "clientele", "customers", &[], &exported.stdout).await;
    assert_eq!(run.count("applied"), 3, "{}{}", run.stdout, run.stderr);
    let app = TestApp::builder().spawn_in(fresh.path()).await;
    assert_eq!(contents(app.directory().await), original);
    app.stop().await;

    // The CSV holds the canonical columns (not attributes, one address).
    let again = tempfile::tempdir().unwrap();
    let again_config = config_file(again.path(), None);
    let run = import(&again_config, "clientele", "csv", &[], &csv.stdout).await;
    assert_eq!(run.count("applied"), 3, "{}{}", run.stdout, run.stderr);
    let app = TestApp::builder().spawn_in(again.path()).await;
    let mut expected = original.clone();
    expected[0]["attributes"] = json!({});
    assert_eq!(contents(app.directory().await), expected);
    app.stop().await;

    // Exporting changes since a time leaves out what did not change since.
    let none = clientele(
        &["export", "--config", &config, "--changed-since", "2999-01-01T00:00:00Z"],
        "",
    )
    .await;
    assert!(none.ok && none.stdout.is_empty(), "{}{}", none.stdout, none.stderr);
}

#[tokio::test]
async fn an_export_while_serve_runs_reads_through_it() {
    let app = TestApp::spawn().await;
    let config = config_file(&app.dir, Some(&app));
    for i in 0..3 {
        app.deliver_json("clientele", &envelope(&format!("c-{i}"), "2024-01-01T00:00:00Z", "Ana"))
            .await;
    }
    let out = app.dir.join("export.jsonl");
    let run = clientele(&["export", "--config", &config, "--output", out.to_str().unwrap()], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stderr.trim(), "exported 3 customers");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    app.stop().await;
}

/// A source created through the API is found by `clientele import` as a
/// configured one is: through the running server that holds the embedded
/// store (on Postgres, in the store), and in the store itself once no
/// server runs. A name that is nowhere stops the import saying so.
#[tokio::test]
async fn a_source_created_through_the_api_imports_with_or_without_serve() {
    let app = TestApp::spawn().await;
    let request = app.client.post(app.url("/api/v1/sources")).bearer_auth(util::ADMIN);
    let (status, created) = util::send(request.json(&json!({"name": "shop-api", "kind": "clientele"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let config = config_file(&app.dir, Some(&app));
    let ann = envelope("c-1", "2024-01-01T00:00:00Z", "Ann");
    let run = import(&config, "shop-api", "jsonl", &[], &format!("{ann}\n")).await;
    assert_eq!(run.count("applied"), 1, "{}", run.stdout);
    if TestStore::chosen() == TestStore::Sqlite {
        assert!(run.stderr.contains("the import goes through it"), "{}", run.stderr);
    }
    assert_eq!(app.customer("shop-api:c-1").await["firstName"], "Ann");

    let dir = app.stop().await.expect("the store's directory");
    let config = config_file(dir.path(), None);
    let bo = envelope("c-2", "2024-01-01T00:00:00Z", "Bo");
    let run = import(&config, "shop-api", "jsonl", &[], &format!("{bo}\n{ann}\n")).await;
    assert_eq!(run.count("applied"), 1, "{}", run.stdout);
    assert_eq!(run.count("duplicate"), 1, "{}", run.stdout);
    let run = clientele(&["import", "--config", &config, "--source", "nowhere", "-"], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("no source named \"nowhere\""), "{}", run.stderr);

    let app = TestApp::builder().spawn_in(dir.path()).await;
    assert_eq!(app.customer("shop-api:c-2").await["firstName"], "Bo");
    app.stop().await;
}
