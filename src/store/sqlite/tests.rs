//! The writer's batches, driven directly: what one command's failure does
//! to the commands committed beside it.

use std::collections::BTreeMap;

use super::*;
use crate::model::OrderKey;
use crate::sources::{Kind, testing};
use crate::store::Action;
use crate::store::rows::{unpack_dedupe_key, unpack_envelope};
use rusqlite::types::FromSql;

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
    vagaro(value, dedupe_key)
}

/// Vagaro's delivery of `value`, deduplicated by `dedupe_key`.
fn vagaro(value: serde_json::Value, dedupe_key: String) -> Op {
    let settings = testing::settings("vagaro", jiff::tz::TimeZone::UTC);
    Op::Ingest(Box::new(Delivery {
        source: "vagaro".into(),
        dedupe_key,
        received_at: UtcMillis::now(),
        headers: Default::default(),
        body: serde_json::to_vec(&value).expect("JSON"),
        mapped: testing::map(Kind::Vagaro.adapter(), &value, &settings),
        mentions: Vec::new(),
    }))
}

/// Vagaro's example customer with `last_name`, modified at `modified`, as
/// event `event`.
fn customer_renamed(event: &str, last_name: &str, modified: &str) -> Op {
    let body = include_bytes!("../../../tests/fixtures/vagaro-customer-updated.json");
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("the fixture is JSON");
    value["id"] = event.into();
    value["payload"]["customerLastName"] = last_name.into();
    value["payload"]["modifiedDate"] = modified.into();
    vagaro(value, event.into())
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

/// A connection to a new database at `path` holding the schema a store
/// had just before migration `version` (counted from 1), as such a store
/// would be found.
fn schema_before(path: &Path, version: usize) -> Connection {
    let conn = Connection::open(path).expect("open");
    for sql in &MIGRATIONS[..version - 1] {
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("the schema before version {version}: {e}"));
    }
    conn.pragma_update(None, "user_version", (version - 1) as i64)
        .expect("the version before");
    conn
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
    let mut writer = Writer::open(
        &path,
        Arc::new(Notify::new()),
        checkpoint::Limits::DEFAULT,
        Clock::system(),
    )
    .expect("open");
    let (first, answer) = command(unmappable("a"));
    writer.commit(&mut vec![first]);
    let redacted = quarantined(answer);
    // Reprocessing an event whose raw body was redacted fails.
    writer
        .conn
        .execute("UPDATE events SET redacted = 1 WHERE id = ?1", [PackedId(&redacted)])
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
        .prepare("SELECT CAST(dedupe_key AS TEXT), id FROM events ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, KeptId>(1)?.0)))
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
    let mut conn = schema_before(&dir.path().join("clientele.db"), 4);
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

/// Migration 19 on a store that holds JSON order keys and an outbox: each
/// key is packed as the code packs it (and reads back as it was), and the
/// outbox keeps its rows and its counter, without the two indexes.
#[test]
fn migration_19_packs_the_order_keys_and_makes_the_outbox_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = schema_before(&dir.path().join("clientele.db"), 19);
    let time = UtcMillis::from_millisecond;
    let keys = [
        OrderKey {
            at: Some(time(1_900_557_602_001)),
            sent_at: None,
            dedupe_key: format!("sha256:{}", "ab".repeat(32)),
        },
        // The first and last instants kept, and a key that is not ASCII.
        OrderKey {
            at: Some(time(-62_135_596_800_000)),
            sent_at: Some(time(253_402_300_799_999)),
            dedupe_key: "évènement-1".into(),
        },
        OrderKey {
            at: None,
            sent_at: Some(time(-1)),
            dedupe_key: "k".into(),
        },
    ];
    let json: Vec<String> = keys.iter().map(|k| serde_json::to_string(k).expect("json")).collect();
    conn.execute(
        "INSERT INTO customers (id, source, external_id, status, profile, order_key, merged_from, version,
                                changed_at, change_seq)
             VALUES ('a', 's', 'a', 'active', '{}', ?1, '[]', 1, 't', 1),
                    ('b', 's', 'b', 'active', '{}', ?2, '[]', 1, 't', 2),
                    ('c', 's', 'c', 'merged', '{}', NULL, '[]', 1, 't', 3)",
        params![json[0], json[1]],
    )
    .expect("records");
    conn.execute(
        "INSERT INTO merge_links (survivor, absorbed, order_key) VALUES ('a', 'c', ?1)",
        [&json[2]],
    )
    .expect("a link");
    conn.execute_batch(
        "INSERT INTO outbox (seq, id, customer_id, source, action, version, created_at, body, prev, codec)
             VALUES (1, 'o1', 'a', 's', 'created', 1, 't1', '{}', NULL, 0),
                    (2, 'o2', 'a', 's', 'updated', 2, 't2', '{}', 1, 0),
                    (3, 'o3', 'b', 's', 'created', 1, 't3', '{}', NULL, 0);
         DELETE FROM outbox WHERE seq = 3;",
    )
    .expect("envelopes");
    migrate(&mut conn).expect("migrate");

    let kept = |sql: &str| -> Vec<u8> { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let packed = [
        kept("SELECT order_key FROM customers WHERE id = 'a'"),
        kept("SELECT order_key FROM customers WHERE id = 'b'"),
        kept("SELECT order_key FROM merge_links"),
    ];
    for (packed, key) in packed.iter().zip(&keys) {
        assert_eq!(*packed, pack_order_key(key));
        assert_eq!(unpack_order_key(packed).expect("a key"), *key);
    }
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM customers WHERE order_key IS NULL"),
        1
    );
    let outbox = "SELECT group_concat(seq || id || COALESCE(prev, ''), ',') FROM (SELECT * FROM outbox ORDER BY seq)";
    assert_eq!(
        conn.query_row(outbox, [], |r| r.get::<_, String>(0)).expect("rows"),
        "1o1,2o21"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM sqlite_schema WHERE tbl_name = 'outbox' AND type = 'index'"
        ),
        0
    );
    // The counter goes on past the row that was deleted.
    conn.execute(
        "INSERT INTO outbox (id, customer_id, source, action, version, created_at, body) VALUES ('o4', 'b', 's', 'created', 1, 't4', '{}')",
        [],
    )
    .expect("a new envelope");
    assert_eq!(count(&conn, "SELECT MAX(seq) FROM outbox"), 4);
}

