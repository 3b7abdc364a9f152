//! Assembles a running Clientele from a [`Config`]: opens the store, builds
//! the HTTP state, serves until told to stop, and closes the store. Also
//! the `rebuild` command, which replays the kept raw events into a fresh
//! directory, and `migrate`.
//!
//! `main` and the integration tests both start Clientele through here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, StoreUrl};
use crate::http::{self, AppState, INGEST_SLOTS};
use crate::model::{json, normalize};
use crate::outbound::destination::Guard;
use crate::outbound::{Outbox, dispatcher};
use crate::persons::Settings;
use crate::resolver;
use crate::sources::registry::Registry;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventQuery, EventStatus, Publish, Store, StoreError};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Not `#[from]`, which makes the cause a `source()` too: the message says
/// it already, and the CLI prints an error's causes after it.
impl From<std::io::Error> for AppError {
    fn from(error: std::io::Error) -> Self {
        Self::Serve(error)
    }
}

/// Opens the store the URL names, bringing its schema up to date.
pub async fn open_store(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreUrl::Postgres(raw) => Arc::new(PgStore::open(raw, &url.to_string()).await?),
    })
}

/// Serves on `listener` until `shutdown` completes, then lets in-flight
/// requests finish (for up to `http.stop_timeout`) and closes the store.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    normalize::warm_up();
    let store = open_store(&config.store).await?;
    tracing::info!(store = %config.store, "store opened");
    if config.admin_token.expose() == "change-me" {
        tracing::warn!("admin_token is the example's: set your own (CLIENTELE_ADMIN_TOKEN)");
    }
    for source in &config.sources {
        tracing::info!(route = %format!("POST /webhooks/{}", source.name()), kind = source.kind.as_str(), "serving source");
    }
    let delivery = config.delivery.clone();
    let settings = config.http;
    let registry = Registry::load(store.clone(), config.sources).await?;
    let (dispatching, dispatcher_running) = watch::channel(true);
    let state = Arc::new(AppState {
        store: store.clone(),
        registry: registry.clone(),
        admin_token: config.admin_token,
        max_body_bytes: config.max_body_bytes,
        metrics: telemetry::metrics(),
        ingest_slots: Semaphore::new(INGEST_SLOTS),
        destinations: Guard::new(&delivery.allow_private),
        dispatcher_running,
    });
    tracing::info!(address = %listener.local_addr()?, "listening: /webhooks/{{source}}, /api/v1, /healthz, /readyz, /metrics");
    let (stop, stopped) = watch::channel(false);
    let following = tokio::spawn(registry.run(stopped.clone()));
    let resolving = tokio::spawn(resolver::run(store.clone(), Settings::default(), stopped.clone()));
    let dispatcher = {
        let (outbox, told): (Arc<dyn Outbox>, _) = (store.clone(), stopped.clone());
        tokio::spawn(dispatcher::supervise(
            move || dispatcher::run(outbox.clone(), delivery.clone(), told.clone()),
            stopped,
            dispatching,
        ))
    };
    http::server::serve(listener, http::router(state), settings, async move {
        shutdown.await;
        let _ = stop.send(true);
    })
    .await;
    if following.await.is_err() {
        tracing::error!("the sources registry's task panicked");
    }
    // Stops claiming, lets the sends in flight finish and record their
    // attempts, then closes the store (also after http.stop_timeout
    // dropped requests still in flight).
    if resolving.await.is_err() {
        tracing::error!("the persons resolver panicked");
    }
    if dispatcher.await.is_err() {
        tracing::error!("the outbound dispatcher's supervisor panicked");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store, which creates it or brings its schema up to date, and
/// closes it.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    open_store(&config.store).await?.close().await;
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Accepted events replayed.
    pub replayed: u64,
    /// Events of sources no longer configured, left out.
    pub skipped: u64,
}

/// Empties the directory and replays every accepted event, in arrival
/// order, through its source's adapter; each customer keeps at least the
/// version it had, so that subscribers never see one go down or repeat;
/// then persons are resolved again from the rebuilt records ([`resolver::rebuild`]).
pub async fn rebuild(config: &Config) -> Result<Rebuilt, AppError> {
    let store = open_store(&config.store).await?;
    let mut result = replay(store.as_ref(), config).await;
    if result.is_ok() {
        // Persons from the rebuilt records, each keeping its id.
        if let Err(e) = resolver::rebuild(store.as_ref(), &Settings::default()).await {
            result = Err(e.into());
        }
    }
    store.close().await;
    result
}

async fn replay(store: &dyn Store, config: &Config) -> Result<Rebuilt, AppError> {
    // The file's sources and the API's, whose events replay alike.
    let mut sources: HashMap<String, crate::config::Source> = config
        .sources
        .iter()
        .map(|s| (s.name().to_owned(), s.clone()))
        .collect();
    for stored in store.stored_sources(None, None).await?.sources {
        if let Ok((source, _)) = crate::sources::registry::build(&stored.name, &stored.spec) {
            sources.entry(stored.name).or_insert(source);
        }
    }
    // The customers of a source no longer configured stay as they are:
    // without its adapter, its events cannot be replayed.
    store
        .reset_directory(sources.keys().map(|name| name.to_string()).collect())
        .await?;
    let mut rebuilt = Rebuilt::default();
    let mut after = None;
    loop {
        let page = store
            .events(EventQuery {
                status: Some(EventStatus::Accepted),
                limit: 1000,
                after,
                bodies: true,
            })
            .await?;
        for event in page.items {
            let (Some(source), Some(body)) = (sources.get(&event.source), event.body) else {
                rebuilt.skipped += 1;
                continue;
            };
            let mapped = match json::parse_delivery(&body) {
                Ok(read) => source.kind.map(&read, &source.settings),
                Err(_) => {
                    rebuilt.skipped += 1;
                    continue;
                }
            };
            store.reprocess(event.event_id, mapped, Publish::No).await?;
            rebuilt.replayed += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    store.restore_versions().await?;
    Ok(rebuilt)
}
