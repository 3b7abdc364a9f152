//! `clientele export`: the directory as canonical customers (SPEC §10),
//! streamed a page at a time, so that memory stays the same whatever the
//! directory's size.
//!
//! Pages come from the store's customer listing (in change order, the
//! API's cursor), opened here; when a running `serve` holds the embedded
//! store, from that server's `GET /api/v1/customers` with the
//! configuration's `admin_token`. `jsonl` is one customer a line, the
//! API's JSON, which `clientele import --format customers` reads back;
//! `csv` is the canonical columns `clientele import --format csv` reads
//! (one address, the primary; one phone per listed kind; no attributes).

use std::io::Write;
use std::sync::Arc;

use crate::config::{Config, StoreUrl};
use crate::import::canonical::{ADDRESS, LIST_SEPARATOR};
use crate::model::{Customer, UtcMillis};
use crate::store::{CustomerQuery, Store, StoreError};

/// Customers a page at most.
const PAGE: usize = 1000;
/// The phone kinds a CSV has a column for: the adapters' own.
const PHONE_KINDS: [&str; 7] = ["mobile", "day", "night", "primary", "home", "work", "other"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One customer a line, as the API shows it.
    Jsonl,
    /// A header row of canonical field names, one customer a row.
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(StoreError),
    #[error("the store is in use by a running Clientele, whose API the export reads, but {0}")]
    Remote(String),
    #[error("cannot write the export: {0}")]
    Write(std::io::Error),
}

impl From<StoreError> for ExportError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<std::io::Error> for ExportError {
    fn from(error: std::io::Error) -> Self {
        Self::Write(error)
    }
}

