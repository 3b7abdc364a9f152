//! `/healthz`, `/readyz` and `/metrics`: for orchestrators and Prometheus,
//! without auth (SPEC §5).

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorCode, document_errors};
use crate::model::UtcMillis;

pub fn router() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/healthz",
            get_with(healthz, |op| {
                op.id("healthz").summary("Whether the process serves requests")
            }),
        )
        .api_route(
            "/readyz",
            get_with(readyz, |op| {
                document_errors(op, &[StatusCode::SERVICE_UNAVAILABLE])
                    .id("readyz")
                    .summary("Whether the store takes requests")
            }),
        )
        .api_route(
            "/metrics",
            get_with(metrics, |op| {
                op.id("metrics")
                    .summary("The metrics, in Prometheus text")
                    .response::<200, String>()
            }),
        )
}

#[derive(Serialize, JsonSchema)]
struct Health {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn readyz(State(app): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    app.store.check().await?;
    if !*app.dispatcher_running.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DispatcherStopped,
            "outbound webhooks are not being sent; see the server log",
        ));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Renders the metrics. The outbound backlog is read from the store at
/// each scrape and written here, not kept in the recorder: it is as current
/// as the scrape, and a deleted subscription's series goes with it.
async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse + aide::OperationOutput {
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
    match app.store.store_bytes().await {
        Ok(bytes) => {
            text.push_str("# TYPE clientele_store_bytes gauge\n");
            text.push_str(&format!("clientele_store_bytes {bytes}\n"));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the store's size"),
    }
    match app.store.unresolved().await {
        Ok((count, oldest)) => {
            let lag = oldest.map_or(0.0, |at| {
                (UtcMillis::now().as_millisecond() - at.as_millisecond()).max(0) as f64 / 1000.0
            });
            text.push_str("# TYPE clientele_persons_unresolved gauge\n");
            text.push_str(&format!("clientele_persons_unresolved {count}\n"));
            text.push_str("# TYPE clientele_persons_lag_seconds gauge\n");
            text.push_str(&format!("clientele_persons_lag_seconds {lag}\n"));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the persons resolver's lag"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
