//! `/api/v1/sources` (SPEC §9): sources as data. Create, change, pause,
//! delete; rotate and revoke tokens; each with its delivery stats.
//!
//! A token is generated here and shown once, in the answer that creates
//! it; the store keeps its SHA-256 digest (a Standard Webhooks source's
//! `whsec_` secret is kept itself: its HMAC needs it). Each change is
//! written to the store, which moves its sources version, and the
//! registry of this instance reads it again before answering; the other
//! instances follow within their poll interval. Sources of the
//! configuration file are listed (`managed: "config"`) but not changed
//! here: `409`.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::AppState;
use super::api::admin;
use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, invalid, parse_json};
use super::keys::{random_secret, record};
use crate::model::UtcMillis;
use crate::outbound::signing;
use crate::sources::registry::{self, LiveSource, Managed, Verify};
use crate::store::sources::{SourceDeletion, SourceSpec, Stats, StoredSource, StoredToken, hour_of};

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    const NOT_FOUND_OR_CONFLICT: [StatusCode; 2] = [StatusCode::NOT_FOUND, StatusCode::CONFLICT];
    ApiRouter::new()
        .api_route(
            "/sources",
            get_with(list, |op| {
                admin(op, "listSources", "Every source, with its tokens and stats", &[])
            })
            .post_with(create, |op| {
                admin(
                    op,
                    "createSource",
                    "Creates a source; its first token is shown only in this answer",
                    &[StatusCode::CONFLICT],
                )
                .response::<201, Json<CreatedSource>>()
            }),
        )
        .api_route(
            "/sources/{name}",
            get_with(get, |op| admin(op, "getSource", "One source", &NOT_FOUND))
                .patch_with(patch, |op| {
                    admin(
                        op,
                        "updateSource",
                        "Changes a source's settings, or pauses (enabled: false) or resumes it",
                        &NOT_FOUND_OR_CONFLICT,
                    )
                })
                .delete_with(delete, |op| {
                    admin(
                        op,
                        "deleteSource",
                        "Deletes a source; what it kept stays",
                        &NOT_FOUND_OR_CONFLICT,
                    )
                    .response::<204, ()>()
                }),
        )
        .api_route(
            "/sources/{name}/tokens",
            post_with(create_token, |op| {
                admin(
                    op,
                    "createSourceToken",
                    "Adds a token to a source (rotation); shown only in this answer",
                    &NOT_FOUND_OR_CONFLICT,
                )
                .input::<ApiJson<NewToken>>()
                .response::<201, Json<CreatedToken>>()
            }),
        )
        .api_route(
            "/sources/{name}/tokens/{id}",
            delete_with(delete_token, |op| {
                admin(
                    op,
                    "deleteSourceToken",
                    "Revokes a source's token from the next request on",
                    &NOT_FOUND_OR_CONFLICT,
                )
                .response::<204, ()>()
            }),
        )
}

#[derive(Deserialize, JsonSchema)]
struct NamePath {
    name: String,
}

#[derive(Deserialize, JsonSchema)]
struct TokenPath {
    name: String,
    id: String,
}

/// Where a source is defined.
#[derive(Serialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ManagedBy {
    Api,
    Config,
}

/// One of a source's tokens: never the token.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenView {
    pub id: String,
    /// `null` for the configuration file's tokens.
    pub created_at: Option<UtcMillis>,
    /// Recorded within a few seconds; `null` for the file's tokens.
    pub last_used_at: Option<UtcMillis>,
    pub expires_at: Option<UtcMillis>,
}

/// Deliveries of the last 24 hourly buckets (the current one included).
#[derive(Serialize, JsonSchema, Default)]
pub(crate) struct Last24h {
    pub accepted: u64,
    pub duplicate: u64,
    pub ignored: u64,
    pub quarantined: u64,
    /// Refused: a wrong token, address, size or body, or over the rate limit.
    pub rejected: u64,
    /// Kept while the source was paused.
    pub held: u64,
    /// For an erased customer: nothing kept.
    pub suppressed: u64,
}

#[derive(Serialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatsView {
    pub last_delivery_at: Option<UtcMillis>,
    pub last24h: Last24h,
}

impl From<Stats> for StatsView {
    fn from(stats: Stats) -> Self {
        let mut last = Last24h::default();
        for (outcome, n) in stats.counts {
            match outcome.as_str() {
                "accepted" => last.accepted += n,
                "duplicate" => last.duplicate += n,
                "ignored" => last.ignored += n,
                "quarantined" => last.quarantined += n,
                "rejected" => last.rejected += n,
                "held" => last.held += n,
                "suppressed" => last.suppressed += n,
                _ => {}
            }
        }
        Self {
            last_delivery_at: stats.last_delivery_at,
            last24h: last,
        }
    }
}

