//! Test helpers: start the real Clientele on `127.0.0.1:0` with a fresh
//! store, and talk to it over HTTP like a platform, a subscriber or an
//! operator would.
//!
//! # Starting an app
//!
//! [`TestApp::spawn`] starts one with the suite's base configuration (three
//! sources, `vagaro`, `clientele` and `treez`; see [`Setup::new`]). To
//! change the configuration, start from [`TestApp::builder`], state each
//! change where it belongs, and start it:
//!
//! ```ignore
//! let app = TestApp::builder()
//!     .delivery_schedule(&["10ms", "10ms"])      // [delivery] retry_schedule
//!     .delivery_timeout("2s")                    // [delivery] timeout
//!     .source_setting("treez", "account", "shop") // a key of the `treez` source
//!     .http("body_timeout", "200ms")             // [http] body_timeout
//!     .setting("log_format", "json")             // a top-level key
//!     .spawn()                                   // on a store of its own
//!     .await;
//! ```
//!
//! Ending differently: `.spawn_in(dir)` (on the store of `dir`, which
//! outlives the app: restarts, a second instance), `.spawn_behind(&proxy,
//! dir)` (to Postgres through a [`proxy::Proxy`]), `.config_text(dir)` (the
//! TOML, for a file the real binary reads), `.config(dir)` (a parsed
//! `Config`), `.rebuild(dir)` (`clientele rebuild`). A `Setup` is `Clone`:
//! keep one to restart an app as it was. What used to be
//! `TestApp::spawn_with("rate_limit = 1")` (raw TOML that landed in the
//! last source, `treez`) is `.source_setting("treez", "rate_limit", 1)`.
//!
//! # Adding a test file
//!
//! A new area is a module here, not a new `tests/*.rs` binary: create
//! `tests/it/area.rs` with `use crate::util;` at the top (where a
//! stand-alone file had `mod util;`), and add `mod area;` to
//! `tests/it/main.rs`. Old call sites convert one to one:
//!
//! | before | now |
//! | --- | --- |
//! | `TestApp::spawn_with("[delivery]\nretry_schedule = [\"1h\"]\ntimeout = \"2s\"")` | `TestApp::builder().delivery_schedule(&["1h"]).delivery_timeout("2s").spawn()` |
//! | `TestApp::spawn_with("account = \"shop\"")` (landed in `treez`) | `TestApp::builder().source_setting("treez", "account", "shop").spawn()` |
//! | `TestApp::spawn_with("[http]\nbody_timeout = \"1h\"")` | `TestApp::builder().http("body_timeout", "1h").spawn()` |
//! | `TestApp::spawn_with("\n[[sources]]\nname = \"pos\"\nkind = \"treez\"…")` | `.source("pos", "treez").source_setting("pos", "tokens", vec!["t"])` |
//! | `TestApp::spawn_in(&dir, "")` | `TestApp::builder().spawn_in(&dir)` |
//! | `TestApp::spawn_behind(&proxy, &dir, "")` | `TestApp::builder().spawn_behind(&proxy, &dir)` |
//! | `config_text(&dir, extra)` | `TestApp::builder()….config_text(&dir)` |
//! | `util::rebuild(&config_text(&dir, ""))` | `TestApp::builder().rebuild(&dir)` |
//! | `Config::from_toml("test", &config_text(&dir, ""), …)` | `TestApp::builder().config(&dir)` |
//! | any other key | `.setting(key, value)` (top level), `.table_setting(table, key, value)` |
//!
//! # Waiting
//!
//! Never sleep and assert. Wait for a condition, with [`SAFETY`] as the
//! deadline that only guards against hangs: [`TestReceiver::wait_for`] /
//! `wait_until` for what a subscriber got, [`TestApp::wait_for_messages`] /
//! `wait_all` for the message API, [`TestApp::wait_fanned_out`] for every
//! change made into messages, and [`TestApp::wait_drained`] for the whole
//! outbox settled (nothing to fan out, no message pending).
//!
//! # Signatures
//!
//! [`assert_signed`] checks an outbound request with the `standardwebhooks`
//! crate, the Standard Webhooks reference library, not with Clientele's
//! own code.

pub mod console;
pub mod postgres;
pub mod proxy;
mod setup;

pub use setup::Setup;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use clientele::app::{self, AppError};
use clientele::config::Config;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "admin-token";
pub const VAGARO_TOKEN: &str = "vagaro-token";
pub const TREEZ_TOKEN: &str = "treez-token";
pub const CLIENTELE_TOKEN: &str = "clientele-token";

