//! Team endpoints under `/v1/teams`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::collections::BTreeMap;

use super::error::{ApiError, ApiResult};
use crate::engine::EngineInner;
use crate::store::{DeviceQuery, DeviceStage};
use crate::teams::platform_of;
use crate::teams::{TeamError, TeamSpec};

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::InvalidName(_) | TeamError::Invalid(_) => Self::BadRequest(e.to_string()),
            TeamError::NotFound(_) => Self::NotFound(e.to_string()),
            TeamError::Store(s) => Self::Store(s),
        }
    }
}

/// `GET /v1/teams`.
pub async fn list(State(inner): State<Arc<EngineInner>>) -> ApiResult<Response> {
    Ok(Json(json!({ "teams": inner.teams.list().await? })).into_response())
}

/// `GET /v1/teams/{name}`.
pub async fn get(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(inner.teams.get(&name).await?).into_response())
}

/// `PUT /v1/teams/{name}` with `{enrollment_profiles, setup_steps, release_timeout_secs}`.
///
/// When a platform's enrollment profile changes, the team's DEP devices of that platform that
/// have not enrolled yet are re-assigned the new profile; `reassigned` says how many.
pub async fn put(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let spec: TeamSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("team settings: {e}")))?;
    let before = inner.store.team(&name).await?;
    let team = inner.teams.put(&name, spec).await?;
    let changed: BTreeMap<&str, &str> = team
        .enrollment_profiles
        .iter()
        .filter(|(platform, profile)| {
            before
                .as_ref()
                .and_then(|b| b.enrollment_profiles.get(*platform))
                != Some(*profile)
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let reassigned = if changed.is_empty() || before.is_none() {
        0
    } else {
        reassign(&inner, &name, &changed).await?
    };
    let mut out = serde_json::to_value(&team).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["reassigned"] = json!(reassigned);
    Ok(Json(out).into_response())
}

/// Re-assign the team's synced DEP devices whose platform's profile changed. Returns how many.
async fn reassign(
    inner: &EngineInner,
    team: &str,
    changed: &BTreeMap<&str, &str>,
) -> ApiResult<usize> {
    // (server, profile) → serials
    let mut work: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = inner
            .store
            .list_devices(&DeviceQuery {
                team: Some(team.to_owned()),
                stage: Some(DeviceStage::Synced),
                after: after.clone(),
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.serial_number.clone());
        for d in &page {
            let profile = platform_of(&d.device_family).and_then(|p| changed.get(p));
            if let (Some(server), Some(profile)) = (&d.dep_server, profile) {
                work.entry((server.clone(), (*profile).to_owned()))
                    .or_default()
                    .push(d.serial_number.clone());
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    let mut n = 0;
    for ((server, profile), serials) in work {
        // The team is saved; a profile Pomona does not know is the admin's to fix (404).
        inner.dep.assign(&server, &profile, &serials).await?;
        n += serials.len();
    }
    Ok(n)
}

/// `DELETE /v1/teams/{name}`.
pub async fn delete(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    inner.teams.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