/// A source as the API shows it.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SourceView {
    pub name: String,
    pub managed: ManagedBy,
    /// `false`: paused, its deliveries held until it is enabled again.
    pub enabled: bool,
    #[serde(flatten)]
    pub spec: SourceSpec,
    pub created_at: Option<UtcMillis>,
    pub tokens: Vec<TokenView>,
    pub stats: StatsView,
}

#[derive(Serialize, JsonSchema)]
struct Sources {
    data: Vec<SourceView>,
}

/// A created source, with its first token.
#[derive(Serialize, JsonSchema)]
struct CreatedSource {
    #[serde(flatten)]
    source: SourceView,
    /// Shown only here: a `whsec_` secret for a `standard-webhooks` source.
    token: String,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedToken {
    pub id: String,
    /// Shown only here.
    pub token: String,
    pub expires_at: Option<UtcMillis>,
}

fn view(stored: StoredSource, stats: Option<Stats>) -> SourceView {
    SourceView {
        name: stored.name,
        managed: ManagedBy::Api,
        enabled: stored.enabled,
        spec: stored.spec,
        created_at: Some(stored.created_at),
        tokens: stored
            .tokens
            .into_iter()
            .map(|t| TokenView {
                id: t.id,
                created_at: Some(t.created_at),
                last_used_at: t.last_used_at,
                expires_at: t.expires_at,
            })
            .collect(),
        stats: stats.map(Into::into).unwrap_or_default(),
    }
}

fn config_view(live: &LiveSource, stats: Option<Stats>) -> SourceView {
    SourceView {
        name: live.source.name().to_owned(),
        managed: ManagedBy::Config,
        enabled: true,
        spec: registry::spec_of(&live.source),
        created_at: None,
        tokens: live
            .tokens
            .iter()
            .map(|t| TokenView {
                id: t.id.clone(),
                created_at: None,
                last_used_at: None,
                expires_at: None,
            })
            .collect(),
        stats: stats.map(Into::into).unwrap_or_default(),
    }
}

/// The first hour of the last 24 hourly buckets.
fn since() -> String {
    let then = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(23))
        .unwrap_or(jiff::Timestamp::MIN);
    hour_of(UtcMillis::from_timestamp(then))
}

async fn list(State(app): State<Arc<AppState>>) -> Result<Json<Sources>, ApiError> {
    Ok(Json(Sources { data: all(&app).await? }))
}

/// Every source, by name, with its tokens and stats.
pub(crate) async fn all(app: &AppState) -> Result<Vec<SourceView>, ApiError> {
    let mut stats = app.store.stats(None, since()).await?;
    let mut data: Vec<SourceView> = app
        .registry
        .all()
        .iter()
        .filter(|live| live.managed == Managed::Config)
        .map(|live| config_view(live, stats.remove(live.source.name())))
        .collect();
    for stored in app.store.stored_sources(None, None).await?.sources {
        let stats = stats.remove(&stored.name);
        data.push(view(stored, stats));
    }
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(data)
}

/// One source, with its tokens and stats.
pub(crate) async fn find(app: &AppState, name: &str) -> Result<SourceView, ApiError> {
    let mut stats = app.store.stats(Some(name.to_owned()), since()).await?;
    if let Some(live) = app.registry.get(name).filter(|l| l.managed == Managed::Config) {
        return Ok(config_view(&live, stats.remove(name)));
    }
    let stored = app
        .store
        .stored_sources(None, Some(name.to_owned()))
        .await?
        .sources
        .pop()
        .ok_or_else(|| not_found(name))?;
    Ok(view(stored, stats.remove(name)))
}

async fn get(
    State(app): State<Arc<AppState>>,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Json<SourceView>, ApiError> {
    Ok(Json(find(&app, &name).await?))
}

/// Reads a field that may be `null`: absent is `None`, `null` is
/// `Some(Value::Null)`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A new source.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSource {
    /// The URL segment of `POST /webhooks/{name}`: letters, digits, `-`, `_`.
    name: String,
    /// `vagaro`, `treez` or `clientele`.
    kind: String,
    /// `token` (default) or `standard-webhooks` (the `clientele` kind).
    verify: Option<String>,
    default_country: Option<String>,
    timezone: Option<String>,
    account: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    rate_limit: Option<u32>,
    auth_header: Option<String>,
    /// `false` creates it paused.
    enabled: Option<bool>,
}

