//! Subscriptions (`/console/subscriptions`): every subscription with what
//! it waits to send; create one (its secret shown once), enable or
//! disable it; one subscription's messages with each attempt, retry a
//! message, replay the changes since a time
//! (`/console/subscriptions/{id}`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::customers::message_tone;
use super::layout::{self, Done, Toggle, encode, next_page, time};
use super::session::Session;
use crate::http::AppState;
use crate::http::auth::Scope;
use crate::http::error::ApiError;
use crate::http::operations::{self, NewSubscription};
use crate::model::{Action, UtcMillis};
use crate::outbound::destination::masked;
use crate::outbound::{Message, Subscription};
use crate::store::MessageQuery;

const PAGE: usize = 50;
const ACTIONS: [Action; 4] = [Action::Created, Action::Updated, Action::Merged, Action::Deleted];

/// `GET /console/subscriptions`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Response {
    let read = async {
        let subscriptions = app.store.subscriptions().await?;
        let backlog = app.store.backlog().await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the outbound backlog");
            ApiError::from(crate::store::StoreError::Unavailable("the outbound backlog".into()))
        })?;
        Ok::<_, ApiError>((subscriptions, backlog.pending))
    };
    match read.await {
        Ok((subscriptions, pending)) => {
            let waiting = |id: &str| pending.iter().find(|(s, _)| s == id).map_or(0, |(_, n)| *n);
            let sources: Vec<String> = app.registry.all().iter().map(|s| s.source.name().to_owned()).collect();
            let content = html! {
                h1 { "Subscriptions" }
                (done.notice())
                @if subscriptions.is_empty() { p.muted { "No subscription yet." } } @else {
                    div.scroll {
                        table {
                            thead { tr { th { "Subscription" } th { "URL" } th { "Changes" } th { "Sources" } th { "State" } th.num { "Pending" } } }
                            tbody {
                                @for s in &subscriptions {
                                    tr {
                                        td.mono { a href={ "/console/subscriptions/" (encode(&s.id)) } { (s.id) } }
                                        td.mono { (masked(&s.url)) }
                                        td { (or_every(s.actions.iter().map(|a| a.as_str().to_owned()).collect())) }
                                        td { (or_every(s.sources.clone())) }
                                        td { (state(s)) }
                                        td.num { (waiting(&s.id)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if session.can(Scope::Write) { (create_form(&session, &sources)) }
            };
            layout::page(&session, "Subscriptions", content)
        }
        Err(error) => layout::failure(Some(&session), &error),
    }
}

fn or_every(items: Vec<String>) -> String {
    if items.is_empty() {
        "every".to_owned()
    } else {
        items.join(", ")
    }
}

fn state(s: &Subscription) -> Markup {
    html! { @if s.enabled { span.badge.good { "enabled" } } @else { span.badge.warn { "disabled" } } }
}

fn create_form(session: &Session, sources: &[String]) -> Markup {
    html! {
        section.panel {
            h2 { "New subscription" }
            form method="post" action="/console/subscriptions" {
                (layout::csrf(session))
                label for="url" { "URL" }
                input #url type="url" name="url" required placeholder="https://example.com/webhooks/clientele";
                fieldset {
                    legend { "Changes (none ticked: every one)" }
                    @for action in ACTIONS {
                        label.check { input type="checkbox" name="actions" value=(action.as_str()); " " (action.as_str()) }
                    }
                }
                fieldset {
                    legend { "Sources (none ticked: every source)" }
                    @for source in sources {
                        label.check { input type="checkbox" name="sources" value=(source); " " (source) }
                    }
                }
                fieldset {
                    legend { "Messages (none ticked: customers)" }
                    @for kind in ["customer", "person"] {
                        label.check { input type="checkbox" name="types" value=(kind); " " (kind) }
                    }
                }
                button type="submit" { "Create" }
            }
        }
    }
}

/// `POST /console/subscriptions`: the new subscription's secret, shown
/// this once.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let values = |name: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    };
    let new = NewSubscription {
        url: values("url").pop().unwrap_or_default(),
        secret: None,
        actions: values("actions"),
        sources: values("sources"),
        types: values("types"),
    };
    match operations::create_subscription(&app, new).await {
        Ok((subscription, secret)) => layout::page(
            &session,
            "Subscription created",
            html! {
                h1 { "Subscription created" }
                p { "Messages to " span.mono { (masked(&subscription.url)) } " are signed with this secret (Standard Webhooks)." }
                (layout::secret("secret", &secret))
                p { a href={ "/console/subscriptions/" (encode(&subscription.id)) } { "Open the subscription" } }
            },
        ),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `POST /console/subscriptions/{id}/enabled`.
pub async fn set_enabled(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Toggle>,
) -> Response {
    let enabled = form.enabled();
    match operations::set_subscription_enabled(&app, &id, enabled).await {
        Ok(_) => {
            let done = if enabled {
                "subscription-enabled"
            } else {
                "subscription-disabled"
            };
            Redirect::to(&format!("/console/subscriptions/{}?done={done}", encode(&id))).into_response()
        }
        Err(error) => layout::failure(Some(&session), &error),
    }
}

#[derive(Deserialize)]
pub struct Filter {
    status: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
    n: Option<String>,
}

/// `GET /console/subscriptions/{id}`: its messages and their attempts.
pub async fn detail(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let subscription = match app.store.subscription(id.clone()).await {
        Ok(Some(subscription)) => subscription,
        Ok(None) => return layout::failure(Some(&session), &ApiError::not_found(format!("no subscription {id:?}"))),
        Err(error) => return layout::failure(Some(&session), &error.into()),
    };
    let chosen = filter.status.clone().unwrap_or_default();
    let read = async {
        let after = layout::cursor(filter.cursor.as_deref())?;
        let query = MessageQuery {
            subscription_id: id.clone(),
            customer_id: None,
            status: operations::message_status(Some(chosen.as_str()).filter(|s| !s.is_empty()))?,
            limit: PAGE,
            after,
        };
        operations::messages(&app, query).await
    };
    let done = Done::from_query(filter.done.as_deref(), filter.n.as_deref());
    let base = format!("/console/subscriptions/{}?status={}", encode(&id), encode(&chosen));
    let listing = match read.await {
        Ok(page) => html! { (messages(&session, &page.items)) (next_page(&base, page.next)) },
        Err(error) => html! { p.notice.bad role="alert" { (error.message()) } },
    };
    let write = session.can(Scope::Write);
    let content = html! {
        p.crumbs { a href="/console/subscriptions" { "Subscriptions" } " / " }
        h1.mono { (subscription.id) " " (state(&subscription)) }
        (done.notice())
        dl.profile {
            dt { "URL" } dd.mono { (masked(&subscription.url)) }
            dt { "Changes" } dd { (or_every(subscription.actions.iter().map(|a| a.as_str().to_owned()).collect())) }
            dt { "Sources" } dd { (or_every(subscription.sources.clone())) }
            dt { "Created" } dd { (time(subscription.created_at)) }
        }
        @if write {
            div.actions {
                form.inline method="post" action={ "/console/subscriptions/" (encode(&subscription.id)) "/enabled" } {
                    (layout::csrf(&session))
                    input type="hidden" name="enabled" value=(if subscription.enabled { "false" } else { "true" });
                    button.secondary type="submit" { (if subscription.enabled { "Disable" } else { "Enable" }) }
                }
                form.inline.replay method="post" action={ "/console/subscriptions/" (encode(&subscription.id)) "/replay" } {
                    (layout::csrf(&session))
                    label for="since" { "Replay changes since (UTC)" }
                    input #since type="datetime-local" name="since" required;
                    button type="submit" { "Replay" }
                }
            }
        }
        h2 { "Messages" }
        form.search method="get" action={ "/console/subscriptions/" (encode(&subscription.id)) } {
            label for="status" { "Status" }
            div.row {
                select #status name="status" {
                    @for (value, label) in [("", "any"), ("pending", "pending"), ("delivered", "delivered"), ("dead", "dead"), ("cancelled", "cancelled")] {
                        option value=(value) selected[value == chosen] { (label) }
                    }
                }
                button type="submit" { "Filter" }
            }
        }
        (listing)
    };
    layout::page(&session, "Subscription", content)
}

fn messages(session: &Session, messages: &[Message]) -> Markup {
    html! {
        @if messages.is_empty() { p.muted { "No message." } }
        @for message in messages {
            article.message {
                div.panel-head {
                    span.mono { (message.id) }
                    span.badge.(message_tone(message.status.as_str())) { (message.status.as_str()) }
                    span { (message.action.as_str()) " of " a.mono href={ "/console/customers/" (encode(&message.customer_id)) } { (message.customer_id) } " v" (message.version) }
                    @if let Some(next) = message.next_attempt_at { span.muted { "next attempt " (time(next)) } }
                    @if session.can(Scope::Write) && message.status.as_str() != "cancelled" {
                        form.inline method="post" action={ "/console/messages/" (encode(&message.id)) "/retry" } {
                            (layout::csrf(session))
                            input type="hidden" name="subscription" value=(message.subscription_id);
                            button.secondary type="submit" { "Retry" }
                        }
                    }
                }
                @if !message.attempts.is_empty() {
                    ol.attempts {
                        @for attempt in &message.attempts {
                            li {
                                (time(attempt.at)) " · "
                                @match attempt.status_code { Some(code) => { "HTTP " (code) }, None => "no answer" }
                                " · " (attempt.duration_ms) " ms"
                                @if let Some(error) = &attempt.error { " · " span.muted { (error) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Retry {
    subscription: String,
}

/// `POST /console/messages/{id}/retry`.
pub async fn retry(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Retry>,
) -> Response {
    match operations::retry(&app, &id).await {
        Ok(()) => Redirect::to(&format!(
            "/console/subscriptions/{}?done=retried",
            encode(&form.subscription)
        ))
        .into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

#[derive(Deserialize)]
pub struct Replay {
    since: String,
}

/// `POST /console/subscriptions/{id}/replay`.
pub async fn replay(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<Replay>,
) -> Response {
    let Some(since) = since(&form.since) else {
        let error = ApiError::bad_parameter(format!(
            "{:?} is not a time: give one such as 2026-04-24T18:38 (UTC). Nothing was queued.",
            form.since
        ));
        return layout::failure(Some(&session), &error);
    };
    match operations::replay(&app, &session.principal, &id, since).await {
        Ok(n) => Redirect::to(&format!("/console/subscriptions/{}?done=replayed&n={n}", encode(&id))).into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// A time from the form's `datetime-local` field (minutes or seconds, in
/// UTC), or RFC 3339.
fn since(text: &str) -> Option<UtcMillis> {
    let text = text.trim();
    let full = match text.len() {
        16 => format!("{text}:00Z"),
        19 => format!("{text}Z"),
        _ => text.to_owned(),
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_time_reads_the_browsers_field_as_utc() {
        assert_eq!(
            since("2026-04-24T18:38").map(|t| t.to_string()).as_deref(),
            Some("2026-04-24T18:38:00.000Z")
        );
        assert_eq!(
            since("2026-04-24T18:38:21Z").map(|t| t.to_string()).as_deref(),
            Some("2026-04-24T18:38:21.000Z")
        );
        assert_eq!(since("yesterday"), None);
    }
}
