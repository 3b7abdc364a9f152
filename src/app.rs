//! Assembles a running Clientele from a [`Config`]: opens the store, builds
//! the HTTP state, serves until told to stop, and closes the store. Also
//! `migrate`.
//!
//! `main` and the integration tests both start Clientele through here.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::clock::Clock;
use crate::config::{Config, StoreUrl};
use crate::http::{self, AppState, INGEST_SLOTS};
use crate::model::normalize;
use crate::outbound::destination::Guard;
use crate::outbound::{Outbox, dispatcher};
use crate::persons::Settings;
use crate::resolver;
use crate::sources::registry::Registry;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
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
pub async fn open_store(url: &StoreUrl, clock: Clock) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path, clock)?),
        StoreUrl::Postgres(raw) => Arc::new(PgStore::open(raw, &url.to_string(), clock).await?),
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
    let store = open_store(&config.store, config.clock.clone()).await?;
    tracing::info!(store = %config.store, "store opened");
    if config.admin_token.expose() == "change-me" {
        tracing::warn!("admin_token is the example's: set your own (CLIENTELE_ADMIN_TOKEN)");
    }
    for source in &config.sources {
        tracing::info!(route = %format!("POST /webhooks/{}", source.name()), kind = source.kind.as_str(), "serving source");
    }
    let delivery = config.delivery.clone();
    let retention = config.retention;
    let clock = config.clock;
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
        trust_forwarded_proto: settings.trust_forwarded_proto,
        clock: clock.clone(),
    });
    tracing::info!(address = %listener.local_addr()?, "listening: /webhooks/{{source}}, /api/v1, /healthz, /readyz, /metrics");
    let (stop, stopped) = watch::channel(false);
    let following = tokio::spawn(registry.run(stopped.clone()));
    let compactor = tokio::spawn(crate::retention::run(
        store.clone(),
        retention,
        clock.clone(),
        stopped.clone(),
    ));
    let resolving = tokio::spawn(resolver::run(
        store.clone(),
        Settings::default(),
        clock,
        stopped.clone(),
    ));
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
    if compactor.await.is_err() {
        tracing::error!("the compactor panicked");
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
    open_store(&config.store, config.clock.clone()).await?.close().await;
    Ok(())
}
