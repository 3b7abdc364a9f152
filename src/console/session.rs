//! Signing in and out of the console, and what guards every page: the
//! session cookie, the key behind it, its scopes, and the CSRF token of
//! every form.
//!
//! Signing in presents an API key (or the `admin_token`) once, in a form;
//! the console checks it as the API does ([`authenticate`]) and keeps a
//! session in the store ([`Sessions`]): the cookie holds a random id, the
//! store its SHA-256 and the SHA-256 of the key. [`guard`] runs before
//! every page and action: it finds the session, looks its key up again (a
//! revoked key, or a changed `admin_token`, ends the session), ends one
//! idle for [`IDLE`], checks the scope the route needs ([`scope_of`]) and,
//! on a `POST`, the form's CSRF token, before the handler runs. Nothing
//! else in the console reads a cookie or checks a scope.
//!
//! The sign-in form, which has no session yet, carries a token of its own
//! that must match a cookie set with the form (a double-submit token), so
//! that another site cannot sign a browser in with its key either.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::body::Body;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout;
use crate::http::AppState;
use crate::http::auth::{Principal, Scope, authenticate};
use crate::http::error::ApiError;
use crate::model::UtcMillis;
use crate::sources::registry::digest;
use crate::store::sessions::StoredSession;

/// The session cookie.
const COOKIE: &str = "clientele_session";
/// The sign-in form's own token, until a session exists.
const SIGN_IN_COOKIE: &str = "clientele_sign_in";
/// A session unused this long is over (SPEC §13).
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// How stale a session's last use may be before a request records a new
/// one: one write a minute per session, not one per page.
const TOUCH_AFTER: Duration = Duration::from_secs(60);
/// The largest form the console reads.
const FORM_LIMIT: usize = 64 * 1024;

/// The signed-in caller of a page, put in the request's extensions by
/// [`guard`].
#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    /// The key's name, or "admin token".
    pub who: String,
    /// The token every form of this session carries.
    pub csrf: String,
    id_digest: String,
}

impl Session {
    pub fn can(&self, scope: Scope) -> bool {
        self.principal.can(scope)
    }
}

/// The scope a console route needs, in the API's terms
/// (`crate::http::auth::required_scope`): `admin` for keys; `read` to
/// look; `erase` to erase a customer; `write` for every other action.
pub fn scope_of(method: &Method, route: &str) -> Scope {
    if route.starts_with("/console/keys") {
        return Scope::Admin;
    }
    match *method {
        Method::GET | Method::HEAD => Scope::Read,
        _ if route.ends_with("/erase") => Scope::Erase,
        _ => Scope::Write,
    }
}

