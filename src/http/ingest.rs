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
use crate::config::{Secret, Source};
use crate::model::UtcMillis;
use crate::sources::TokenHeader;
use crate::sources::delivery;
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
                     answer `duplicate`.",
                )
                .response_with::<200, Json<Receipt>, _>(|r| r.description("Kept (or suppressed for an erased id)"))
                .response_with::<202, Json<Receipt>, _>(|r| r.description("Kept, but quarantined"))
                .security_requirement(openapi::SOURCE_BEARER)
                .security_requirement(openapi::SOURCE_HEADER)
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
    let Some(source) = app.sources.get(&source) else {
        return ApiError::not_found(format!("no source named {source:?} is configured")).into_response();
    };
    let (status, response) = match receive_checked(&app, source, peer, &headers, body).await {
        Ok(outcome) => {
            let status = outcome_label(&outcome);
            (status, answer(outcome).into_response())
        }
        Err(error) => (error.code(), error.into_response()),
    };
    let name = source.name().to_owned();
    metrics::counter!("clientele_deliveries_total", "source" => name.clone(), "status" => status).increment(1);
    metrics::histogram!("clientele_ingest_duration_seconds", "source" => name).record(started.elapsed().as_secs_f64());
    response
}

async fn receive_checked(
    app: &AppState,
    source: &Source,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestOutcome, ApiError> {
    if !source.allow_ips.is_empty() && !source.allow_ips.iter().any(|range| range.contains(peer.ip())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this address may not send to this source",
        ));
    }
    let adapter = source.kind.adapter();
    authenticate(source, adapter.token_header(), headers)?;
    if !app.rate_limits.take(source.name()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "this source sends more than its rate_limit; retry shortly",
        ));
    }
    let _slot = app.ingest_slots.try_acquire().map_err(|_| ApiError::overloaded())?;
    let received_at = UtcMillis::now();
    let bytes = read_body(body, headers, app.max_body_bytes).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = delivery::delivery(source.kind, &source.settings, header, bytes, received_at)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidJson, e.to_string()))?;
    let outcome = app.store.ingest(delivery).await?;
    tracing::debug!(
        source = source.name(),
        status = outcome_label(&outcome),
        "delivery kept"
    );
    Ok(outcome)
}

/// Accepts any one of the source's tokens, comparing in constant time:
/// digests of equal length, every token compared.
fn authenticate(source: &Source, default: TokenHeader, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = match (&source.auth_header, default) {
        (Some(name), _) => headers.get(name),
        (None, TokenHeader::Named(name)) => headers.get(name),
        (None, TokenHeader::Bearer) => headers.get(header::AUTHORIZATION),
    }
    .and_then(|v| v.to_str().ok())
    .map(|v| bearer(v).unwrap_or(v.trim()));
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        return Err(ApiError::unauthorized("this source's token is missing"));
    };
    if !matches_any(presented, &source.tokens) {
        return Err(ApiError::unauthorized("this source's token is wrong"));
    }
    Ok(())
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