pub const VAGARO_EXAMPLE: &str = include_str!("../../fixtures/vagaro-customer-updated.json");
pub const TREEZ_EXAMPLE: &str = include_str!("../../fixtures/treez-customer.json");

/// The store the suite runs on, chosen by `CLIENTELE_TEST_STORE`: `sqlite`
/// (the default: a file in the test's directory) or `postgres` (a schema of
/// the test database, see [`postgres`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    Postgres,
}

impl TestStore {
    pub fn chosen() -> Self {
        match std::env::var("CLIENTELE_TEST_STORE").as_deref() {
            Err(_) | Ok("" | "sqlite") => TestStore::Sqlite,
            Ok("postgres") => TestStore::Postgres,
            Ok(other) => panic!("CLIENTELE_TEST_STORE={other:?}: expected sqlite or postgres"),
        }
    }
}

/// The URL of the store kept for `dir`: the same data for the same `dir`.
pub fn store_url(dir: &Path) -> String {
    match TestStore::chosen() {
        TestStore::Sqlite => format!("sqlite://{}", dir.join("clientele.db").display()),
        TestStore::Postgres => postgres::url(dir),
    }
}

/// Everything the store of `dir` keeps, as bytes to search: on SQLite its
/// files as on disk (the WAL and free pages too); on Postgres every row of
/// its schema. Then what every compressed row among them says (see
/// [`unpacked_frames`]).
pub async fn stored_bytes(dir: &Path) -> Vec<u8> {
    let mut everything = kept_bytes(dir).await;
    let unpacked = unpacked_frames(&everything);
    everything.extend(unpacked);
    everything
}

/// The store keeps bodies, history entries and envelopes as zstd frames
/// with its dictionaries (`src/store/compress.rs`): a search for text must
/// look inside them. Every frame found among `bytes`, decompressed with
/// the dictionary that reads it.
fn unpacked_frames(bytes: &[u8]) -> Vec<u8> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    const DICTIONARIES: [&[u8]; 2] = [
        include_bytes!("../../../src/store/compress/bodies-1.dict"),
        include_bytes!("../../../src/store/compress/documents-2.dict"),
    ];
    let mut unpacked = Vec::new();
    for start in (0..bytes.len().saturating_sub(MAGIC.len())).filter(|&i| bytes[i..].starts_with(&MAGIC)) {
        let Ok(size) = zstd::zstd_safe::find_frame_compressed_size(&bytes[start..]) else {
            continue;
        };
        let frame = &bytes[start..start + size];
        for dictionary in DICTIONARIES {
            let text =
                zstd::bulk::Decompressor::with_dictionary(dictionary).and_then(|mut d| d.decompress(frame, 1 << 24));
            if let Ok(text) = text {
                unpacked.extend(text);
                unpacked.push(b'\n');
            }
        }
    }
    unpacked
}

async fn kept_bytes(dir: &Path) -> Vec<u8> {
    match TestStore::chosen() {
        TestStore::Sqlite => {
            let mut everything = Vec::new();
            for entry in std::fs::read_dir(dir).expect("the store's directory") {
                everything.extend(std::fs::read(entry.expect("a directory entry").path()).expect("a store file"));
            }
            everything
        }
        TestStore::Postgres => postgres::contents(dir).await,
    }
}

/// Runs `statements` on the store of `dir` (its app stopped), in order:
/// SQL both dialects read alike.
pub async fn execute(dir: &Path, statements: &[&str]) {
    match TestStore::chosen() {
        TestStore::Sqlite => {
            let conn = rusqlite::Connection::open(dir.join("clientele.db")).expect("the store file");
            for sql in statements {
                conn.execute(sql, []).expect(sql);
            }
        }
        TestStore::Postgres => {
            let mut db = postgres::store_connection(dir).await;
            for sql in statements {
                sqlx::query(sql).execute(&mut db).await.expect(sql);
            }
        }
    }
}

/// The store of `dir` (its app stopped), opened in this process, with
/// what a rebuild of it replays: every source's name, and their adapters.
pub async fn store_to_rebuild(
    dir: &Path,
) -> (
    std::sync::Arc<dyn clientele::store::Store>,
    Vec<String>,
    clientele::store::Remap,
) {
    let config = TestApp::builder().config(dir);
    let store = clientele::app::open_store(&config.store, config.clock.clone())
        .await
        .expect("the store opens");
    let sources = clientele::rebuild::sources(store.as_ref(), &config.sources)
        .await
        .expect("the sources");
    let names = sources.keys().cloned().collect();
    (store, names, clientele::rebuild::remap(sources))
}

