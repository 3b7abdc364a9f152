//! `POST /api/v1/rebuild` (SPEC §12): the running server rebuilds the
//! directory from the kept raw events, as `clientele rebuild` asks it to
//! when `serve` holds the embedded store. Scope `admin`, audited. The
//! answer comes once the rebuilt directory is swapped in; a rebuild under
//! way already answers `409`, and one whose request is dropped midway
//! leaves the directory as it was.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::http::StatusCode;
use axum::{Extension, Json, extract::State};

use super::AppState;
use super::api::admin;
use super::auth::Principal;
use super::error::ApiError;
use super::keys::record;
use crate::store::Rebuilt;

pub fn router() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/rebuild",
        post_with(rebuild, |op| {
            admin(
                op,
                "rebuildDirectory",
                "Rebuilds the directory from the kept raw events and swaps it in at once",
                &[StatusCode::CONFLICT],
            )
        }),
    )
}

async fn rebuild(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Rebuilt>, ApiError> {
    let sources = app
        .registry
        .all()
        .into_iter()
        .map(|live| (live.source.name().to_owned(), live.source.clone()))
        .collect();
    let rebuilt = crate::rebuild::run(app.store.as_ref(), sources, &app.clock).await?;
    record(&app, &principal, "directory.rebuild", "directory").await;
    tracing::info!(
        replayed = rebuilt.replayed,
        skipped = rebuilt.skipped,
        "directory rebuilt"
    );
    Ok(Json(rebuilt))
}
