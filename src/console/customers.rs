//! Customers: the directory searched by id, email or phone
//! (`/console/customers`), and one customer (`/console/customers/{id}`):
//! its profile, merges, person, history as a timeline of changes, and
//! the messages sent about it.
//!
//! Reads go through the same operations and store queries as
//! `/api/v1/customers`; lists page with the store's cursors.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, Done, encode, next_page, time};
use super::session::Session;
use crate::http::AppState;
use crate::http::auth::Scope;
use crate::http::error::ApiError;
use crate::http::operations;
use crate::model::Customer;
use crate::store::persons::StoredPerson;
use crate::store::{CustomerQuery, HistoryEntry, HistoryQuery, MessageQuery};

/// Customers a page lists.
const PAGE: usize = 50;
/// History entries, and messages per subscription, a customer's page shows.
const HISTORY_PAGE: usize = 50;
const MESSAGES: usize = 20;

#[derive(Deserialize)]
pub struct Search {
    /// An id, an email address, a phone number or a name.
    #[serde(default)]
    q: String,
    cursor: Option<String>,
    done: Option<String>,
}

/// What a search asks for.
#[derive(Debug, PartialEq, Eq)]
enum Wanted<'a> {
    Everyone,
    Email(String),
    Phone(&'a str),
    /// `source:external id`: one word with a colon.
    Id(&'a str),
    Name(&'a str),
}

fn wanted(q: &str) -> Wanted<'_> {
    let q = q.trim();
    let digits = q.chars().filter(char::is_ascii_digit).count();
    if q.is_empty() {
        Wanted::Everyone
    } else if q.contains('@') {
        Wanted::Email(q.to_lowercase())
    } else if digits >= 5 && q.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) {
        Wanted::Phone(q)
    } else if q.contains(':') && !q.contains(char::is_whitespace) {
        Wanted::Id(q)
    } else {
        Wanted::Name(q)
    }
}

/// `GET /console/customers`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(search): Query<Search>,
) -> Response {
    match search_page(&app, &search).await {
        Ok(Found::One(id)) => Redirect::to(&format!("/console/customers/{}", encode(&id))).into_response(),
        Ok(Found::Page(customers, next)) => layout::page(&session, "Customers", listing(&search, &customers, next)),
        Err(error) => layout::page(
            &session,
            "Customers",
            html! {
                (search_form(&search.q))
                p.notice.bad role="alert" { (error.message()) }
            },
        ),
    }
}

enum Found {
    /// An id that names a customer: its page.
    One(String),
    Page(Vec<Customer>, Option<i64>),
}

async fn search_page(app: &AppState, search: &Search) -> Result<Found, ApiError> {
    let after = layout::cursor(search.cursor.as_deref())?;
    let mut query = CustomerQuery {
        limit: PAGE,
        after,
        ..CustomerQuery::default()
    };
    match wanted(&search.q) {
        Wanted::Everyone => {}
        Wanted::Email(email) => query.email = Some(email),
        Wanted::Phone(raw) => query.phone = Some(operations::phone_filter(app, None, raw)?),
        Wanted::Name(name) => query.name = Some(name.to_owned()),
        Wanted::Id(id) => {
            return match app.store.customer(id.to_owned()).await? {
                Some(customer) => Ok(Found::One(customer.id)),
                None => Err(ApiError::not_found(format!(
                    "No customer has the id {id:?}. Search by an id (source:external id), an email address, a phone number or a name."
                ))),
            };
        }
    }
    let page = app.store.customers(query).await?;
    Ok(Found::Page(page.items, page.next))
}

fn search_form(q: &str) -> Markup {
    html! {
        h1 { "Customers" }
        form.search method="get" action="/console/customers" role="search" {
            label for="q" { "Find a customer" }
            div.row {
                input #q type="search" name="q" value=(q) placeholder="id, email, phone or name";
                button type="submit" { "Search" }
            }
        }
    }
}

