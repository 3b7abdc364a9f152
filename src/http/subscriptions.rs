//! The outbound half of the admin API (SPEC §6): subscriptions, their
//! messages with every attempt, manual retry and replay.
//!
//! Behind the same admin token as the rest of `/api/v1`. A subscription's
//! secret is shown once, in the answer that creates it; the password of
//! its URL, never. A URL is refused at creation if it can be without DNS
//! (SPEC §16): another scheme, too long, a non-public IP address.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AppState;
use super::api::{PageView, parse_cursor, parse_limit};
use super::error::ApiError;
use crate::model::{UtcMillis, json};
use crate::outbound::destination::Refused;
use crate::outbound::{MessageStatus, Subscription, signing};
use crate::store::{Action, MessageQuery, Retry};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    url: String,
    secret: Option<String>,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
}

pub async fn create(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let new: NewSubscription = parse(&body)?;
    let url = reqwest::Url::parse(new.url.trim()).map_err(|_| invalid(Refused::Scheme.to_string()))?;
    app.destinations.check_url(&url).map_err(|refused| match refused {
        Refused::NotAllowed => invalid("url names a non-public address, which [delivery] allow_private does not list"),
        other => invalid(other.to_string()),
    })?;
    let secret = match new.secret {
        Some(secret) => {
            signing::check(&secret).map_err(|e| invalid(e.to_string()))?;
            secret
        }
        None => signing::generate_secret(),
    };
    let actions = new
        .actions
        .iter()
        .map(|a| Action::parse(a).ok_or_else(|| invalid("actions may hold created, updated, merged and deleted")))
        .collect::<Result<_, _>>()?;
    if let Some(unknown) = new.sources.iter().find(|s| !app.sources.contains_key(s.as_str())) {
        return Err(invalid(format!("sources: no source named {unknown:?} is configured")));
    }
    let subscription = Subscription {
        id: format!("sub_{}", uuid::Uuid::now_v7().simple()),
        url: url.to_string(),
        secret: secret.clone(),
        actions,
        sources: new.sources,
        enabled: true,
        created_at: UtcMillis::now(),
    };
    app.store.create_subscription(subscription.clone()).await?;
    tracing::info!(subscription = %subscription.id, "subscription created");
    let mut shown = serde_json::to_value(&subscription).expect("a subscription serializes");
    shown["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

pub async fn list(State(app): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "data": app.store.subscriptions().await? })))
}

pub async fn get(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Subscription>, ApiError> {
    let subscription = app.store.subscription(id.clone()).await?;
    Ok(Json(subscription.ok_or_else(|| not_found(&id))?))
}

pub async fn delete(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if !app.store.delete_subscription(id.clone()).await? {
        return Err(not_found(&id));
    }
    tracing::info!(subscription = %id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    enabled: bool,
}

pub async fn patch(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Subscription>, ApiError> {
    let patch: Patch = parse(&body)?;
    let subscription = app.store.set_subscription_enabled(id.clone(), patch.enabled).await?;
    let subscription = subscription.ok_or_else(|| not_found(&id))?;
    tracing::info!(subscription = %id, enabled = patch.enabled, "subscription updated");
    Ok(Json(subscription))
}

#[derive(Deserialize)]
pub struct MessageParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn messages(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<MessageParams>,
) -> Result<Json<PageView<crate::outbound::Message>>, ApiError> {
    if app.store.subscription(id.clone()).await?.is_none() {
        return Err(not_found(&id));
    }
    let status = params
        .status
        .as_deref()
        .map(|s| MessageStatus::parse(s).ok_or_else(|| invalid("status must be pending, delivered, dead or cancelled")))
        .transpose()?;
    let query = MessageQuery {
        subscription_id: id,
        status,
        limit: parse_limit(params.limit.as_deref())?,
        after: parse_cursor(params.cursor.as_deref())?,
    };
    Ok(Json(app.store.messages(query).await?.into()))
}

pub async fn retry(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match app.store.retry_message(id.clone()).await? {
        Retry::Queued => Ok((StatusCode::ACCEPTED, Json(json!({"status": "pending"}))).into_response()),
        Retry::NotFound => Err(ApiError::not_found(format!("no message {id:?}"))),
        Retry::Cancelled => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cancelled",
            format!("message {id:?} was cancelled by an erasure and is never sent again"),
        )),
    }
}

#[derive(Deserialize)]
pub struct ReplayParams {
    since: Option<String>,
}

pub async fn replay(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<ReplayParams>,
) -> Result<Response, ApiError> {
    let since = params
        .since
        .as_deref()
        .and_then(|s| s.parse::<UtcMillis>().ok())
        .ok_or_else(|| invalid("since must be an RFC 3339 time such as 2026-04-24T00:00:00Z"))?;
    let queued = app
        .store
        .replay(id.clone(), since)
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(subscription = %id, messages = queued, "replay queued");
    Ok((StatusCode::ACCEPTED, Json(json!({"messages": queued}))).into_response())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = json::parse_body(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    // Nothing kept holds a NUL (see `api::refuse_nul`): a secret with one
    // could not be stored on Postgres.
    if json::has_nul(&value) {
        return Err(invalid("strings cannot contain NUL (\\u0000)"));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id:?}"))
}
