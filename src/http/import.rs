//! `POST /api/v1/sources/{name}/import`: a batch of a backfill, handed to
//! the running server by `clientele import` when this server holds the
//! embedded store (SPEC §10; see `crate::import`). Each record is mapped
//! and kept exactly as a webhook of the source would be, without the
//! webhook's token, address and rate checks: the caller is an API key
//! with the `write` scope.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Deserialize;

use super::AppState;
use super::api::admin;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ErrorCode};
use super::extract::ApiJson;
use crate::import::RecordOutcome;
use crate::import::remote::{ImportAnswer, ImportRequest, ImportedRecord};
use crate::sources::{Kind, delivery};
use crate::store::Publish;

/// An import request's size at most: `clientele import` sends batches of
/// at most 4 MiB of bodies.
const MAX_REQUEST_BYTES: usize = 32 << 20;

pub fn router() -> ApiRouter<Arc<AppState>> {
    const ERRORS: [StatusCode; 4] = [
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::CONFLICT,
        StatusCode::PAYLOAD_TOO_LARGE,
    ];
    ApiRouter::new()
        .api_route(
            "/sources/{name}/import",
            post_with(import_batch, |op| {
                admin(
                    op,
                    "importRecords",
                    "Keeps a batch of a backfill, each record as a webhook of the source",
                    &ERRORS,
                )
                .description(
                    "What `clientele import` sends a running server that holds the embedded store. Each \
                     record goes through the source's adapter, dedupe (`webhook-id` or `idempotency-key` \
                     header, envelope id, content hash), the directory's order and the outbox, as a \
                     delivery would; the answer gives each record's outcome in order. Needs the `write` \
                     scope.",
                )
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

/// The `{name}` of `/sources/{name}/import`.
#[derive(Deserialize, JsonSchema)]
struct SourcePath {
    /// A configured source's name.
    name: String,
}

async fn import_batch(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(SourcePath { name }): Path<SourcePath>,
    ApiJson(request): ApiJson<ImportRequest>,
) -> Result<Json<ImportAnswer>, ApiError> {
    if !principal.can(Scope::Write) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "importing needs a key with the write scope",
        ));
    }
    let Some(source) = app.registry.get(&name).map(|live| live.source.clone()) else {
        return Err(ApiError::not_found(format!("no source named {name:?} is configured")));
    };
    if request.canonical && source.kind != Kind::Clientele {
        return Err(ApiError::conflict(
            ErrorCode::InvalidRequest,
            format!(
                "canonical customers are read as the clientele kind, but source {name:?} is of kind {}",
                source.kind.as_str()
            ),
        ));
    }
    let limit = app.max_body_bytes;
    let records = request.records.len();
    // Mapping a batch is CPU work: off the async threads.
    let clock = app.clock.clone();
    let mapped = tokio::task::spawn_blocking(move || {
        request
            .records
            .into_iter()
            .map(|ImportedRecord { headers, body_raw }| {
                if body_raw.len() > limit {
                    return Err(format!("larger than max_body_bytes ({limit} bytes)"));
                }
                let header = |name: &str| headers.get(name).map(String::as_str);
                let body = body_raw.into_bytes();
                delivery::delivery(source.kind, &source.settings, header, body, clock.now()).map_err(|e| e.to_string())
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "mapping failed"))?;
    let mut outcomes = Vec::with_capacity(records);
    let mut deliveries = Vec::new();
    for item in mapped {
        match item {
            Ok(delivery) => {
                outcomes.push(None);
                deliveries.push(delivery);
            }
            Err(reason) => outcomes.push(Some(RecordOutcome::Invalid { reason })),
        }
    }
    let publish = if request.publish { Publish::Yes } else { Publish::No };
    let mut kept = app.store.ingest_batch(deliveries, publish).await?.into_iter();
    let outcomes: Vec<RecordOutcome> = outcomes
        .into_iter()
        .map(|o| o.or_else(|| kept.next().map(RecordOutcome::from)))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "outcomes missing",
            )
        })?;
    tracing::debug!(source = %name, records, "import batch kept");
    Ok(Json(ImportAnswer { outcomes }))
}
