//! The HTTP edge: platform webhooks in, the admin API, and health and
//! metrics endpoints.
//!
//! Handlers parse requests into the types of `crate::sources` and
//! `crate::store`, call the store, and turn results and errors into JSON
//! (`error` is the only place errors become statuses).

mod api;
pub mod error;
mod ingest;
mod limit;
pub mod server;
mod subscriptions;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{Secret, Source};
use crate::outbound::destination::Guard;
use crate::store::Store;

pub use limit::RateLimits;

pub use ingest::content_hash;

/// Deliveries being read or stored at once at most; beyond, `503` with
/// `Retry-After`. One full writer batch: enough to keep the writer busy,
/// and memory bounded by `INGEST_SLOTS × max_body_bytes` whatever the load.
pub const INGEST_SLOTS: usize = 512;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub sources: HashMap<String, Source>,
    /// The first configured source, whose country reads phone filters that
    /// name no source.
    pub first_source: Option<String>,
    pub admin_token: Secret,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
    pub ingest_slots: Semaphore,
    pub rate_limits: limit::RateLimits,
    /// Which subscription URLs may be created (SPEC §16).
    pub destinations: Guard,
    /// Whether the outbound dispatcher runs: `/readyz` fails while it
    /// does not.
    pub dispatcher_running: tokio::sync::watch::Receiver<bool>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/customers", get(api::list_customers))
        .route("/customers/{id}", get(api::get_customer).delete(api::erase_customer))
        .route("/customers/{id}/events", get(api::customer_history))
        .route("/events", get(api::list_events))
        .route("/events/{id}", get(api::get_event).delete(api::delete_event))
        .route("/events/{id}/reprocess", post(api::reprocess_event))
        .route("/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route(
            "/subscriptions/{id}",
            get(subscriptions::get)
                .delete(subscriptions::delete)
                .patch(subscriptions::patch),
        )
        .route("/subscriptions/{id}/messages", get(subscriptions::messages))
        .route("/subscriptions/{id}/replay", post(subscriptions::replay))
        .route("/messages/{id}/retry", post(subscriptions::retry))
        // The last layer runs first: the token is checked before anything else.
        .route_layer(axum::middleware::from_fn(api::refuse_nul))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), api::require_admin));
    Router::new()
        .route("/webhooks/{source}", post(ingest::receive))
        .nest("/api/v1", api)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            error::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
            .into_response()
        }))
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, error::ApiError> {
    app.store.check().await?;
    if !*app.dispatcher_running.borrow() {
        return Err(error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dispatcher_stopped",
            "outbound webhooks are not being sent; see the server log",
        ));
    }
    Ok(axum::Json(serde_json::json!({"status": "ready"})))
}

/// Renders the metrics. The outbound backlog is read from the store at
/// each scrape and written here, not kept in the recorder: it is as current
/// as the scrape, and a deleted subscription's series goes with it.
async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = app.metrics.render();
    match app.store.backlog().await {
        Ok(backlog) => {
            text.push_str("# TYPE clientele_outbox_unfanned gauge\n");
            text.push_str(&format!("clientele_outbox_unfanned {}\n", backlog.unfanned));
            text.push_str("# TYPE clientele_outbox_backlog gauge\n");
            for (subscription, pending) in backlog.pending {
                // Subscription ids are `sub_` and hex: nothing to escape.
                text.push_str(&format!(
                    "clientele_outbox_backlog{{subscription=\"{subscription}\"}} {pending}\n"
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the outbound backlog"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
