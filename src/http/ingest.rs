//! `POST /webhooks/{source}`: authenticate a platform's delivery, read its
//! body safely, map it with the source's adapter and keep it in the store,
//! answering only once it is committed (SPEC §3).
//!
//! Checks run in the order SPEC §8 fixes: unknown source 404, sender
//! address 403, token 401, overload 503, size 413, encoding or JSON 400.
//! Nothing is stored for any of them.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode, document_errors};
use super::{openapi, server};
use crate::config::Secret;
use crate::model::UtcMillis;
use crate::sources::TokenHeader;
use crate::sources::delivery;
use crate::sources::held;
use crate::sources::registry::{LiveSource, Verify};
use crate::sources::standard_webhooks::Signed;
use crate::store::sources::Held;
use crate::store::{IngestOutcome, Outcome};

/// The statuses a delivery can be refused with, in the order of the checks.
const INGEST_ERRORS: [StatusCode; 10] = [
    StatusCode::NOT_FOUND,
    StatusCode::FORBIDDEN,
    StatusCode::UNAUTHORIZED,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::BAD_REQUEST,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    StatusCode::INTERNAL_SERVER_ERROR,
];

pub fn router() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/webhooks/{source}",
        post_with(receive, |op| {
            document_errors(op, &INGEST_ERRORS)
                .id("receiveDelivery")
                .summary("Receives one platform webhook delivery")
                .description(
                    "Answered once the delivery is committed. A source's token is sent in the header its \
                     platform uses (`Authorization: Bearer` for Treez and Clientele envelopes, \
                     `X-Vagaro-Signature` for Vagaro), or in the source's `auth_header` when configured. \
                     Retries with the same `webhook-id` or `idempotency-key` header, or the same body, \
                     answer `duplicate`. A `standard-webhooks` source authenticates by the \
                     `webhook-id`, `webhook-timestamp` and `webhook-signature` headers instead.",
                )
                .response_with::<200, Json<Receipt>, _>(|r| r.description("Kept (or suppressed for an erased id)"))
                .response_with::<202, Json<Receipt>, _>(|r| {
                    r.description("Kept, but quarantined; or held while its source is paused")
                })
                .security_requirement(openapi::SOURCE_BEARER)
                .security_requirement(openapi::SOURCE_HEADER)
                .security_requirement(openapi::SOURCE_SIGNATURE)
                .with(openapi::delivery_examples)
        }),
    )
}

/// The `{source}` of `/webhooks/{source}`.
#[derive(Deserialize, JsonSchema)]
struct SourcePath {
    /// A configured source's name.
    source: String,
}