/// A change of a source: each field given replaces its setting (`null`
/// clears it); the others stay.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SourcePatch {
    /// `false` pauses it (deliveries held); `true` applies what it held, in
    /// arrival order, then takes deliveries again.
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    kind: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    verify: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    default_country: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    timezone: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    account: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<Vec<String>>")]
    allow_ips: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<u32>")]
    rate_limit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    auth_header: Option<Value>,
}

fn check(name: &str, spec: &SourceSpec) -> Result<Verify, ApiError> {
    registry::build(name, spec)
        .map(|(_, verify)| verify)
        .map_err(|e| invalid(e.to_string()))
}

/// A new token for a source that verifies `verify`: its secret and what
/// the store keeps.
fn new_token(source: &str, verify: Verify, expires_at: Option<UtcMillis>) -> (String, StoredToken) {
    let secret = match verify {
        Verify::Token => random_secret("cst_"),
        Verify::StandardWebhooks => signing::generate_secret(),
    };
    let stored = StoredToken {
        id: format!("tok_{}", uuid::Uuid::now_v7().simple()),
        source: source.to_owned(),
        digest: registry::digest(&secret),
        secret: (verify == Verify::StandardWebhooks).then(|| secret.clone()),
        created_at: UtcMillis::now(),
        expires_at,
        last_used_at: None,
    };
    (secret, stored)
}

async fn create(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(new): ApiJson<NewSource>,
) -> Result<(StatusCode, Json<CreatedSource>), ApiError> {
    let spec = SourceSpec {
        kind: new.kind,
        verify: new.verify,
        default_country: new.default_country,
        timezone: new.timezone,
        account: new.account,
        allow_ips: new.allow_ips,
        rate_limit: new.rate_limit,
        auth_header: new.auth_header,
    };
    let verify = check(&new.name, &spec)?;
    let taken = || ApiError::conflict(ErrorCode::NameTaken, format!("a source named {:?} exists", new.name));
    if app
        .registry
        .get(&new.name)
        .is_some_and(|l| l.managed == Managed::Config)
    {
        return Err(taken());
    }
    let (token, stored_token) = new_token(&new.name, verify, None);
    let stored = StoredSource {
        name: new.name.clone(),
        spec,
        enabled: new.enabled.unwrap_or(true),
        created_at: UtcMillis::now(),
        tokens: vec![stored_token],
    };
    if !app.store.create_source(stored.clone()).await? {
        return Err(taken());
    }
    app.registry.reload().await?;
    record(&app, &principal, "source.create", &new.name).await;
    tracing::info!(source = %new.name, "source created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedSource {
            source: view(stored, None),
            token,
        }),
    ))
}

/// An API source, or why it cannot be changed here.
async fn api_source(app: &AppState, name: &str) -> Result<StoredSource, ApiError> {
    if app.registry.get(name).is_some_and(|l| l.managed == Managed::Config) {
        return Err(ApiError::conflict(
            ErrorCode::ManagedByConfig,
            format!("source {name:?} is defined in the configuration file: change it there"),
        ));
    }
    app.store
        .stored_sources(None, Some(name.to_owned()))
        .await?
        .sources
        .pop()
        .ok_or_else(|| not_found(name))
}

async fn patch(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(NamePath { name }): Path<NamePath>,
    ApiJson(patch): ApiJson<SourcePatch>,
) -> Result<Json<SourceView>, ApiError> {
    let stored = api_source(&app, &name).await?;
    let mut fields = match serde_json::to_value(&stored.spec) {
        Ok(Value::Object(fields)) => fields,
        _ => {
            return Err(ApiError::from(crate::store::StoreError::Bug(
                "a spec is an object".into(),
            )));
        }
    };
    let changes = [
        ("kind", patch.kind),
        ("verify", patch.verify),
        ("defaultCountry", patch.default_country),
        ("timezone", patch.timezone),
        ("account", patch.account),
        ("allowIps", patch.allow_ips),
        ("rateLimit", patch.rate_limit),
        ("authHeader", patch.auth_header),
    ];
    for (field, value) in changes {
        match value {
            Some(Value::Null) if field == "allowIps" => {
                fields.insert(field.to_owned(), Value::Array(Vec::new()));
            }
            Some(Value::Null) if field == "kind" => return Err(invalid("kind: cannot be null")),
            Some(value) => {
                fields.insert(field.to_owned(), value);
            }
            None => {}
        }
    }
    let spec: SourceSpec = serde_path_to_error::deserialize(Value::Object(fields))
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))?;
    let verify = check(&name, &spec)?;
    let was = registry::build(&name, &stored.spec).map(|(_, v)| v).ok();
    if was.is_some_and(|was| was != verify) {
        return Err(invalid(
            "verify: cannot change on an existing source (its tokens are of the other kind): create another source",
        ));
    }
    let enabled = patch.enabled.unwrap_or(stored.enabled);
    Ok(Json(save(&app, &principal, &name, spec, enabled).await?))
}

