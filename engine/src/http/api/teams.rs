//! Team endpoints under `/v1/teams`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::teams::TeamSpec;

/// `GET /v1/teams`.
pub async fn list(State(state): State<HttpState>) -> ApiResult<Response> {
    Ok(Json(json!({ "teams": state.teams.list().await? })).into_response())
}

/// `GET /v1/teams/{name}`.
pub async fn get(State(state): State<HttpState>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.teams.get(&name).await?).into_response())
}

/// `PUT /v1/teams/{name}` with `{enrollment_profiles, setup_steps, release_timeout_secs}`.
///
/// When a platform's enrollment profile changes, the team's DEP devices of that platform that
/// have not enrolled yet are re-assigned the new profile; `reassigned` says how many.
pub async fn put(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let spec: TeamSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("team settings: {e}")))?;
    let before = state.teams.find(&name).await?;
    let team = state.teams.put(&name, spec).await?;
    // The team is saved; a profile Pomona does not know is the admin's to fix (404).
    let reassigned = state.dep.reassign_team(before.as_ref(), &team).await?;
    let mut out = serde_json::to_value(&team).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["reassigned"] = json!(reassigned);
    Ok(Json(out).into_response())
}

/// `DELETE /v1/teams/{name}`.
pub async fn delete(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    state.teams.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
