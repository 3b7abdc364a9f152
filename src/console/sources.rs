//! Sources (`/console/sources`): each source with its tokens and its last
//! 24 hours; pause and enable, rotate a token (the new one shown once),
//! revoke one. Sources of the configuration file are shown, not changed:
//! they change in the file.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};

use super::layout::{self, Done, Toggle, ago, encode, time};
use super::session::Session;
use crate::http::AppState;
use crate::http::auth::Scope;
use crate::http::sources::{self, ManagedBy, SourceView};

/// `GET /console/sources`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Response {
    match sources::all(&app).await {
        Ok(all) => layout::page(&session, "Sources", listing(&session, &done, &all)),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

fn listing(session: &Session, done: &Done, all: &[SourceView]) -> Markup {
    let write = session.can(Scope::Write);
    html! {
        h1 { "Sources" }
        (done.notice())
        @if all.is_empty() { p.muted { "No source is configured." } }
        @for source in all {
            section.panel {
                div.panel-head {
                    h2 { (source.name) " " span.muted { (source.spec.kind) } }
                    @if source.enabled { span.badge.good { "enabled" } } @else { span.badge.warn { "paused: deliveries held" } }
                    @if source.managed == ManagedBy::Config { span.badge { "configuration file" } }
                }
                p.muted {
                    "Last delivery: "
                    @match source.stats.last_delivery_at { Some(at) => { (time(at)) " (" (ago(at)) ")" } None => "never" }
                    " · 24 h: " (source.stats.last24h.accepted) " accepted, "
                    (source.stats.last24h.quarantined) " quarantined, "
                    (source.stats.last24h.rejected) " rejected"
                    @if source.stats.last24h.held > 0 { ", " (source.stats.last24h.held) " held" }
                }
                div.scroll {
                    table {
                        thead { tr { th { "Token" } th { "Created" } th { "Last used" } th { "Expires" } @if write && source.managed == ManagedBy::Api { th { } } } }
                        tbody {
                            @for token in &source.tokens {
                                tr {
                                    td.mono { (token.id) }
                                    td { @match token.created_at { Some(at) => (time(at)), None => span.muted { "in the file" } } }
                                    td { @match token.last_used_at { Some(at) => (ago(at)), None => span.muted { "—" } } }
                                    td { @match token.expires_at { Some(at) => (time(at)), None => span.muted { "never" } } }
                                    @if write && source.managed == ManagedBy::Api {
                                        td {
                                            form.inline method="post" action={ "/console/sources/" (encode(&source.name)) "/tokens/" (encode(&token.id)) "/revoke" } {
                                                (layout::csrf(session))
                                                button.secondary type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if write && source.managed == ManagedBy::Api {
                    div.actions {
                        form.inline method="post" action={ "/console/sources/" (encode(&source.name)) "/tokens" } {
                            (layout::csrf(session))
                            button type="submit" { "Add a token (rotate)" }
                        }
                        form.inline method="post" action={ "/console/sources/" (encode(&source.name)) "/enabled" } {
                            (layout::csrf(session))
                            input type="hidden" name="enabled" value=(if source.enabled { "false" } else { "true" });
                            button.secondary type="submit" { (if source.enabled { "Pause" } else { "Enable" }) }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /console/sources/{name}/enabled`: pause or enable.
pub async fn set_enabled(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<Toggle>,
) -> Response {
    let enabled = form.enabled();
    match sources::set_enabled(&app, &session.principal, &name, enabled).await {
        Ok(_) => Redirect::to(if enabled {
            "/console/sources?done=enabled"
        } else {
            "/console/sources?done=paused"
        })
        .into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `POST /console/sources/{name}/tokens`: a new token, shown this once.
pub async fn add_token(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    match sources::add_token(&app, &session.principal, &name, None).await {
        Ok(created) => layout::page(
            &session,
            "New token",
            html! {
                h1 { "New token for " (name) }
                (layout::secret("token", &created.token))
                p { "Give it to the platform, check that deliveries arrive with it, then revoke the old token: both work until then." }
                p { a href="/console/sources" { "Back to the sources" } }
            },
        ),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `POST /console/sources/{name}/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    match sources::revoke_token(&app, &session.principal, &name, &id).await {
        Ok(()) => Redirect::to("/console/sources?done=revoked").into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}
