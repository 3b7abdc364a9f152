//! Persons (SPEC §11): the review queue (`/console/persons`), each possible
//! match with its two customers and its evidence, and one person
//! (`/console/persons/{id}`): its customers, its golden profile with the
//! customer each field came from, and the links that hold it together.
//!
//! Reads and decisions go through the same operations as
//! `/api/v1/persons`; deciding needs the `write` scope, as the API's
//! decisions do, and the forms are shown only to keys that have it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Done, encode, next_page, time};
use super::session::Session;
use crate::http::AppState;
use crate::http::auth::Scope;
use crate::http::error::ApiError;
use crate::http::operations;
use crate::persons::profile::Golden;
use crate::persons::{Decider, Decision};
use crate::store::persons::{Evidence, Link, Review, ReviewStatus, StoredPerson};

/// Reviews a page lists.
const PAGE: usize = 50;

#[derive(Deserialize)]
pub struct Queue {
    cursor: Option<String>,
    done: Option<String>,
}

/// `GET /console/persons`: the open reviews.
pub async fn reviews(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(queue): Query<Queue>,
) -> Response {
    let page = match layout::cursor(queue.cursor.as_deref()) {
        Ok(after) => app
            .store
            .reviews(Some(ReviewStatus::Open), PAGE, after)
            .await
            .map_err(ApiError::from),
        Err(error) => Err(error),
    };
    let content = match page {
        Ok(page) => html! {
            h1 { "Persons" }
            p.muted { "Possible matches the model could not decide: two customers that may be one person. Link them, or keep them separate." }
            (Done::from_query(queue.done.as_deref(), None).notice())
            @if page.items.is_empty() {
                p.muted { "No possible match waits for a decision." }
            }
            @for review in &page.items {
                (review_card(&session, review))
            }
            (next_page("/console/persons", page.next))
            @if session.can(Scope::Write) {
                (pair_form(&session))
            }
        },
        Err(error) => html! {
            h1 { "Persons" }
            p.notice.bad role="alert" { (error.message()) }
        },
    };
    layout::page(&session, "Persons", content)
}

fn review_card(session: &Session, review: &Review) -> Markup {
    html! {
        section.panel.review {
            h2 { "Possible match " span.mono.muted { (review.id) } }
            p {
                @for (i, customer) in review.customers.iter().enumerate() {
                    @if i > 0 { " and " }
                    a.mono href={ "/console/customers/" (encode(customer)) } { (customer) }
                }
                " · score " (review.score) " · since " (time(review.created_at))
            }
            (evidence(&review.evidence))
            @if session.can(Scope::Write) {
                form.actions method="post" action={ "/console/persons/reviews/" (encode(&review.id)) } {
                    (layout::csrf(session))
                    button type="submit" name="decision" value="link" { "Link: one person" }
                    " "
                    button.secondary type="submit" name="decision" value="separate" { "Separate: two persons" }
                }
            }
        }
    }
}

/// A decision about any two customers, without a review.
fn pair_form(session: &Session) -> Markup {
    html! {
        section.panel {
            h2 { "Decide about two customers" }
            p.muted { "Link two customers into one person, keep them apart, or withdraw what an operator decided about them (the model decides again)." }
            form method="post" action="/console/persons/decisions" {
                (layout::csrf(session))
                label for="a" { "A customer id" }
                input #a type="text" name="a" autocomplete="off" required;
                label for="b" { "Another customer id" }
                input #b type="text" name="b" autocomplete="off" required;
                div.actions {
                    button type="submit" name="decision" value="link" { "Link" }
                    button.secondary type="submit" name="decision" value="separate" { "Separate" }
                    button.secondary type="submit" name="decision" value="withdraw" { "Withdraw" }
                }
            }
        }
    }
}

