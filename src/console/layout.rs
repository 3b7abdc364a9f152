//! What every console page shares: the document around a page's content
//! (navigation, who is signed in, sign-out), the message pages (refusals,
//! bad input, failures), and the small pieces pages are built from:
//! times, ids in links, the CSRF field of a form, the next-page link.
//!
//! Every value goes into the page through maud's `(…)`, which escapes it;
//! nothing is written as raw HTML but the markup of these templates.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::session::Session;
use crate::http::auth::Scope;
use crate::http::error::ApiError;
use crate::model::UtcMillis;

/// The navigation: each page's path, its name, and the scope it needs.
const PAGES: [(&str, &str, Scope); 8] = [
    ("/console", "Overview", Scope::Read),
    ("/console/sources", "Sources", Scope::Read),
    ("/console/deliveries", "Deliveries", Scope::Read),
    ("/console/quarantine", "Quarantine", Scope::Read),
    ("/console/customers", "Customers", Scope::Read),
    ("/console/persons", "Persons", Scope::Read),
    ("/console/subscriptions", "Subscriptions", Scope::Read),
    ("/console/keys", "Keys", Scope::Admin),
];

/// What a path segment or a query value keeps unencoded.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` percent-encoded for a path segment or a query value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, KEEP).to_string()
}

/// A page of the console: `content` in the document every page shares.
pub fn page(session: &Session, title: &str, content: Markup) -> Response {
    document(Some(session), StatusCode::OK, title, content)
}

fn document(session: Option<&Session>, status: StatusCode, title: &str, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Clientele" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "Clientele" }
                    @if let Some(session) = session {
                        nav aria-label="Pages" {
                            @for (path, name, scope) in PAGES {
                                @if session.can(scope) {
                                    a href=(path) { (name) }
                                }
                            }
                        }
                        form.who method="post" action="/console/sign-out" {
                            (csrf(session))
                            span { (session.who) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (content) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A page that says one thing: a refusal, a missing record, bad input.
pub fn message(session: Option<&Session>, status: StatusCode, title: &str, text: &str) -> Response {
    document(
        session,
        status,
        title,
        html! {
            h1 { (title) }
            p.notice.bad { (text) }
            p { a href="/console" { "Back to the overview" } }
        },
    )
}

/// A failed read or action, as a page that says why.
pub fn failure(session: Option<&Session>, error: &ApiError) -> Response {
    let title = match error.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST => "Cannot read that",
        status if status.is_server_error() => "Something failed",
        _ => "Not done",
    };
    message(session, error.status(), title, error.message())
}

/// The sign-in page.
pub fn sign_in(token: &str, next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    document(
        None,
        status,
        "Sign in",
        html! {
            section.sign-in {
                h1 { "Sign in" }
                p { "Sign in with an API key (or the admin token). What the console offers follows the key's scopes." }
                @if let Some(problem) = problem {
                    p.notice.bad role="alert" { (problem) }
                }
                form method="post" action="/console/sign-in" {
                    input type="hidden" name="csrf" value=(token);
                    input type="hidden" name="next" value=(next);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A time as people read it, the exact instant in its title.
pub fn time(at: UtcMillis) -> Markup {
    let exact = at.to_string();
    let shown = format!("{} {} UTC", &exact[..10], &exact[11..16]);
    html! { time datetime=(exact) title=(exact) { (shown) } }
}

/// How long ago `at` was, in the largest whole unit.
pub fn ago(at: UtcMillis) -> String {
    let seconds = (UtcMillis::now().as_millisecond() - at.as_millisecond()).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// The link to the next page of a list, when there is one: `base` with
/// `cursor` added to its query.
pub fn next_page(base: &str, next: Option<i64>) -> Markup {
    let separator = if base.contains('?') { '&' } else { '?' };
    html! {
        @if let Some(next) = next {
            nav.pager aria-label="More" {
                a href={ (base) (separator) "cursor=" (next) } { "Next page →" }
            }
        }
    }
}

/// What an action did, said on the page it leads back to: a fixed
/// sentence per action (`?done=…`, with a count `n` where it has one), so
/// that no text of the query reaches the page.
#[derive(serde::Deserialize, Default)]
pub struct Done {
    done: Option<String>,
    n: Option<String>,
}

impl Done {
    /// From a page's own query fields.
    pub fn from_query(done: Option<&str>, n: Option<&str>) -> Self {
        Done {
            done: done.map(str::to_owned),
            n: n.map(str::to_owned),
        }
    }

    pub fn notice(&self) -> Markup {
        let n: u64 = self.n.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
        let text = match self.done.as_deref() {
            Some("enabled") => "The source is enabled: what it held is being applied.".to_owned(),
            Some("paused") => "The source is paused: its deliveries are held until it is enabled.".to_owned(),
            Some("revoked") => "The token is revoked: it is refused from now on.".to_owned(),
            Some("erased") => "The customer is erased.".to_owned(),
            Some("reprocessed") => format!("Reprocessed {n} {}.", plural(n, "delivery", "deliveries")),
            Some("retried") => "The message is queued to be sent again.".to_owned(),
            Some("replayed") => format!("{n} {} queued to be sent again.", plural(n, "message", "messages")),
            Some("subscription-enabled") => "The subscription is enabled.".to_owned(),
            Some("subscription-disabled") => "The subscription is disabled: its messages wait.".to_owned(),
            Some("decided") => "The decision is kept: persons follow it in a moment.".to_owned(),
            Some("key-revoked") => "The key is revoked, and its console sessions ended.".to_owned(),
            _ => return html! {},
        };
        html! { p.notice.good role="status" { (text) } }
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// A secret shown this once, with a button that copies it.
pub fn secret(id: &str, value: &str) -> Markup {
    html! {
        div.secret {
            p.notice.warn { "Shown only now: copy it somewhere safe. The console cannot show it again." }
            div.row {
                code #(id) { (value) }
                button.secondary type="button" data-copy=(id) { "Copy" }
            }
        }
    }
}

/// A page's `cursor` (from a next-page link): `None` for the first page.
pub fn cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_parameter("That page link is broken: start from the first page."))
        })
        .transpose()
}

/// The form of a pause or enable button.
#[derive(serde::Deserialize)]
pub struct Toggle {
    enabled: String,
}

impl Toggle {
    pub fn enabled(&self) -> bool {
        self.enabled == "true"
    }
}
