//! The HTTP edge: platform webhooks in, the admin API, and health and
//! metrics endpoints, one router per area (`ingest`, `customers`,
//! `events`, `subscriptions`, `sources`, `keys`, `rebuild`, `health`), each with typed requests and
//! answers from which `openapi` documents the whole edge.
//!
//! Handlers parse requests into the types of `crate::sources` and
//! `crate::store`, call the store, and turn results and errors into JSON
//! (`error` is the only place errors become statuses).

mod api;
pub mod auth;
mod customers;
pub mod error;
mod events;
mod extract;
mod health;
mod import;
mod ingest;
pub(crate) mod keys;
mod openapi;
pub(crate) mod operations;
mod persons;
mod rebuild;
pub mod server;
pub(crate) mod sources;
mod subscriptions;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::openapi::OpenApi;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::Clock;
use crate::config::Secret;
use crate::outbound::destination::Guard;
use crate::sources::registry::Registry;
use crate::store::Store;
use error::{ApiError, ErrorCode};

pub use crate::sources::delivery::content_hash;

/// Deliveries being read or stored at once at most; beyond, `503` with
/// `Retry-After`. One full writer batch: enough to keep the writer busy,
/// and memory bounded by `INGEST_SLOTS × max_body_bytes` whatever the load.
pub const INGEST_SLOTS: usize = 512;

pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The sources served now: the file's and the API's (SPEC §9).
    pub registry: Arc<Registry>,
    pub admin_token: Secret,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
    pub ingest_slots: Semaphore,
    /// Which subscription URLs may be created (SPEC §16).
    pub destinations: Guard,
    /// Whether the outbound dispatcher runs: `/readyz` fails while it
    /// does not.
    pub dispatcher_running: tokio::sync::watch::Receiver<bool>,
    /// `[http] trust_forwarded_proto`: whether `X-Forwarded-Proto` says a
    /// request came over TLS (the console's cookie is then `Secure`).
    pub trust_forwarded_proto: bool,
    /// Stamps each delivery's received time, which retention compares.
    pub clock: Clock,
}

pub fn router(state: Arc<AppState>) -> Router {
    let (router, document) = documented(|api| {
        // The last layer runs first: the token is checked before anything else.
        api.route_layer(axum::middleware::from_fn(api::refuse_nul))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key))
    });
    router
        .layer(Extension(Arc::new(document)))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(error::json_errors))
        // After the JSON error shape: the console answers in HTML.
        .merge(crate::console::router(state.clone()))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error; see the server log",
            )
            .into_response()
        }))
        .with_state(state)
}

/// The OpenAPI document of the HTTP edge, as `GET /api/v1/openapi.json`
/// serves it.
pub fn openapi() -> OpenApi {
    documented(|api| api).1
}

/// Every area's router, the admin ones under `/api/v1` with `admin`'s
/// layers, and the document generated from them.
fn documented(
    admin: impl FnOnce(ApiRouter<Arc<AppState>>) -> ApiRouter<Arc<AppState>>,
) -> (Router<Arc<AppState>>, OpenApi) {
    aide::generate::extract_schemas(true);
    let api = ApiRouter::new()
        .merge(customers::router())
        .merge(events::router())
        .merge(import::router())
        .merge(subscriptions::router())
        .merge(sources::router())
        .merge(keys::router())
        .merge(rebuild::router())
        .merge(persons::router());
    let mut document = OpenApi::default();
    let router = ApiRouter::new()
        .merge(ingest::router())
        .nest("/api/v1", admin(api))
        .merge(openapi::router())
        .merge(health::router())
        .finish_api_with(&mut document, openapi::describe);
    openapi::declare_scopes(&mut document);
    (router, document)
}
