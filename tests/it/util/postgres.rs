//! The suite on Postgres (`CLIENTELE_TEST_STORE=postgres`): each test's store
//! is a schema of its own in one test database, named after the test's store
//! directory, so that an app restarted on the same directory finds its data
//! again and tests running side by side never see each other's.
//!
//! The database is `CLIENTELE_TEST_POSTGRES` (by default
//! `postgres://postgres@127.0.0.1:5432/clientele_test`); it and the schemas
//! are created on first use. CI drops the database before a run, so that
//! schemas do not pile up.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const DEFAULT_BASE: &str = "postgres://postgres@127.0.0.1:5432/clientele_test";

/// The test database's URL, without a schema.
fn base() -> String {
    std::env::var("CLIENTELE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_BASE.to_owned())
}

fn options(url: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url).unwrap_or_else(|e| panic!("{url} is a Postgres URL: {e}"))
}

/// The schema holding the store of `dir`: the same for the same path.
pub fn schema(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("t_{}", hex::encode(&digest[..8]))
}

/// The store URL for `dir`: the test database, with the search path set to
/// the directory's schema, which exists when this returns.
pub fn url(dir: &Path) -> String {
    let schema = schema(dir);
    ensure_schema(&schema);
    let base = base();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options[search_path]={schema}")
}

/// [`url`], but reaching the database at `address` (a proxy) instead of
/// its own host and port.
pub fn url_via(dir: &Path, address: SocketAddr) -> String {
    let url = url(dir);
    let authority = url.find("://").expect("a URL with a scheme") + 3;
    let end = url[authority..].find(['/', '?']).map_or(url.len(), |i| authority + i);
    let host = url[authority..end]
        .rfind('@')
        .map_or(authority, |at| authority + at + 1);
    format!("{}{address}{}", &url[..host], &url[end..])
}

/// The test database's host and port, for a proxy to forward to.
pub fn server() -> (String, u16) {
    let options = options(&base());
    (options.get_host().to_owned(), options.get_port())
}

async fn connect(options: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options).await.unwrap_or_else(|e| {
        panic!(
            "CLIENTELE_TEST_STORE=postgres, but no connection to {}:{}: {e}. Start PostgreSQL, or unset \
             CLIENTELE_TEST_STORE to test on SQLite.",
            options.get_host(),
            options.get_port()
        )
    })
}

/// Schemas known to exist, for the whole test process.
static READY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Creates the test database if it is missing, and `schema` in it, once per
/// process. Synchronous, for [`super::config_text`]: the work runs on a
/// thread of its own with its own runtime, since the caller may itself be
/// on a runtime's thread, where no other runtime may block.
fn ensure_schema(schema: &str) {
    // Held throughout, so that this process's tests do not race each other
    // to create the database.
    let mut ready = READY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let ready = ready.get_or_insert_with(HashSet::new);
    if ready.contains(schema) {
        return;
    }
    let owned = schema.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(create(&owned))
    })
    .join()
    .expect("the schema is created");
    ready.insert(schema.to_owned());
}

async fn create(schema: &str) {
    let options = options(&base());
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = connect(&options.clone().database("postgres")).await;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .expect("pg_database is readable");
    if !exists {
        let created = sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await;
        // Another test process may have created it meanwhile: a duplicate
        // database, or the catalogue's unique index noticing the race.
        if let Err(e) = created {
            let code = e.as_database_error().and_then(|d| d.code()).unwrap_or_default();
            assert!(["42P04", "23505"].contains(&&*code), "CREATE DATABASE {database}: {e}");
        }
    }
    admin.close().await.ok();
    let mut test = connect(&options).await;
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut test)
        .await;
    if let Err(e) = created {
        // IF NOT EXISTS does not guard against a concurrent creation.
        let code = e.as_database_error().and_then(|d| d.code()).unwrap_or_default();
        assert!(["42P06", "23505"].contains(&&*code), "CREATE SCHEMA {schema}: {e}");
    }
    test.close().await.ok();
}

