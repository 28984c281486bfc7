//! Webhook subscription endpoints under `/v1/webhooks`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::webhooks::WebhookSpec;

/// Body of `PUT /v1/webhooks/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    secret: Option<String>,
    enabled: Option<bool>,
    from_seq: Option<u64>,
}

/// `GET /v1/webhooks`: every subscription with its delivery state (never the secret).
pub(crate) async fn list(State(state): State<HttpState>) -> ApiResult<Response> {
    let hooks = state.webhooks.list().await?;
    Ok(Json(json!({ "webhooks": hooks })).into_response())
}

/// `GET /v1/webhooks/{name}`.
pub(crate) async fn get(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.webhooks.get(&name).await?).into_response())
}

/// `PUT /v1/webhooks/{name}`: create (201) or replace (200). The answer carries `secret` only when
/// the engine generated it.
pub(crate) async fn put(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    body: Result<Json<PutBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let spec = WebhookSpec {
        url: b.url,
        events: b.events,
        secret: b.secret,
        enabled: b.enabled.unwrap_or(true),
        from_seq: b.from_seq,
    };
    let out = state.webhooks.put(&name, spec).await?;
    let mut view = serde_json::to_value(&out.webhook)
        .map_err(|e| ApiError::Internal(format!("cannot encode webhook: {e}")))?;
    if let (Some(secret), Some(map)) = (out.generated_secret, view.as_object_mut()) {
        map.insert("secret".into(), secret.into());
    }
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// `DELETE /v1/webhooks/{name}`.
pub(crate) async fn delete(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    state.webhooks.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/webhooks/{name}/test`: one signed `webhook.test` delivery, now; reports the answer.
pub(crate) async fn test(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.webhooks.test(&name).await?).into_response())
}
