//! Who is calling the admin API and what they may do (SPEC §5, §9).
//!
//! A caller presents a key as `Authorization: Bearer …`; [`authenticate`]
//! turns it into a [`Principal`], which [`require_key`] puts in the
//! request's extensions for the handlers and the scope checks behind it.
//! The configuration's `admin_token` is the bootstrap key and holds every
//! [`Scope`]; other keys are created through `/api/v1/keys` and kept as
//! SHA-256 digests (`crate::store::keys`), looked up on every request, so
//! that a revoked key is refused from the next request on, on every
//! instance. The console signs in through the same [`authenticate`], so a
//! page offers exactly what the key behind its session may do.
//!
//! Which scope an operation needs is decided in one place,
//! [`required_scope`], from its method and route: a new route is covered
//! the day it is added (a `GET` needs `read`, any other method `write`,
//! unless it is an erasure or a key's), and the OpenAPI document states
//! the same scope for each operation (`super::openapi::declare_scopes`).
//!
//! SHA-256 suits keys and tokens because they are 256 random bits: there
//! is nothing to guess that a slow password hash would protect, and a
//! digest is looked up in one indexed read.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::ingest::{bearer, matches_any};

/// What a key may do (SPEC §9): `read` every `GET`; `write` reprocess,
/// retry, replay, subscriptions and sources; `erase` a customer; `admin`
/// manage keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Erase,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Erase, Scope::Admin];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Erase => "erase",
            Scope::Admin => "admin",
        }
    }
}

/// The caller behind a request: which key, and its scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The API key's id; `None` for the configuration's `admin_token`.
    pub key_id: Option<String>,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// The bootstrap key: the configuration's `admin_token`, every scope.
    pub fn bootstrap() -> Self {
        Principal {
            key_id: None,
            scopes: Scope::ALL.to_vec(),
        }
    }

    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The principal a presented key stands for, or `None` when it is no key
/// (or the store cannot say now: logged).
pub async fn authenticate(app: &AppState, presented: &str) -> Option<Principal> {
    if matches_any(presented, std::slice::from_ref(&app.admin_token)) {
        return Some(Principal::bootstrap());
    }
    // Keys are 256 random bits: their digest is the lookup key, and what
    // an index's timing could tell of it says nothing of a key.
    match app
        .store
        .key_by_digest(crate::sources::registry::digest(presented))
        .await
    {
        Ok(key) => key.map(|key| Principal {
            key_id: Some(key.id),
            scopes: key.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot look up an API key");
            None
        }
    }
}

/// The scope an operation of `/api/v1` needs (SPEC §9): `admin` for keys,
/// the audit log and a rebuild; `read` for every other `GET`; `erase` to
/// erase a customer or delete an event; `write` for everything else.
pub fn required_scope(method: &Method, route: &str) -> Scope {
    let route = route.strip_prefix("/api/v1").unwrap_or(route);
    if route.starts_with("/keys") || route.starts_with("/audit") || route == "/rebuild" {
        return Scope::Admin;
    }
    match *method {
        Method::GET | Method::HEAD => Scope::Read,
        Method::DELETE if route == "/customers/{id}" || route == "/events/{id}" => Scope::Erase,
        _ => Scope::Write,
    }
}

/// Admits a request that presents a key, with its [`Principal`] in the
/// request's extensions; `401` otherwise.
pub async fn require_key(State(app): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let Some(presented) = presented else {
        return ApiError::unauthorized("send an API key as Authorization: Bearer …").into_response();
    };
    let Some(principal) = authenticate(&app, presented).await else {
        return ApiError::unauthorized("the API key is wrong").into_response();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |m| m.as_str().to_owned());
    let scope = required_scope(request.method(), &route);
    if !principal.can(scope) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this key lacks the {} scope", scope.as_str()),
        )
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_key_holds_every_scope() {
        let principal = Principal::bootstrap();
        assert!(Scope::ALL.iter().all(|scope| principal.can(*scope)));
        assert_eq!(principal.key_id, None);
    }

    #[test]
    fn each_operation_needs_its_scope() {
        let scope = |method: Method, route: &str| required_scope(&method, route);
        assert_eq!(scope(Method::GET, "/api/v1/customers/{id}"), Scope::Read);
        assert_eq!(scope(Method::DELETE, "/api/v1/customers/{id}"), Scope::Erase);
        assert_eq!(scope(Method::DELETE, "/api/v1/events/{id}"), Scope::Erase);
        assert_eq!(scope(Method::POST, "/api/v1/events/{id}/reprocess"), Scope::Write);
        assert_eq!(scope(Method::DELETE, "/api/v1/subscriptions/{id}"), Scope::Write);
        assert_eq!(scope(Method::PATCH, "/api/v1/sources/{name}"), Scope::Write);
        assert_eq!(scope(Method::GET, "/api/v1/keys"), Scope::Admin);
        assert_eq!(scope(Method::GET, "/api/v1/audit"), Scope::Admin);
        assert_eq!(scope(Method::POST, "/api/v1/rebuild"), Scope::Admin);
        assert_eq!(scope(Method::POST, "/keys"), Scope::Admin);
    }

    #[test]
    fn a_principal_without_a_scope_cannot_use_it() {
        let principal = Principal {
            key_id: Some("key_1".into()),
            scopes: vec![Scope::Read],
        };
        assert!(principal.can(Scope::Read));
        assert!(!principal.can(Scope::Erase));
    }
}