fn evidence(evidence: &[Evidence]) -> Markup {
    html! {
        @if !evidence.is_empty() {
            table.evidence {
                thead { tr { th { "Field" } th { "Comparison" } th.num { "Weight" } } }
                tbody {
                    @for e in evidence {
                        tr { td { (e.field) } td { (e.comparison) } td.num { (e.weight) } }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    decision: String,
}

fn decision(s: &str) -> Result<Option<Decision>, ApiError> {
    match s {
        "link" => Ok(Some(Decision::Link)),
        "separate" => Ok(Some(Decision::Separate)),
        "withdraw" => Ok(None),
        _ => Err(ApiError::bad_parameter(
            "Choose link, separate or withdraw: nothing was decided.",
        )),
    }
}

/// `POST /console/persons/reviews/{id}`.
pub async fn decide_review(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Response {
    let decided = match decision(&form.decision) {
        Ok(Some(decision)) => operations::decide_review(&app, &session.principal, &id, decision).await,
        Ok(None) => Err(ApiError::bad_parameter("A review is linked or separated.")),
        Err(error) => Err(error),
    };
    match decided {
        Ok(_) => Redirect::to("/console/persons?done=decided").into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

#[derive(Deserialize)]
pub struct PairForm {
    #[serde(default)]
    a: String,
    #[serde(default)]
    b: String,
    #[serde(default)]
    decision: String,
}

/// `POST /console/persons/decisions`.
pub async fn decide_pair(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<PairForm>,
) -> Response {
    let decided = match decision(&form.decision) {
        Ok(decision) => {
            let (a, b) = (form.a.trim().to_owned(), form.b.trim().to_owned());
            operations::decide_pair(&app, &session.principal, a, b, decision).await
        }
        Err(error) => Err(error),
    };
    match decided {
        Ok(_) => Redirect::to("/console/persons?done=decided").into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `GET /console/persons/{id}`.
pub async fn detail(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match read(&app, &id).await {
        Ok(content) => layout::page(&session, "Person", content),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

async fn read(app: &AppState, id: &str) -> Result<Markup, ApiError> {
    let (person, alias_of) = operations::person(app, id).await?;
    let profile = operations::golden_profile(app, &person).await?;
    let address = profile.address.as_ref().map(|g| {
        let a = &g.value;
        let parts = [
            &a.street1,
            &a.street2,
            &a.city,
            &a.region_code,
            &a.postal_code,
            &a.country_code,
        ];
        Golden {
            value: parts
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            from: g.from.clone(),
        }
    });
    Ok(html! {
        p.crumbs { a href="/console/persons" { "Persons" } " / " }
        h1 { "Person " span.mono { (person.id) } }
        @if let Some(alias) = alias_of {
            p.notice.warn { (alias) " joined this person: it is the id that survives." }
        }
        div.columns {
            section {
                h2 { "Profile" }
                p.muted { "Each field from one of its customers (the most recent that has it)." }
                dl.profile {
                    (field("First name", profile.first_name.as_ref()))
                    (field("Last name", profile.last_name.as_ref()))
                    (field("Email", profile.email.as_ref()))
                    (field("Phone", profile.phone.as_ref()))
                    (field("Birth date", profile.birth_date.as_ref()))
                    (field("Address", address.as_ref()))
                    @for i in &profile.identifiers {
                        dt { (i.value.kind) }
                        dd { (i.value.value) " " (from_link(&i.from)) }
                    }
                    dt { "Changed" } dd { (time(person.changed_at)) }
                }
            }
            section {
                h2 { "Customers" }
                (customers(&person))
            }
        }
        section {
            h2 { "Links" }
            @if person.links.is_empty() {
                p.muted { "One customer: nothing links it to another." }
            }
            @for link in &person.links {
                (link_card(link))
            }
        }
    })
}

/// A golden field and the customer it came from.
fn field(label: &str, golden: Option<&Golden<String>>) -> Markup {
    html! {
        @if let Some(g) = golden {
            dt { (label) }
            dd { (g.value) " " (from_link(&g.from)) }
        }
    }
}

fn from_link(customer: &str) -> Markup {
    html! { span.muted { "from " a.mono href={ "/console/customers/" (encode(customer)) } { (customer) } } }
}

fn customers(person: &StoredPerson) -> Markup {
    html! {
        ul {
            @for id in &person.customer_ids {
                li { a.mono href={ "/console/customers/" (encode(id)) } { (id) } }
            }
        }
    }
}

fn link_card(link: &Link) -> Markup {
    let by = match link.decided_by {
        Decider::Identifier => "a shared identifier",
        Decider::Model => "the model",
        Decider::Operator => "an operator",
        Decider::Platform => "a platform merge",
    };
    html! {
        div.panel {
            p {
                a.mono href={ "/console/customers/" (encode(&link.customers[0])) } { (link.customers[0]) }
                " and "
                a.mono href={ "/console/customers/" (encode(&link.customers[1])) } { (link.customers[1]) }
                " · score " (link.score) " · decided by " (by)
            }
            (evidence(&link.evidence))
        }
    }
}