/// Pauses (`false`) or enables an API source; it as it is then.
pub(crate) async fn set_enabled(
    app: &AppState,
    principal: &Principal,
    name: &str,
    enabled: bool,
) -> Result<SourceView, ApiError> {
    let stored = api_source(app, name).await?;
    save(app, principal, name, stored.spec, enabled).await
}

async fn save(
    app: &AppState,
    principal: &Principal,
    name: &str,
    spec: SourceSpec,
    enabled: bool,
) -> Result<SourceView, ApiError> {
    if !app.store.update_source(name.to_owned(), spec, enabled).await? {
        return Err(not_found(name));
    }
    app.registry.reload().await?;
    record(app, principal, "source.update", name).await;
    tracing::info!(source = %name, enabled, "source updated");
    find(app, name).await
}

async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<StatusCode, ApiError> {
    api_source(&app, &name).await?;
    match app.store.delete_source(name.clone()).await? {
        SourceDeletion::Deleted => {}
        SourceDeletion::NotFound => return Err(not_found(&name)),
        SourceDeletion::Holding => {
            return Err(ApiError::conflict(
                ErrorCode::Holding,
                format!("source {name:?} holds deliveries not applied yet: enable it first"),
            ));
        }
    }
    app.registry.reload().await?;
    record(&app, &principal, "source.delete", &name).await;
    tracing::info!(source = %name, "source deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A new token's lifetime.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewToken {
    /// Seconds, or a number and a unit: `"90d"`, `"12h"`, `"30m"`, `"45s"`.
    /// Absent: it never expires.
    #[schemars(with = "Option<String>")]
    expires_in: Option<Value>,
}

/// A lifetime as seconds or `"90d"`.
fn lifetime(value: &Value) -> Option<u64> {
    let seconds = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let s = s.trim();
            let unit = match s.chars().last()? {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            s[..s.len() - 1].parse::<u64>().ok()?.checked_mul(unit)?
        }
        _ => return None,
    };
    // At most ten years.
    (1..=10 * 366 * 86_400).contains(&seconds).then_some(seconds)
}

async fn create_token(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(NamePath { name }): Path<NamePath>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    // The body is optional: none is a token that never expires.
    let new: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        parse_json(&body)?
    };
    let expires_at = new
        .expires_in
        .as_ref()
        .map(|value| {
            lifetime(value)
                .map(|seconds| UtcMillis::now().saturating_add(std::time::Duration::from_secs(seconds)))
                .ok_or_else(|| {
                    invalid("expiresIn: must be seconds or a number and a unit (\"90d\", \"12h\"), up to 10 years")
                })
        })
        .transpose()?;
    let created = add_token(&app, &principal, &name, expires_at).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Adds a token to an API source (a rotation starts here); shown this
/// once.
pub(crate) async fn add_token(
    app: &AppState,
    principal: &Principal,
    name: &str,
    expires_at: Option<UtcMillis>,
) -> Result<CreatedToken, ApiError> {
    let stored = api_source(app, name).await?;
    let verify = check(name, &stored.spec)?;
    let (token, stored_token) = new_token(name, verify, expires_at);
    let id = stored_token.id.clone();
    if !app.store.add_token(stored_token).await? {
        return Err(not_found(name));
    }
    app.registry.reload().await?;
    record(app, principal, "token.create", &format!("{name}/{id}")).await;
    tracing::info!(source = %name, token = %id, "source token created");
    Ok(CreatedToken { id, token, expires_at })
}

async fn delete_token(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(TokenPath { name, id }): Path<TokenPath>,
) -> Result<StatusCode, ApiError> {
    revoke_token(&app, &principal, &name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes an API source's token from the next request on.
pub(crate) async fn revoke_token(app: &AppState, principal: &Principal, name: &str, id: &str) -> Result<(), ApiError> {
    api_source(app, name).await?;
    if !app.store.delete_token(name.to_owned(), id.to_owned()).await? {
        return Err(ApiError::not_found(format!("source {name:?} has no token {id:?}")));
    }
    app.registry.reload().await?;
    record(app, principal, "token.revoke", &format!("{name}/{id}")).await;
    tracing::info!(source = %name, token = %id, "source token revoked");
    Ok(())
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no source named {name:?}"))
}
