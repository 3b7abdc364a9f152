//! The JSON error shape of every failed request,
//! `{"error": {"code": "…", "message": "…"}}`, and the one place where
//! module errors become HTTP statuses.
//!
//! Internal causes are logged here and never sent: a client sees a code
//! and a message that says what to do.

use aide::OperationOutput;
use aide::generate::GenContext;
use aide::openapi::{Header, Operation, ReferenceOr, Response as ResponseDoc};
use aide::transform::TransformOperation;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use schemars::JsonSchema;
use serde::Serialize;

use crate::store::StoreError;

/// Seconds a client is asked to wait when the service cannot take work now.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What went wrong, for a program to act on; the message is for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A request the route cannot read (a malformed path or query).
    BadRequest,
    /// A query parameter out of its range or format, or given twice.
    BadParameter,
    /// A `Content-Encoding` other than gzip or identity, or gzip that is not.
    BadEncoding,
    /// A body that is not JSON, or nested deeper than 128 levels.
    InvalidJson,
    /// A JSON body that does not have the fields or values the operation takes.
    InvalidRequest,
    /// A body whose reading failed.
    UnreadableBody,
    /// The admin token, or a source's token, is missing or wrong.
    Unauthorized,
    /// The sender's address is not in the source's `allow_ips`, or the API
    /// key lacks the scope the operation needs.
    Forbidden,
    /// No such route, source, customer, event, subscription or message.
    NotFound,
    /// The route does not have this method.
    MethodNotAllowed,
    /// The body did not arrive within `http.body_timeout`.
    Timeout,
    /// The event's body was removed by an erasure.
    Redacted,
    /// An event applied to its customer cannot be deleted alone: erase the customer.
    CannotDelete,
    /// The event cannot be mapped again (source gone, body redacted or not JSON).
    CannotReprocess,
    /// The message was cancelled by an erasure and is never sent again.
    Cancelled,
    /// The name is taken (by an API source or one of the configuration file).
    NameTaken,
    /// The source is defined in the configuration file: change it there.
    ManagedByConfig,
    /// The source holds deliveries not applied yet: enable it first.
    Holding,
    /// An operator separated the two customers: `link` waits until that
    /// decision is withdrawn.
    Separated,
    /// The body is larger than `max_body_bytes`, as sent or after gunzip.
    TooLarge,
    /// The body's media type is not one the operation reads.
    UnsupportedMediaType,
    /// The request's header lines are too many or too long.
    HeadersTooLarge,
    /// The source sends more than its `rate_limit`; retry after `Retry-After`.
    RateLimited,
    /// Too many deliveries are waiting to be stored; retry after `Retry-After`.
    Overloaded,
    /// The store cannot take requests now; retry after `Retry-After`.
    Unavailable,
    /// A rebuild of the directory runs already, or an erasure overtook
    /// this one (nothing changed): run it again.
    Rebuilding,
    /// Outbound webhooks are not being sent (`/readyz` only).
    DispatcherStopped,
    /// A fault of Clientele's, logged on the server.
    Internal,
    /// Any other refusal of the request.
    Error,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadParameter => "bad_parameter",
            ErrorCode::BadEncoding => "bad_encoding",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnreadableBody => "unreadable_body",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Redacted => "redacted",
            ErrorCode::CannotDelete => "cannot_delete",
            ErrorCode::CannotReprocess => "cannot_reprocess",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::ManagedByConfig => "managed_by_config",
            ErrorCode::Holding => "holding",
            ErrorCode::Separated => "separated",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Rebuilding => "rebuilding",
            ErrorCode::DispatcherStopped => "dispatcher_stopped",
            ErrorCode::Internal => "internal",
            ErrorCode::Error => "error",
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, JsonSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, JsonSchema)]
pub struct ErrorDetail {
    code: ErrorCode,
    message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A query parameter out of its range or format: `message` names it.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::bad_request(ErrorCode::BadParameter, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "too many deliveries are waiting to be stored; retry shortly",
        )
    }

    /// A body that did not arrive within `http.body_timeout`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Timeout,
            "the body did not arrive in time (http.body_timeout)",
        )
    }

    /// A request head past Clientele's limits.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            message,
        )
    }

    /// A refusal written by axum or one of its extractors, by its status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRequest,
            _ if status.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::Error,
        };
        Self::new(status, code, message)
    }

    /// The machine-readable code, also the `status` label of rejected
    /// deliveries in the metrics.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, for a person: the console shows it on the page.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The error answer as documented: the [`ErrorBody`] schema.
impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ResponseDoc> {
        Json::<ErrorBody>::operation_response(ctx, operation)
    }
}

/// Documents the error answers an operation can give, one per status,
/// each with the error shape; `429` and `503` with their `Retry-After`.
pub fn document_errors<'t>(mut op: TransformOperation<'t>, statuses: &[StatusCode]) -> TransformOperation<'t> {
    let operation = op.inner_mut();
    let Some(template) = aide::generate::in_context(|ctx| ApiError::operation_response(ctx, operation)) else {
        return op;
    };
    let responses = operation.responses.get_or_insert_with(Default::default);
    for status in statuses {
        let mut response = template.clone();
        response.description = status.canonical_reason().unwrap_or("error").to_owned();
        if retries_after(*status) {
            response.headers.insert(
                header::RETRY_AFTER.to_string(),
                ReferenceOr::Item(Header {
                    description: Some("Seconds to wait before trying again.".to_owned()),
                    style: Default::default(),
                    required: true,
                    deprecated: None,
                    format: super::openapi::schema_of::<u64>(),
                    example: None,
                    examples: Default::default(),
                    extensions: Default::default(),
                }),
            );
        }
        responses.responses.insert(
            aide::openapi::StatusCode::Code(status.as_u16()),
            ReferenceOr::Item(response),
        );
    }
    op
}

fn retries_after(status: StatusCode) -> bool {
    [StatusCode::SERVICE_UNAVAILABLE, StatusCode::TOO_MANY_REQUESTS].contains(&status)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Closed | StoreError::Unavailable(_) => {
                tracing::warn!(error = %error, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the store cannot take requests now; retry shortly",
                )
            }
            StoreError::Rebuilding | StoreError::RebuildOverrun => {
                Self::conflict(ErrorCode::Rebuilding, error.to_string())
            }
            StoreError::Redacted(id) => Self::conflict(
                ErrorCode::Redacted,
                format!("event {id} was redacted by an erasure; its body is gone"),
            ),
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if retries_after(self.status) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        // What is left of the request was not read: the connection cannot
        // carry another (RFC 9110, 15.5.9).
        if [StatusCode::REQUEST_TIMEOUT, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE].contains(&self.status) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Gives every error answer the JSON shape, including those axum writes
/// itself in plain text (an undecodable path, a malformed query, a method
/// the route does not have): their text becomes the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match Limited::new(body, 4096).collect().await {
        Ok(bytes) => String::from_utf8_lossy(&bytes.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut shaped = ApiError::from_status(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}