impl From<csv::Error> for ExportError {
    fn from(error: csv::Error) -> Self {
        Self::Write(std::io::Error::other(error))
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: ExportFormat,
    pub source: Option<String>,
    pub changed_since: Option<UtcMillis>,
}

/// Writes the directory to `out`; returns how many customers.
pub async fn run(config: &Config, options: ExportOptions, out: impl Write) -> Result<u64, ExportError> {
    let pages = match crate::app::open_store(&config.store, config.clock.clone()).await {
        Ok(store) => Pages::Store(store),
        Err(StoreError::InUse { .. }) if matches!(config.store, StoreUrl::Sqlite(_)) => {
            Pages::Remote(Remote::new(config)?)
        }
        Err(e) => return Err(e.into()),
    };
    let written = write_all(&pages, &options, out).await;
    if let Pages::Store(store) = &pages {
        store.close().await;
    }
    written
}

async fn write_all(pages: &Pages, options: &ExportOptions, out: impl Write) -> Result<u64, ExportError> {
    let mut writer = Writer::new(options.format, out)?;
    let mut after = None;
    let mut count = 0;
    loop {
        let (customers, next) = pages.page(options, after).await?;
        for customer in &customers {
            writer.write(customer)?;
            count += 1;
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    writer.finish()?;
    Ok(count)
}

/// Where pages of customers come from.
enum Pages {
    Store(Arc<dyn Store>),
    Remote(Remote),
}

impl Pages {
    async fn page(
        &self,
        options: &ExportOptions,
        after: Option<i64>,
    ) -> Result<(Vec<Customer>, Option<i64>), ExportError> {
        match self {
            Pages::Store(store) => {
                let page = store
                    .customers(CustomerQuery {
                        source: options.source.clone(),
                        changed_since: options.changed_since,
                        include_merged: true,
                        limit: PAGE,
                        after,
                        ..CustomerQuery::default()
                    })
                    .await?;
                Ok((page.items, page.next))
            }
            Pages::Remote(remote) => remote.page(options, after).await,
        }
    }
}

/// The running server's customer listing.
struct Remote {
    client: reqwest::Client,
    url: String,
    key: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageView {
    data: Vec<Customer>,
    next_cursor: Option<String>,
}

impl Remote {
    fn new(config: &Config) -> Result<Self, ExportError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| ExportError::Remote(format!("no HTTP client: {e}")))?;
        Ok(Remote {
            client,
            url: format!(
                "http://{}/api/v1/customers",
                crate::import::remote::reachable(config.listen)
            ),
            key: config.admin_token.expose().to_owned(),
        })
    }

    async fn page(
        &self,
        options: &ExportOptions,
        after: Option<i64>,
    ) -> Result<(Vec<Customer>, Option<i64>), ExportError> {
        let failed = ExportError::Remote;
        let mut query = vec![("includeMerged", "true".to_owned()), ("limit", PAGE.to_string())];
        query.extend(options.source.clone().map(|s| ("source", s)));
        query.extend(options.changed_since.map(|t| ("changedSince", t.to_string())));
        query.extend(after.map(|a| ("cursor", a.to_string())));
        let url = reqwest::Url::parse_with_params(&self.url, &query)
            .map_err(|e| failed(format!("no URL for its API: {e}")))?;
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| failed(format!("{} cannot be reached ({e}): is it still running?", self.url)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failed(format!("its answer could not be read: {e}")))?;
        if !status.is_success() {
            return Err(failed(format!(
                "it answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        let page: PageView = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("its answer is not a page of customers: {e}")))?;
        let next = page
            .next_cursor
            .map(|c| c.parse::<i64>())
            .transpose()
            .map_err(|_| failed("its cursor is not a position".into()))?;
        Ok((page.data, next))
    }
}

enum Writer<W: Write> {
    Jsonl(std::io::BufWriter<W>),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> Writer<W> {
    fn new(format: ExportFormat, out: W) -> Result<Self, ExportError> {
        Ok(match format {
            ExportFormat::Jsonl => Writer::Jsonl(std::io::BufWriter::with_capacity(256 * 1024, out)),
            ExportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(csv_header())?;
                Writer::Csv(Box::new(csv))
            }
        })
    }

    fn write(&mut self, customer: &Customer) -> Result<(), ExportError> {
        match self {
            Writer::Jsonl(out) => {
                serde_json::to_writer(&mut *out, customer).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            Writer::Csv(csv) => csv.write_record(csv_row(customer))?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        match self {
            Writer::Jsonl(mut out) => out.flush()?,
            Writer::Csv(mut csv) => csv.flush()?,
        }
        Ok(())
    }
}

fn csv_header() -> Vec<String> {
    let mut header: Vec<String> = [
        "id",
        "source",
        "customerId",
        "account",
        "status",
        "platformStatus",
        "firstName",
        "middleName",
        "lastName",
        "nickname",
        "email",
    ]
    .map(str::to_owned)
    .to_vec();
    header.extend(PHONE_KINDS.iter().map(|k| format!("phones.{k}")));
    header.push("birthDate".into());
    header.extend(ADDRESS.iter().map(|f| format!("address.{f}")));
    header.extend(
        [
            "businessIds",
            "groups",
            "optOut",
            "createdAt",
            "updatedAt",
            "mergedInto",
            "mergedFrom",
            "version",
            "changedAt",
        ]
        .map(str::to_owned),
    );
    header
}

/// A customer as a row of [`csv_header`]'s columns.
fn csv_row(c: &Customer) -> Vec<String> {
    let p = &c.profile;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let time = |v: &Option<UtcMillis>| v.map(|t| t.to_string()).unwrap_or_default();
    let prefix = format!("{}:", c.source);
    let external = |id: &str| id.strip_prefix(&prefix).unwrap_or(id).to_owned();
    let list = |items: &[String]| items.join(&LIST_SEPARATOR.to_string());
    let status = if c.merged_into.is_some() {
        "merged"
    } else {
        p.status.as_str()
    };
    let mut row = vec![
        c.id.clone(),
        c.source.clone(),
        c.external_id.clone(),
        text(&p.account),
        status.to_owned(),
        text(&p.platform_status),
        text(&p.first_name),
        text(&p.middle_name),
        text(&p.last_name),
        text(&p.nickname),
        text(&p.email),
    ];
    row.extend(PHONE_KINDS.iter().map(|kind| {
        p.phones
            .iter()
            .find(|phone| phone.kind == *kind)
            .map(|phone| phone.raw.clone())
            .unwrap_or_default()
    }));
    row.push(text(&p.birth_date));
    let address = p.addresses.iter().find(|a| a.primary).or(p.addresses.first());
    row.extend(ADDRESS.iter().map(|field| {
        let Some(a) = address else {
            return String::new();
        };
        match *field {
            "kind" => a.kind.clone(),
            "street1" => text(&a.street1),
            "street2" => text(&a.street2),
            "city" => text(&a.city),
            "regionCode" => text(&a.region_code),
            "regionName" => text(&a.region_name),
            "postalCode" => text(&a.postal_code),
            "countryCode" => text(&a.country_code),
            "countryName" => text(&a.country_name),
            _ => String::new(),
        }
    }));
    row.extend([
        list(&p.business_ids),
        list(&p.groups),
        p.opt_out.map(|b| b.to_string()).unwrap_or_default(),
        time(&p.created_at),
        time(&p.updated_at),
        c.merged_into.as_deref().map(external).unwrap_or_default(),
        c.merged_from
            .iter()
            .map(|id| external(id))
            .collect::<Vec<_>>()
            .join(&LIST_SEPARATOR.to_string()),
        c.version.to_string(),
        c.changed_at.to_string(),
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::canonical::Header;

    #[test]
    fn the_csv_header_is_one_the_import_reads() {
        let header = csv_header();
        assert!(Header::parse(header.iter().map(String::as_str)).is_ok());
    }
}
