//! The writer's batches, driven directly: what one command's failure does
//! to the commands committed beside it.

use super::*;
use crate::sources::{Kind, testing};

type Reply = oneshot::Receiver<Result<Answer, StoreError>>;

fn command(op: Op) -> (Command, Reply) {
    let (reply, answer) = oneshot::channel();
    (Command { op, reply }, answer)
}

/// A delivery no adapter could map: kept, quarantined, no directory change.
fn unmappable(dedupe_key: &str) -> Op {
    Op::Ingest(Box::new(Delivery {
        source: "vagaro".into(),
        dedupe_key: dedupe_key.into(),
        received_at: UtcMillis::now(),
        headers: Default::default(),
        body: b"{}".to_vec(),
        mapped: Err(Unmappable::new("no customer id")),
        mentions: Vec::new(),
    }))
}

/// Vagaro's example customer, a new one to the directory.
fn customer() -> Op {
    customer_numbered(None)
}

/// Vagaro's example customer, or another customer `n` like it.
fn customer_numbered(n: Option<u32>) -> Op {
    let body = include_bytes!("../../../tests/fixtures/vagaro-customer-updated.json");
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("the fixture is JSON");
    let dedupe_key = match n {
        None => "customer".to_owned(),
        Some(n) => {
            value["payload"]["customerId"] = format!("customer-{n}").into();
            value["id"] = format!("event-{n}").into();
            format!("customer-{n}")
        }
    };
    let settings = testing::settings("vagaro", jiff::tz::TimeZone::UTC);
    Op::Ingest(Box::new(Delivery {
        source: "vagaro".into(),
        dedupe_key,
        received_at: UtcMillis::now(),
        headers: Default::default(),
        body: serde_json::to_vec(&value).expect("JSON"),
        mapped: Kind::Vagaro.adapter().map(&value, &settings),
        mentions: Vec::new(),
    }))
}