/// The real `clientele` binary, to run as an operator does. Without the
/// suite's own `CLIENTELE_TEST_*` variables: the binary reads every
/// `CLIENTELE_*` variable as a configuration key, and refuses unknown ones.
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_clientele"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLIENTELE_TEST_") {
            command.env_remove(name);
        }
    }
    command
}

/// The address in the binary's `listening` log line (text or JSON), if `line` is that
/// line.
pub fn logged_address(line: &str) -> Option<String> {
    let (_, rest) = line
        .split_once("address=")
        .or_else(|| line.split_once("\"address\":\""))?;
    rest.split(['"', ' ']).next().map(str::to_owned)
}

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), AppError>>>,
}

impl TestApp {
    /// The suite's base configuration, to change before starting: see
    /// [`Setup`].
    pub fn builder() -> Setup {
        Setup::new()
    }

    /// Starts the app with the base configuration on a store of its own.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// Serves `config`, whose store is that of `dir`.
    async fn serve(dir: &Path, config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(config, listener, async {
            let _ = stop.await;
        }));
        Self {
            address,
            client: client(),
            dir: dir.to_owned(),
            _temp: None,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Keeps `temp` (the app's store directory) as long as the app.
    fn keep(&mut self, temp: tempfile::TempDir) {
        self._temp = Some(temp);
    }

    /// Shuts down gracefully, as on SIGTERM; the store stays in `dir`.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shutdown.take().map(|s| s.send(()));
        if let Some(server) = self.server.take() {
            server.await.expect("the server task").expect("a clean shutdown");
        }
        self._temp.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Posts `body` to a source with its token in the header its kind reads.
    pub async fn deliver(&self, source: &str, body: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(&format!("/webhooks/{source}")))
            .body(body.to_owned());
        let request = match source {
            "vagaro" => request.header("X-Vagaro-Signature", VAGARO_TOKEN),
            "treez" => request.bearer_auth(TREEZ_TOKEN),
            _ => request.bearer_auth(CLIENTELE_TOKEN),
        };
        read(
            request
                .header("content-type", "application/json")
                .send()
                .await
                .expect("a response"),
        )
        .await
    }

    /// An admin API GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::GET, path).await
    }

    pub async fn post_admin(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path).await
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await;
        read(response.expect("a response")).await
    }

    pub async fn customer(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/customers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// An HTTP client for talking to Clientele. reqwest's TLS (rustls, which
/// Clientele's outbound sends need) wants its crypto provider installed
/// first, as Clientele itself does.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, parse(text))
}

/// An answer's body as JSON (read like Clientele reads its own, without
/// serde_json's depth limit), else as a string; empty is `null`.
fn parse(text: String) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    clientele::model::json::decode(text.as_bytes()).unwrap_or(Value::String(text))
}

/// Sets `pointer` (JSON pointer) in `value`.
pub fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    *value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} exists")) = new;
    value
}

/// Adds a source's token in the header its kind reads.
pub fn source_auth(source: &str, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match source {
        "vagaro" => request.header("X-Vagaro-Signature", VAGARO_TOKEN),
        "treez" => request.bearer_auth(TREEZ_TOKEN),
        _ => request.bearer_auth(CLIENTELE_TOKEN),
    }
}

