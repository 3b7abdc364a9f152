//! Handing an import to the `serve` that holds the embedded store: each
//! batch is one `POST /api/v1/sources/{name}/import` to the address the
//! configuration listens on, with its `admin_token`; the server maps and
//! keeps the records as its webhooks, and answers each one's outcome.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::read::Record;
use super::{Format, ImportError, RecordOutcome};
use crate::config::{Config, Secret};
use crate::store::Publish;
use crate::store::sources::SourceSpec;

/// How long one batch may take to be kept.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A batch of records for a source, as `POST /api/v1/sources/{name}/import` takes it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportRequest {
    /// Kept in this order, each as a webhook of the source would be.
    pub records: Vec<ImportedRecord>,
    /// Whether the changes go to subscribers (`false`: the directory
    /// changes, no outbound message is queued). Default `true`.
    #[serde(default = "yes")]
    pub publish: bool,
    /// The bodies are Clientele envelopes of canonical customers (from a
    /// CSV): refused unless the source is of kind `clientele`.
    #[serde(default)]
    pub canonical: bool,
}

fn yes() -> bool {
    true
}

/// One record: a body as a platform sends it, and the request headers that
/// came with it (`webhook-id` and `idempotency-key` name it for dedupe).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedRecord {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, as sent.
    pub body_raw: String,
}

/// Each record's outcome, in the request's order.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ImportAnswer {
    pub outcomes: Vec<RecordOutcome>,
}

#[derive(Clone)]
pub struct Remote {
    client: reqwest::Client,
    /// The source's resource: `GET` reads it, `/import` under it keeps a batch.
    source: String,
    url: String,
    key: Secret,
    canonical: bool,
}

impl Remote {
    pub fn new(config: &Config, source: &str, format: Format) -> Result<Self, ImportError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ImportError::Remote(format!("no HTTP client: {e}")))?;
        let source = format!("http://{}/api/v1/sources/{source}", reachable(config.listen));
        Ok(Remote {
            client,
            url: format!("{source}/import"),
            source,
            key: config.admin_token.clone(),
            canonical: format.is_canonical(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The source's settings as the server has them; `None` if it has no
    /// such source.
    pub async fn source(&self) -> Result<Option<SourceSpec>, ImportError> {
        let response = self
            .client
            .get(&self.source)
            .bearer_auth(self.key.expose())
            .send()
            .await
            .map_err(|e| unreached(&self.source, e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = successful(response).await.map_err(ImportError::Remote)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ImportError::Remote(format!("its answer is not a source's: {e}")))
    }

    pub async fn send(&self, records: Vec<Record>, publish: Publish) -> Result<Vec<RecordOutcome>, ImportError> {
        let request = ImportRequest {
            records: records
                .into_iter()
                .map(|r| ImportedRecord {
                    headers: r.headers,
                    body_raw: String::from_utf8(r.body).expect("checked as UTF-8 when read"),
                })
                .collect(),
            publish: publish == Publish::Yes,
            canonical: self.canonical,
        };
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&request).expect("a request serializes"))
            .send()
            .await
            .map_err(|e| unreached(&self.url, e))?;
        let text = successful(response).await.map_err(ImportError::Remote)?;
        let answer: ImportAnswer = serde_json::from_str(&text)
            .map_err(|e| ImportError::Remote(format!("its answer is not an import's: {e}")))?;
        if answer.outcomes.len() != request.records.len() {
            return Err(ImportError::Remote("it answered for another number of records".into()));
        }
        Ok(answer.outcomes)
    }
}

fn unreached(url: &str, error: reqwest::Error) -> ImportError {
    ImportError::Remote(format!("{url} cannot be reached ({error}): is it still running?"))
}

/// The body of a successful answer of the server; otherwise what it said
/// went wrong, as one line.
pub async fn successful(response: reqwest::Response) -> Result<String, String> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("its answer could not be read: {e}"))?;
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(text);
    Err(format!("it answered {status}: {message}"))
}

/// Where to reach a server listening on `listen`: a wildcard address is
/// reached on the loopback.
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
