//! The outbound half of the admin API (SPEC §6): subscriptions, their
//! messages with every attempt, manual retry and replay.
//!
//! Behind the same admin token as the rest of `/api/v1`. A subscription's
//! secret is shown once, in the answer that creates it; the password of
//! its URL, never. A URL is refused at creation if it can be without DNS
//! (SPEC §15, §16): another scheme, a broker URL without its subject
//! prefix, exchange or stream, too long, a non-public IP address. Whether
//! a broker takes the credentials is learnt at the first send.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::api::{IdPath, PageParams, PageView, admin, parse_time};
use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, operations};
use crate::model::{Action, UtcMillis};
use crate::outbound::{Message, MessageStatus, Subscription};
use crate::store::MessageQuery;

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    const TOO_LARGE: [StatusCode; 1] = [StatusCode::PAYLOAD_TOO_LARGE];
    const NOT_FOUND_OR_TOO_LARGE: [StatusCode; 2] = [StatusCode::NOT_FOUND, StatusCode::PAYLOAD_TOO_LARGE];
    ApiRouter::new()
        .api_route(
            "/subscriptions",
            get_with(list, |op| admin(op, "listSubscriptions", "Every subscription", &[])).post_with(create, |op| {
                admin(
                    op,
                    "createSubscription",
                    "Subscribes a URL to the directory's changes",
                    &TOO_LARGE,
                )
                .response::<201, Json<Created>>()
            }),
        )
        .api_route(
            "/subscriptions/{id}",
            get_with(get, |op| admin(op, "getSubscription", "One subscription", &NOT_FOUND))
                .delete_with(delete, |op| {
                    admin(
                        op,
                        "deleteSubscription",
                        "Deletes a subscription and its messages",
                        &NOT_FOUND,
                    )
                    .response::<204, ()>()
                })
                .patch_with(patch, |op| {
                    admin(
                        op,
                        "updateSubscription",
                        "Enables or disables a subscription",
                        &NOT_FOUND_OR_TOO_LARGE,
                    )
                }),
        )
        .api_route(
            "/subscriptions/{id}/messages",
            get_with(messages, |op| {
                admin(
                    op,
                    "listMessages",
                    "A subscription's messages with their attempts",
                    &NOT_FOUND,
                )
            }),
        )
        .api_route(
            "/subscriptions/{id}/replay",
            post_with(replay, |op| {
                admin(
                    op,
                    "replaySubscription",
                    "Sends a subscription its messages since a time again",
                    &NOT_FOUND,
                )
                .response::<202, Json<Replayed>>()
            }),
        )
        .api_route(
            "/messages/{id}/retry",
            post_with(retry, |op| {
                admin(
                    op,
                    "retryMessage",
                    "Sends a message again",
                    &[StatusCode::NOT_FOUND, StatusCode::CONFLICT],
                )
                .response::<202, Json<Retried>>()
            }),
        )
}

/// A new subscription.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    /// Where messages are sent, not a non-public address: `https://…` (a
    /// signed POST), `nats://[user:pass@]host:4222/PREFIX` (JetStream,
    /// subject `PREFIX.{type}.{action}`), `amqp://user:pass@host:5672/vhost?exchange=X`
    /// (RabbitMQ, routing key `{type}.{action}`) or
    /// `redis://[user:pass@]host:6379/STREAM` (Redis Streams).
    url: String,
    /// `whsec_` and the base64 of 24 to 64 key bytes; generated when not given.
    secret: Option<String>,
    /// Which changes to send; empty or absent: every one.
    #[serde(default)]
    #[schemars(with = "Vec<Action>")]
    actions: Vec<String>,
    /// Changes of which sources' records to send; empty or absent: every source's.
    #[serde(default)]
    sources: Vec<String>,
    /// What to send: `customer` changes (also when empty or absent),
    /// `person` changes (SPEC §11), or both.
    #[serde(default)]
    types: Vec<String>,
}

/// A created subscription, with its secret, shown this once.
#[derive(Serialize, JsonSchema)]
struct Created {
    #[serde(flatten)]
    subscription: Subscription,
    secret: String,
}

async fn create(
    State(app): State<Arc<AppState>>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let (subscription, secret) = operations::create_subscription(
        &app,
        operations::NewSubscription {
            url: new.url,
            secret: new.secret,
            actions: new.actions,
            sources: new.sources,
            types: new.types,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Created { subscription, secret })))
}

/// Every subscription.
#[derive(Serialize, JsonSchema)]
struct Subscriptions {
    data: Vec<Subscription>,
}

async fn list(State(app): State<Arc<AppState>>) -> Result<Json<Subscriptions>, ApiError> {
    Ok(Json(Subscriptions {
        data: app.store.subscriptions().await?,
    }))
}

async fn get(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<Subscription>, ApiError> {
    let subscription = app.store.subscription(id.clone()).await?;
    Ok(Json(subscription.ok_or_else(|| not_found(&id))?))
}

async fn delete(State(app): State<Arc<AppState>>, Path(IdPath { id }): Path<IdPath>) -> Result<StatusCode, ApiError> {
    if !app.store.delete_subscription(id.clone()).await? {
        return Err(not_found(&id));
    }
    tracing::info!(subscription = %id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A change of a subscription.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Patch {
    /// `true` also sends the messages that waited while it was disabled.
    enabled: bool,
}

async fn patch(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
    ApiJson(patch): ApiJson<Patch>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(
        operations::set_subscription_enabled(&app, &id, patch.enabled).await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
struct MessageParams {
    #[schemars(with = "Option<MessageStatus>")]
    status: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn messages(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
    ApiQuery(params): ApiQuery<MessageParams>,
) -> Result<Json<PageView<Message>>, ApiError> {
    let query = MessageQuery {
        subscription_id: id,
        customer_id: None,
        status: operations::message_status(params.status.as_deref())?,
        limit: params.page.limit()?,
        after: params.page.after()?,
    };
    Ok(Json(operations::messages(&app, query).await?.into()))
}

/// A message queued to be sent again.
#[derive(Serialize, JsonSchema)]
struct Retried {
    status: MessageStatus,
}

async fn retry(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    operations::retry(&app, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            status: MessageStatus::Pending,
        }),
    ))
}

#[derive(Deserialize, JsonSchema)]
struct ReplayParams {
    /// Messages created at or after this time are sent again.
    #[schemars(with = "UtcMillis")]
    since: Option<String>,
}

/// How many messages a replay queued.
#[derive(Serialize, JsonSchema)]
struct Replayed {
    messages: u64,
}

async fn replay(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
    ApiQuery(params): ApiQuery<ReplayParams>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let since = parse_time("since", params.since.as_deref())?
        .ok_or_else(|| ApiError::bad_parameter("since is required: an RFC 3339 time such as 2026-04-24T18:38:21Z"))?;
    let queued = operations::replay(&app, &principal, &id, since).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { messages: queued })))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id:?}"))
}
