//! The one JSON body extractor of the admin API, [`ApiJson`]: whatever it
//! refuses is an [`ApiError`] in the JSON error shape, and it documents
//! its body in the OpenAPI document from the same type it parses into.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
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
        parse(&body).map(ApiJson)
    }
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = json::parse_body(body).map_err(|e| ApiError::bad_request(ErrorCode::InvalidJson, e.to_string()))?;
    // Nothing kept holds a NUL (see `api::refuse_nul`): a secret with one
    // could not be stored on Postgres.
    if json::has_nul(&value) {
        return Err(invalid("strings cannot contain NUL (\\u0000)"));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// A body or parameter the operation does not take.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidRequest, message)
}