fn subscription() -> Op {
    Op::CreateSubscription(Subscription {
        id: "sub_test".into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "whsec_dGVzdA==".into(),
        actions: Vec::new(),
        sources: Vec::new(),
        types: Vec::new(),
        enabled: true,
        created_at: UtcMillis::now(),
    })
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn quarantined(answer: Reply) -> String {
    match answer.blocking_recv().expect("answered") {
        Ok(Answer::Ingest(IngestOutcome::Quarantined { event_id, .. })) => event_id,
        Ok(_) => panic!("another answer than quarantined"),
        Err(e) => panic!("the delivery failed: {e}"),
    }
}

#[test]
fn a_failing_command_fails_alone_and_its_batch_commits_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let mut writer = Writer::open(&path, Arc::new(Notify::new()), checkpoint::Limits::DEFAULT).expect("open");
    let (first, answer) = command(unmappable("a"));
    writer.commit(&mut vec![first]);
    let redacted = quarantined(answer);
    // Reprocessing an event whose raw body was redacted fails.
    writer
        .conn
        .execute("UPDATE events SET redacted = 1 WHERE id = ?1", [&redacted])
        .expect("redact");

    let (subscribe, subscribed) = command(subscription());
    let (change, changed) = command(customer());
    let (before, before_answer) = command(unmappable("b"));
    let (failing, failing_answer) = command(Op::Reprocess(
        redacted.clone(),
        Err(Unmappable::new("still no customer id")),
        Publish::No,
    ));
    let (after, after_answer) = command(unmappable("c"));
    writer.commit(&mut vec![subscribe, change, before, failing, after]);

    assert!(matches!(
        failing_answer.blocking_recv().expect("answered"),
        Err(StoreError::Redacted(id)) if id == redacted
    ));
    assert!(matches!(
        subscribed.blocking_recv().expect("answered"),
        Ok(Answer::Done)
    ));
    assert!(matches!(
        changed.blocking_recv().expect("answered"),
        Ok(Answer::Ingest(IngestOutcome::Accepted { .. }))
    ));
    let kept = [quarantined(before_answer), quarantined(after_answer)];
    let rows: Vec<(String, String)> = writer
        .conn
        .prepare("SELECT dedupe_key, id FROM events ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    // Each delivery of the batch is kept once, under the id it was answered
    // with, although the batch ran twice.
    assert_eq!(
        rows.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(),
        ["a", "customer", "b", "c"]
    );
    assert_eq!(rows[0].1, redacted);
    assert_eq!([rows[2].1.clone(), rows[3].1.clone()], kept);
    // The change was written, published and queued once, at the first
    // place of the change feed; the fan-out makes its one message.
    let (fan_out, _) = command(Op::FanOut);
    writer.commit(&mut vec![fan_out]);
    let conn = &writer.conn;
    assert_eq!(count(conn, "SELECT COUNT(*) FROM customers WHERE change_seq = 1"), 1);
    assert_eq!(count(conn, "SELECT COUNT(*) FROM customers"), 1);
    assert_eq!(count(conn, "SELECT COUNT(*) FROM history"), 1);
    assert_eq!(count(conn, "SELECT COUNT(*) FROM outbox"), 1);
    assert_eq!(
        count(conn, "SELECT COUNT(*) FROM messages WHERE subscription_id = 'sub_test'"),
        1
    );
    assert_eq!(writer.ctx.last_change, 1);
}

/// Migration 4 on a store that already holds history and outbox rows: each
/// customer's chains reach every row the dropped indexes found.
#[test]
fn migration_4_chains_the_rows_a_store_already_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = Connection::open(dir.path().join("clientele.db")).expect("open");
    for sql in &MIGRATIONS[..3] {
        conn.execute_batch(sql).expect("the schema before chains");
    }
    conn.pragma_update(None, "user_version", 3).expect("version 3");
    conn.execute_batch(
        "INSERT INTO customers (id, source, external_id, status, profile, merged_from, version, changed_at, change_seq)
             VALUES ('a', 's', 'a', 'active', '{}', '[]', 2, 't', 1), ('b', 's', 'b', 'active', '{}', '[]', 1, 't', 2);
         INSERT INTO history (seq, customer_id, event_id, entry)
             VALUES (1, 'a', 'e1', '{}'), (2, 'b', 'e2', '{}'), (3, 'a', 'e3', '{}');
         INSERT INTO outbox (seq, id, customer_id, source, action, version, created_at, body)
             VALUES (1, 'o1', 'a', 's', 'created', 1, 't', '{}'), (2, 'o2', 'b', 's', 'created', 1, 't', '{}'),
                    (3, 'o3', 'gone', 's', 'created', 1, 't', '{}'), (4, 'o4', 'a', 's', 'updated', 2, 't', '{}');",
    )
    .expect("rows of version 3");
    migrate(&mut conn).expect("migrate");

    let chain = |chain: &str, id: &str| -> Vec<i64> {
        let sql = format!("{chain} SELECT seq FROM chain ORDER BY seq");
        let mut stmt = conn.prepare(&sql).expect("prepare");
        let seqs = stmt.query_map([id], |r| r.get(0)).expect("query");
        seqs.collect::<Result<_, _>>().expect("seqs")
    };
    assert_eq!(chain(HISTORY_CHAIN, "a"), [1, 3]);
    assert_eq!(chain(HISTORY_CHAIN, "b"), [2]);
    assert_eq!(chain(OUTBOX_CHAIN, "a"), [1, 4]);
    assert_eq!(chain(OUTBOX_CHAIN, "b"), [2]);
    // An id without a record keeps its rows through `outbox_heads`.
    assert_eq!(chain(OUTBOX_CHAIN, "gone"), [3]);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('history_customer', 'outbox_customer')"
        ),
        0
    );
}

/// How many times the WAL restarted from its beginning (each time with a
/// new salt in its header) over `commits` commits of `size` deliveries,
/// with a checkpoint started at 32 frames, a writer's tail of 8 and at most
/// 4 passes.
fn wal_restarts(size: usize, commits: usize) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = checkpoint::Limits {
        start: 32,
        tail: 8,
        passes: 4,
    };
    let mut writer = Writer::open(&dir.path().join("clientele.db"), Arc::new(Notify::new()), limits).expect("open");
    let salt = || {
        use std::io::Read;
        let mut header = [0; 24];
        std::fs::File::open(dir.path().join("clientele.db-wal"))
            .and_then(|mut wal| wal.read_exact(&mut header))
            .expect("the WAL's header");
        header[16..24].to_vec()
    };
    let mut salts = vec![];
    for commit in 0..commits {
        let (batch, answers): (Vec<_>, Vec<_>) =
            (0..size).map(|n| command(unmappable(&format!("{commit}.{n}")))).unzip();
        writer.commit(&mut { batch });
        answers.into_iter().for_each(|answer| drop(quarantined(answer)));
        let now = salt();
        if salts.last() != Some(&now) {
            salts.push(now);
        }
    }
    assert_eq!(
        count(&writer.conn, "SELECT COUNT(*) FROM events"),
        (size * commits) as i64
    );
    salts.len() - 1
}

/// Under writes that never pause, the checkpoint thread copies the WAL
/// back and the writer's last, short copy lets the WAL restart instead of
/// growing.
#[test]
fn the_wal_restarts_while_writes_go_on() {
    assert!(wal_restarts(1, 200) >= 3);
}

/// Commits larger than the writer's tail: passes never catch up, and
/// after the last of them the writer copies what they leave.
#[test]
fn the_wal_restarts_under_commits_larger_than_the_tail() {
    assert!(wal_restarts(64, 60) >= 3);
}

