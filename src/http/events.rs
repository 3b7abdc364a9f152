//! `/api/v1/events`: the kept raw deliveries with their status, and
//! reprocessing (SPEC §5). A reprocess maps the kept body again with the
//! source's current adapter settings before the store applies it.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{IdPath, PageParams, PageView, admin};
use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use super::extract::ApiQuery;
use super::ingest::{Answer, Receipt, answer};
use super::{AppState, keys, operations};
use crate::model::json;
use crate::store::{EventQuery, EventRedaction, EventStatus, StoredEvent};

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    const NOT_FOUND_OR_CONFLICT: [StatusCode; 2] = [StatusCode::NOT_FOUND, StatusCode::CONFLICT];
    ApiRouter::new()
        .api_route(
            "/events",
            get_with(list_events, |op| {
                admin(op, "listEvents", "The kept deliveries, in arrival order", &[])
            }),
        )
        .api_route(
            "/events/{id}",
            get_with(get_event, |op| {
                admin(op, "getEvent", "One kept delivery with its raw body", &NOT_FOUND)
            })
            .delete_with(delete_event, |op| {
                admin(
                    op,
                    "deleteEvent",
                    "Redacts a delivery that was not applied to a customer",
                    &NOT_FOUND_OR_CONFLICT,
                )
                .response::<204, ()>()
            }),
        )
        .api_route(
            "/events/{id}/reprocess",
            post_with(reprocess_event, |op| {
                admin(
                    op,
                    "reprocessEvent",
                    "Runs a kept delivery through its source's adapter again",
                    &NOT_FOUND_OR_CONFLICT,
                )
                .response::<200, Json<Receipt>>()
                .response::<202, Json<Receipt>>()
            }),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct EventParams {
    #[schemars(with = "Option<EventStatus>")]
    status: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn list_events(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<PageView<StoredEvent>>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| {
            EventStatus::parse(s)
                .ok_or_else(|| ApiError::bad_parameter("status must be accepted, quarantined or ignored"))
        })
        .transpose()?;
    let query = EventQuery {
        status,
        limit: params.page.limit()?,
        after: params.page.after()?,
        bodies: false,
    };
    Ok(Json(app.store.events(query).await?.into()))
}

/// A kept event with its raw body: as JSON where it is JSON (it always is
/// when kept by ingest), `null` once redacted.
#[derive(Serialize, JsonSchema)]
pub struct EventView {
    #[serde(flatten)]
    event: StoredEvent,
    body: Value,
}

async fn get_event(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<EventView>, ApiError> {
    let event = operations::event(&app, &id).await?;
    let body = match &event.body {
        Some(bytes) => {
            json::decode(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        }
        None => Value::Null,
    };
    Ok(Json(EventView { event, body }))
}

async fn delete_event(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<StatusCode, ApiError> {
    match app.store.redact_event(id.clone()).await? {
        EventRedaction::Redacted => {
            keys::record(&app, &principal, "event.delete", &id).await;
            tracing::info!(event_id = %id, "event redacted");
            Ok(StatusCode::NO_CONTENT)
        }
        EventRedaction::NotFound => Err(ApiError::not_found(format!("no event {id:?}"))),
        EventRedaction::Accepted => Err(ApiError::conflict(
            ErrorCode::CannotDelete,
            format!("event {id} was applied to its customer: erase the customer to remove it"),
        )),
    }
}

async fn reprocess_event(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Answer, ApiError> {
    Ok(answer(operations::reprocess(&app, &principal, &id).await?))
}