/// Admits a request with a live session whose key has the route's scope
/// and, on a `POST`, the session's CSRF token in its form; a request
/// without a session goes to the sign-in page.
pub async fn guard(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let session = match current(&app, request.headers()).await {
        Ok(Some(session)) => session,
        Ok(None) => return to_sign_in(&request),
        Err(error) => return layout::failure(None, &error),
    };
    // Nothing Clientele keeps holds a NUL (see `crate::http::api::refuse_nul`).
    if request.uri().to_string().contains("%00") {
        return layout::message(
            Some(&session),
            StatusCode::NOT_FOUND,
            "Not found",
            "Nothing here: no id holds NUL.",
        );
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |m| m.as_str().to_owned());
    let scope = scope_of(request.method(), &route);
    if !session.can(scope) {
        let message = format!(
            "The key you signed in with lacks the {} scope this needs.",
            scope.as_str()
        );
        return layout::message(Some(&session), StatusCode::FORBIDDEN, "Not allowed", &message);
    }
    let mut request = request;
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = Limited::new(body, FORM_LIMIT).collect().await.map(|c| c.to_bytes()) else {
            return layout::message(
                Some(&session),
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form could not be read.",
            );
        };
        if !same_token(form_field(&bytes, "csrf").as_deref(), &session.csrf) {
            return layout::message(
                Some(&session),
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form did not carry this session's token (it is from another page or an older session). \
                 Nothing was changed: reload the page and try again.",
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The request's live session, if it has one.
async fn current(app: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let id_digest = digest(&id);
    let Some(stored) = app.store.session(id_digest.clone()).await? else {
        return Ok(None);
    };
    let now = UtcMillis::now();
    let idle = now.as_millisecond() - stored.seen_at.as_millisecond();
    if idle > IDLE.as_millis() as i64 {
        app.store.delete_session(id_digest).await?;
        return Ok(None);
    }
    let Some((principal, who)) = signed_in_as(app, &stored.credential).await? else {
        // The key was revoked (or the admin token changed): the session
        // ends with it.
        app.store.delete_session(id_digest).await?;
        return Ok(None);
    };
    if idle > TOUCH_AFTER.as_millis() as i64 {
        app.store.touch_session(id_digest.clone(), now).await?;
    }
    Ok(Some(Session {
        principal,
        who,
        csrf: stored.csrf,
        id_digest,
    }))
}

/// The principal whose key has this digest now, and its name.
async fn signed_in_as(app: &AppState, credential: &str) -> Result<Option<(Principal, String)>, ApiError> {
    let admin = digest(app.admin_token.expose());
    if bool::from(admin.as_bytes().ct_eq(credential.as_bytes())) {
        return Ok(Some((Principal::bootstrap(), "admin token".to_owned())));
    }
    let key = app.store.key_by_digest(credential.to_owned()).await?;
    Ok(key.map(|key| {
        let principal = Principal {
            key_id: Some(key.id),
            scopes: key.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        };
        (principal, key.name)
    }))
}

#[derive(Deserialize)]
pub struct AfterSignIn {
    next: Option<String>,
}

/// Where to go after signing in: a console page, never another site.
fn after_sign_in(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/console") && !n.contains("//") && !n.contains('\\'))
        .unwrap_or("/console")
}

/// `GET /console/sign-in`: the form, with a fresh token of its own.
pub async fn sign_in_page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(next): Query<AfterSignIn>,
) -> Response {
    if let Ok(Some(_)) = current(&app, &headers).await {
        return Redirect::to(after_sign_in(next.next.as_deref())).into_response();
    }
    sign_in_form(&app, &headers, next.next.as_deref(), None, StatusCode::OK)
}

fn sign_in_form(
    app: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = crate::http::keys::random_secret("");
    let mut response = layout::sign_in(&token, after_sign_in(next), problem, status);
    set_cookie(&mut response, app, headers, SIGN_IN_COOKIE, &token, false);
    response
}

#[derive(Deserialize)]
pub struct SignIn {
    key: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /console/sign-in`: a key in, a session out.
pub async fn sign_in(State(app): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_token(Some(&form.csrf), &expected) {
        return sign_in_form(
            &app,
            &headers,
            form.next.as_deref(),
            Some("The sign-in form expired: sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let key = form.key.trim();
    let Some(principal) = authenticate(&app, key).await else {
        return sign_in_form(
            &app,
            &headers,
            form.next.as_deref(),
            Some("That is not an API key of this Clientele."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let id = crate::http::keys::random_secret("");
    let now = UtcMillis::now();
    let session = StoredSession {
        id_digest: digest(&id),
        credential: digest(key),
        key_id: principal.key_id.clone(),
        csrf: crate::http::keys::random_secret(""),
        created_at: now,
        seen_at: now,
    };
    let expired_before = UtcMillis::from_millisecond(now.as_millisecond() - IDLE.as_millis() as i64);
    if let Err(error) = app.store.create_session(session, expired_before).await {
        return layout::failure(None, &error.into());
    }
    tracing::info!(
        key = principal.key_id.as_deref().unwrap_or("admin_token"),
        "console sign-in"
    );
    let mut response = Redirect::to(after_sign_in(form.next.as_deref())).into_response();
    set_cookie(&mut response, &app, &headers, COOKIE, &id, false);
    set_cookie(&mut response, &app, &headers, SIGN_IN_COOKIE, "", true);
    response
}

/// `POST /console/sign-out`: the session ends on the server, and its
/// cookie in the browser.
pub async fn sign_out(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    if let Err(error) = app.store.delete_session(session.id_digest.clone()).await {
        return layout::failure(Some(&session), &error.into());
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    set_cookie(&mut response, &app, &headers, COOKIE, "", true);
    response
}

/// `303` to the sign-in page, which comes back here after (a `GET`'s page).
fn to_sign_in(request: &Request) -> Response {
    let location = if request.method() == Method::GET {
        let here = request.uri().path_and_query().map_or("/console", |p| p.as_str());
        format!("/console/sign-in?next={}", layout::encode(here))
    } else {
        "/console/sign-in".to_owned()
    };
    Redirect::to(&location).into_response()
}

/// Whether the request came over TLS: only a trusted proxy can say so
/// (Clientele serves plain HTTP itself).
fn over_tls(app: &AppState, headers: &HeaderMap) -> bool {
    app.trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(response: &mut Response, app: &AppState, headers: &HeaderMap, name: &str, value: &str, clear: bool) {
    let mut cookie = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if clear {
        cookie.push_str("; Max-Age=0");
    }
    if over_tls(app, headers) {
        cookie.push_str("; Secure");
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The value of the cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The field `name` of a form body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn same_token(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_console_route_needs_its_scope() {
        assert_eq!(scope_of(&Method::GET, "/console/customers/{id}"), Scope::Read);
        assert_eq!(scope_of(&Method::POST, "/console/customers/{id}/erase"), Scope::Erase);
        assert_eq!(
            scope_of(&Method::POST, "/console/deliveries/{id}/reprocess"),
            Scope::Write
        );
        assert_eq!(scope_of(&Method::GET, "/console/keys"), Scope::Admin);
        assert_eq!(scope_of(&Method::POST, "/console/keys/{id}/revoke"), Scope::Admin);
    }

    #[test]
    fn sign_in_goes_back_only_to_a_console_page() {
        assert_eq!(after_sign_in(Some("/console/customers?q=a")), "/console/customers?q=a");
        assert_eq!(after_sign_in(Some("https://evil.example/")), "/console");
        assert_eq!(after_sign_in(Some("/console//evil.example")), "/console");
        assert_eq!(after_sign_in(None), "/console");
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; clientele_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), None);
    }
}
