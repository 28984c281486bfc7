//! Enrollment endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::views::EnrollmentView;
use crate::engine::EngineInner;
use crate::store::EnrollmentQuery;
use crate::wire::enrollment_id::EnrollmentId;

/// `GET /v1/enrollments?after=&limit=&enabled=&kind=&parent=&serial_number=`
pub(crate) async fn list(
    State(inner): State<Arc<EngineInner>>,
    query: Result<Query<EnrollmentQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = inner.store.list_enrollments(&q).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let next = (page.len() == limit).then(|| page.last().map(|e| e.id.to_string()));
    let enrollments: Vec<EnrollmentView> = page.into_iter().map(Into::into).collect();
    Ok(Json(
        json!({ "enrollments": enrollments, "next": next.flatten() }),
    ))
}

/// `GET /v1/enrollments/{id}`
pub(crate) async fn get(
    State(inner): State<Arc<EngineInner>>,
    Path(id): Path<String>,
) -> ApiResult<Json<EnrollmentView>> {
    let e = inner
        .store
        .enrollment(&EnrollmentId::new(id.as_str()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no enrollment {id}")))?;
    Ok(Json(e.into()))
}

/// `GET /v1/enrollments/{id}/queue`
pub(crate) async fn queue(
    State(inner): State<Arc<EngineInner>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = EnrollmentId::new(id.as_str());
    if inner.store.enrollment(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no enrollment {id}")));
    }
    let commands = inner.store.queue(&id).await?;
    Ok(Json(json!({ "enrollment_id": id, "commands": commands })))
}

/// `DELETE /v1/enrollments/{id}/queue/{command_uuid}`
pub(crate) async fn cancel(
    State(inner): State<Arc<EngineInner>>,
    Path((id, uuid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let now = time::OffsetDateTime::now_utc();
    if inner
        .store
        .cancel(&EnrollmentId::new(id.as_str()), &uuid, now)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "command {uuid} is not queued for {id}"
        )))
    }
}
