//! What every area of the admin API under `/api/v1` shares (SPEC §5, §6):
//! the admin token check, the refusal of NUL in paths and queries, the
//! page of a list, its parameters, and the statuses every operation can
//! answer. The areas are [`super::customers`], [`super::events`] and
//! [`super::subscriptions`], each with its own `router()`.
//!
//! Every route there requires an API key ([`super::auth::require_key`]);
//! a source's token is never an API key.

use aide::transform::TransformOperation;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, document_errors};
use crate::model::UtcMillis;
use crate::store::Page;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// What any admin operation can answer besides its own statuses: a
/// malformed path or query (`400`), no or a wrong key (`401`), a key
/// without the scope (`403`), a body or head past the limits (`408`,
/// `431`), a fault (`500`), a store that cannot take requests (`503`).
pub const ADMIN_ERRORS: [StatusCode; 7] = [
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Documents an admin operation: its id and summary, the admin token,
/// [`ADMIN_ERRORS`] and its own `errors`.
pub fn admin<'t>(op: TransformOperation<'t>, id: &str, summary: &str, errors: &[StatusCode]) -> TransformOperation<'t> {
    document_errors(document_errors(op, &ADMIN_ERRORS), errors)
        .id(id)
        .summary(summary)
        .security_requirement(super::openapi::ADMIN)
}

/// Refuses a NUL (`%00`) anywhere in a request's path or query before a
/// handler reads it: nothing Clientele keeps holds one (platform strings
/// lose theirs in `normalize`, API bodies are refused by
/// [`super::extract::ApiJson`]), and Postgres cannot even compare text
/// with one. In a path it names something to find, which nothing is:
/// `404`. In a query it is a value that can never be valid: `400`.
pub async fn refuse_nul(request: Request, next: Next) -> Response {
    const NUL: &str = "%00";
    let uri = request.uri();
    if uri.path().contains(NUL) {
        return ApiError::not_found("nothing here: no id contains NUL").into_response();
    }
    if uri.query().is_some_and(|q| q.contains(NUL)) {
        return ApiError::bad_parameter("query parameters cannot contain NUL (%00)").into_response();
    }
    next.run(request).await
}

/// The `{id}` of a path.
#[derive(Deserialize, JsonSchema)]
pub struct IdPath {
    pub id: String,
}

/// One page of a list, and where the next one starts.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageView<T> {
    data: Vec<T>,
    /// The `cursor` of the next page; `null` on the last one.
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

/// The paging parameters of a list. Read as text and parsed here, so that
/// a wrong value is a `bad_parameter` that says what is expected.
#[derive(Deserialize, JsonSchema)]
pub struct PageParams {
    /// Items per page, 1 to 1000; 100 when not given.
    #[schemars(with = "Option<u16>", range(min = 1, max = 1000))]
    pub limit: Option<String>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.as_deref() {
            None => Ok(DEFAULT_PAGE),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| ApiError::bad_parameter(format!("limit must be from 1 to {MAX_PAGE}"))),
        }
    }

    pub fn after(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_parameter("cursor must be a nextCursor from a previous page"))
            })
            .transpose()
    }
}

/// An RFC 3339 time in the query parameter `name`.
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<UtcMillis>, ApiError> {
    value
        .map(|v| {
            v.parse::<UtcMillis>().map_err(|_| {
                ApiError::bad_parameter(format!("{name} must be an RFC 3339 time such as 2026-04-24T18:38:21Z"))
            })
        })
        .transpose()
}

pub fn parse_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    value
        .map(|v| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_parameter(format!("{name} must be true or false"))),
        })
        .transpose()
}
