//! Enrollment endpoints.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::views::EnrollmentView;
use crate::http::HttpState;
use crate::store::EnrollmentQuery;
use crate::wire::enrollment_id::EnrollmentId;

/// `GET /v1/enrollments?after=&limit=&enabled=&kind=&parent=&serial_number=`
pub(crate) async fn list(
    State(state): State<HttpState>,
    query: Result<Query<EnrollmentQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = state.identity.enrollments(&q).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let next = (page.len() == limit).then(|| page.last().map(|e| e.id.to_string()));
    let enrollments: Vec<EnrollmentView> = page.into_iter().map(Into::into).collect();
    Ok(Json(
        json!({ "enrollments": enrollments, "next": next.flatten() }),
    ))
}

/// `GET /v1/enrollments/{id}`
pub(crate) async fn get(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> ApiResult<Json<EnrollmentView>> {
    let e = state
        .identity
        .enrollment(&EnrollmentId::new(id.as_str()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no enrollment {id}")))?;
    Ok(Json(e.into()))
}

/// `GET /v1/enrollments/{id}/queue`
pub(crate) async fn queue(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = EnrollmentId::new(id.as_str());
    let commands = state
        .commander
        .queue(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no enrollment {id}")))?;
    Ok(Json(json!({ "enrollment_id": id, "commands": commands })))
}

/// `DELETE /v1/enrollments/{id}/queue/{command_uuid}`
pub(crate) async fn cancel(
    State(state): State<HttpState>,
    Path((id, uuid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if state
        .commander
        .cancel(&EnrollmentId::new(id.as_str()), &uuid)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "command {uuid} is not queued for {id}"
        )))
    }
}

/// Body of `POST /v1/enrollments/{id}/reenroll` (optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReenrollRequest {
    /// Lifetime of the approval in seconds (default 24 hours, at most 7 days).
    ttl_secs: Option<u64>,
}

/// `POST /v1/enrollments/{id}/reenroll`: allow the next `Authenticate` of this device with a new
/// certificate, once, within the approval's lifetime (for a Mac whose profile was removed
/// without a CheckOut reaching the server). The previous certificate's escrowed secrets are
/// cleared when it is used.
pub(crate) async fn approve_reenrollment(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let req: ReenrollRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReenrollRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    };
    let id = EnrollmentId::new(id.as_str());
    let now = time::OffsetDateTime::now_utc();
    let expires_at = state
        .identity
        .approve_reenrollment(&id, req.ttl_secs, now)
        .await?;
    let expires_at = expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "enrollment_id": id, "expires_at": expires_at })),
    ))
}
