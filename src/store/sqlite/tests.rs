//! The writer's batches, driven directly: what one command's failure does
//! to the commands committed beside it.

use super::*;

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
        mapped: Err(Unmappable("no customer id".into())),
    }))
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
    let mut writer = Writer::open(&dir.path().join("clientele.db"), Arc::new(Notify::new())).expect("open");
    let (first, answer) = command(unmappable("a"));
    writer.commit(&mut vec![first]);
    let erased = quarantined(answer);
    // Reprocessing an event whose body was erased fails.
    writer
        .conn
        .execute("UPDATE events SET redacted = 1 WHERE id = ?1", [&erased])
        .expect("redact");

    let (before, before_answer) = command(unmappable("b"));
    let (failing, failing_answer) = command(Op::Reprocess(
        erased.clone(),
        Err(Unmappable("still no customer id".into())),
        Publish::No,
    ));
    let (after, after_answer) = command(unmappable("c"));
    writer.commit(&mut vec![before, failing, after]);

    assert!(matches!(
        failing_answer.blocking_recv().expect("answered"),
        Err(StoreError::Redacted(id)) if id == erased
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
        rows,
        [
            ("a".to_owned(), erased),
            ("b".to_owned(), kept[0].clone()),
            ("c".to_owned(), kept[1].clone())
        ]
    );
}
