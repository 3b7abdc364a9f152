//! Rebuilding the directory from the kept raw events (SPEC §12), with no
//! maintenance window: every accepted event is replayed, in arrival order,
//! through its source's adapter into a directory apart from the live one
//! (see [`Directory::begin_rebuild`](crate::store::Directory::begin_rebuild)),
//! which is swapped in at the end in one transaction. An interrupted
//! rebuild leaves the previous directory; a second one at once is refused;
//! no customer's version goes down. Persons are then resolved again from
//! the rebuilt records.
//!
//! `clientele rebuild` runs it in its own process, or, when `serve` holds
//! the embedded store (one process writes to it), asks that server to run
//! it: `POST /api/v1/rebuild` (see `http::rebuild`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, Source, StoreUrl};
use crate::import::remote::{reachable, successful};
use crate::model::json;
use crate::persons::Settings;
use crate::resolver;
use crate::store::{Rebuilt, Remap, Store, StoreError};

/// Events replayed per transaction of the rebuild.
const PAGE: usize = 500;

/// How long `clientele rebuild` waits for the server's rebuild.
const TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The running server could not be asked, or refused.
    #[error("the running server did not rebuild the directory: {0}")]
    Remote(String),
}

/// Rebuilds the directory of `sources` (by name) in `store`, then the
/// persons from the rebuilt records, each keeping its id
/// ([`resolver::rebuild`], after the swap: persons are derived from the
/// records, and the writes the swap holds wait no longer for them).
pub async fn run(store: &dyn Store, sources: HashMap<String, Source>, clock: &Clock) -> Result<Rebuilt, StoreError> {
    let names = sources.keys().cloned().collect();
    let mut rebuild = store.begin_rebuild(names, remap(sources)).await?;
    while rebuild.replay(PAGE).await? {}
    // Writes wait during the swap: how long, for the operator.
    let swapping = std::time::Instant::now();
    let rebuilt = rebuild.finish(PAGE).await?;
    tracing::info!(
        held_ms = swapping.elapsed().as_millis() as u64,
        "the rebuilt directory is swapped in"
    );
    resolver::rebuild(store, &Settings::default(), clock).await?;
    tracing::info!("persons resolved again from the rebuilt directory");
    Ok(rebuilt)
}

/// What each source's adapter makes of its kept bodies.
pub fn remap(sources: HashMap<String, Source>) -> Remap {
    Arc::new(move |source, body| {
        let source = sources.get(source)?;
        let read = json::parse_delivery(body).ok()?;
        Some(source.kind.map(&read, &source.settings))
    })
}

/// The sources whose events a rebuild replays: the configuration's and
/// the store's (SPEC §9). The customers of a source no longer configured
/// stay as they are: without its adapter, its events cannot be replayed.
pub async fn sources(store: &dyn Store, configured: &[Source]) -> Result<HashMap<String, Source>, StoreError> {
    let mut sources: HashMap<String, Source> = configured.iter().map(|s| (s.name().to_owned(), s.clone())).collect();
    for stored in store.stored_sources(None, None).await?.sources {
        if let Ok((source, _)) = crate::sources::registry::build(&stored.name, &stored.spec) {
            sources.entry(stored.name).or_insert(source);
        }
    }
    Ok(sources)
}

/// `clientele rebuild`: in this process, or by the server that holds the
/// embedded store.
pub async fn command(config: &Config) -> Result<Rebuilt, RebuildError> {
    let store = match crate::app::open_store(&config.store, config.clock.clone()).await {
        Ok(store) => store,
        Err(StoreError::InUse { .. }) if matches!(config.store, StoreUrl::Sqlite(_)) => return remote(config).await,
        Err(e) => return Err(e.into()),
    };
    let result = async {
        run(
            store.as_ref(),
            sources(store.as_ref(), &config.sources).await?,
            &config.clock,
        )
        .await
    }
    .await;
    store.close().await;
    Ok(result?)
}

/// Asks the server listening at the configuration's address to rebuild.
async fn remote(config: &Config) -> Result<Rebuilt, RebuildError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = RebuildError::Remote;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| failed(format!("no HTTP client: {e}")))?;
    let url = format!("http://{}/api/v1/rebuild", reachable(config.listen));
    tracing::info!(%url, "serve holds the store: asking it to rebuild the directory");
    let response = client
        .post(&url)
        .bearer_auth(config.admin_token.expose())
        .send()
        .await
        .map_err(|e| failed(format!("{url} cannot be reached ({e}): is serve running there?")))?;
    let text = successful(response).await.map_err(failed)?;
    serde_json::from_str(&text).map_err(|e| failed(format!("its answer is not a rebuild's: {e}")))
}
