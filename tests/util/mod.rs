//! Test helpers: start the real Clientele on `127.0.0.1:0` with a fresh
//! store, and talk to it over HTTP like a platform or an operator would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

pub const VAGARO_EXAMPLE: &str = include_str!("../fixtures/vagaro-customer-updated.json");
pub const TREEZ_EXAMPLE: &str = include_str!("../fixtures/treez-customer.json");

/// The test configuration for a store in `dir`; `extra` is appended (more
/// keys for the last source, or more sources).
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
store = "sqlite://{store}"
admin_token = "{ADMIN}"
max_body_bytes = 65536

[[sources]]
name = "vagaro"
kind = "vagaro"
tokens = ["{VAGARO_TOKEN}"]
default_country = "US"

[[sources]]
name = "clientele"
kind = "clientele"
tokens = ["{CLIENTELE_TOKEN}"]
default_country = "US"

[[sources]]
name = "treez"
kind = "treez"
tokens = ["{TREEZ_TOKEN}", "treez-next-token"]
default_country = "US"
timezone = "America/Los_Angeles"
{extra}
"#,
        store = dir.join("clientele.db").display()
    )
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
    pub async fn spawn() -> Self {
        Self::spawn_with("").await
    }

    /// With `extra` appended to the configuration.
    pub async fn spawn_with(extra: &str) -> Self {
        let temp = tempfile::tempdir().expect("a temp dir");
        let dir = temp.path().to_owned();
        let mut app = Self::spawn_in(&dir, extra).await;
        app._temp = Some(temp);
        app
    }

    /// On the store in `dir`, which outlives the app (for restarts).
    pub async fn spawn_in(dir: &Path, extra: &str) -> Self {
        let config = Config::from_toml("test", &config_text(dir, extra), std::iter::empty()).expect("test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(config, listener, async {
            let _ = stop.await;
        }));
        Self {
            address,
            client: reqwest::Client::new(),
            dir: dir.to_owned(),
            _temp: None,
            shutdown: Some(shutdown),
            server: Some(server),
        }
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
        read(
            self.client
                .get(self.url(path))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("a response"),
        )
        .await
    }

    pub async fn post_admin(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.client
                .post(self.url(path))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("a response"),
        )
        .await
    }

    pub async fn customer(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/customers/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Sets `pointer` (JSON pointer) in `value`.
pub fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    *value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} exists")) = new;
    value
}