/// Once the store is closed, the database file alone holds every commit:
/// the readers' connections close before the writer's, and the last
/// connection to close copies the WAL back and removes it.
#[tokio::test]
async fn a_closed_store_leaves_no_wal_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("clientele.db")).expect("open");
    store.send(customer()).await.expect("the delivery is kept");
    let read = store.customer("vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1".into()).await;
    assert!(read.expect("a read").is_some());
    store.close().await;
    assert!(!dir.path().join("clientele.db-wal").exists());
}

/// A connection that outlives the writer's keeps SQLite from removing the
/// WAL when the writer's closes; the writer's last checkpoint still leaves
/// every commit in the database file.
#[tokio::test]
async fn a_closed_store_holds_every_commit_in_its_file_behind_a_reader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path).expect("open");
    store.send(customer()).await.expect("the delivery is kept");
    let reader = Connection::open(&path).expect("a reader");
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM customers"), 1);
    store.close().await;
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).expect("a copy of the file alone");
    let copied = Connection::open(&copy).expect("the copy");
    assert_eq!(count(&copied, "SELECT COUNT(*) FROM customers"), 1);
    drop(reader);
}

/// Another connection writing to the store (a tool, or a process that
/// ignored the lock) moves the change feed on: the writer's next changes
/// come after it in the feed.
#[tokio::test]
async fn the_writer_reads_again_what_another_connection_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path).expect("open");
    store
        .send(customer_numbered(Some(1)))
        .await
        .expect("the first delivery");

    let other = Connection::open(&path).expect("another connection");
    other.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    other
        .execute("UPDATE customers SET change_seq = 100", [])
        .expect("another connection's write");

    store
        .send(customer_numbered(Some(2)))
        .await
        .expect("the second delivery");
    store.close().await;
    let seq = |id: &str| -> i64 {
        other
            .query_row("SELECT change_seq FROM customers WHERE id = ?1", [id], |r| r.get(0))
            .expect("a customer")
    };
    assert!(seq("vagaro:customer-2") > seq("vagaro:customer-1"));
}

#[test]
fn a_store_written_by_a_newer_clientele_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    Connection::open(&path)
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .expect("a newer schema");
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found: 99, known }) => assert_eq!(known, MIGRATIONS.len()),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a newer store was opened"),
    }
}

#[tokio::test]
async fn a_store_whose_applied_migration_this_build_changed_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    SqliteStore::open(&path).expect("a new store").close().await;
    Connection::open(&path)
        .and_then(|c| c.execute("UPDATE clientele_migrations SET checksum = x'00' WHERE version = 3", []))
        .expect("a checksum changed");
    match SqliteStore::open(&path) {
        Err(StoreError::EditedMigration { version: 3 }) => {}
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a store of another schema was opened"),
    }
}

/// A change waits in the outbox until the dispatcher fans it out: the
/// backlog counts it meanwhile, so that "nothing left to send" means it.
#[tokio::test]
async fn the_backlog_counts_changes_not_fanned_out_yet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("clientele.db")).expect("open");
    store.send(subscription()).await.expect("a subscription");
    store.send(customer()).await.expect("a delivery");
    let backlog = store.backlog().await.expect("the backlog");
    assert_eq!(backlog.unfanned, 1);
    assert_eq!(backlog.pending, [("sub_test".to_owned(), 0)]);
    while store.fan_out().await.expect("a fan-out") {}
    let backlog = store.backlog().await.expect("the backlog");
    assert_eq!(backlog.unfanned, 0);
    assert_eq!(backlog.pending, [("sub_test".to_owned(), 1)]);
    store.close().await;
}

/// Customer `n` as modified at `modified`, delivered under `dedupe_key`.
fn delivery_of(n: u32, modified: &str, dedupe_key: &str) -> Delivery {
    let body = include_bytes!("../../../tests/fixtures/vagaro-customer-updated.json");
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("the fixture is JSON");
    value["payload"]["customerId"] = format!("customer-{n}").into();
    value["payload"]["modifiedDate"] = modified.into();
    value["payload"]["customerFirstName"] = modified.into();
    let settings = testing::settings("vagaro", jiff::tz::TimeZone::UTC);
    Delivery {
        source: "vagaro".into(),
        dedupe_key: dedupe_key.into(),
        received_at: UtcMillis::now(),
        headers: Default::default(),
        body: serde_json::to_vec(&value).expect("JSON"),
        mapped: Kind::Vagaro.adapter().map(&value, &settings),
        mentions: Vec::new(),
    }
}