async fn receive(
    State(app): State<Arc<AppState>>,
    Path(SourcePath { source }): Path<SourcePath>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(live) = app.registry.get(&source) else {
        return ApiError::not_found(format!("no source named {source:?} is configured")).into_response();
    };
    let name = live.source.name().to_owned();
    let (status, response) = match receive_checked(&app, &live, peer, &headers, body).await {
        Ok((kept, token)) => {
            let (status, stat) = match &kept {
                Kept::Held => ("held", "held"),
                Kept::Outcome(outcome) => (outcome_label(outcome), held::stat_of(outcome)),
            };
            app.registry.count(&name, stat, token.as_deref());
            let response = match kept {
                Kept::Held => (StatusCode::ACCEPTED, Json(Receipt::Held)).into_response(),
                Kept::Outcome(outcome) => answer(outcome).into_response(),
            };
            (status, response)
        }
        Err(error) => {
            // The sender's fault; a fault of ours is not the sender's count.
            if error.status().is_client_error() {
                app.registry.count(&name, "rejected", None);
            }
            (error.code(), error.into_response())
        }
    };
    metrics::counter!("clientele_deliveries_total", "source" => name, "status" => status).increment(1);
    // One histogram for the instance, not one per source: fifteen series a
    // source made a scrape of 10,000 sources' a hundred and fifty thousand
    // lines; per-source counts stay in the counter above.
    metrics::histogram!("clientele_ingest_duration_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// What became of an authentic delivery.
enum Kept {
    Outcome(IngestOutcome),
    /// Kept while its source is paused.
    Held,
}

/// Checks a delivery, keeps it, and says what became of it and which of
/// the source's tokens authenticated it.
async fn receive_checked(
    app: &AppState,
    live: &LiveSource,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Kept, Option<String>), ApiError> {
    let source = &live.source;
    if !source.allow_ips.is_empty() && !source.allow_ips.iter().any(|range| range.contains(peer.ip())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this address may not send to this source",
        ));
    }
    let adapter = source.kind.adapter();
    let now = UtcMillis::now();
    let now_seconds = now.as_millisecond().div_euclid(1000);
    let (mut token, signed) = match live.verify {
        Verify::Token => (Some(authenticate(live, adapter.token_header(), headers, now)?), None),
        Verify::StandardWebhooks => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
            // The timestamp is checked before the body is read; the
            // signature, which covers the body, after.
            let signed = Signed::new(
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
            )
            .and_then(|signed| signed.timely(now_seconds).map(|_| signed))
            .map_err(|refused| ApiError::unauthorized(refused.to_string()))?;
            (None, Some(signed))
        }
    };
    if !live.take() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "this source sends more than its rate_limit; retry shortly",
        ));
    }
    let _slot = app.ingest_slots.try_acquire().map_err(|_| ApiError::overloaded())?;
    let received_at = app.clock.now();
    let bytes = read_body(body, headers, app.max_body_bytes).await?;
    if let Some(signed) = signed {
        let keys: Vec<(&str, &[u8])> = live.keys(now).collect();
        let index = signed
            .verify(keys.iter().map(|(_, key)| *key), now_seconds, &bytes)
            .map_err(|refused| ApiError::unauthorized(refused.to_string()))?;
        token = Some(keys[index].0.to_owned());
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = delivery::delivery(source.kind, &source.settings, header, bytes, received_at)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidJson, e.to_string()))?;
    if app.registry.holds(live) {
        let held = Held {
            seq: 0,
            source: delivery.source,
            dedupe_key: delivery.dedupe_key,
            received_at,
            headers: serde_json::to_string(&delivery.headers).map_err(crate::store::StoreError::from)?,
            body: delivery.body,
        };
        app.store.hold(held).await?;
        app.registry.held(source.name());
        tracing::debug!(source = source.name(), "delivery held");
        return Ok((Kept::Held, token));
    }
    let outcome = app.store.ingest(delivery).await?;
    tracing::debug!(
        source = source.name(),
        status = outcome_label(&outcome),
        "delivery kept"
    );
    Ok((Kept::Outcome(outcome), token))
}

/// Accepts any one of the source's unexpired tokens, comparing digests in
/// constant time, every token compared; answers the one it is.
fn authenticate(
    live: &LiveSource,
    default: TokenHeader,
    headers: &HeaderMap,
    now: UtcMillis,
) -> Result<String, ApiError> {
    let presented = match (&live.source.auth_header, default) {
        (Some(name), _) => headers.get(name),
        (None, TokenHeader::Named(name)) => headers.get(name),
        (None, TokenHeader::Bearer) => headers.get(header::AUTHORIZATION),
    }
    .and_then(|v| v.to_str().ok())
    .map(|v| bearer(v).unwrap_or(v.trim()));
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        return Err(ApiError::unauthorized("this source's token is missing"));
    };
    live.token(presented, now)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("this source's token is wrong"))
}

/// The credentials of an `Authorization: Bearer …` value; the scheme's
/// name is case-insensitive (RFC 9110, 11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Whether `presented` is one of `tokens`, in time independent of where or
/// whether it matches.
pub fn matches_any(presented: &str, tokens: &[Secret]) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    tokens
        .iter()
        .fold(subtle::Choice::from(0), |found, token| {
            found | Sha256::digest(token.expose().as_bytes()).ct_eq(&presented)
        })
        .into()
}

