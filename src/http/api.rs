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
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::ingest::{answer, bearer, matches_any, outcome_label};
use crate::model::{Customer, UtcMillis, json, normalize};
use crate::store::{
    CustomerQuery, Erasure, EventQuery, EventRedaction, EventStatus, HistoryEntry, HistoryQuery, Page, Publish,
    StoredEvent,
};

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

/// Refuses a NUL (`%00`) anywhere in a request's path or query before a
/// handler reads it: nothing Clientele keeps holds one (platform strings
/// lose theirs in `normalize`, API bodies are refused by
/// [`super::subscriptions`]' parser), and Postgres cannot even compare
/// text with one. In a path it names something to find, which nothing is:
/// `404`. In a query it is a value that can never be valid: `400`.
pub async fn refuse_nul(request: Request, next: Next) -> Response {
    const NUL: &str = "%00";
    let uri = request.uri();
    if uri.path().contains(NUL) {
        return ApiError::not_found("nothing here: no id contains NUL").into_response();
    }
    if uri.query().is_some_and(|q| q.contains(NUL)) {
        return ApiError::bad_request("bad_parameter", "query parameters cannot contain NUL (%00)").into_response();
    }
    next.run(request).await
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
            Ok(StatusCode::NO_CONTENT)
        }
        Erasure::AlreadyErased => Ok(StatusCode::NO_CONTENT),
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

#[derive(Deserialize)]
pub struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn customer_history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<PageView<HistoryEntry>>, ApiError> {
    let query = HistoryQuery {
        customer_id: id.clone(),
        limit: parse_limit(params.limit.as_deref())?,
        after: parse_cursor(params.cursor.as_deref())?,
    };
    let history = app
        .store
        .history(query)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no customer {id:?}")))?;
    Ok(Json(history.into()))
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

pub async fn delete_event(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match app.store.redact_event(id.clone()).await? {
        EventRedaction::Redacted => {
            tracing::info!(event_id = %id, "event redacted");
            Ok(StatusCode::NO_CONTENT)
        }
        EventRedaction::NotFound => Err(ApiError::not_found(format!("no event {id:?}"))),
        EventRedaction::Accepted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_delete",
            format!("event {id} was applied to its customer: erase the customer to remove it"),
        )),
    }
}

pub async fn reprocess_event(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let event = app
        .store
        .event(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {id:?}")))?;
    let conflict = |message: String| ApiError::new(StatusCode::CONFLICT, "cannot_reprocess", message);
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
