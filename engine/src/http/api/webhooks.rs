//! Webhook subscription endpoints under `/v1/webhooks`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::engine::EngineInner;
use crate::webhooks::{WebhookError, WebhookSpec};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound(_) => Self::NotFound(e.to_string()),
            WebhookError::Invalid(_) => Self::BadRequest(e.to_string()),
            WebhookError::Store(s) => Self::Store(s),
            WebhookError::Seal(_) | WebhookError::Client(_) => Self::Internal(e.to_string()),
        }
    }
}

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
pub(crate) async fn list(State(inner): State<Arc<EngineInner>>) -> ApiResult<Response> {
    let hooks = inner.webhooks.list().await?;
    Ok(Json(json!({ "webhooks": hooks })).into_response())
}

/// `GET /v1/webhooks/{name}`.
pub(crate) async fn get(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(inner.webhooks.get(&name).await?).into_response())
}

/// `PUT /v1/webhooks/{name}`: create (201) or replace (200). The answer carries `secret` only when
/// the engine generated it.
pub(crate) async fn put(
    State(inner): State<Arc<EngineInner>>,
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
    let out = inner.webhooks.put(&name, spec).await?;
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
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    inner.webhooks.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/webhooks/{name}/test`: one signed `webhook.test` delivery, now; reports the answer.
pub(crate) async fn test(
    State(inner): State<Arc<EngineInner>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(inner.webhooks.test(&name).await?).into_response())
}