fn listing(search: &Search, customers: &[Customer], next: Option<i64>) -> Markup {
    let base = format!("/console/customers?q={}", encode(&search.q));
    html! {
        (search_form(&search.q))
        (Done::from_query(search.done.as_deref(), None).notice())
        @if customers.is_empty() {
            p.muted { "No customer matches." }
        } @else {
            div.scroll {
                table.customers {
                    thead { tr { th { "Name" } th { "Email" } th { "Phone" } th { "Source" } th { "Status" } th { "Changed" } } }
                    tbody {
                        @for customer in customers {
                            tr {
                                td { a href={ "/console/customers/" (encode(&customer.id)) } { (name(customer)) } }
                                td { (customer.profile.email.as_deref().unwrap_or("")) }
                                td { (customer.profile.phones.first().map(|p| p.e164.as_deref().unwrap_or(&p.raw)).unwrap_or("")) }
                                td { (customer.source) }
                                td { (status(customer)) }
                                td { (time(customer.changed_at)) }
                            }
                        }
                    }
                }
            }
        }
        (next_page(&base, next))
    }
}

/// A customer's name as people read it, or its id.
fn name(customer: &Customer) -> String {
    let p = &customer.profile;
    let name = [&p.first_name, &p.middle_name, &p.last_name]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        format!("({})", customer.external_id)
    } else {
        name
    }
}

fn status(customer: &Customer) -> Markup {
    let (label, tone) = if customer.merged_into.is_some() {
        ("merged", "muted")
    } else {
        match customer.profile.status.as_str() {
            "active" => ("active", "good"),
            other => (other, "muted"),
        }
    };
    html! { span.badge.(tone) { (label) } }
}

#[derive(Deserialize)]
pub struct HistoryPage {
    cursor: Option<String>,
}

