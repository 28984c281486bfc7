//! Device endpoints under `/v1/devices`: the joined device view, its setup, team and release.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::store::{DeviceQuery, DeviceRecord, DeviceStage};
use crate::teams::platform_of;
use crate::wire::enrollment_id::EnrollmentId;

/// Query of `GET /v1/devices`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    team: Option<String>,
    stage: Option<DeviceStage>,
    dep_server: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/devices[?team=&stage=&dep_server=&after=&limit=]`.
pub async fn list(
    State(state): State<HttpState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let devices = state
        .setup
        .devices(&DeviceQuery {
            team: q.team,
            stage: q.stage,
            dep_server: q.dep_server,
            after: q.after,
            limit: q.limit,
        })
        .await?;
    let full = devices.len() == q.limit.unwrap_or(100).clamp(1, 1000);
    let next = full
        .then(|| devices.last().map(|d| d.serial_number.clone()))
        .flatten();
    // `next_after` is the pre-0.2 name of `next`: deprecated, removed in 0.2.
    Ok(Json(json!({ "devices": devices, "next": next, "next_after": next })).into_response())
}

/// The device with this serial number, or a 404.
async fn find(state: &HttpState, serial: &str) -> ApiResult<DeviceRecord> {
    state
        .setup
        .device(serial)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device with serial number {serial:?}")))
}

/// `GET /v1/devices/{serial}`: the device joined with its DEP record, enrollment and setup.
pub async fn get(
    State(state): State<HttpState>,
    Path(serial): Path<String>,
) -> ApiResult<Response> {
    let device = find(&state, &serial).await?;
    let dep = match &device.dep_server {
        Some(s) => state.dep.device(s, &serial).await?,
        None => None,
    };
    let (enrollment, setup) = match &device.enrollment_id {
        Some(id) => (
            state
                .identity
                .enrollment(&EnrollmentId::new(id.clone()))
                .await?,
            state.setup.setup_of(id).await?,
        ),
        None => (None, None),
    };
    let enrollment = enrollment.map(|e| {
        json!({
            "id": e.id,
            "enabled": e.enabled,
            "awaiting_configuration": e.awaiting_configuration,
            "token_update_tally": e.token_update_tally,
            "authenticated_at": e
                .authenticated_at
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        })
    });
    Ok(Json(json!({
        "device": device,
        "platform": platform_of(&device.device_family),
        "dep": dep,
        "enrollment": enrollment,
        "setup": setup,
    }))
    .into_response())
}

/// `GET /v1/devices/{serial}/setup`: its setup steps, their status and how it was released.
pub async fn setup(
    State(state): State<HttpState>,
    Path(serial): Path<String>,
) -> ApiResult<Response> {
    let device = find(&state, &serial).await?;
    let setup = match &device.enrollment_id {
        Some(id) => state.setup.setup_of(id).await?,
        None => None,
    };
    let setup = setup.ok_or_else(|| {
        ApiError::NotFound(format!("device {serial:?} has no setup (not enrolled yet, or enrolled without waiting in Setup Assistant)"))
    })?;
    Ok(Json(setup).into_response())
}

/// `PUT /v1/devices/{serial}/team` with `{"team": "name"}` or `{"team": null}`.
pub async fn put_team(
    State(state): State<HttpState>,
    Path(serial): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"team\": name or null}}: {e}")))?;
    let team = match v.get("team") {
        Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
        Some(Value::Null) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "expected {\"team\": \"name\"} or {\"team\": null}".into(),
            ));
        }
    };
    let device = state.setup.set_team(&serial, team).await?;
    // A DEP device that has not enrolled yet gets the new team's enrollment profile.
    let reassigned = state
        .dep
        .assign_team_profile(&device)
        .await
        .map_err(|e| ApiError::Upstream(format!("re-assigning the enrollment profile: {e}")))?;
    Ok(Json(json!({ "device": device, "reassigned_profile": reassigned })).into_response())
}

/// `POST /v1/devices/{serial}/release`: send `DeviceConfigured` now.
pub async fn release(
    State(state): State<HttpState>,
    Path(serial): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.setup.release_now(&serial).await?).into_response())
}
