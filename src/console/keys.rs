//! API keys (`/console/keys`, the `admin` scope): every key with its
//! scopes, a new key (shown once), revoking one, which also ends its
//! console sessions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;

use super::layout::{self, Done, encode, time};
use super::session::Session;
use crate::http::AppState;
use crate::http::auth::Scope;
use crate::http::operations;

/// `GET /console/keys`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Response {
    let keys = match app.store.keys().await {
        Ok(keys) => keys,
        Err(error) => return layout::failure(Some(&session), &error.into()),
    };
    let content = html! {
        h1 { "API keys" }
        (done.notice())
        p.muted { "Keys for the API and the console. The admin token of the configuration file is not listed." }
        @if keys.is_empty() { p.muted { "No key yet." } } @else {
            div.scroll {
                table {
                    thead { tr { th { "Name" } th { "Id" } th { "Scopes" } th { "Created" } th { } } }
                    tbody {
                        @for key in &keys {
                            tr {
                                td { (key.name) }
                                td.mono { (key.id) }
                                td { (key.scopes.join(", ")) }
                                td { (time(key.created_at)) }
                                td {
                                    form.inline method="post" action={ "/console/keys/" (encode(&key.id)) "/revoke" } {
                                        (layout::csrf(&session))
                                        button.secondary type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel {
            h2 { "New key" }
            form method="post" action="/console/keys" {
                (layout::csrf(&session))
                label for="name" { "What it is for" }
                input #name type="text" name="name" required maxlength="200" placeholder="billing sync";
                fieldset {
                    legend { "Scopes" }
                    @for scope in Scope::ALL {
                        label.check { input type="checkbox" name="scopes" value=(scope.as_str()) checked[scope == Scope::Read]; " " (scope.as_str()) }
                    }
                }
                button type="submit" { "Create" }
            }
        }
    };
    layout::page(&session, "API keys", content)
}

/// `POST /console/keys`: the new key, shown this once.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let name = fields.iter().find(|(k, _)| k == "name").map_or("", |(_, v)| v.as_str());
    let scopes: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "scopes")
        .map(|(_, v)| v.clone())
        .collect();
    match operations::create_key(&app, &session.principal, name, &scopes).await {
        Ok((key, stored)) => layout::page(
            &session,
            "Key created",
            html! {
                h1 { "Key created: " (stored.name) }
                p { "Scopes: " (stored.scopes.join(", ")) }
                (layout::secret("key", &key))
                p { a href="/console/keys" { "Back to the keys" } }
            },
        ),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match operations::revoke_key(&app, &session.principal, &id).await {
        Ok(()) => Redirect::to("/console/keys?done=key-revoked").into_response(),
        Err(error) => layout::failure(Some(&session), &error),
    }
}