/// A customer's `created` envelope and history entry are kept composed
/// while each is the customer's last: composed from the record, the
/// envelope is the change's (the record at version 1, no changes), the
/// entry the record's fields from nothing; a stale event's entry writes
/// both out, each as it was composed; an update's are kept whole.
#[test]
fn a_created_envelope_and_entry_are_composed_from_the_record_until_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = Writer::open(
        &dir.path().join("clientele.db"),
        Arc::new(Notify::new()),
        checkpoint::Limits::DEFAULT,
        Clock::system(),
    )
    .expect("open");
    let kept = |writer: &Writer, seq: i64| -> (i64, String) {
        let (id, created_at, version, customer_id, body, codec): (KeptId, String, i64, String, Vec<u8>, i64) = writer
            .conn
            .query_row(
                "SELECT id, created_at, version, customer_id, body, codec FROM outbox WHERE seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .expect("an envelope");
        let body = if codec == composed::COMPOSED {
            let record = load_record(&writer.conn, &customer_id)
                .expect("read")
                .expect("its record");
            composed::envelope(&id.0, created_at.parse().expect("a time"), version, &record).expect("composed")
        } else {
            unpack_envelope(body, codec).expect("unpacked")
        };
        (codec, body)
    };
    let entry = |writer: &Writer, seq: i64| -> (i64, HistoryEntry) {
        let (customer_id, entry, codec): (String, Vec<u8>, i64) = writer
            .conn
            .query_row(
                "SELECT customer_id, entry, codec FROM history WHERE seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, kept_bytes(r.get_ref(1)?), r.get(2)?)),
            )
            .expect("an entry");
        let entry = if codec == composed::COMPOSED {
            let record = load_record(&writer.conn, &customer_id)
                .expect("read")
                .expect("its record");
            composed::kept_entry(&writer.conn, seq, &record)
                .expect("composed")
                .expect("kept composed")
        } else {
            crate::model::json::decode(&compress::unpack(codec, entry).expect("unpacked")).expect("an entry")
        };
        (codec, entry)
    };
    let accepted = |writer: &mut Writer, op: Op| {
        let (delivery, answer) = command(op);
        writer.commit(&mut vec![delivery]);
        assert!(matches!(
            answer.blocking_recv(),
            Ok(Ok(Answer::Ingest(IngestOutcome::Accepted { .. })))
        ));
    };
    accepted(&mut writer, customer_renamed("e1", "Smith", "2024-04-01T00:00:00Z"));
    let (codec, envelope) = kept(&writer, 1);
    assert_eq!(codec, composed::COMPOSED);
    let (codec, created) = entry(&writer, 1);
    assert_eq!(codec, composed::COMPOSED);
    let sent: serde_json::Value = serde_json::from_str(&envelope).expect("JSON");
    let id: String = writer
        .conn
        .query_row("SELECT customer_id FROM outbox WHERE seq = 1", [], |r| r.get(0))
        .expect("its customer");
    let record = load_record(&writer.conn, &id).expect("read").expect("the record");
    let customer = serde_json::to_value(record.to_customer()).expect("JSON");
    assert_eq!(
        (
            &sent["action"],
            &sent["payload"],
            &sent["changes"],
            sent["payload"]["version"].as_u64()
        ),
        (&"created".into(), &customer, &serde_json::json!({}), Some(1))
    );
    assert_eq!(
        (
            created.action,
            created.outcome,
            &created.changes,
            Some(&created.order_key)
        ),
        (
            Action::Created,
            Outcome::Applied,
            &directory::diff(None, &record.to_customer()),
            record.order_key.as_ref()
        )
    );
    assert!(created.changes.contains_key("lastName") && created.event_id.starts_with("evt_"));

    accepted(&mut writer, customer_renamed("e0", "Older", "2024-03-01T00:00:00Z"));
    let (codec, written_out) = entry(&writer, 1);
    assert_ne!(codec, composed::COMPOSED, "another entry");
    assert_eq!(written_out, created, "the same entry, written out");
    assert_eq!(entry(&writer, 2).1.outcome, Outcome::Stale);
    let (codec, written_out) = kept(&writer, 1);
    assert_ne!(codec, composed::COMPOSED, "written out with the entry");
    assert_eq!(written_out, envelope, "the same bytes, written out");

    accepted(&mut writer, customer_renamed("e2", "Smyth", "2024-05-01T00:00:00Z"));
    assert_eq!(kept(&writer, 1).1, envelope);
    let (codec, update) = kept(&writer, 2);
    assert_ne!(codec, composed::COMPOSED, "an update is kept whole");
    assert_ne!(
        entry(&writer, 3).0,
        composed::COMPOSED,
        "an update's entry is kept whole"
    );
    assert!(update.contains(r#""action":"updated""#) && update.contains("Smyth"));
}

/// Migration 23 on a store that keeps ids as text: each id Clientele made
/// becomes its 16 bytes in the events, the history and the outbox, and
/// reads back as it was, through the index that finds an event by id; an
/// id of any other form stays text.
#[test]
fn migration_23_keeps_the_ids_clientele_made_as_16_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = schema_before(&dir.path().join("clientele.db"), 23);
    let ids = [
        "evt_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
        "evt_019AF3E2C1B87D40A3C5E8F0B2D4A6C8",
        "event-7",
    ];
    for (n, id) in ids.iter().enumerate() {
        conn.execute(
            "INSERT INTO events (id, source, dedupe_key, received_at, headers, status) VALUES (?1, 's', ?2, 't', '{}', 'accepted')",
            params![id, format!("k{n}")],
        )
        .expect("an event");
        conn.execute(
            "INSERT INTO history (customer_id, event_id, entry) VALUES ('c', ?1, '{}')",
            [id],
        )
        .expect("an entry");
        conn.execute(
            "INSERT INTO outbox (id, customer_id, source, action, version, created_at, body) VALUES (?1, 'c', 's', 'created', 1, 't', '{}')",
            [id],
        )
        .expect("an envelope");
    }
    migrate(&mut conn).expect("migrate");

    for (id, kind) in ids.iter().zip(["blob", "text", "text"]) {
        for (table, column) in [("events", "id"), ("history", "event_id"), ("outbox", "id")] {
            let (kept, stored): (KeptId, String) = conn
                .query_row(
                    &format!("SELECT {column}, typeof({column}) FROM {table} WHERE {column} = ?1"),
                    [PackedId(id)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect(table);
            assert_eq!((kept.0.as_str(), stored.as_str()), (*id, kind), "{table}");
        }
    }
}

/// Migration 27 on a store that keeps review ids as text: each id
/// Clientele derived becomes its 12 bytes and the store finds, reads and
/// decides its review by it as before; an id of any other form stays text.
#[tokio::test]
async fn migration_27_keeps_review_ids_as_12_bytes() {
    use crate::persons::Decision;
    use crate::store::persons::{Decided, NewDecision, Persons, review_id};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let derived = review_id(&["vagaro:a".to_owned(), "vagaro:b".to_owned()]);
    let ids = [
        (derived.as_str(), "vagaro:a", "vagaro:b"),
        ("rev_old", "vagaro:c", "vagaro:d"),
    ];
    {
        let conn = schema_before(&path, 27);
        for (id, a, b) in ids {
            conn.execute(
                "INSERT INTO person_reviews (id, a, b, score, evidence, status, created_at)
                     VALUES (?1, ?2, ?3, 8.0, '[]', 'open', '2026-01-01T00:00:00.000Z')",
                params![id, a, b],
            )
            .expect("a review");
        }
    }
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    let page = store.reviews(None, 10, None).await.expect("the reviews");
    let read: Vec<_> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(read, [derived.as_str(), "rev_old"]);
    for (id, _, _) in ids {
        let decided = store
            .decide(NewDecision {
                review: Some(id.to_owned()),
                customers: [String::new(), String::new()],
                decision: Decision::Separate,
                at: UtcMillis::now(),
            })
            .await
            .expect("a decision");
        assert!(matches!(decided, Decided::Kept(_)), "{id}: {decided:?}");
    }
    store.close().await;

    let conn = Connection::open(&path).expect("open");
    let kinds: Vec<(String, i64)> = conn
        .prepare("SELECT typeof(id), length(id) FROM person_reviews ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(kinds, [("blob".to_owned(), 12), ("text".to_owned(), 7)]);
}

/// Migration 28 on a store that keeps person ids as text: each id
/// Clientele made becomes its 16 bytes in the persons, their members and
/// aliases, and the store finds a person by its id, an alias, a customer
/// and a listing as before; an id of any other form stays text.
#[tokio::test]
async fn migration_28_keeps_person_ids_as_16_bytes() {
    use crate::store::persons::{PersonQuery, Persons};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let person = "per_01a24ff9d0d17703ae6a4473f60000d3";
    let alias = "per_01a24ff9d0d17703ae6a447496cf0a4f";
    {
        let conn = schema_before(&path, 28);
        for (n, (id, customer)) in [(person, "vagaro:a"), ("per_old", "vagaro:b")].into_iter().enumerate() {
            conn.execute(
                "INSERT INTO persons (id, doc, created_at, changed_at, seq)
                     VALUES (?1, ?2, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', ?3)",
                params![
                    id,
                    format!(r#"{{"customerIds":["{customer}"],"links":[]}}"#),
                    n as i64 + 1
                ],
            )
            .expect("a person");
            conn.execute(
                "INSERT INTO person_members (customer_id, person_id, version) VALUES (?1, ?2, 1)",
                params![customer, id],
            )
            .expect("a member");
        }
        conn.execute(
            "INSERT INTO person_aliases (alias, person_id) VALUES (?1, ?2)",
            params![alias, person],
        )
        .expect("an alias");
    }
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    for (id, customer) in [(person, "vagaro:a"), ("per_old", "vagaro:b")] {
        let (found, _) = store.person(id.into()).await.expect("a read").expect("found");
        assert_eq!((found.id.as_str(), found.customer_ids), (id, vec![customer.to_owned()]));
        let of = store.person_of(customer.into()).await.expect("a read").expect("found");
        assert_eq!(of.id, id);
    }
    let (survivor, asked) = store.person(alias.into()).await.expect("a read").expect("found");
    assert_eq!((survivor.id.as_str(), asked.as_deref()), (person, Some(alias)));
    let listed = store
        .persons(PersonQuery {
            email: None,
            phone: None,
            name: None,
            changed_since: None,
            limit: 10,
            after: None,
        })
        .await
        .expect("a listing");
    let ids: Vec<_> = listed.items.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [person, "per_old"]);
    let members = store.resolved().await.expect("resolved").members;
    assert_eq!(
        members,
        [
            ("vagaro:a".to_owned(), Some(person.to_owned()), 1),
            ("vagaro:b".to_owned(), Some("per_old".to_owned()), 1)
        ]
    );
    store.close().await;

    let conn = Connection::open(&path).expect("open");
    let kinds: (String, String, String) = conn
        .query_row(
            "SELECT (SELECT group_concat(typeof(id)) FROM (SELECT id FROM persons ORDER BY seq)),
                    (SELECT group_concat(typeof(person_id)) FROM (SELECT person_id FROM person_members ORDER BY customer_id)),
                    (SELECT typeof(alias) || ',' || typeof(person_id) FROM person_aliases)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the kinds");
    assert_eq!(kinds, ("blob,text".into(), "blob,text".into(), "blob,blob".into()));
}

/// Migration 21 on a store that keeps dedupe keys as text: content hashes
/// become digests and every other key its bytes, in the events and after
/// the times of the order keys, each as the code packs it now (and reads
/// back as it was); a key that only looks like a hash stays as it came.
#[test]
fn migration_21_keeps_content_hashes_as_digests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = schema_before(&dir.path().join("clientele.db"), 21);
    let keys = [
        format!("sha256:{}", "0f".repeat(32)),
        format!("sha256:{}", "AB".repeat(32)),
        format!("sha256:{}", "ab".repeat(31)),
        "évènement-1".to_owned(),
    ];
    let order_keys: Vec<OrderKey> = keys
        .iter()
        .map(|key| OrderKey {
            at: Some(UtcMillis::from_millisecond(1_900_557_602_001)),
            sent_at: None,
            dedupe_key: key.clone(),
        })
        .collect();
    // As migration 19 and the code before this one packed them: the key's
    // text after the times.
    let as_text = |key: &OrderKey| [&pack_order_key(key)[..16], key.dedupe_key.as_bytes()].concat();
    for (n, key) in keys.iter().enumerate() {
        conn.execute(
            "INSERT INTO events (id, source, dedupe_key, received_at, headers, status) VALUES (?1, 's', ?2, 't', '{}', 'accepted')",
            params![format!("e{n}"), key],
        )
        .expect("an event");
        conn.execute(
            "INSERT INTO customers (id, source, external_id, status, profile, order_key, merged_from, version,
                                    changed_at, change_seq)
                 VALUES (?1, 's', ?1, 'active', '{}', ?2, '[]', 1, 't', ?3)",
            params![format!("c{n}"), as_text(&order_keys[n]), n as i64],
        )
        .expect("a record");
    }
    conn.execute(
        "INSERT INTO merge_links (survivor, absorbed, order_key) VALUES ('c0', 'c1', ?1)",
        [as_text(&order_keys[0])],
    )
    .expect("a link");
    migrate(&mut conn).expect("migrate");

    for (n, (key, order_key)) in keys.iter().zip(&order_keys).enumerate() {
        let (kept, kind): (Vec<u8>, String) = conn
            .query_row(
                "SELECT dedupe_key, typeof(dedupe_key) FROM events WHERE id = ?1",
                [format!("e{n}")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the event");
        assert_eq!((kept.clone(), kind.as_str()), (pack_dedupe_key(key), "blob"));
        assert_eq!(unpack_dedupe_key(&kept).expect("a key"), *key);
        let packed: Vec<u8> = conn
            .query_row(
                "SELECT order_key FROM customers WHERE id = ?1",
                [format!("c{n}")],
                |r| r.get(0),
            )
            .expect("the record");
        assert_eq!(packed, pack_order_key(order_key));
        assert_eq!(unpack_order_key(&packed).expect("an order key"), *order_key);
    }
    assert_eq!(pack_dedupe_key(&keys[0]).len(), 33);
    assert_eq!(pack_dedupe_key(&keys[1]), keys[1].as_bytes());
    let link: Vec<u8> = conn
        .query_row("SELECT order_key FROM merge_links", [], |r| r.get(0))
        .expect("the link");
    assert_eq!(link, pack_order_key(&order_keys[0]));
    // Compaction still finds each record's applied event by its key.
    let applied = "SELECT COUNT(*) FROM events e
                   JOIN customers c ON c.id = 'c' || substr(e.id, 2) AND substr(c.order_key, 17) = e.dedupe_key";
    assert_eq!(count(&conn, applied), keys.len() as i64);
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
    let mut writer = Writer::open(
        &dir.path().join("clientele.db"),
        Arc::new(Notify::new()),
        limits,
        Clock::system(),
    )
    .expect("open");
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
    let store = SqliteStore::open(&dir.path().join("clientele.db"), Clock::system()).expect("open");
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
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
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
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
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
    match SqliteStore::open(&path, Clock::system()) {
        Err(StoreError::NewerSchema { found: 99, known }) => assert_eq!(known, MIGRATIONS.len()),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a newer store was opened"),
    }
}

#[tokio::test]
async fn a_store_whose_applied_migration_this_build_changed_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    SqliteStore::open(&path, Clock::system())
        .expect("a new store")
        .close()
        .await;
    Connection::open(&path)
        .and_then(|c| c.execute("UPDATE clientele_migrations SET checksum = x'00' WHERE version = 3", []))
        .expect("a checksum changed");
    match SqliteStore::open(&path, Clock::system()) {
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
    let store = SqliteStore::open(&dir.path().join("clientele.db"), Clock::system()).expect("open");
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
        mapped: testing::map(Kind::Vagaro.adapter(), &value, &settings),
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
    let store = SqliteStore::open(&dir.path().join("clientele.db"), Clock::system()).expect("open");
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

/// A pseudo-random mix of Vagaro and Treez deliveries over a few
/// customers, from `seed`: updates in and out of order, repeated bodies
/// and event ids (duplicates), merges both ways, changing emails, phones
/// and businesses, bodies no adapter maps (some naming a customer) and
/// events that are not customers'.
fn mixed_deliveries(seed: u64, count: usize) -> Vec<Delivery> {
    let mut state = seed;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let vagaro = testing::settings("vagaro", jiff::tz::TimeZone::UTC);
    let treez = testing::settings("treez", jiff::tz::TimeZone::UTC);
    let vagaro_body: serde_json::Value =
        serde_json::from_slice(include_bytes!("../../../tests/fixtures/vagaro-customer-updated.json")).expect("JSON");
    let treez_body: serde_json::Value =
        serde_json::from_slice(include_bytes!("../../../tests/fixtures/treez-customer.json")).expect("JSON");
    let mut bodies: Vec<(Kind, Vec<u8>)> = Vec::new();
    for i in 0..count {
        let (kind, body) = match next(10) {
            // A body sent before, again.
            0 if !bodies.is_empty() => bodies[next(bodies.len() as u64) as usize].clone(),
            1 => (Kind::Vagaro, br#"{"type": "customer", "payload": {}}"#.to_vec()),
            2 => (
                Kind::Treez,
                br#"{"event_type": "TICKET", "data": {"ticket_id": "t"}}"#.to_vec(),
            ),
            3..=5 => {
                let mut body = vagaro_body.clone();
                body["id"] = format!("event-{}", next(count as u64)).into();
                let payload = &mut body["payload"];
                payload["customerId"] = format!("V{}", next(6)).into();
                payload["modifiedDate"] = format!("2024-0{}-01T00:00:00Z", 1 + next(9)).into();
                payload["customerFirstName"] = format!("First{}", next(3)).into();
                payload["email"] = format!("v{}@example.com", next(4)).into();
                payload["mobilePhone"] = format!("914555{:04}", next(3)).into();
                payload["businessIds"] = serde_json::json!([format!("b{}", next(3)), format!("b{}", next(3))]);
                (Kind::Vagaro, serde_json::to_vec(&body).expect("JSON"))
            }
            _ => {
                let mut body = treez_body.clone();
                let data = &mut body["data"];
                // One of eight customers, or now and then one seen once or
                // twice (its `created` envelope stays its last).
                let me = if next(4) == 0 { 8 + next(count as u64) } else { next(8) };
                data["customer_id"] = me.to_string().into();
                data["last_update"] = format!("2026-0{}-24T11:38:21.000-07:00", 1 + next(9)).into();
                data["first_name"] = format!("Jules{}", next(3)).into();
                data["email"] = match next(4) {
                    0 => serde_json::Value::Null,
                    // Read with a warning: a creation that is not composed.
                    3 => serde_json::json!(["not", "an", "address"]),
                    n => format!("t{n}@example.com").into(),
                };
                data["phone"] = format!("(310) 555-01{:02}", next(4)).into();
                match next(4) {
                    0 => data["merged_into_customer_id"] = ((me + 1 + next(7)) % 8).to_string().into(),
                    1 => data["merged_customer_ids"] = serde_json::json!([((me + 1 + next(7)) % 8).to_string()]),
                    _ => {}
                }
                (Kind::Treez, serde_json::to_vec(&body).expect("JSON"))
            }
        };
        bodies.push((kind, body));
        let _ = i;
    }
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, (kind, body))| {
            let settings = if kind == Kind::Vagaro { &vagaro } else { &treez };
            let at: UtcMillis = format!("2025-01-01T00:00:{:02}.{:03}Z", i / 1000, i % 1000)
                .parse()
                .expect("a time");
            crate::sources::delivery::delivery(kind, settings, |_| None, body, at).expect("JSON")
        })
        .collect()
}

/// Every row of the tables an ingest writes, in their order, and the
/// answers; ids made and times taken while keeping (event and envelope
/// ids, `changedAt`, `createdDate`) replaced by their order of appearance.
fn dump(path: &Path, answers: &[IngestOutcome]) -> String {
    let conn = Connection::open(path).expect("open");
    let mut out = format!("{answers:#?}\n");
    let mut compressed: BTreeMap<&str, i64> = BTreeMap::new();
    for (table, order) in [
        ("events", "seq"),
        ("customers", "rowid"),
        ("history", "seq"),
        ("outbox", "seq"),
        ("merge_links", "survivor, absorbed"),
        ("customer_phones", "e164, customer_id"),
        ("customer_businesses", "business_id, customer_id"),
        ("customer_names", "word, customer_id"),
        ("event_mentions", "key, event_seq"),
        ("outbox_heads", "customer_id, seq"),
        ("version_floors", "customer_id"),
        ("sqlite_sequence", "name"),
    ] {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .expect(table);
        let width = statement.column_count();
        let codec = (0..width).find(|&i| matches!(statement.column_name(i), Ok("codec" | "profile_codec")));
        let packed = ["body", "entry", "profile"];
        let packed = (0..width).find(|&i| matches!(statement.column_name(i), Ok(name) if packed.contains(&name)));
        let ids: Vec<bool> = (0..width)
            .map(|i| matches!(statement.column_name(i), Ok("id" | "event_id")))
            .collect();
        let mut rows = statement.query([]).expect(table);
        out.push_str(&format!("{table}:\n"));
        while let Some(row) = rows.next().expect(table) {
            for (i, &is_id) in ids.iter().enumerate() {
                if let (Some(codec), Some(packed)) = (codec, packed)
                    && i == packed
                    && let value = row.get_ref(i).expect("a packed column")
                    && value != rusqlite::types::ValueRef::Null
                {
                    let bytes = kept_bytes(value);
                    let codec: i64 = row.get(codec).expect("a codec");
                    if codec == composed::COMPOSED {
                        out.push_str("COMPOSED|");
                        continue;
                    }
                    *compressed.entry(table).or_default() += i64::from(codec != compress::RAW);
                    let bytes = compress::unpack(codec, bytes).expect("unpacked");
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('|');
                    continue;
                }
                let value = match row.get_ref(i).expect("a column") {
                    id @ rusqlite::types::ValueRef::Blob(_) if is_id => KeptId::column_result(id).expect("an id").0,
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    other => format!("{other:?}"),
                };
                out.push_str(&value);
                out.push('|');
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("compressed rows: {compressed:?}\n"));
    let today = &UtcMillis::now().to_string()[..11];
    normalized(&out, today)
}

/// `text` with each id made while keeping (`evt_…`, `erasure_…`: a
/// prefix and 32 hex digits) replaced by its number of appearance, and
/// each time of `today` (`YYYY-MM-DDT`) by `NOW`.
fn normalized(text: &str, today: &str) -> String {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["evt_", "erasure_", today]
            .into_iter()
            .filter_map(|prefix| rest.find(prefix).map(|at| (at, prefix)))
            .min();
        let Some((at, prefix)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let end = if prefix == today {
            out.push_str("NOW");
            at + rest[at..].find('Z').expect("a time ends in Z") + 1
        } else {
            let end = at + prefix.len() + 32;
            let n = ids.len();
            let n = *ids.entry(&rest[at..end]).or_insert(n);
            out.push_str(&format!("ID{n}"));
            end
        };
        rest = &rest[end..];
    }
}

/// What one store keeps of `before` one by one, then `batch` one by one
/// (`bulk` false) or as import batches of `size`.
async fn keeping(before: &[Delivery], batch: Vec<Delivery>, bulk: bool, size: usize) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    store.send(subscription()).await.expect("a subscription");
    for d in before {
        store.ingest(clone(d)).await.expect("a delivery");
    }
    // An erased customer: its deliveries are suppressed, claims on it dropped.
    let erased = before
        .iter()
        .rev()
        .find_map(|d| match &d.mapped {
            Ok(Mapped::Customer(event)) if event.customer.source == "treez" => Some(event.customer.id.clone()),
            _ => None,
        })
        .expect("a Treez customer");
    assert_eq!(store.erase(erased).await.expect("an erasure"), Erasure::Erased);
    // A rebuild of Vagaro's customers that made none again (no body maps
    // any more): their records are gone, the ends of their chains of
    // envelopes kept; and the version floors a rebuild stopped midway left
    // (before rebuilds were atomic).
    let remap: Remap = Arc::new(|_, _| None);
    let mut rebuild = store
        .begin_rebuild(vec!["vagaro".into()], remap)
        .await
        .expect("a rebuild");
    while rebuild.replay(50).await.expect("a replay") {}
    rebuild.finish(50).await.expect("the swap");
    Connection::open(&path)
        .expect("a writer")
        .execute_batch(
            "INSERT INTO version_floors (customer_id, version)
             SELECT customer_id, MAX(version) FROM outbox WHERE source = 'vagaro' GROUP BY customer_id",
        )
        .expect("floors");
    let mut answers = Vec::new();
    if bulk {
        let mut batch = batch.into_iter().peekable();
        while batch.peek().is_some() {
            let part: Vec<Delivery> = batch.by_ref().take(size).collect();
            answers.extend(store.ingest_batch(part, Publish::Yes).await.expect("a batch"));
        }
    } else {
        for d in batch {
            answers.push(store.ingest(d).await.expect("a delivery"));
        }
    }
    store.close().await;
    dump(&path, &answers)
}

fn clone(d: &Delivery) -> Delivery {
    Delivery {
        source: d.source.clone(),
        dedupe_key: d.dedupe_key.clone(),
        received_at: d.received_at,
        headers: d.headers.clone(),
        body: d.body.clone(),
        mapped: d.mapped.clone(),
        mentions: d.mentions.clone(),
    }
}

/// Fails with the first line where two [`dump`]s differ.
fn assert_same_dump(expected: (&str, &str), actual: (&str, &str), case: &str) {
    if expected.1 == actual.1 {
        return;
    }
    let first = expected
        .1
        .lines()
        .zip(actual.1.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{}: {a}\n{}: {b}", expected.0, actual.0));
    panic!("{case}: the stores differ; first difference:\n{first:?}");
}

#[tokio::test]
async fn a_bulk_batch_keeps_what_deliveries_one_by_one_keep() {
    for seed in [1, 2, 3] {
        let deliveries = mixed_deliveries(seed, 400);
        let (before, batch) = deliveries.split_at(100);
        let one_by_one = keeping(before, batch.iter().map(clone).collect(), false, 0).await;
        for size in [1, 37, 300] {
            let bulk = keeping(before, batch.iter().map(clone).collect(), true, size).await;
            assert_same_dump(
                ("one by one", &one_by_one),
                ("in bulk", &bulk),
                &format!("seed {seed}, batches of {size}"),
            );
        }
        assert!(one_by_one.contains("Duplicate"), "seed {seed}: no duplicate tried");
        assert!(
            one_by_one.contains("COMPOSED"),
            "seed {seed}: no envelope kept composed"
        );
        assert!(
            one_by_one.contains("Suppressed"),
            "seed {seed}: no erased customer tried"
        );
        assert!(one_by_one.contains("Stale"), "seed {seed}: no stale event tried");
        for table in ["customers", "events", "history", "outbox"] {
            assert!(
                one_by_one.contains(&format!("{table:?}: ")),
                "seed {seed}: no {table} row compressed"
            );
        }
    }
}

/// Imports `deliveries` in batches of 100 into a store that holds only a
/// subscription, staged (`open_for_import`) or through the WAL; returns
/// what the store keeps once the import is done.
async fn imported(path: &Path, deliveries: &[Delivery], staged: bool) -> String {
    let store = SqliteStore::open(path, Clock::system()).expect("open");
    store.send(subscription()).await.expect("a subscription");
    store.close().await;
    let (store, staging) = if staged {
        SqliteStore::open_for_import(path, Clock::system()).expect("open for an import")
    } else {
        (SqliteStore::open(path, Clock::system()).expect("open"), None)
    };
    assert_eq!(staging.is_some(), staged, "a store with no customer is staged");
    let mut answers = Vec::new();
    for part in deliveries.chunks(100) {
        let part = part.iter().map(clone).collect();
        answers.extend(store.ingest_batch(part, Publish::Yes).await.expect("a batch"));
    }
    store.close().await;
    if let Some(staging) = staging {
        // Until the copy is in place, the store stays locked.
        assert!(matches!(
            SqliteStore::open(path, Clock::system()),
            Err(StoreError::InUse { .. })
        ));
        staging.finish().expect("the copy put in place");
    }
    dump(path, &answers)
}

/// A first import loaded into a copy without a journal keeps exactly the
/// rows the WAL's path keeps, and leaves a store as `serve` makes them:
/// WAL mode, incremental vacuum, nothing beside it but its lock.
#[tokio::test]
async fn a_staged_import_keeps_what_a_journaled_one_keeps() {
    let deliveries = mixed_deliveries(4, 300);
    let (journaled, staged) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let through_wal = imported(&journaled.path().join("clientele.db"), &deliveries, false).await;
    let path = staged.path().join("clientele.db");
    let loaded = imported(&path, &deliveries, true).await;
    assert!(
        through_wal.contains("Stale") && through_wal.contains("Duplicate"),
        "{through_wal}"
    );
    assert_same_dump(("through the WAL", &through_wal), ("staged", &loaded), "a first import");
    let conn = Connection::open(&path).expect("the store");
    let pragma = |name: &str| {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
            .expect(name)
    };
    use rusqlite::types::Value::{Integer, Text};
    assert_eq!(pragma("journal_mode"), Text("wal".into()));
    assert_eq!(
        pragma("auto_vacuum"),
        Integer(2),
        "incremental vacuum, as the store it copied"
    );
    assert_eq!(pragma("integrity_check"), Text("ok".into()));
    drop(conn);
    let mut beside: Vec<String> = std::fs::read_dir(staged.path())
        .expect("the folder")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["clientele.db", "clientele.db.lock"]);
}

/// A first import into a store that a stopped process left with a commit
/// in its WAL keeps that commit, in the store's own file before the copy
/// is made (so that no stop while the copy takes its place loses it), and
/// the store's permissions.
#[cfg(unix)]
#[tokio::test]
async fn a_staged_import_keeps_the_stores_wal_commits_and_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let (made, stopped) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = SqliteStore::open(&made.path().join("clientele.db"), Clock::system()).expect("open");
    store.send(subscription()).await.expect("a subscription");
    store.close().await;
    let moved = "http://127.0.0.1:9/moved";
    let writer = Connection::open(made.path().join("clientele.db")).expect("a connection");
    writer
        .execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; UPDATE subscriptions SET url = '{moved}'"
        ))
        .expect("a commit in the WAL");
    for file in ["clientele.db", "clientele.db-wal"] {
        std::fs::copy(made.path().join(file), stopped.path().join(file)).expect("the files a stop leaves");
    }
    drop(writer);
    let path = stopped.path().join("clientele.db");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("a private store");
    let url = |path: &Path| -> String {
        let conn = Connection::open(path).expect("open");
        conn.query_row("SELECT url FROM subscriptions", [], |r| r.get(0))
            .expect("the subscription")
    };

    // Another connection open, idle: SQLite would not checkpoint the WAL
    // when the import's connections close.
    let idle = Connection::open(&path).expect("another connection");
    assert_eq!(count(&idle, "SELECT COUNT(*) FROM subscriptions"), 1);
    let (store, staging) = SqliteStore::open_for_import(&path, Clock::system()).expect("open for an import");
    let alone = stopped.path().join("alone.db");
    std::fs::copy(&path, &alone).expect("the store's file alone");
    assert_eq!(
        url(&alone),
        moved,
        "the WAL's commit is in the store's file before the copy"
    );
    drop(idle);
    let batch = vec![delivery_of(1, "2025-01-01T00:00:00Z", "first")];
    store.ingest_batch(batch, Publish::Yes).await.expect("a batch");
    store.close().await;
    staging.expect("staged").finish().expect("the copy put in place");

    assert_eq!(url(&path), moved);
    let mode = std::fs::metadata(&path).expect("the store").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the store's permissions, not the copy's");
}

/// An import that stops before its copy is in place (an error, or a crash
/// that leaves the copy behind) leaves the store as it was; the next open
/// removes the copy. A store that holds a customer is not staged.
#[tokio::test]
async fn a_staged_import_that_stops_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    store.send(subscription()).await.expect("a subscription");
    store.close().await;
    let before = dump(&path, &[]);
    let staging_file = dir.path().join("clientele.db.staging");
    for crash in [false, true] {
        let (store, staging) = SqliteStore::open_for_import(&path, Clock::system()).expect("open for an import");
        let staging = staging.expect("staged");
        let batch = vec![delivery_of(1, "2025-01-01T00:00:00Z", "first")];
        store.ingest_batch(batch, Publish::Yes).await.expect("a batch");
        store.close().await;
        assert!(staging_file.exists());
        // A crash leaves the copy (and lets the lock go, which a test
        // process cannot do but by dropping it).
        let left = dir.path().join("left");
        std::fs::copy(&staging_file, &left).expect("the copy kept aside");
        drop(staging);
        if crash {
            std::fs::rename(&left, &staging_file).expect("the copy left behind");
            SqliteStore::open(&path, Clock::system()).expect("open").close().await;
        }
        assert!(!staging_file.exists(), "crash {crash}: the copy is removed");
        assert_eq!(dump(&path, &[]), before, "crash {crash}: the store is as it was");
    }
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    store.send(customer()).await.expect("a customer");
    store.close().await;
    let (store, staging) = SqliteStore::open_for_import(&path, Clock::system()).expect("open for an import");
    assert!(
        staging.is_none(),
        "a store that holds a customer is written through the WAL"
    );
    store.close().await;
}

/// A staged import keeps its records in one transaction, committed when
/// the store closes: none reaches the copy's file before. A write that
/// fails ends it: every later write is refused, and the copy, whose
/// transaction did not commit, is not put in the store's place.
#[tokio::test]
async fn a_staged_import_is_one_transaction_that_a_failed_write_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    for fails in [false, true] {
        let path = dir.path().join(format!("fails-{fails}.db"));
        SqliteStore::open(&path, Clock::system()).expect("open").close().await;
        let before = dump(&path, &[]);
        let staging_file = dir.path().join(format!("fails-{fails}.db.staging"));
        let (store, staging) = SqliteStore::open_for_import(&path, Clock::system()).expect("open for an import");
        let staging = staging.expect("staged");
        let first = vec![delivery_of(1, "2025-01-01T00:00:00Z", "first")];
        store.ingest_batch(first, Publish::Yes).await.expect("a batch");
        let reader = Connection::open(&staging_file).expect("a reader of the copy");
        assert_eq!(
            count(&reader, "SELECT COUNT(*) FROM customers"),
            0,
            "nothing is committed before the store closes"
        );
        drop(reader);
        if fails {
            let failed = store
                .write(|conn| Ok(conn.execute_batch("INSERT INTO no_such_table VALUES (1)")?))
                .await;
            assert!(failed.is_err(), "the write fails");
        }
        let second = vec![delivery_of(2, "2025-01-02T00:00:00Z", "second")];
        let later = store.ingest_batch(second, Publish::Yes).await;
        store.close().await;
        if fails {
            assert!(
                matches!(&later, Err(StoreError::Unavailable(why)) if why.contains("an earlier write of this import failed")),
                "{later:?}"
            );
            let error = staging.finish().expect_err("the copy is not put in place");
            assert!(error.to_string().contains("did not commit"), "{error}");
            assert!(!staging_file.exists(), "the copy is removed");
            assert_eq!(dump(&path, &[]), before, "the store is as it was");
        } else {
            later.expect("a second batch");
            staging.finish().expect("the copy is put in place");
            let store = Connection::open(&path).expect("open");
            assert_eq!(count(&store, "SELECT COUNT(*) FROM customers"), 2);
        }
    }
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
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
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
        Some(testing::map(Kind::Vagaro.adapter(), &value, &settings))
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

/// Events not accepted are listed through the index by status, which
/// holds only them (migration 22); accepted ones in `seq` order.
#[tokio::test]
async fn events_not_accepted_are_listed_through_the_index_by_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    store.close().await;
    let conn = Connection::open(&path).expect("the store's file");
    let plan = |status| {
        let sql = format!("EXPLAIN QUERY PLAN {}", events_by_status("seq", status));
        let mut stmt = conn.prepare(&sql).expect("a plan");
        let steps = stmt
            .query_map(params!["", 0, 1], |r| r.get::<_, String>(3))
            .expect("its rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("its rows");
        steps.join("; ")
    };
    for status in [EventStatus::Quarantined, EventStatus::Ignored] {
        let plan = plan(status);
        assert!(plan.contains("INDEX events_status"), "{status:?}: {plan}");
    }
    let plan = plan(EventStatus::Accepted);
    assert!(!plan.contains("events_status"), "{plan}");
    let indexed = "SELECT sql FROM sqlite_master WHERE name = 'events_status'";
    let sql: String = conn.query_row(indexed, [], |r| r.get(0)).expect("the index");
    assert!(sql.ends_with("WHERE status <> 'accepted'"), "{sql}");
}

/// A name search finds the same customers, a page at a time, whether it
/// starts from a rare word's rows or checks a common word along the change
/// feed (`name_clause`'s two plans).
#[tokio::test]
async fn a_name_search_pages_alike_from_a_rare_word_or_along_the_feed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    for n in 1..=3 {
        store.send(customer_numbered(Some(n))).await.expect("a delivery");
    }
    // "smith" made common: rows of customers the directory does not hold.
    let conn = Connection::open(&path).expect("a second connection");
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO customer_names (word, customer_id) SELECT 'smith', 'ghost-' || i FROM n",
        [RARE_WORD],
    )
    .expect("the rows");
    let pages = |name: &str| {
        let store = &store;
        let name = name.to_owned();
        async move {
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let query = CustomerQuery {
                    name: Some(name.clone()),
                    limit: 2,
                    after,
                    ..CustomerQuery::default()
                };
                let page = store.customers(query).await.expect("a page");
                pages.push(page.items.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
                match page.next {
                    Some(next) => after = Some(next),
                    None => return pages,
                }
            }
        }
    };
    let expected = [
        vec!["vagaro:customer-1".to_owned(), "vagaro:customer-2".to_owned()],
        vec!["vagaro:customer-3".to_owned()],
    ];
    assert_eq!(pages("Smith").await, expected, "along the feed");
    assert_eq!(pages("smith JOHNNY").await, expected, "from the rare word");
    assert_eq!(pages("smith nobody").await, [Vec::<String>::new()]);
    store.close().await;
}

/// A person kept as JSON text before version 20 still reads; one written
/// since is kept compressed and reads back as written. Its changes reach
/// the outbox only while a subscription asks for persons.
#[tokio::test]
async fn persons_keep_their_documents_compressed_and_their_changes_only_when_asked() {
    use crate::persons::Decider;
    use crate::store::persons::{Evidence, Link, PersonDoc, PersonWrite, Persons, Resolution};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let doc = PersonDoc {
        customer_ids: vec!["vagaro:a".into(), "vagaro:b".into()],
        links: vec![Link {
            customers: ["vagaro:a".into(), "vagaro:b".into()],
            score: 12.5,
            evidence: vec![Evidence {
                field: "email".into(),
                comparison: "exact".into(),
                weight: 9.1,
            }],
            decided_by: Decider::Model,
        }],
    };
    let json = serde_json::to_string(&doc).expect("json");
    {
        let conn = schema_before(&path, 20);
        conn.execute(
            "INSERT INTO persons (id, doc, created_at, changed_at, seq)
                 VALUES ('per_old', ?1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1)",
            [&json],
        )
        .expect("a person");
        conn.execute("UPDATE person_resolver SET person_seq = 1", [])
            .expect("the resolver");
    }
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    let (old, _) = store.person("per_old".into()).await.expect("a read").expect("kept");
    assert_eq!(
        (old.customer_ids, old.links),
        (doc.customer_ids.clone(), doc.links.clone())
    );

    let step = |from: i64, id: &str| Resolution {
        upserts: vec![PersonWrite {
            id: id.into(),
            doc: doc.clone(),
            created: true,
        }],
        ..resolving_nothing(from)
    };
    let until = UtcMillis::now().as_millisecond() + 60_000;
    let position = store
        .lease_resolver("test".into(), until)
        .await
        .expect("a lease")
        .expect("free");
    assert!(
        store
            .commit_resolution("test".into(), step(position, "per_new"))
            .await
            .expect("a step")
    );
    let (new, _) = store.person("per_new".into()).await.expect("a read").expect("kept");
    assert_eq!(
        (new.customer_ids, new.links),
        (doc.customer_ids.clone(), doc.links.clone())
    );

    let mut customers_only = match subscription() {
        Op::CreateSubscription(s) => s,
        _ => unreachable!("a subscription"),
    };
    customers_only.types = vec!["customer".into()];
    store.create_subscription(customers_only).await.expect("a subscription");
    assert!(
        store
            .commit_resolution("test".into(), step(position, "per_second"))
            .await
            .expect("a step")
    );
    let mut persons = match subscription() {
        Op::CreateSubscription(s) => s,
        _ => unreachable!("a subscription"),
    };
    persons.id = "sub_persons".into();
    persons.types = vec!["person".into()];
    persons.enabled = false;
    store.create_subscription(persons).await.expect("a subscription");
    assert!(
        store
            .commit_resolution("test".into(), step(position, "per_third"))
            .await
            .expect("a step")
    );
    store.close().await;

    let conn = Connection::open(&path).expect("open");
    let kept = compressed_length(
        &conn,
        "SELECT codec, typeof(doc), length(doc) FROM persons WHERE id = 'per_new'",
    );
    assert!((kept as usize) < json.len(), "{kept} of {}", json.len());
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM persons WHERE id = 'per_old' AND codec = 0"),
        1
    );
    // Only the step after a subscription (disabled, too) asked for persons.
    let rows: Vec<String> = conn
        .prepare("SELECT customer_id FROM outbox WHERE source = '@person'")
        .expect("a statement")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, ["per_third"]);
}

