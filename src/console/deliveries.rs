//! Deliveries (`/console/deliveries`): the kept deliveries, newest pages
//! by the store's cursor, filtered by status; one delivery with its raw
//! body, headers, outcome and reason, and reprocessing it
//! (`/console/deliveries/{id}`). The quarantine page groups the
//! quarantined ones by reason (`/console/quarantine`) and reprocesses a
//! whole group.

use std::collections::BTreeMap;
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
use crate::model::json;
use crate::store::{EventQuery, EventStatus, StoredEvent};

const PAGE: usize = 50;
/// Quarantined deliveries the quarantine page groups at most; a group's
/// reprocessing goes through all of them, a page at a time.
const GROUPED: usize = 1000;

#[derive(Deserialize)]
pub struct Filter {
    status: Option<String>,
    cursor: Option<String>,
}

fn status_filter(status: Option<&str>) -> Result<Option<EventStatus>, ApiError> {
    match status.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => EventStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "There is no status {s:?}: choose accepted, quarantined or ignored."
            ))
        }),
    }
}

/// `GET /console/deliveries`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(filter): Query<Filter>,
) -> Response {
    let read = async {
        let query = EventQuery {
            status: status_filter(filter.status.as_deref())?,
            limit: PAGE,
            after: layout::cursor(filter.cursor.as_deref())?,
            bodies: false,
        };
        Ok::<_, ApiError>(app.store.events(query).await?)
    };
    let chosen = filter.status.as_deref().unwrap_or("");
    let content = match read.await {
        Ok(page) => {
            let base = format!("/console/deliveries?status={}", encode(chosen));
            html! {
                (filters(chosen))
                (table(&page.items))
                (next_page(&base, page.next))
            }
        }
        Err(error) => html! {
            (filters(chosen))
            p.notice.bad role="alert" { (error.message()) }
        },
    };
    layout::page(&session, "Deliveries", content)
}

fn filters(chosen: &str) -> Markup {
    html! {
        h1 { "Deliveries" }
        form.search method="get" action="/console/deliveries" {
            label for="status" { "Status" }
            div.row {
                select #status name="status" {
                    @for (value, label) in [("", "any"), ("accepted", "accepted"), ("quarantined", "quarantined"), ("ignored", "ignored")] {
                        option value=(value) selected[value == chosen] { (label) }
                    }
                }
                button type="submit" { "Filter" }
            }
        }
    }
}