impl TestApp {
    /// A bare `POST /webhooks/{source}`: no token, no headers; the caller
    /// adds what the case needs.
    pub fn webhook(&self, source: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(&format!("/webhooks/{source}")))
    }

    /// Posts raw bytes to a source with its token and the extra `headers`.
    pub async fn deliver_with(&self, source: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, Value) {
        let mut request = source_auth(source, self.webhook(source)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// Delivers a JSON value (serialized compactly) with the source's token.
    pub async fn deliver_json(&self, source: &str, body: &Value) -> (StatusCode, Value) {
        self.deliver(source, &body.to_string()).await
    }

    /// An admin API GET with query parameters, URL-encoded.
    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        send(self.client.get(self.url(path)).bearer_auth(ADMIN).query(query)).await
    }

    /// The kept raw events, all pages, optionally of one status.
    pub async fn events(&self, status: Option<&str>) -> Vec<Value> {
        let mut query = vec![("limit", "1000")];
        if let Some(status) = status {
            query.push(("status", status));
        }
        let (code, body) = self.get_query("/api/v1/events", &query).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body["nextCursor"].is_null(), "more than one page of events: {body}");
        body["data"].as_array().expect("a data array").clone()
    }

    /// One kept raw event, with its body.
    pub async fn event(&self, event_id: &str) -> Value {
        let (code, body) = self.get(&format!("/api/v1/events/{event_id}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    /// A customer's history entries, oldest first, every page.
    pub async fn history(&self, id: &str) -> Vec<Value> {
        self.pages(&format!("/api/v1/customers/{id}/events"), "1000")
            .await
            .concat()
    }

    /// Every page of the paged list at `path`, `limit` items a page,
    /// following `nextCursor`.
    pub async fn pages(&self, path: &str, limit: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", limit)];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.as_str()));
            }
            let (status, page) = self.get_query(path, &query).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            pages.push(page["data"].as_array().expect("a data array").clone());
            match &page["nextCursor"] {
                Value::Null => return pages,
                Value::String(next) => cursor = Some(next.clone()),
                other => panic!("nextCursor is a string or null: {other}"),
            }
            assert!(pages.len() < 100, "the walk ends");
        }
    }

    /// Every customer, merged ones included, in one page.
    pub async fn directory(&self) -> Vec<Value> {
        let (code, body) = self
            .get_query("/api/v1/customers", &[("includeMerged", "true"), ("limit", "1000")])
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body["nextCursor"].is_null(), "more than one page of customers: {body}");
        body["data"].as_array().expect("a data array").clone()
    }

    /// The ids a customer list answers for `query`, in order (one page).
    pub async fn customer_ids(&self, query: &[(&str, &str)]) -> Vec<String> {
        let (code, body) = self.get_query("/api/v1/customers", query).await;
        assert_eq!(code, StatusCode::OK, "{query:?}: {body}");
        ids(&body["data"])
    }

    /// Asserts that no delivery left anything behind: no kept event, no
    /// customer (merged ones included).
    pub async fn assert_nothing_kept(&self) {
        assert_eq!(self.events(None).await, Vec::<Value>::new(), "kept events");
        assert_eq!(self.directory().await, Vec::<Value>::new(), "customers");
    }
}

/// `s` as one URL path segment: everything but unreserved characters
/// percent-encoded.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a request and reads its answer.
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    read(request.send().await.expect("a response")).await
}

/// The `id`s of a JSON array of records.
pub fn ids(records: &Value) -> Vec<String> {
    records
        .as_array()
        .expect("an array of records")
        .iter()
        .map(|r| r["id"].as_str().expect("a string id").to_owned())
        .collect()
}

/// Asserts the error shape of SPEC §3, `{"error":{"code","message"}}`,
/// and returns the code.
pub fn error_code(body: &Value) -> String {
    let object = body.as_object().unwrap_or_else(|| panic!("an error object: {body}"));
    assert_eq!(object.len(), 1, "only `error` at the top: {body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("`error` is an object: {body}"));
    let code = error.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
    assert!(!code.is_empty(), "a code: {body}");
    assert!(!message.is_empty(), "a message: {body}");
    code.to_owned()
}

/// A record without the directory's bookkeeping (`version`, `changedAt`),
/// the only fields allowed to depend on arrival order (SPEC §8).
pub fn without_bookkeeping(record: &Value) -> Value {
    let mut record = record.clone();
    let object = record.as_object_mut().expect("a record object");
    object.remove("version");
    object.remove("changedAt");
    record
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// The Treez example for customer `id` of dispensary `account`, updated at
/// `last_update`.
pub fn treez(account: &str, id: &str, last_update: &str) -> Value {
    let example: Value = serde_json::from_str(TREEZ_EXAMPLE).expect("the Treez fixture is JSON");
    let body = with(example, "/dispensary_short_name", Value::from(account));
    let body = with(body, "/data/customer_id", Value::from(id));
    with(body, "/data/last_update", Value::from(last_update))
}

/// The Vagaro example for customer `id` as envelope `event_id`, modified
/// at `modified`.
pub fn vagaro(event_id: &str, id: &str, modified: &str) -> Value {
    let example: Value = serde_json::from_str(VAGARO_EXAMPLE).expect("the Vagaro fixture is JSON");
    let body = with(example, "/id", Value::from(event_id));
    let body = with(body, "/payload/customerId", Value::from(id));
    with(body, "/payload/modifiedDate", Value::from(modified))
}

/// The object holding `pointer`'s last segment, and that segment.
fn parent<'v, 'p>(value: &'v mut Value, pointer: &'p str) -> (&'v mut serde_json::Map<String, Value>, &'p str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let parent = if parent.is_empty() {
        value
    } else {
        value.pointer_mut(parent).unwrap_or_else(|| panic!("{parent} exists"))
    };
    let object = parent
        .as_object_mut()
        .unwrap_or_else(|| panic!("{pointer}'s parent is an object"));
    (object, key)
}

/// Sets `pointer` in `value` (JSON pointer), creating the last segment
/// when absent.
pub fn set(mut value: Value, pointer: &str, new: Value) -> Value {
    let (object, key) = parent(&mut value, pointer);
    object.insert(key.to_owned(), new);
    value
}

/// Removes `pointer` from `value` (JSON pointer).
pub fn without(mut value: Value, pointer: &str) -> Value {
    let (object, key) = parent(&mut value, pointer);
    object.remove(key).unwrap_or_else(|| panic!("{pointer} exists"));
    value
}

/// Posts `body` to `path` over a plain socket with `Transfer-Encoding:
/// chunked`, so the server learns the size only by reading (no
/// `Content-Length` to refuse up front). `headers` are sent as given.
pub async fn post_chunked(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let path = path.to_owned();
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).expect("a connection");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("a read timeout");
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n");
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        for chunk in body.chunks(8192) {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before reading everything: a
        // failed write still leaves its answer to read.
        let _ = stream.write_all(&bytes);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        parse_answer(&answer)
    })
    .await
    .expect("the raw request")
}

