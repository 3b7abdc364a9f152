//! The admin API under `/api/v1` (SPEC §5): the customer directory, each
//! customer's history, and the kept raw events with reprocessing.
//!
//! Every route here requires `Authorization: Bearer {admin_token}`
//! ([`require_admin`]); a source's token is never an admin token. Reads go
//! straight to the store; a reprocess maps the kept body again with the
//! source's current adapter settings before the store applies it.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::ingest::{answer, bearer, matches_any, outcome_label};
use crate::model::{Customer, UtcMillis, json, normalize};
use crate::store::{CustomerQuery, Erasure, EventQuery, EventStatus, Page, Publish, StoredEvent};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub async fn require_admin(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match token {
        Some(token) if matches_any(token, std::slice::from_ref(&app.admin_token)) => next.run(request).await,
        Some(_) => ApiError::unauthorized("the admin token is wrong").into_response(),
        None => ApiError::unauthorized("send the admin token as Authorization: Bearer …").into_response(),
    }
}

#[derive(Deserialize)]
pub struct GetParams {
    resolve: Option<String>,
}

pub async fn get_customer(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<GetParams>,
) -> Result<Json<Customer>, ApiError> {
    let resolve = parse_bool("resolve", params.resolve.as_deref())?.unwrap_or(false);
    let not_found = || ApiError::not_found(format!("no customer {id:?}"));
    let mut customer = app.store.customer(id.clone()).await?.ok_or_else(not_found)?;
    if resolve {
        // Follows mergedInto to the survivor, stopping before a cycle or a
        // record that is gone (erased).
        let mut seen = HashSet::from([customer.id.clone()]);
        while let Some(next) = customer.merged_into.clone().filter(|next| seen.insert(next.clone())) {
            match app.store.customer(next).await? {
                Some(survivor) => customer = survivor,
                None => break,
            }
        }
    }
    Ok(Json(customer))
}

pub async fn erase_customer(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    match app.store.erase(id.clone()).await? {
        Erasure::Erased => {
            tracing::info!(customer = %id, "customer erased");
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        Erasure::AlreadyErased => Ok(axum::http::StatusCode::NO_CONTENT),
        Erasure::NotFound => Err(ApiError::not_found(format!("no customer {id:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    source: Option<String>,
    account: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    business_id: Option<String>,
    changed_since: Option<String>,
    include_merged: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageView<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> From<Page<T>> for PageView<T> {
    fn from(page: Page<T>) -> Self {
        Self {
            data: page.items,
            next_cursor: page.next.map(|n| n.to_string()),
        }
    }
}

pub async fn list_customers(
    State(app): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> Result<Json<PageView<Customer>>, ApiError> {
    let phone = params
        .phone
        .as_deref()
        .map(|raw| phone_filter(&app, params.source.as_deref(), raw))
        .transpose()?;
    let changed_since = params
        .changed_since
        .as_deref()
        .map(|t| {
            t.parse::<UtcMillis>().map_err(|_| {
                ApiError::bad_request(
                    "bad_parameter",
                    "changedSince must be an RFC 3339 time such as 2026-04-24T18:38:21Z",
                )
            })
        })
        .transpose()?;
    let query = CustomerQuery {
        source: params.source,
        account: params.account,
        email: params.email,
        phone,
        business_id: params.business_id,
        changed_since,
        include_merged: parse_bool("includeMerged", params.include_merged.as_deref())?.unwrap_or(false),
        limit: parse_limit(params.limit.as_deref())?,
        after: parse_cursor(params.cursor.as_deref())?,
    };
    Ok(Json(app.store.customers(query).await?.into()))
}

/// Reads a phone filter in any format, with the country of the `source`
/// filter when given, else of the first configured source.
fn phone_filter(app: &AppState, source: Option<&str>, raw: &str) -> Result<String, ApiError> {
    let country = source
        .and_then(|name| app.sources.get(name))
        .or_else(|| app.first_source.as_ref().and_then(|name| app.sources.get(name)))
        .and_then(|s| s.settings.default_country);
    normalize::phone("query", &Value::String(raw.to_owned()), country)
        .ok()
        .flatten()
        .and_then(|p| p.e164)
        .ok_or_else(|| ApiError::bad_request("bad_parameter", "phone cannot be read as a phone number"))
}

pub async fn customer_history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let history = app
        .store
        .history(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no customer {id:?}")))?;
    Ok(Json(json!({ "data": history })))
}

#[derive(Deserialize)]
pub struct EventParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list_events(
    State(app): State<Arc<AppState>>,
    Query(params): Query<EventParams>,
) -> Result<Json<PageView<StoredEvent>>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| {
            EventStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("bad_parameter", "status must be accepted, quarantined or ignored")
            })
        })
        .transpose()?;
    let query = EventQuery {
        status,
        limit: parse_limit(params.limit.as_deref())?,
        after: parse_cursor(params.cursor.as_deref())?,
        bodies: false,
    };
    Ok(Json(app.store.events(query).await?.into()))
}

/// A kept event with its raw body: as JSON where it is JSON (it always is
/// when kept by ingest), `null` once redacted.
#[derive(Serialize)]
pub struct EventView {
    #[serde(flatten)]
    event: StoredEvent,
    body: Value,
}

pub async fn get_event(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<EventView>, ApiError> {
    let event = app
        .store
        .event(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?;
    let body = match &event.body {
        Some(bytes) => {
            json::decode(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        }
        None => Value::Null,
    };
    Ok(Json(EventView { event, body }))
}

pub async fn reprocess_event(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let event = app
        .store
        .event(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?;
    let conflict = |message: String| ApiError::new(axum::http::StatusCode::CONFLICT, "cannot_reprocess", message);
    let source = app
        .sources
        .get(&event.source)
        .ok_or_else(|| conflict(format!("source {:?} is no longer configured", event.source)))?;
    let body = event
        .body
        .ok_or_else(|| conflict(format!("event {id} was redacted by an erasure")))?;
    let read = json::parse_delivery(&body).map_err(|_| conflict(format!("event {id} has no JSON body to map")))?;
    let mapped = source.kind.map(&read, &source.settings);
    let outcome = app
        .store
        .reprocess(id.clone(), mapped, Publish::Yes)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?;
    tracing::info!(event_id = %id, status = outcome_label(&outcome), "event reprocessed");
    Ok(answer(outcome))
}

fn parse_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    value
        .map(|v| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_request(
                "bad_parameter",
                format!("{name} must be true or false"),
            )),
        })
        .transpose()
}

pub fn parse_limit(value: Option<&str>) -> Result<usize, ApiError> {
    match value {
        None => Ok(DEFAULT_PAGE),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request("bad_parameter", format!("limit must be from 1 to {MAX_PAGE}"))),
    }
}

pub fn parse_cursor(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request("bad_parameter", "cursor must be a nextCursor from a previous page"))
        })
        .transpose()
}
