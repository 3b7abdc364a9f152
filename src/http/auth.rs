//! Who is calling the admin API and what they may do (SPEC §5, §9).
//!
//! A caller presents a key as `Authorization: Bearer …`; [`authenticate`]
//! turns it into a [`Principal`], which [`require_key`] puts in the
//! request's extensions for the handlers and the scope checks behind it.
//! The configuration's `admin_token` is the bootstrap key and holds every
//! [`Scope`]. The console signs in through the same [`authenticate`], so a
//! page offers exactly what the key behind its session may do.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
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

/// The principal a presented key stands for, or `None` when it is no key.
pub async fn authenticate(app: &AppState, presented: &str) -> Option<Principal> {
    matches_any(presented, std::slice::from_ref(&app.admin_token)).then(Principal::bootstrap)
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
    match authenticate(&app, presented).await {
        Some(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        None => ApiError::unauthorized("the API key is wrong").into_response(),
    }
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
    fn a_principal_without_a_scope_cannot_use_it() {
        let principal = Principal {
            key_id: Some("key_1".into()),
            scopes: vec![Scope::Read],
        };
        assert!(principal.can(Scope::Read));
        assert!(!principal.can(Scope::Erase));
    }
}
