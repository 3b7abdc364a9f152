//! `/api/v1/persons` (SPEC §11): persons with their golden profile and
//! explainable links, each customer's person, the review queue and
//! operators' decisions. Persons are what the resolver ([`crate::resolver`])
//! last wrote; a decision is kept at once and applied by its next step.
//! The profile is read from the person's customers when asked for, so it
//! is as current as the directory.
//!
//! Decisions are audited (`person.link`, `person.separate`,
//! `person.withdraw`), naming the pair by the SHA-256 of each customer
//! id, as erasures are.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{IdPath, PageParams, PageView, admin, parse_time};
use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, invalid};
use super::operations::{self, DecisionView, phone_filter};
use crate::model::UtcMillis;
use crate::persons::Decision;
use crate::persons::profile::GoldenProfile;
use crate::store::persons::{Link, PersonQuery, Review, ReviewStatus, StoredPerson};

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    const DECISION_ERRORS: [StatusCode; 2] = [StatusCode::NOT_FOUND, StatusCode::CONFLICT];
    ApiRouter::new()
        .api_route(
            "/persons",
            get_with(list_persons, |op| {
                admin(
                    op,
                    "listPersons",
                    "Persons, filtered, in the order of their last change",
                    &[],
                )
            }),
        )
        .api_route(
            "/persons/reviews",
            get_with(list_reviews, |op| {
                admin(op, "listReviews", "Possible matches for an operator", &[])
            }),
        )
        .api_route(
            "/persons/reviews/{id}",
            post_with(decide_review, |op| {
                admin(
                    op,
                    "decideReview",
                    "An operator's decision on a possible match; a review decided before answers its first decision",
                    &DECISION_ERRORS,
                )
            }),
        )
        .api_route(
            "/persons/decisions",
            post_with(decide, |op| {
                admin(
                    op,
                    "decidePersons",
                    "An operator's decision about two customers, without a review",
                    &DECISION_ERRORS,
                )
            }),
        )
        .api_route(
            "/persons/{id}",
            get_with(get_person, |op| admin(op, "getPerson", "One person", &NOT_FOUND)),
        )
        .api_route(
            "/customers/{id}/person",
            get_with(customer_person, |op| {
                admin(op, "getCustomerPerson", "The person a customer belongs to", &NOT_FOUND)
            }),
        )
}

/// A person: its customers, its golden profile, and the links that hold
/// it together.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct PersonView {
    /// `per_…`.
    id: String,
    /// The id asked for, when a join absorbed it into this person.
    #[serde(skip_serializing_if = "Option::is_none")]
    alias_of: Option<String>,
    customer_ids: Vec<String>,
    /// Each field with the customer it came from.
    profile: GoldenProfile,
    links: Vec<Link>,
    created_at: UtcMillis,
    changed_at: UtcMillis,
}

async fn view(app: &AppState, person: StoredPerson, alias_of: Option<String>) -> Result<PersonView, ApiError> {
    let profile = operations::golden_profile(app, &person).await?;
    Ok(PersonView {
        id: person.id,
        alias_of,
        customer_ids: person.customer_ids,
        profile,
        links: person.links,
        created_at: person.created_at,
        changed_at: person.changed_at,
    })
}

async fn get_person(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<PersonView>, ApiError> {
    let (person, alias_of) = operations::person(&app, &id).await?;
    Ok(Json(view(&app, person, alias_of).await?))
}

async fn customer_person(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<PersonView>, ApiError> {
    let person = operations::person_of(&app, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no person for customer {id:?} (yet)")))?;
    Ok(Json(view(&app, person, None).await?))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    /// Persons with a customer of this email.
    email: Option<String>,
    /// In any format, matched on E.164 (read with the first configured
    /// source's `default_country`).
    phone: Option<String>,
    /// Persons whose customers' names hold every word of this, any case
    /// and order, accents and punctuation ignored.
    name: Option<String>,
    /// Persons whose `changedAt` is at or after this time.
    #[schemars(with = "Option<UtcMillis>")]
    changed_since: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn list_persons(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PageView<PersonView>>, ApiError> {
    let phone = params
        .phone
        .as_deref()
        .map(|raw| phone_filter(&app, None, raw))
        .transpose()?;
    let query = PersonQuery {
        email: params.email,
        phone,
        name: params.name,
        changed_since: parse_time("changedSince", params.changed_since.as_deref())?,
        limit: params.page.limit()?,
        after: params.page.after()?,
    };
    let page = app.store.persons(query).await?;
    let mut data = Vec::with_capacity(page.items.len());
    for person in page.items {
        data.push(view(&app, person, None).await?);
    }
    Ok(Json(PageView::from(crate::store::Page {
        items: data,
        next: page.next,
    })))
}

#[derive(Deserialize, JsonSchema)]
struct ReviewParams {
    /// `open` or `decided`; every review when not given.
    status: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn list_reviews(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<ReviewParams>,
) -> Result<Json<PageView<Review>>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| ReviewStatus::parse(s).ok_or_else(|| ApiError::bad_parameter("status must be open or decided")))
        .transpose()?;
    let page = app
        .store
        .reviews(status, params.page.limit()?, params.page.after()?)
        .await?;
    Ok(Json(page.into()))
}

/// An operator's decision on a review.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReviewDecision {
    decision: Decision,
}

/// An operator's decision about two customers.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PairDecision {
    /// Two customer ids.
    customers: Vec<String>,
    decision: Ruling,
}

/// `link` or `separate` the two customers, or `withdraw` the decision
/// taken about them (the model decides again).
#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Ruling {
    Link,
    Separate,
    Withdraw,
}

async fn decide_review(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
    ApiJson(body): ApiJson<ReviewDecision>,
) -> Result<Json<DecisionView>, ApiError> {
    operations::decide_review(&app, &principal, &id, body.decision)
        .await
        .map(Json)
}

async fn decide(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<PairDecision>,
) -> Result<Json<DecisionView>, ApiError> {
    let [a, b]: [String; 2] = body
        .customers
        .try_into()
        .map_err(|_| invalid("customers: give two customer ids"))?;
    let decision = match body.decision {
        Ruling::Link => Some(Decision::Link),
        Ruling::Separate => Some(Decision::Separate),
        Ruling::Withdraw => None,
    };
    operations::decide_pair(&app, &principal, a, b, decision)
        .await
        .map(Json)
}
