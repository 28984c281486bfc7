//! Command endpoints: NanoMDM-compatible raw enqueue and push, and the native JSON API.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::views::command_json;
use crate::http::HttpState;
use crate::mdm::commands::EnqueueOutcome;
use crate::push::PushOutcome;
use crate::wire::command::Command;
use crate::wire::enrollment_id::EnrollmentId;
use crate::wire::plist_json::json_to_plist;

/// Split `a,b,c` into enrollment IDs.
fn ids(list: &str) -> ApiResult<Vec<EnrollmentId>> {
    let ids: Vec<_> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(EnrollmentId::new)
        .collect();
    if ids.is_empty() {
        return Err(ApiError::BadRequest("no enrollment IDs given".into()));
    }
    Ok(ids)
}

/// `?nopush=1`
#[derive(Debug, Deserialize)]
pub(crate) struct NoPush {
    nopush: Option<String>,
}

/// NanoMDM's per-enrollment result.
#[derive(Debug, Default, Serialize)]
struct NanoTarget {
    #[serde(skip_serializing_if = "String::is_empty")]
    push_error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    push_result: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    command_error: String,
}

/// NanoMDM's API result shape.
#[derive(Debug, Default, Serialize)]
struct NanoResult {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<String, NanoTarget>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_push: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    push_error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    command_error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    command_uuid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    request_type: String,
}

fn nano_target(t: &crate::mdm::commands::TargetOutcome) -> NanoTarget {
    let mut n = NanoTarget {
        command_error: t.error.clone().unwrap_or_default(),
        ..Default::default()
    };
    match &t.push {
        Some(PushOutcome::Sent(id)) => n.push_result = id.clone(),
        Some(PushOutcome::Failed(e)) => n.push_error = e.clone(),
        None => {}
    }
    n
}

/// 200 when everything worked, 207 when some of it did, 500 when nothing did (NanoMDM's rule).
fn nano_status(o: &EnqueueOutcome) -> StatusCode {
    if o.queued() == 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if o.has_errors() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    }
}

/// `PUT /v1/enqueue/{ids}[?nopush=1]` with a raw command plist body.
pub(crate) async fn enqueue_raw(
    State(state): State<HttpState>,
    Path(list): Path<String>,
    Query(q): Query<NoPush>,
    body: Bytes,
) -> ApiResult<Response> {
    let ids = ids(&list)?;
    let no_push = q
        .nopush
        .as_deref()
        .is_some_and(|v| v != "0" && !v.is_empty());
    let command = match Command::parse(body.to_vec()) {
        Ok(c) => c,
        Err(e) => {
            let r = NanoResult {
                command_error: e.to_string(),
                no_push,
                ..Default::default()
            };
            return Ok((StatusCode::BAD_REQUEST, Json(r)).into_response());
        }
    };
    let outcome = state.commander.enqueue(&command, &ids, !no_push).await?;
    let result = NanoResult {
        status: outcome
            .targets
            .iter()
            .map(|t| (t.id.to_string(), nano_target(t)))
            .collect(),
        no_push,
        command_error: outcome.command_error.clone().unwrap_or_default(),
        command_uuid: outcome.command_uuid.clone(),
        request_type: outcome.request_type.clone(),
        ..Default::default()
    };
    Ok((nano_status(&outcome), Json(result)).into_response())
}

/// `GET|POST /v1/push/{ids}`
pub(crate) async fn push(
    State(state): State<HttpState>,
    Path(list): Path<String>,
) -> ApiResult<Response> {
    let ids = ids(&list)?;
    let results = state.pusher.push(&ids).await;
    let mut r = NanoResult::default();
    let mut failures = 0;
    for (id, outcome) in results {
        let mut t = NanoTarget::default();
        match outcome {
            PushOutcome::Sent(apns_id) => t.push_result = apns_id,
            PushOutcome::Failed(e) => {
                failures += 1;
                t.push_error = e;
            }
        }
        r.status.insert(id.to_string(), t);
    }
    let status = if failures == 0 {
        StatusCode::OK
    } else if failures < r.status.len() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok((status, Json(r)).into_response())
}

/// Body of `POST /v1/commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCommand {
    /// Enrollment IDs.
    targets: Vec<String>,
    /// `RequestType`.
    request_type: String,
    /// Command keys besides `RequestType` (`$data` / `$date` objects for plist data and dates).
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
    /// Use this `CommandUUID` instead of a generated one.
    command_uuid: Option<String>,
    /// Push to the targets after enqueueing (default true).
    push: Option<bool>,
}

/// `POST /v1/commands`: the engine builds the plist and the UUID.
pub(crate) async fn create(
    State(state): State<HttpState>,
    body: Result<Json<NewCommand>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if req.targets.is_empty() {
        return Err(ApiError::BadRequest("targets must not be empty".into()));
    }
    if req.request_type.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "request_type must not be empty".into(),
        ));
    }
    let params = json_to_plist(&serde_json::Value::Object(req.parameters))
        .map_err(|e| ApiError::BadRequest(format!("parameters: {e}")))?;
    let params = params
        .into_dictionary()
        .expect("an object converts to a dictionary");
    if params.contains_key("RequestType") {
        return Err(ApiError::BadRequest(
            "parameters must not contain RequestType: use request_type".into(),
        ));
    }
    let uuid = match req.command_uuid {
        Some(u) if !u.is_empty() && u.len() <= 255 => u,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "command_uuid must be 1 to 255 bytes".into(),
            ));
        }
        None => uuid::Uuid::new_v4().to_string().to_uppercase(),
    };
    let command = Command::build(uuid, &req.request_type, params);
    let targets: Vec<_> = req
        .targets
        .iter()
        .map(|s| EnrollmentId::new(s.as_str()))
        .collect();
    let outcome = state
        .commander
        .enqueue(&command, &targets, req.push.unwrap_or(true))
        .await?;
    let status = if outcome.command_error.is_some() {
        StatusCode::CONFLICT
    } else if outcome.queued() == 0 {
        StatusCode::BAD_REQUEST
    } else if outcome.has_errors() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// `GET /v1/commands/{uuid}`
pub(crate) async fn get(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let c = state
        .commander
        .command(&uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no command {uuid}")))?;
    Ok(Json(command_json(&c, state.gateway.plist_limits())))
}