/// Everything the store of `dir` holds, as bytes to search: every row of
/// every table of its schema as text, and the bytes of its `bytea` columns
/// (which the text form shows in hex).
pub async fn contents(dir: &Path) -> Vec<u8> {
    let schema = schema(dir);
    let mut db = connect(&options(&url(dir))).await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1")
            .bind(&schema)
            .fetch_all(&mut db)
            .await
            .expect("the schema's tables");
    assert!(!tables.is_empty(), "schema {schema} has tables");
    let mut everything = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{schema}\".\"{table}\" t"))
            .fetch_all(&mut db)
            .await
            .unwrap_or_else(|e| panic!("the rows of {table}: {e}"));
        let binary: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 AND data_type = 'bytea'",
        )
        .bind(&schema)
        .bind(&table)
        .fetch_all(&mut db)
        .await
        .expect("the table's columns");
        for row in rows {
            everything.extend(row.into_bytes());
            everything.push(b'\n');
        }
        for column in binary {
            let values: Vec<Option<Vec<u8>>> =
                sqlx::query_scalar(&format!("SELECT \"{column}\" FROM \"{schema}\".\"{table}\""))
                    .fetch_all(&mut db)
                    .await
                    .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
            for value in values.into_iter().flatten() {
                everything.extend(value);
                everything.push(b'\n');
            }
        }
    }
    db.close().await.ok();
    everything
}

/// A connection to the schema holding the store of `dir`.
pub async fn store_connection(dir: &Path) -> PgConnection {
    PgConnection::connect(&url(dir)).await.expect("the test database")
}

/// Takes the store's lock on `customer` (`src/store/postgres.rs`) in a
/// transaction of `db`, held until it ends.
pub async fn lock_customer(db: &mut PgConnection, customer: &str) {
    take_lock(db, "hashtext($1)", customer).await;
}

/// Waits until another session waits for the lock on `customer`: the
/// operation under test got that far.
pub async fn wait_for_a_waiter(db: &mut PgConnection, customer: &str) {
    wait_for_lock(db, "hashtext($1)", customer).await;
}

/// Waits until another session waits for the lock a transaction takes to
/// write outbox rows (`PUBLISH_LOCK` in `src/store/postgres.rs`).
pub async fn wait_for_a_publisher(db: &mut PgConnection) {
    wait_for_lock(db, PUBLISH_LOCK, "4").await;
}

/// The store's lock that outbox writers take, in a transaction of `db`,
/// held until it ends.
pub async fn lock_publishing(db: &mut PgConnection) {
    take_lock(db, PUBLISH_LOCK, "4").await;
}

/// The second key of the publish lock, of `$1` (its number).
const PUBLISH_LOCK: &str = "hashtext(current_schema()) # $1::int";

/// Takes the store's advisory lock whose second key is `key` (SQL) of
/// `arg` (`$1`) in a transaction of `db`, held until it ends.
async fn take_lock(db: &mut PgConnection, key: &str, arg: &str) {
    sqlx::query("BEGIN").execute(&mut *db).await.expect("a transaction");
    sqlx::query(&format!("SELECT pg_advisory_xact_lock(x'434c4e54'::int, {key})"))
        .bind(arg)
        .execute(&mut *db)
        .await
        .expect("the lock");
}

/// Waits until another session waits for the store's advisory lock whose
/// second key is `key` (SQL) of `arg` (`$1`).
async fn wait_for_lock(db: &mut PgConnection, key: &str, arg: &str) {
    let deadline = std::time::Instant::now() + super::SAFETY;
    loop {
        let waiting: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND classid = x'434c4e54'::int::bigint::oid AND objid = (({key})::bigint & 4294967295)::oid"
        ))
        .bind(arg)
        .fetch_one(&mut *db)
        .await
        .expect("pg_locks");
        if waiting > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "nothing waits for the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The rows an `EXPLAIN (ANALYZE, COSTS OFF)` plan's nodes produced or
/// threw away: each node's rows times its loops, and what its filters
/// removed.
pub fn rows_read(plan: &[String]) -> u64 {
    plan.iter()
        .map(|line| number_after(line, "rows=") * number_after(line, "loops=").max(1) + number_after(line, "Filter: "))
        .sum()
}

/// The rows an `EXPLAIN (ANALYZE, COSTS OFF)` plan returned: its top
/// node's.
pub fn rows_returned(plan: &[String]) -> u64 {
    plan.first().map_or(0, |top| number_after(top, "rows="))
}

/// The whole number after `key` in a plan's line, 0 without one; a
/// fraction (Postgres 18 prints rows as `80.00`) is cut off.
fn number_after(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