fn table(events: &[StoredEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No delivery." }
        } @else {
            div.scroll {
                table.deliveries {
                    thead { tr { th { "Received" } th { "Source" } th { "Status" } th { "Customer" } th { "Delivery" } } }
                    tbody {
                        @for event in events {
                            tr {
                                td { (time(event.received_at)) }
                                td { (event.source) }
                                td { (status_badge(event)) }
                                td.mono { @if let Some(customer) = &event.customer_id { a href={ "/console/customers/" (encode(customer)) } { (customer) } } }
                                td.mono { a href={ "/console/deliveries/" (encode(&event.event_id)) } { (event.event_id) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn status_badge(event: &StoredEvent) -> Markup {
    let tone = match event.status {
        EventStatus::Accepted => "good",
        EventStatus::Quarantined => "warn",
        EventStatus::Ignored => "muted",
    };
    html! {
        span.badge.(tone) { (event.status.as_str()) }
        @if let Some(outcome) = event.outcome { " " span.muted { (outcome.as_str()) } }
    }
}

/// `GET /console/deliveries/{id}`.
pub async fn detail(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let event = match operations::event(&app, &id).await {
        Ok(event) => event,
        Err(error) => return layout::failure(Some(&session), &error),
    };
    let body = event
        .body
        .as_deref()
        .map(|bytes| match json::decode::<serde_json::Value>(bytes) {
            Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        });
    let content = html! {
        p.crumbs { a href="/console/deliveries" { "Deliveries" } " / " }
        h1.mono { (event.event_id) }
        (done.notice())
        dl.profile {
            dt { "Source" } dd { (event.source) }
            dt { "Received" } dd { (time(event.received_at)) }
            dt { "Status" } dd { (status_badge(&event)) }
            @if let Some(reason) = &event.reason { dt { "Reason" } dd { (reason) } }
            dt { "Customer" } dd.mono { @match &event.customer_id { Some(c) => a href={ "/console/customers/" (encode(c)) } { (c) }, None => span.muted { "none" } } }
            dt { "Dedupe key" } dd.mono { (event.dedupe_key) }
            dt { "Duplicates" } dd { (event.duplicates) }
        }
        @if session.can(Scope::Write) {
            form.actions method="post" action={ "/console/deliveries/" (encode(&event.event_id)) "/reprocess" } {
                (layout::csrf(&session))
                button type="submit" disabled[event.redacted] { "Reprocess" }
                span.muted { " Maps the kept body again with the source's current settings." }
            }
        }
        h2 { "Headers" }
        @if event.headers.is_empty() { p.muted { "None kept." } } @else {
            div.scroll { table.kv { tbody { @for (name, value) in &event.headers { tr { th { (name) } td.mono { (value) } } } } } }
        }
        h2 { "Body" }
        @match body {
            Some(body) => pre.body { (body) },
            None => p.muted { "Redacted by an erasure." },
        }
    };
    layout::page(&session, "Delivery", content)
}

/// `POST /console/deliveries/{id}/reprocess`.
pub async fn reprocess(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match operations::reprocess(&app, &session.principal, &id).await {
        Ok(_) => Redirect::to(&format!("/console/deliveries/{}?done=reprocessed&n=1", encode(&id))).into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `GET /console/quarantine`: quarantined deliveries grouped by reason.
pub async fn quarantine(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Response {
    let page = match app
        .store
        .events(EventQuery {
            status: Some(EventStatus::Quarantined),
            limit: GROUPED,
            after: None,
            bodies: false,
        })
        .await
    {
        Ok(page) => page,
        Err(error) => return layout::failure(Some(&session), &error.into()),
    };
    let mut groups: BTreeMap<&str, Vec<&StoredEvent>> = BTreeMap::new();
    for event in &page.items {
        groups
            .entry(event.reason.as_deref().unwrap_or("(no reason)"))
            .or_default()
            .push(event);
    }
    let content = html! {
        h1 { "Quarantine" }
        (done.notice())
        p.muted { "Deliveries that could not be applied, grouped by why. Fix the cause (a source's settings, say), then reprocess a group." }
        @if page.next.is_some() {
            p.notice.warn { "Grouped over the oldest " (GROUPED) " quarantined deliveries; reprocessing a group goes through all of them." }
        }
        @if groups.is_empty() { p.notice.good { "Nothing is quarantined." } }
        @for (reason, events) in &groups {
            section.panel {
                div.panel-head {
                    h2 { (reason) }
                    span.badge.warn { (events.len()) }
                }
                (table(&events.iter().take(10).map(|e| (*e).clone()).collect::<Vec<_>>()))
                @if events.len() > 10 { p.muted { "and " (events.len() - 10) " more" } }
                @if session.can(Scope::Write) {
                    form.actions method="post" action="/console/quarantine/reprocess" {
                        (layout::csrf(&session))
                        input type="hidden" name="reason" value=(reason);
                        button type="submit" { "Reprocess this group" }
                    }
                }
            }
        }
    };
    layout::page(&session, "Quarantine", content)
}

#[derive(Deserialize)]
pub struct Group {
    reason: String,
}

/// `POST /console/quarantine/reprocess`: every quarantined delivery of a
/// reason, through the same operation as one delivery's.
pub async fn reprocess_group(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Form(group): Form<Group>,
) -> Response {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = match app
            .store
            .events(EventQuery {
                status: Some(EventStatus::Quarantined),
                limit: GROUPED,
                after,
                bodies: false,
            })
            .await
        {
            Ok(page) => page,
            Err(error) => return layout::failure(Some(&session), &error.into()),
        };
        ids.extend(
            page.items
                .into_iter()
                .filter(|e| e.reason.as_deref().unwrap_or("(no reason)") == group.reason)
                .map(|e| e.event_id),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if ids.is_empty() {
        return layout::message(
            Some(&session),
            axum::http::StatusCode::NOT_FOUND,
            "Nothing to reprocess",
            "No quarantined delivery has that reason now: nothing was changed.",
        );
    }
    let mut done = 0u64;
    for id in &ids {
        match operations::reprocess(&app, &session.principal, id).await {
            Ok(_) => done += 1,
            Err(error) => {
                tracing::warn!(event_id = %id, error = error.message(), "a quarantined delivery could not be reprocessed");
            }
        }
    }
    Redirect::to(&format!("/console/quarantine?done=reprocessed&n={done}")).into_response()
}