/// The status and body (as [`read`] gives them) of one HTTP/1.1 answer
/// read off a socket.
pub fn parse_answer(answer: &[u8]) -> (StatusCode, Value) {
    let answer = String::from_utf8_lossy(answer).into_owned();
    let (head, rest) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP answer: {answer:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let text = if chunked { dechunk(rest) } else { rest.to_owned() };
    (StatusCode::from_u16(status).expect("a status"), parse(text))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

// Outbound webhooks (SPEC §6): a receiver that plays a subscriber, a
// Standard Webhooks verifier, and the subscription API.

/// The outbound backlog: changes not yet fanned out, and pending messages
/// per subscription.
#[derive(Debug)]
pub struct Outbox {
    pub unfanned: u64,
    pub pending: BTreeMap<String, u64>,
}

impl Outbox {
    /// The backlog of the Clientele at `base` (`http://host:port`), from
    /// its `/metrics`, which reads both counts from the store at each
    /// scrape.
    pub async fn read(client: &reqwest::Client, base: &str) -> Self {
        let response = client.get(format!("{base}/metrics")).send().await.expect("/metrics");
        let text = response.text().await.expect("a metrics body");
        let mut outbox = Outbox {
            unfanned: u64::MAX,
            pending: BTreeMap::new(),
        };
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value = || value.parse::<u64>().unwrap_or_else(|_| panic!("a count: {line}"));
            if series == "clientele_outbox_unfanned" {
                outbox.unfanned = value();
            } else if let Some(labels) = series.strip_prefix("clientele_outbox_backlog{subscription=\"") {
                outbox
                    .pending
                    .insert(labels.trim_end_matches("\"}").to_owned(), value());
            }
        }
        assert_ne!(
            outbox.unfanned,
            u64::MAX,
            "/metrics has clientele_outbox_unfanned:\n{text}"
        );
        outbox
    }

    /// Nothing left to fan out, and no message pending.
    pub fn drained(&self) -> bool {
        self.unfanned == 0 && self.pending.values().all(|n| *n == 0)
    }
}

/// Waits until the outbox of the Clientele at `base` satisfies `done`.
pub async fn wait_outbox(client: &reqwest::Client, base: &str, what: &str, done: impl Fn(&Outbox) -> bool) {
    let deadline = Instant::now() + SAFETY;
    loop {
        let outbox = Outbox::read(client, base).await;
        if done(&outbox) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox is {what} within {SAFETY:?}: {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a wait for something the app sends may take before the test
/// fails: a guard against hangs, never a synchronization.
pub const SAFETY: Duration = Duration::from_secs(20);

/// What a [`TestReceiver`] answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `200` to everything.
    Healthy,
    /// `status` to the first `times` requests, then `200`.
    FailFirst { times: usize, status: u16 },
    /// `status` to the first `times` requests about `customer` (the
    /// payload's `id`); `200` to the rest and to every other customer.
    FailCustomer {
        customer: String,
        times: usize,
        status: u16,
    },
    /// `status` with `Retry-After: {seconds}` to the first request, then
    /// `200`.
    RetryAfterOnce { status: u16, seconds: u64 },
    /// Sleeps `delay` before answering `200` to the first `times` requests.
    SlowFirst { times: usize, delay: Duration },
    /// Sleeps `delay` before answering `status` to the first request, then
    /// `200`.
    SlowFailFirst { delay: Duration, status: u16 },
    /// These statuses, one per request in order, then `200`.
    Statuses(Vec<u16>),
}

impl Behaviour {
    /// `status` to everything.
    pub fn always(status: u16) -> Self {
        Behaviour::FailFirst {
            times: usize::MAX,
            status,
        }
    }
}

/// One request a [`TestReceiver`] got, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    /// The body as sent: signatures are over these bytes.
    pub raw: Vec<u8>,
    /// The body as JSON (`null` if it is not JSON).
    pub body: Value,
    /// The status answered (after `delay`, if any).
    pub status: u16,
    pub delay: Option<Duration>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("a `{name}` header in {:?}", self.headers))
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    /// The payload's customer `id`.
    pub fn customer(&self) -> &str {
        self.body["payload"]["id"].as_str().unwrap_or_default()
    }

    pub fn version(&self) -> i64 {
        self.body["payload"]["version"].as_i64().unwrap_or(-1)
    }

    pub fn action(&self) -> &str {
        self.body["action"].as_str().unwrap_or_default()
    }

    /// Answered 2xx without a delay: a success from the sender's side too.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status) && self.delay.is_none()
    }
}

