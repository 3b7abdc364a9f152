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

use super::api::{IdPath, PageParams, PageView, admin, parse_time};
use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiJson, ApiQuery, invalid};
use super::operations::phone_filter;
use super::{AppState, keys};
use crate::model::UtcMillis;
use crate::persons::Decision;
use crate::persons::profile::{GoldenProfile, golden};
use crate::store::persons::{Decided, Link, NewDecision, PersonQuery, Review, ReviewStatus, StoredPerson, ordered};

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
    let records = app.store.records(person.customer_ids.clone()).await?;
    let members: Vec<&crate::model::Customer> = records.iter().collect();
    Ok(PersonView {
        id: person.id,
        alias_of,
        customer_ids: person.customer_ids,
        profile: golden(&members),
        links: person.links,
        created_at: person.created_at,
        changed_at: person.changed_at,
    })
}

async fn get_person(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<PersonView>, ApiError> {
    let (person, alias_of) = app
        .store
        .person(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no person {id:?}")))?;
    Ok(Json(view(&app, person, alias_of).await?))
}

async fn customer_person(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<Json<PersonView>, ApiError> {
    let person = app
        .store
        .person_of(id.clone())
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
    /// A customer's first or last name, any case.
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

/// A decision as kept; the resolver applies it in its next step.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct DecisionView {
    customers: [String; 2],
    /// `null` once withdrawn.
    decision: Option<Decision>,
    decided_at: UtcMillis,
    /// The review it answered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<String>,
}

async fn decide_review(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
    ApiJson(body): ApiJson<ReviewDecision>,
) -> Result<Json<DecisionView>, ApiError> {
    let decision = NewDecision {
        customers: [String::new(), String::new()],
        decision: body.decision,
        at: UtcMillis::now(),
        review: Some(id.clone()),
    };
    keep(&app, &principal, decision).await.map(Json)
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
    if a == b {
        return Err(invalid("customers: give two different customer ids"));
    }
    let found = app.store.records(vec![a.clone(), b.clone()]).await?;
    for id in [&a, &b] {
        if !found.iter().any(|c| &c.id == id) {
            return Err(ApiError::not_found(format!("no customer {id:?}")));
        }
    }
    let customers = ordered(a, b);
    let decision = match body.decision {
        Ruling::Link => Decision::Link,
        Ruling::Separate => Decision::Separate,
        Ruling::Withdraw => return withdraw(&app, &principal, customers).await.map(Json),
    };
    let decision = NewDecision {
        customers,
        decision,
        at: UtcMillis::now(),
        review: None,
    };
    keep(&app, &principal, decision).await.map(Json)
}

async fn withdraw(app: &AppState, principal: &Principal, customers: [String; 2]) -> Result<DecisionView, ApiError> {
    let at = UtcMillis::now();
    if !app.store.withdraw(customers.clone(), at).await? {
        return Err(ApiError::not_found("no decision about these customers to withdraw"));
    }
    keys::record(app, principal, "person.withdraw", &pair_target(&customers)).await;
    Ok(DecisionView {
        customers,
        decision: None,
        decided_at: at,
        review: None,
    })
}

/// How the audit log names two customers: never their ids.
fn pair_target(customers: &[String; 2]) -> String {
    format!(
        "{}+{}",
        keys::erased_target(&customers[0]),
        keys::erased_target(&customers[1])
    )
}

async fn keep(app: &AppState, principal: &Principal, decision: NewDecision) -> Result<DecisionView, ApiError> {
    let review = decision.review.clone();
    match app.store.decide(decision).await? {
        Decided::Kept(kept) => {
            let action = match kept.decision {
                Decision::Link => "person.link",
                Decision::Separate => "person.separate",
            };
            keys::record(app, principal, action, &pair_target(&kept.customers)).await;
            Ok(DecisionView {
                customers: kept.customers,
                decision: Some(kept.decision),
                decided_at: kept.decided_at,
                review,
            })
        }
        Decided::Already(first) => Ok(DecisionView {
            customers: first.customers,
            decision: first.decision,
            decided_at: first.decided_at.unwrap_or(first.created_at),
            review,
        }),
        Decided::Separated => Err(ApiError::conflict(
            ErrorCode::Separated,
            "an operator separated these customers: that decision stands",
        )),
        Decided::NoReview => Err(ApiError::not_found(format!(
            "no review {:?}",
            review.unwrap_or_default()
        ))),
    }
}
