//! A full disk is a fault survived (SPEC §7, §12): with the embedded store
//! on a small file system of its own, filling it makes deliveries answer
//! `503` with `Retry-After`, never a `200` that was not kept, and never
//! corrupts the store; once space returns, ingest resumes without a
//! restart and every acknowledged delivery is there. On Postgres a full
//! disk is the server's error `53100`, which the store maps to the same
//! `503` (a real full disk on the shared test server is not practical).

use crate::util;

use std::io::Write;
use std::path::{Path, PathBuf};

use clientele::store::StoreError;
use reqwest::StatusCode;
use serde_json::json;
use util::{TestApp, TestStore, treez, with};

const T1: &str = "2026-04-01T00:00:00Z";

/// A size-capped tmpfs mounted on a temporary directory, unmounted when
/// dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one of `size` (as `mount -o size=` takes it); `None` where
    /// mounting is impossible (not root, no `mount`), unless under CI,
    /// where the test must run.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { dir }),
            outcome => {
                let why = match outcome {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "under CI a small file system must be mounted: {why}"
                );
                println!("skipped: cannot mount a small file system here ({})", why.trim());
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system of `dir` with a file, `ballast`, up to the last
/// byte it takes, then gives `leave` bytes of it back.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("the ballast");
    let chunk = vec![0xA5_u8; 16 * 1024];
    let mut written = 0_u64;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // What a failed write left partly written is dropped with the rest.
    file.set_len(written.saturating_sub(leave)).expect("space given back");
    file.sync_all().expect("the ballast synced");
    path
}

#[tokio::test]
async fn a_full_disk_answers_503_keeps_every_200_and_ingest_resumes_when_space_returns() {
    if TestStore::chosen() != TestStore::Sqlite {
        println!("skipped: the embedded store's disk; Postgres's disk full is a_full_postgres_disk_is_unavailable");
        return;
    }
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let app = TestApp::builder().spawn_in(disk.path()).await;
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    let ballast = fill(disk.path(), 256 * 1024);

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut n = 0;
    // Until the disk has refused a good many deliveries in a row.
    while refused < 20 {
        n += 1;
        assert!(n < 5_000, "the disk never filled");
        let id = format!("full-{n}");
        let body = with(treez("shop", &id, T1), "/data/last_name", json!("X".repeat(2000)));
        let response = util::source_auth("treez", app.client.post(app.url("/webhooks/treez")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("delivery {n}: {e}"));
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let (_, answer) = util::read(response).await;
        match status {
            StatusCode::OK => {
                assert_eq!(answer["status"], "accepted", "{answer}");
                acknowledged.push(format!("treez:shop:{id}"));
                refused = 0;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "a 503 says when to retry: {answer}");
                refused += 1;
            }
            other => panic!("delivery {n} answered {other}: {answer}"),
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "some deliveries were kept before the disk filled"
    );
    println!(
        "{} deliveries kept, then the disk refused {refused} in a row",
        acknowledged.len()
    );

    // Space comes back: ingest resumes, without a restart.
    std::fs::remove_file(&ballast).expect("the ballast removed");
    let body = treez("shop", "after", T1);
    let deadline = std::time::Instant::now() + util::SAFETY;
    loop {
        let (status, answer) = app.deliver_json("treez", &body).await;
        if status == StatusCode::OK {
            acknowledged.push("treez:shop:after".into());
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(std::time::Instant::now() < deadline, "ingest never resumed: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for id in &acknowledged {
        assert_eq!(
            app.customer(id).await["id"],
            id.as_str(),
            "an acknowledged delivery is kept"
        );
    }
    app.stop().await;

    let db = rusqlite::Connection::open(disk.path().join("clientele.db")).expect("the store");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("an integrity check");
    assert_eq!(check, "ok");
    let kept: i64 = db
        .query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))
        .expect("the customers");
    assert_eq!(
        kept as usize,
        acknowledged.len(),
        "nothing kept that was not acknowledged"
    );
}

/// Postgres out of disk answers `53100 disk_full`; the store takes it for
/// [`StoreError::Unavailable`], which the HTTP edge answers `503` with
/// `Retry-After` (as for a database out of reach, `instances.rs`).
#[tokio::test]
async fn a_full_postgres_disk_is_unavailable() {
    if TestStore::chosen() != TestStore::Postgres {
        println!("skipped: Postgres's error; the embedded store's disk is the test above");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut db = util::postgres::store_connection(dir.path()).await;
    let error = sqlx::query(
        "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$",
    )
    .execute(&mut db)
    .await
    .expect_err("the server's error");
    let error = StoreError::from(error);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}