/// `GET /console/customers/{id}`.
pub async fn detail(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(page): Query<HistoryPage>,
) -> Response {
    match read(&app, &session, &id, page.cursor.as_deref()).await {
        Ok((title, content)) => layout::page(&session, &title, content),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

async fn read(app: &AppState, session: &Session, id: &str, cursor: Option<&str>) -> Result<(String, Markup), ApiError> {
    let customer = operations::customer(app, id, false).await?;
    let after = layout::cursor(cursor)?;
    let history = operations::history(
        app,
        HistoryQuery {
            customer_id: customer.id.clone(),
            limit: HISTORY_PAGE,
            after,
        },
    )
    .await?;
    let mut messages = Vec::new();
    for subscription in app.store.subscriptions().await? {
        let page = app
            .store
            .messages(MessageQuery {
                subscription_id: subscription.id.clone(),
                customer_id: Some(customer.id.clone()),
                status: None,
                limit: MESSAGES,
                after: None,
            })
            .await?;
        messages.extend(page.items);
    }
    let person = operations::person_of(app, &customer.id).await?;
    let title = name(&customer);
    let base = format!("/console/customers/{}", encode(&customer.id));
    let content = html! {
        p.crumbs { a href="/console/customers" { "Customers" } " / " }
        h1 { (title) " " (status(&customer)) }
        p.mono.muted { (customer.id) }
        div.columns {
            section {
                h2 { "Profile" }
                (profile(&customer))
            }
            section {
                h2 { "Merges" }
                @if customer.merged_into.is_none() && customer.merged_from.is_empty() {
                    p.muted { "Not merged with another record." }
                }
                @if let Some(into) = &customer.merged_into {
                    p { "Merged into " a.mono href={ "/console/customers/" (encode(into)) } { (into) } }
                }
                @if !customer.merged_from.is_empty() {
                    p { "Absorbed:" }
                    ul {
                        @for from in &customer.merged_from {
                            li { a.mono href={ "/console/customers/" (encode(from)) } { (from) } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Person" }
            (person_section(&customer.id, person.as_ref()))
        }
        section {
            h2 { "History" }
            (timeline(&history.items))
            (next_page(&base, history.next))
        }
        @if session.can(Scope::Erase) {
            section.panel.danger {
                h2 { "Erase" }
                p { "Erases this customer's personal data everywhere Clientele keeps it (its record, history, kept deliveries and messages); subscribers get a " code { "deleted" } " message. It cannot be undone." }
                form method="post" action={ "/console/customers/" (encode(&customer.id)) "/erase" } {
                    (layout::csrf(session))
                    label for="confirm" { "Type the id to confirm: " span.mono { (customer.id) } }
                    input #confirm type="text" name="confirm" autocomplete="off" required;
                    button.danger type="submit" data-confirm-input="confirm" data-confirm-value=(customer.id) { "Erase this customer" }
                }
            }
        }
        section {
            h2 { "Messages" }
            @if messages.is_empty() {
                p.muted { "No message was sent about this customer." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Message" } th { "Subscription" } th { "Change" } th.num { "Version" } th { "Status" } th.num { "Attempts" } } }
                        tbody {
                            @for message in &messages {
                                tr {
                                    td.mono { (message.id) }
                                    td.mono { (message.subscription_id) }
                                    td { (message.action.as_str()) }
                                    td.num { (message.version) }
                                    td { span.badge.(message_tone(message.status.as_str())) { (message.status.as_str()) } }
                                    td.num { (message.attempts.len()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok((title, content))
}

/// The person a customer belongs to, and the person's other customers.
fn person_section(customer: &str, person: Option<&StoredPerson>) -> Markup {
    html! {
        @if let Some(person) = person {
            p { "One person with its other customers: " a.mono href={ "/console/persons/" (encode(&person.id)) } { (person.id) } }
            @let others: Vec<&String> = person.customer_ids.iter().filter(|id| *id != customer).collect();
            @if others.is_empty() {
                p.muted { "No other customer is this person." }
            } @else {
                ul {
                    @for id in others {
                        li { a.mono href={ "/console/customers/" (encode(id)) } { (id) } }
                    }
                }
            }
        } @else {
            p.muted { "Not resolved into a person yet." }
        }
    }
}

#[derive(Deserialize)]
pub struct Confirm {
    #[serde(default)]
    confirm: String,
}

/// `POST /console/customers/{id}/erase`: only once the id is typed again.
pub async fn erase(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Confirm>,
) -> Response {
    if form.confirm.trim() != id {
        let error = ApiError::bad_parameter("The id typed is not this customer's: nothing was erased.");
        return layout::failure(Some(&session), &error);
    }
    match operations::erase(&app, &session.principal, &id).await {
        Ok(()) => Redirect::to("/console/customers?done=erased").into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

pub fn message_tone(status: &str) -> &'static str {
    match status {
        "delivered" => "good",
        "dead" => "bad",
        "pending" => "warn",
        _ => "muted",
    }
}

fn profile(customer: &Customer) -> Markup {
    let p = &customer.profile;
    html! {
        dl.profile {
            dt { "Source" } dd { (customer.source) }
            dt { "External id" } dd.mono { (customer.external_id) }
            @if let Some(account) = &p.account { dt { "Account" } dd { (account) } }
            dt { "Email" } dd { (p.email.as_deref().unwrap_or("—")) }
            dt { "Phones" }
            dd {
                @if p.phones.is_empty() { "—" }
                @for phone in &p.phones {
                    div { (phone.e164.as_deref().unwrap_or(&phone.raw)) " " span.muted { (phone.kind) } }
                }
            }
            @if let Some(birth) = &p.birth_date { dt { "Birth date" } dd { (birth) } }
            @if !p.addresses.is_empty() {
                dt { "Addresses" }
                dd {
                    @for a in &p.addresses {
                        div {
                            @let parts = [&a.street1, &a.street2, &a.city, &a.region_code, &a.postal_code, &a.country_code];
                            (parts.into_iter().flatten().map(String::as_str).collect::<Vec<_>>().join(", "))
                            " " span.muted { (a.kind) }
                        }
                    }
                }
            }
            @if !p.business_ids.is_empty() { dt { "Business ids" } dd.mono { (p.business_ids.join(", ")) } }
            @if !p.identifiers.is_empty() {
                dt { "Identifiers" }
                dd { @for i in &p.identifiers { div { (i.value) " " span.muted { (i.kind) } } } }
            }
            @if !p.groups.is_empty() { dt { "Groups" } dd { (p.groups.join(", ")) } }
            @if let Some(opt_out) = p.opt_out { dt { "Opted out" } dd { (if opt_out { "yes" } else { "no" }) } }
            @if let Some(status) = &p.platform_status { dt { "Platform status" } dd { (status) } }
            @if let Some(at) = p.created_at { dt { "Created (platform)" } dd { (time(at)) } }
            @if let Some(at) = p.updated_at { dt { "Updated (platform)" } dd { (time(at)) } }
            dt { "Version" } dd { (customer.version) }
            dt { "Changed" } dd { (time(customer.changed_at)) }
        }
    }
}

/// The history as a timeline: when each event arrived, what it did, and
/// each field it changed.
fn timeline(entries: &[HistoryEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted { "No history." }
        } @else {
            ol.timeline {
                @for entry in entries {
                    li {
                        div.when { (time(entry.received_at)) }
                        div.what {
                            span.badge.(if entry.outcome.as_str() == "applied" { "good" } else { "muted" }) { (entry.action.as_str()) " · " (entry.outcome.as_str()) }
                            " " span.mono.muted { (entry.event_id) }
                        }
                        @if !entry.changes.is_empty() {
                            ul.changes {
                                @for (field, change) in &entry.changes {
                                    li { strong { (field) } ": " (describe(change)) }
                                }
                            }
                        }
                        @for warning in &entry.warnings {
                            p.notice.warn { (warning.field) ": " (warning.problem) }
                        }
                    }
                }
            }
        }
    }
}

/// A value of a change as people read it: a phone as its number, an
/// address as one line, an object as its fields.
fn shown(value: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "—".to_owned(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join("; "),
        Value::Object(fields) if fields.contains_key("raw") => {
            let number = text(fields.get("e164"))
                .or_else(|| text(fields.get("raw")))
                .unwrap_or_default();
            format!("{number} ({})", text(fields.get("kind")).unwrap_or_default())
        }
        Value::Object(fields) if fields.contains_key("street1") => {
            ["street1", "street2", "city", "regionCode", "postalCode", "countryCode"]
                .into_iter()
                .filter_map(|k| text(fields.get(k)))
                .collect::<Vec<_>>()
                .join(", ")
        }
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", shown(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A change as text: `from → to`, or what a set gained and lost.
fn describe(change: &Value) -> String {
    if let (Some(added), Some(removed)) = (change.get("added"), change.get("removed")) {
        let list = |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .map(shown)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match (list(added), list(removed)) {
            (a, r) if r.is_empty() => format!("added {a}"),
            (a, r) if a.is_empty() => format!("removed {r}"),
            (a, r) => format!("added {a}; removed {r}"),
        };
    }
    match (change.get("from"), change.get("to")) {
        (Some(from), Some(to)) => format!("{} → {}", shown(from), shown(to)),
        _ => shown(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_search_reads_as_an_email_a_phone_an_id_or_a_name() {
        assert_eq!(wanted("  "), Wanted::Everyone);
        assert_eq!(wanted("Ann@Example.COM"), Wanted::Email("ann@example.com".into()));
        assert_eq!(wanted("(914) 555-1212"), Wanted::Phone("(914) 555-1212"));
        assert_eq!(wanted("+1 914 555 1212"), Wanted::Phone("+1 914 555 1212"));
        assert_eq!(wanted("vagaro:4CB231"), Wanted::Id("vagaro:4CB231"));
        assert_eq!(wanted("12"), Wanted::Name("12"));
        assert_eq!(wanted("Ada Lovelace"), Wanted::Name("Ada Lovelace"));
        assert_eq!(wanted("Lovelace, Ada: VIP"), Wanted::Name("Lovelace, Ada: VIP"));
    }

    #[test]
    fn a_change_reads_as_text() {
        assert_eq!(describe(&json!({"from": null, "to": "Ann"})), "— → Ann");
        assert_eq!(describe(&json!({"added": ["a"], "removed": []})), "added a");
        assert_eq!(
            describe(&json!({"added": ["a"], "removed": ["b"]})),
            "added a; removed b"
        );
    }
}