/// The history a store reads shows an entry kept composed as the entry it
/// was composed from: the creation, with its event's id and time.
#[tokio::test]
async fn a_history_read_shows_a_composed_entry_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    let Answer::Ingest(IngestOutcome::Accepted { event_id, .. }) = store.send(customer()).await.expect("kept") else {
        panic!("not accepted");
    };
    let reader = Connection::open(&path).expect("a reader");
    assert_eq!(count(&reader, "SELECT codec FROM history"), composed::COMPOSED);
    let (id, received_at): (String, String) = reader
        .query_row("SELECT customer_id, received_at FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the event");
    let page = store
        .history(HistoryQuery {
            customer_id: id.clone(),
            limit: 10,
            after: None,
        })
        .await
        .expect("read")
        .expect("the customer's");
    let record = load_record(&reader, &id).expect("read").expect("the record");
    assert_eq!(
        page.items,
        [HistoryEntry {
            event_id,
            received_at: received_at.parse().expect("a time"),
            order_key: record.order_key.clone().expect("an order key"),
            action: Action::Created,
            outcome: Outcome::Applied,
            changes: directory::diff(None, &record.to_customer()),
            warnings: Vec::new(),
        }]
    );
    store.close().await;
}

/// A review kept with JSON evidence before version 24 still reads; one
/// opened since keeps its evidence compressed and reads back as opened.
#[tokio::test]
async fn reviews_keep_their_evidence_compressed() {
    use crate::persons::Decider;
    use crate::store::persons::{Evidence, Link, Persons, Resolution};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clientele.db");
    let review = |a: &str, b: &str| Link {
        customers: [a.into(), b.into()],
        score: 8.44,
        evidence: ["given_name", "family_name", "street", "postcode", "city"]
            .into_iter()
            .map(|field| Evidence {
                field: field.into(),
                comparison: "typo".into(),
                weight: 4.0,
            })
            .collect(),
        decided_by: Decider::Model,
    };
    let old = review("vagaro:a", "vagaro:b");
    {
        let conn = schema_before(&path, 24);
        conn.execute(
            "INSERT INTO person_reviews (id, a, b, score, evidence, status, created_at)
                 VALUES ('rev_old', 'vagaro:a', 'vagaro:b', 8.44, ?1, 'open', '2026-01-01T00:00:00.000Z')",
            [serde_json::to_string(&old.evidence).expect("json")],
        )
        .expect("a review");
    }
    let store = SqliteStore::open(&path, Clock::system()).expect("open");
    let new = review("vagaro:c", "vagaro:d");
    let position = store
        .lease_resolver("test".into(), UtcMillis::now().as_millisecond() + 60_000)
        .await
        .expect("a lease")
        .expect("free");
    let step = Resolution {
        reviews: vec![new.clone()],
        ..resolving_nothing(position)
    };
    assert!(store.commit_resolution("test".into(), step).await.expect("a step"));
    let page = store.reviews(None, 10, None).await.expect("the reviews");
    let read: Vec<_> = page
        .items
        .iter()
        .map(|r| (r.customers.clone(), r.evidence.clone()))
        .collect();
    assert_eq!(
        read,
        [(old.customers, old.evidence), (new.customers, new.evidence.clone())]
    );
    store.close().await;

    let conn = Connection::open(&path).expect("open");
    let kept = compressed_length(
        &conn,
        "SELECT codec, typeof(evidence), length(evidence) FROM person_reviews WHERE a = 'vagaro:c'",
    );
    let json = serde_json::to_string(&new.evidence).expect("json").len() as i64;
    assert!(kept < json / 2, "{kept} of {json}");
}

/// A resolver's step from `position` that stays there and writes nothing.
fn resolving_nothing(position: i64) -> crate::store::persons::Resolution {
    crate::store::persons::Resolution {
        from: position,
        to: position,
        applied: Vec::new(),
        upserts: Vec::new(),
        deleted: Vec::new(),
        aliases: Vec::new(),
        members: Vec::new(),
        gone: Vec::new(),
        reviews_of: Vec::new(),
        reviews_among: Vec::new(),
        reviews: Vec::new(),
        at: UtcMillis::now(),
    }
}

/// The length of the value that `sql` reads as its codec, storage class
/// and length, after checking that it is kept compressed, as a BLOB.
fn compressed_length(conn: &Connection, sql: &str) -> i64 {
    let (codec, kind, kept): (i64, String, i64) = conn
        .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect(sql);
    assert_ne!(codec, compress::RAW);
    assert_eq!(kind, "blob");
    kept
}
