//! `/api/v1/keys` and `/api/v1/audit` (SPEC §9): API keys with scopes,
//! the key shown once at creation and kept as a SHA-256 digest; and the
//! log of administrative actions, which [`record`] writes for the other
//! areas (sources and tokens, keys, erasures, replays, reprocessing).
//!
//! Both need the `admin` scope (see `super::auth::required_scope`). The
//! audit log holds who (a key id), what and when, never a secret nor a
//! customer's data: an erased customer is logged as the SHA-256 of its
//! id, which confirms a known id and shows none.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::api::{IdPath, PageParams, PageView, admin};
use super::auth::{Principal, Scope};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, operations};
use crate::model::UtcMillis;
use crate::sources::registry::digest;
use crate::store::keys::{AuditEntry, StoredKey};

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    ApiRouter::new()
        .api_route(
            "/keys",
            get_with(list, |op| admin(op, "listKeys", "Every API key (never the key)", &[])).post_with(create, |op| {
                admin(op, "createKey", "Creates an API key, shown only in this answer", &[])
                    .response::<201, Json<CreatedKey>>()
            }),
        )
        .api_route(
            "/keys/{id}",
            get_with(get, |op| admin(op, "getKey", "One API key (never the key)", &NOT_FOUND)).delete_with(
                delete,
                |op| {
                    admin(
                        op,
                        "deleteKey",
                        "Revokes an API key from the next request on",
                        &NOT_FOUND,
                    )
                    .response::<204, ()>()
                },
            ),
        )
        .api_route(
            "/audit",
            get_with(audit, |op| {
                admin(op, "listAudit", "Administrative actions, newest first", &[])
            }),
        )
}

/// A new API key.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// What the key is for, for people.
    name: String,
    /// Any of `read`, `write`, `erase`, `admin`.
    #[schemars(with = "Vec<Scope>")]
    scopes: Vec<String>,
}

/// A created key, shown this once.
#[derive(Serialize, JsonSchema)]
struct CreatedKey {
    /// Shown only here.
    key: String,
    #[serde(flatten)]
    stored: StoredKey,
}

/// Every key.
#[derive(Serialize, JsonSchema)]
struct Keys {
    data: Vec<StoredKey>,
}

/// `prefix` and the base64url of 32 random bytes.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn create(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(new): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let (key, stored) = operations::create_key(&app, &principal, &new.name, &new.scopes).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key, stored })))
}

async fn list(State(app): State<Arc<AppState>>) -> Result<Json<Keys>, ApiError> {
    Ok(Json(Keys {
        data: app.store.keys().await?,
    }))
}

async fn get(State(app): State<Arc<AppState>>, Path(IdPath { id }): Path<IdPath>) -> Result<Json<StoredKey>, ApiError> {
    let key = app.store.key(id.clone()).await?;
    Ok(Json(key.ok_or_else(|| ApiError::not_found(format!("no key {id:?}")))?))
}

async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<StatusCode, ApiError> {
    operations::revoke_key(&app, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<PageView<AuditEntry>>, ApiError> {
    Ok(Json(app.store.audit(params.limit()?, params.after()?).await?.into()))
}

/// Records an administrative action. The action is done: a failure to
/// record it is logged, not answered.
pub async fn record(app: &AppState, principal: &Principal, action: &str, target: &str) {
    let entry = AuditEntry {
        at: UtcMillis::now(),
        key_id: principal.key_id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
    };
    if let Err(e) = app.store.record_audit(entry).await {
        tracing::error!(error = %e, action, "cannot record an administrative action in the audit log");
    }
}

/// How the audit log names an erased customer: never the id itself.
pub fn erased_target(customer_id: &str) -> String {
    format!("customer:{}", digest(customer_id))
}