/// Reads the body within `limit` bytes, both as sent and after gunzip (a
/// gzip bomb is a 413, not an out-of-memory). A gzip body is a series of
/// members (RFC 1952, 2.2) read as the concatenation of their contents;
/// bytes after a member that do not start another one are not gzip.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("the body is larger than max_body_bytes ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let sent = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            too_large()
        } else if server::is_body_timeout(e.as_ref()) {
            ApiError::body_timeout()
        } else {
            ApiError::bad_request(ErrorCode::UnreadableBody, "the body could not be read")
        }
    })?;
    let sent = sent.to_bytes();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(sent.to_vec()),
        Some("gzip" | "x-gzip") => {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&sent[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(|_| ApiError::bad_request(ErrorCode::BadEncoding, "the body is not valid gzip"))?;
            if plain.len() > limit {
                return Err(too_large());
            }
            Ok(plain)
        }
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::BadEncoding,
            "unsupported Content-Encoding: send the body plain or gzip",
        )),
    }
}

/// What became of a delivery (SPEC §3, §8).
#[derive(Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Receipt {
    /// Applied to its customer's record, or found stale or unchanged.
    #[serde(rename_all = "camelCase")]
    Accepted {
        outcome: Outcome,
        event_id: String,
        customer_id: String,
    },
    /// Kept before: nothing changed.
    #[serde(rename_all = "camelCase")]
    Duplicate { event_id: String },
    /// Kept, but not a customer event.
    #[serde(rename_all = "camelCase")]
    Ignored { event_id: String },
    /// Kept, but it could not be applied (answered `202`).
    #[serde(rename_all = "camelCase")]
    Quarantined { event_id: String, reason: String },
    /// For an erased customer: nothing was kept.
    Suppressed,
    /// Kept while the source is paused; applied, in arrival order, once it
    /// is enabled again (answered `202`).
    Held,
}

/// A receipt and its status: `202` for a quarantined delivery, else `200`.
pub type Answer = (StatusCode, Json<Receipt>);

/// The answer to a kept delivery.
pub fn answer(outcome: IngestOutcome) -> Answer {
    let receipt = match outcome {
        IngestOutcome::Accepted {
            event_id,
            customer_id,
            outcome,
        } => Receipt::Accepted {
            outcome,
            event_id,
            customer_id,
        },
        IngestOutcome::Duplicate { event_id } => Receipt::Duplicate { event_id },
        IngestOutcome::Ignored { event_id } => Receipt::Ignored { event_id },
        IngestOutcome::Quarantined { event_id, reason } => {
            return (StatusCode::ACCEPTED, Json(Receipt::Quarantined { event_id, reason }));
        }
        IngestOutcome::Suppressed => Receipt::Suppressed,
    };
    (StatusCode::OK, Json(receipt))
}

pub fn outcome_label(outcome: &IngestOutcome) -> &'static str {
    match outcome {
        IngestOutcome::Accepted { outcome, .. } => outcome.as_str(),
        IngestOutcome::Duplicate { .. } => "duplicate",
        IngestOutcome::Ignored { .. } => "ignored",
        IngestOutcome::Quarantined { .. } => "quarantined",
        IngestOutcome::Suppressed => "suppressed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", " Bearer t0k"] {
            assert_eq!(bearer(value), Some("t0k"), "{value:?}");
        }
        for value in ["t0k", "Basic t0k", "Bearert0k"] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }

    #[test]
    fn any_configured_token_matches_and_nothing_else() {
        let tokens = [Secret::from("old".to_owned()), Secret::from("new".to_owned())];
        assert!(matches_any("old", &tokens));
        assert!(matches_any("new", &tokens));
        assert!(!matches_any("ne", &tokens));
        assert!(!matches_any("", &tokens));
    }
}