#[derive(Default)]
struct ReceiverState {
    behaviour: Option<Behaviour>,
    /// Requests answered under the current behaviour, in all and per
    /// customer.
    served: usize,
    served_by_customer: HashMap<String, usize>,
    received: Vec<Received>,
}

/// A subscriber in the test (after Svix's `TestReceiver`): a tiny HTTP
/// server on `127.0.0.1:0` that keeps every request it gets and answers as
/// its [`Behaviour`] says.
#[derive(Clone)]
pub struct TestReceiver {
    address: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
}

impl TestReceiver {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().unwrap();
        let receiver = Self {
            address,
            state: Arc::new(Mutex::new(ReceiverState {
                behaviour: Some(behaviour),
                ..ReceiverState::default()
            })),
            count: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let router = axum::Router::new().fallback(Self::handle).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    /// A receiver that answers `200` to everything.
    pub async fn healthy() -> Self {
        Self::start(Behaviour::Healthy).await
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Changes the behaviour from the next request on; its counts start
    /// from zero.
    pub fn set(&self, behaviour: Behaviour) {
        let mut state = self.state.lock().unwrap();
        state.behaviour = Some(behaviour);
        state.served = 0;
        state.served_by_customer.clear();
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests have arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} requests"), |r| r.len() >= n).await
    }

    /// Waits until what was received satisfies `done`; returns all of it.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let mut changes = self.count.subscribe();
        let waited = tokio::time::timeout(SAFETY, async {
            loop {
                changes.borrow_and_update();
                let received = self.received();
                if done(&received) {
                    return received;
                }
                changes.changed().await.expect("the receiver lives");
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("{what} within {SAFETY:?}; got {:#?}", summary(&self.received())))
    }

    async fn handle(
        axum::extract::State(receiver): axum::extract::State<Self>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let at = Instant::now();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let customer = value["payload"]["id"].as_str().unwrap_or_default().to_owned();
        let (status, retry_after, delay) = {
            let mut state = receiver.state.lock().unwrap();
            let served = state.served;
            state.served += 1;
            let for_customer = {
                let n = state.served_by_customer.entry(customer.clone()).or_default();
                *n += 1;
                *n - 1
            };
            let answer = match state.behaviour.clone().expect("a behaviour") {
                Behaviour::Healthy => (200, None, None),
                Behaviour::FailFirst { times, status } => (if served < times { status } else { 200 }, None, None),
                Behaviour::FailCustomer {
                    customer: failing,
                    times,
                    status,
                } => (
                    if customer == failing && for_customer < times {
                        status
                    } else {
                        200
                    },
                    None,
                    None,
                ),
                Behaviour::RetryAfterOnce { status, seconds } => {
                    if served == 0 {
                        (status, Some(seconds), None)
                    } else {
                        (200, None, None)
                    }
                }
                Behaviour::SlowFirst { times, delay } => (200, None, (served < times).then_some(delay)),
                Behaviour::SlowFailFirst { delay, status } => match served {
                    0 => (status, None, Some(delay)),
                    _ => (200, None, None),
                },
                Behaviour::Statuses(statuses) => (statuses.get(served).copied().unwrap_or(200), None, None),
            };
            state.received.push(Received {
                at,
                headers,
                raw: body.to_vec(),
                body: value,
                status: answer.0,
                delay: answer.2,
            });
            receiver.count.send_modify(|n| *n += 1);
            answer
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let status = axum::http::StatusCode::from_u16(status).expect("a status");
        match retry_after {
            Some(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
            None => status.into_response(),
        }
    }
}

/// One line per request, for failure messages.
pub fn summary(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| {
            format!(
                "{} {} v{} {} → {}{}",
                r.headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("-"),
                r.customer(),
                r.version(),
                r.action(),
                r.status,
                r.delay.map(|d| format!(" after {d:?}")).unwrap_or_default()
            )
        })
        .collect()
}

/// A subscriber that is down: its port is bound but nobody listens, so
/// connections are refused. Holding the port keeps any other server in the
/// process (another test's) from taking it.
pub struct Down {
    _socket: tokio::net::TcpSocket,
    url: String,
}

impl Down {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("a port");
        let port = socket.local_addr().expect("a bound port").port();
        Self {
            _socket: socket,
            url: format!("http://127.0.0.1:{port}/hook"),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self._socket.local_addr().expect("a bound port").port()
    }
}

/// A service that accepts connections and never answers; counts them.
pub struct Silent {
    address: SocketAddr,
    accepted: Arc<Mutex<usize>>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                held.push(connection);
            }
        });
        Self { address, accepted }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

/// A TLS server on `127.0.0.1:0` with a self-signed certificate
/// (`tests/fixtures/tls`) that no client trusts: it keeps the application
/// protocols (ALPN) each client offered, and answers nothing.
pub struct UntrustedTls {
    address: SocketAddr,
    offered: Arc<Mutex<Vec<Vec<String>>>>,
}

impl UntrustedTls {
    pub fn start() -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert =
            CertificateDer::from_pem_slice(include_bytes!("../../fixtures/tls/cert.pem")).expect("a certificate");
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../fixtures/tls/key.pem")).expect("a key");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("a TLS configuration");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().unwrap();
        let offered = Arc::new(Mutex::new(Vec::new()));
        let kept = offered.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(SAFETY));
                let mut acceptor = rustls::server::Acceptor::default();
                let accepted = loop {
                    if !matches!(acceptor.read_tls(&mut stream), Ok(n) if n > 0) {
                        break None;
                    }
                    match acceptor.accept() {
                        Ok(Some(accepted)) => break Some(accepted),
                        Ok(None) => {}
                        Err(_) => break None,
                    }
                };
                let Some(accepted) = accepted else { continue };
                let protocols = accepted
                    .client_hello()
                    .alpn()
                    .map(|protocols| protocols.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                    .unwrap_or_default();
                kept.lock().unwrap().push(protocols);
                // Sends the certificate; the client refuses it.
                if let Ok(mut connection) = accepted.into_connection(config.clone()) {
                    let _ = connection.complete_io(&mut stream);
                }
            }
        });
        Self { address, offered }
    }

    pub fn url(&self) -> String {
        format!("https://{}/hook", self.address)
    }

    /// The protocols each client offered, by connection.
    pub fn offered(&self) -> Vec<Vec<String>> {
        self.offered.lock().unwrap().clone()
    }
}

