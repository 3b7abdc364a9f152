//! The one JSON body extractor of the admin API, [`ApiJson`], and its one
//! query extractor, [`ApiQuery`]: whatever they refuse is an [`ApiError`]
//! in the JSON error shape, and they document their input in the OpenAPI
//! document from the same type they parse into.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
use crate::model::json;

/// A JSON request body read into `T`: not JSON is `invalid_json`, JSON
/// that `T` does not take (or with a NUL in a string) `invalid_request`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::from_status(rejection.status(), rejection.body_text()))?;
        parse_json(&body).map(ApiJson)
    }
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
    }
}

/// A query string read into `T`: one it cannot read (a parameter given
/// twice, say) is `bad_parameter`, as is any value the handler refuses.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::try_from_uri(&parts.uri).map_err(|rejection| {
            // The cause alone (serde's "duplicate field `limit`"), without
            // axum's "Failed to deserialize query string".
            let cause =
                std::error::Error::source(&rejection).map_or_else(|| rejection.body_text(), ToString::to_string);
            ApiError::bad_parameter(format!("the query cannot be read: {cause}"))
        })?;
        Ok(ApiQuery(query))
    }
}

impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Query::<T>::operation_input(ctx, operation);
    }
}

/// A JSON body read into `T`, refused as [`ApiJson`] refuses it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = json::parse_body(body).map_err(|e| ApiError::bad_request(ErrorCode::InvalidJson, e.to_string()))?;
    // Nothing kept holds a NUL (see `api::refuse_nul`): a secret with one
    // could not be stored on Postgres.
    if json::has_nul(&value) {
        return Err(invalid("strings cannot contain NUL (\\u0000)"));
    }
    // The error names the field at fault (`rateLimit: invalid type …`).
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            invalid(inner.to_string())
        } else {
            invalid(format!("{path}: {inner}"))
        }
    })
}

/// A JSON body the operation does not take.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidRequest, message)
}
