//! The console (SPEC §13): web pages at `/console` for the people who run
//! Clientele, served by the same binary as the API and reading and acting
//! through the same operations (`crate::http::operations`), so that a
//! button does what its API call does and nothing else.
//!
//! A module per page (`overview`, `sources`, `deliveries` with the
//! quarantine, `customers`, `persons` with the review queue, `subscriptions`,
//! `keys`), each a handler that reads
//! through the store's roles and renders a maud template compiled into the
//! binary; `layout` holds what the pages share, `session` signs people in
//! and guards every page (session, scope, CSRF), and `assets` serves the
//! stylesheet and the little script, embedded too. Nothing is fetched from
//! elsewhere: every response says `Content-Security-Policy: default-src
//! 'self'`, and no page has an inline script or style.

mod assets;
mod customers;
mod deliveries;
mod keys;
mod layout;
mod overview;
mod persons;
mod session;
mod sources;
mod subscriptions;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::http::AppState;

/// What every console response says about itself: no resource from
/// elsewhere, no framing, no caching of pages that show customers' data.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The console's routes, each page behind [`session::guard`].
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let pages = Router::new()
        .route("/console", get(overview::page))
        .route("/console/sources", get(sources::list))
        .route("/console/sources/{name}/enabled", post(sources::set_enabled))
        .route("/console/sources/{name}/tokens", post(sources::add_token))
        .route(
            "/console/sources/{name}/tokens/{id}/revoke",
            post(sources::revoke_token),
        )
        .route("/console/deliveries", get(deliveries::list))
        .route("/console/deliveries/{id}", get(deliveries::detail))
        .route("/console/deliveries/{id}/reprocess", post(deliveries::reprocess))
        .route("/console/quarantine", get(deliveries::quarantine))
        .route("/console/quarantine/reprocess", post(deliveries::reprocess_group))
        .route("/console/customers", get(customers::list))
        .route("/console/customers/{id}", get(customers::detail))
        .route("/console/customers/{id}/erase", post(customers::erase))
        .route("/console/persons", get(persons::reviews))
        .route("/console/persons/reviews/{id}", post(persons::decide_review))
        .route("/console/persons/decisions", post(persons::decide_pair))
        .route("/console/persons/{id}", get(persons::detail))
        .route(
            "/console/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/console/subscriptions/{id}", get(subscriptions::detail))
        .route("/console/subscriptions/{id}/enabled", post(subscriptions::set_enabled))
        .route("/console/subscriptions/{id}/replay", post(subscriptions::replay))
        .route("/console/messages/{id}/retry", post(subscriptions::retry))
        .route("/console/keys", get(keys::list).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/{*rest}", get(no_page))
        .route_layer(axum::middleware::from_fn_with_state(state, session::guard));
    Router::new()
        .route("/console/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/console/static/{file}", get(assets::file))
        .merge(pages)
        .layer(axum::middleware::map_response(protect))
}

/// Any other path under `/console`, for a signed-in person.
async fn no_page(Extension(session): Extension<session::Session>) -> Response {
    layout::message(
        Some(&session),
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}

async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