/// A Standard Webhooks verifier for a subscription's `secret`, from the
/// `standardwebhooks` crate: `whsec_` + base64 of the key, or, without the
/// prefix, the secret's own bytes (SPEC §8).
pub fn verifier(secret: &str) -> standardwebhooks::Webhook {
    let verifier = if secret.starts_with("whsec_") {
        standardwebhooks::Webhook::new(secret)
    } else {
        standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec())
    };
    verifier.unwrap_or_else(|e| panic!("{secret:?} is a signing secret: {e}"))
}

/// Asserts that `request` carries a valid Standard Webhooks signature for
/// `secret`, as a subscriber's Standard Webhooks library checks it: over
/// `{webhook-id}.{webhook-timestamp}.{body}`, with a timestamp within five
/// minutes of now.
pub fn assert_signed(secret: &str, request: &Received) {
    if let Err(e) = verifier(secret).verify(&request.raw, &request.headers) {
        panic!(
            "a Standard Webhooks library refuses the request ({e}): headers {:?}",
            request.headers
        );
    }
}

impl TestApp {
    /// An admin API call with a JSON body.
    pub async fn admin_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        send(
            self.client
                .request(method, self.url(path))
                .bearer_auth(ADMIN)
                .json(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::DELETE, path).await
    }