/// What an import's batch and the same deliveries sent one by one leave:
/// each outcome, and each customer's first name and version.
async fn kept(batched: bool, publish: Publish) -> (Vec<String>, Vec<(String, String, u64)>, u64) {
    let deliveries = || {
        vec![
            delivery_of(1, "2024-06-01T00:00:00Z", "a"),
            delivery_of(1, "2024-01-01T00:00:00Z", "b"),
            delivery_of(1, "2024-06-01T00:00:00Z", "a"),
            delivery_of(2, "2024-01-01T00:00:00Z", "c"),
            delivery_of(2, "2024-02-01T00:00:00Z", "d"),
        ]
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("clientele.db")).expect("open");
    let outcomes = if batched {
        store.ingest_batch(deliveries(), publish).await.expect("a batch")
    } else {
        let mut outcomes = Vec::new();
        for d in deliveries() {
            outcomes.push(store.ingest(d).await.expect("a delivery"));
        }
        outcomes
    };
    let labels = outcomes
        .iter()
        .map(|o| match o {
            IngestOutcome::Accepted { outcome, .. } => outcome.as_str().to_owned(),
            IngestOutcome::Duplicate { .. } => "duplicate".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    let mut customers = Vec::new();
    for id in ["vagaro:customer-1", "vagaro:customer-2"] {
        let c = store.customer(id.into()).await.expect("a read").expect("a customer");
        customers.push((c.id, c.profile.first_name.unwrap_or_default(), c.version));
    }
    let unfanned = store.backlog().await.expect("the backlog").unfanned;
    store.close().await;
    (labels, customers, unfanned)
}

#[tokio::test]
async fn a_batch_keeps_each_delivery_as_a_webhook_is_kept() {
    let one_by_one = kept(false, Publish::Yes).await;
    assert_eq!(one_by_one.0, ["applied", "stale", "duplicate", "applied", "applied"]);
    assert_eq!(one_by_one.2, 3, "three changes queued");
    assert_eq!(kept(true, Publish::Yes).await, one_by_one);
    // Without publishing: the same directory, nothing queued.
    let quiet = kept(true, Publish::No).await;
    assert_eq!((&quiet.0, &quiet.1, quiet.2), (&one_by_one.0, &one_by_one.1, 0));
}

/// A rebuild carries each record's chain of envelopes over to the record
/// it makes again, and takes back the end an older rebuild left in
/// `outbox_heads`, so that the table does not grow with each rebuild (it
/// held a row per customer per rebuild that found the customer changed).
/// The live history it replaces is walked through the records' chains:
/// the statement reads no more of it than the rebuilt customers'.
#[tokio::test]
async fn a_rebuild_leaves_no_chain_end_behind_and_reads_only_its_customers_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path).expect("open");
    store.send(customer()).await.expect("the delivery is kept");
    let reader = Connection::open(&path).expect("a reader");
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM outbox"), 1);
    // The end an older rebuild left, with the record's chain cut.
    reader
        .execute_batch(
            "INSERT INTO outbox_heads (customer_id, seq) SELECT id, last_outbox FROM customers;
             UPDATE customers SET last_outbox = NULL;",
        )
        .expect("an older rebuild's state");
    let remap: Remap = Arc::new(|_, body| {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let settings = testing::settings("vagaro", jiff::tz::TimeZone::UTC);
        Some(Kind::Vagaro.adapter().map(&value, &settings))
    });
    for _ in 0..3 {
        let mut rebuild = store
            .begin_rebuild(vec!["vagaro".into()], remap.clone())
            .await
            .expect("a rebuild");
        while rebuild.replay(10).await.expect("a replay") {}
        let rebuilt = rebuild.finish(10).await.expect("the swap");
        assert_eq!(
            rebuilt,
            Rebuilt {
                replayed: 1,
                skipped: 0
            }
        );
        assert_eq!(
            count(&reader, "SELECT COUNT(*) FROM outbox_heads"),
            0,
            "the record took it back"
        );
        let chained = "SELECT COUNT(*) FROM customers WHERE last_outbox = (SELECT seq FROM outbox)";
        assert_eq!(count(&reader, chained), 1, "the record names its envelopes");
        assert_eq!(count(&reader, "SELECT COUNT(*) FROM history"), 1);
    }
    let plan: Vec<String> = reader
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {} DELETE FROM history WHERE seq IN (SELECT seq FROM chain)",
            history_chains("", "SELECT id FROM customers WHERE source = 'vagaro'")
        ))
        .expect("a plan")
        .query_map([], |r| r.get::<_, String>(3))
        .expect("its rows")
        .collect::<Result<_, _>>()
        .expect("its rows");
    assert!(
        !plan
            .iter()
            .any(|step| step.starts_with("SCAN h") || step == "SCAN history"),
        "the history is not scanned: {plan:?}"
    );
    store.close().await;
}
