//! DEP endpoints under `/v1/dep`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::dep::{DepServiceError, ServerPatch};
use crate::engine::EngineInner;
use crate::store::{DepDeviceQuery, DepDeviceRecord, DepServer, ProfileTemplate};
use crate::wire::dep::Profile;

impl From<DepServiceError> for ApiError {
    fn from(e: DepServiceError) -> Self {
        match e {
            DepServiceError::UnknownServer(_) | DepServiceError::UnknownProfile(_) => {
                Self::NotFound(e.to_string())
            }
            DepServiceError::Exists(_) => Self::Conflict(e.to_string()),
            DepServiceError::Invalid(_)
            | DepServiceError::KeyPair(_)
            | DepServiceError::StoredToken(_)
            | DepServiceError::WrongServer { .. }
            | DepServiceError::Token(_) => Self::BadRequest(e.to_string()),
            DepServiceError::Api(_) => Self::Upstream(e.to_string()),
            DepServiceError::Store(s) => Self::Store(s),
            DepServiceError::Seal(_) => Self::Internal(e.to_string()),
        }
    }
}

fn server_view(s: &DepServer) -> serde_json::Value {
    json!({
        "name": s.name,
        "base_url": s.base_url,
        "sync_interval_secs": s.sync_interval_secs,
        "protocol_version": s.protocol_version,
        "default_profile": s.default_profile,
        "default_teams": s.default_teams,
        "has_token": s.token_sealed.is_some(),
        "token_state": s.token_state,
        "token_expiry": s.token_expiry,
        "consumer_key": s.consumer_key,
        "key_rotation_pending": s.staging_keys.is_some(),
        "phase": s.phase,
        "cursor": s.cursor,
        "last_sync_at": s.last_sync_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "last_error": s.last_error,
    })
}

fn device_view(d: &DepDeviceRecord) -> serde_json::Value {
    json!({
        "server": d.server,
        "serial_number": d.serial_number,
        "present": d.present,
        "model": d.device.model,
        "description": d.device.description,
        "color": d.device.color,
        "device_family": d.device.device_family,
        "os": d.device.os,
        "profile_status": d.device.profile_status,
        "profile_uuid": d.device.profile_uuid,
        "assigned_profile": d.assigned_profile,
        "assign_result": d.assign_result,
        "assign_error": d.assign_error,
        "assign_attempts": d.assign_attempts,
        "next_assign_at": d.assign_due_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "reask_at": d.reask_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "history": d.history,
    })
}

/// Body of `POST /v1/dep/servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewServer {
    name: String,
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<T> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

pub(crate) async fn create_server(
    State(inner): State<Arc<EngineInner>>,
    body: Result<Json<NewServer>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let b = json_body(body)?;
    let s = inner.dep.create_server(&b.name).await?;
    Ok((StatusCode::CREATED, Json(server_view(&s))).into_response())
}

pub(crate) async fn list_servers(
    State(inner): State<Arc<EngineInner>>,
) -> ApiResult<Json<serde_json::Value>> {
    let servers = inner.store.dep_servers().await?;
    Ok(Json(
        json!({"servers": servers.iter().map(server_view).collect::<Vec<_>>()}),
    ))
}

pub(crate) async fn get_server(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = inner
        .store
        .dep_server(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no DEP server named {name:?}")))?;
    Ok(Json(server_view(&s)))
}

pub(crate) async fn patch_server(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    body: Result<Json<ServerPatch>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = inner.dep.patch_server(&name, json_body(body)?).await?;
    Ok(Json(server_view(&s)))
}

pub(crate) async fn certificate(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let pem = inner.dep.certificate(&name).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"pomona-dep.pem\"",
            ),
        ],
        pem,
    )
        .into_response())
}

pub(crate) async fn upload_token(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let force = q.get("force").is_some_and(|v| v != "0");
    let s = inner.dep.upload_token(&name, &body, force).await?;
    Ok(Json(server_view(&s)))
}

pub(crate) async fn sync(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    let full = q.get("full").is_some_and(|v| v != "0");
    let report = inner.dep.sync_server(&name, full).await?;
    Ok(Json(json!(report)))
}

/// Body of `POST /v1/dep/servers/{name}/assign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignBody {
    profile: String,
    serials: Vec<String>,
}

pub(crate) async fn assign(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    body: Result<Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let b = json_body(body)?;
    inner.dep.assign(&name, &b.profile, &b.serials).await?;
    let mut devices = Vec::new();
    for serial in &b.serials {
        if let Some(d) = inner.store.dep_device(&name, serial).await? {
            devices.push(device_view(&d));
        }
    }
    Ok(Json(json!({"devices": devices})))
}

pub(crate) async fn list_devices(
    State(inner): State<Arc<EngineInner>>,
    query: Result<Query<DepDeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let devices = inner.store.dep_devices(&q).await?;
    let next = (devices.len() == limit)
        .then(|| {
            devices
                .last()
                .map(|d| format!("{}/{}", d.server, d.serial_number))
        })
        .flatten();
    Ok(Json(
        json!({"devices": devices.iter().map(device_view).collect::<Vec<_>>(), "next": next}),
    ))
}

fn profile_view(p: &ProfileTemplate) -> serde_json::Value {
    json!({"name": p.name, "template": p.template, "definitions": p.definitions})
}

pub(crate) async fn put_profile(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
    body: Result<Json<Profile>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = inner.dep.put_profile(&name, json_body(body)?).await?;
    Ok(Json(profile_view(&p)))
}

pub(crate) async fn list_profiles(
    State(inner): State<Arc<EngineInner>>,
) -> ApiResult<Json<serde_json::Value>> {
    let profiles = inner.store.dep_profiles().await?;
    Ok(Json(
        json!({"profiles": profiles.iter().map(profile_view).collect::<Vec<_>>()}),
    ))
}