    /// Creates a subscription (`POST /api/v1/subscriptions`), expecting `201`.
    pub async fn subscribe(&self, request: Value) -> Value {
        let (status, body) = self
            .admin_json(reqwest::Method::POST, "/api/v1/subscriptions", &request)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{request}: {body}");
        body
    }

    /// A subscription to everything at `url`; returns its id and secret.
    pub async fn subscribe_url(&self, url: &str) -> (String, String) {
        let subscription = self.subscribe(serde_json::json!({ "url": url })).await;
        (
            subscription["id"].as_str().expect("an id").to_owned(),
            subscription["secret"].as_str().expect("a secret").to_owned(),
        )
    }

    /// `PATCH /api/v1/subscriptions/{id}` `{"enabled": …}`, expecting `200`.
    pub async fn set_enabled(&self, subscription: &str, enabled: bool) -> Value {
        let (status, body) = self
            .admin_json(
                reqwest::Method::PATCH,
                &format!("/api/v1/subscriptions/{subscription}"),
                &serde_json::json!({ "enabled": enabled }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A subscription's messages, oldest first, optionally of one status.
    pub async fn messages(&self, subscription: &str, status: Option<&str>) -> Vec<Value> {
        let query: Vec<(&str, &str)> = status.map(|s| ("status", s)).into_iter().collect();
        let path = format!("/api/v1/subscriptions/{subscription}/messages");
        let (code, body) = self.get_query(&path, &query).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body["nextCursor"].is_null(), "more than one page of messages: {body}");
        body["data"].as_array().expect("a data array").clone()
    }

    /// Polls a subscription's messages until `done` holds for them;
    /// returns them.
    pub async fn wait_for_messages(
        &self,
        subscription: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + SAFETY;
        loop {
            let messages = self.messages(subscription, None).await;
            if done(&messages) {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {SAFETY:?}; messages: {}",
                serde_json::to_string_pretty(&messages).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every message of `subscription` has `status`; returns
    /// them.
    pub async fn wait_all(&self, subscription: &str, count: usize, status: &str) -> Vec<Value> {
        self.wait_for_messages(subscription, &format!("{count} messages {status}"), |messages| {
            messages.len() == count && messages.iter().all(|m| m["status"] == status)
        })
        .await
    }

    /// Waits until every change committed so far is fanned out into its
    /// messages (`clientele_outbox_unfanned` is 0). Messages may still be
    /// pending.
    pub async fn wait_fanned_out(&self) {
        self.wait_outbox("fanned out", |outbox| outbox.unfanned == 0).await;
    }

    /// Waits until the outbox is drained: every change committed so far is
    /// fanned out, and no subscription has a message pending (each one is
    /// delivered, dead or cancelled). Read from `/metrics`, which counts
    /// both from the store at each scrape. A subscriber that keeps failing
    /// on a long retry schedule never lets it drain: wait for the messages
    /// then ([`wait_for_messages`](Self::wait_for_messages)).
    pub async fn wait_drained(&self) {
        self.wait_outbox("drained", Outbox::drained).await;
    }

    async fn wait_outbox(&self, what: &str, done: impl Fn(&Outbox) -> bool) {
        wait_outbox(&self.client, &self.url(""), what, done).await;
    }

    /// The persons resolver's backlog and lag, from `/metrics`.
    pub async fn unresolved(&self) -> (u64, f64) {
        let text = self.metrics().await;
        let read = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("/metrics has {name}:\n{text}"))
                .to_owned()
        };
        (
            read("clientele_persons_unresolved").parse().expect("a count"),
            read("clientele_persons_lag_seconds").parse().expect("seconds"),
        )
    }

    /// Waits until the persons resolver has resolved every change.
    pub async fn wait_resolved(&self) {
        let deadline = Instant::now() + SAFETY;
        loop {
            if self.unresolved().await.0 == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the resolver did not catch up within {SAFETY:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.expect("/metrics");
        response.text().await.expect("a metrics body")
    }
}
