//! Policy plugin endpoints under `/v1/plugins`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::http::HttpState;
use crate::policy::Hook;
use crate::policy::registry::RegistryError;

/// The most a plugin upload may weigh (components are larger than command plists).
pub(crate) const MAX_PLUGIN_BYTES: usize = 32 << 20;

/// `GET /v1/plugins`: every plugin in chain order, with counters and latency.
pub async fn list(State(state): State<HttpState>) -> Response {
    Json(json!({ "plugins": state.plugins.list() })).into_response()
}

/// `GET /v1/plugins/{name}`.
pub async fn get(State(state): State<HttpState>, Path(name): Path<String>) -> ApiResult<Response> {
    let info = state
        .plugins
        .get(&name)
        .ok_or(RegistryError::NotFound(name))?;
    Ok(Json(info).into_response())
}

/// `PUT /v1/plugins/{name}[?hooks=a,b][&config.KEY=VALUE…]` with the `.lua` or `.wasm` as body.
pub async fn put(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: send the .lua source or the .wasm component".into(),
        ));
    }
    let mut hooks = None;
    let mut config = BTreeMap::new();
    for (k, v) in query {
        if k == "hooks" {
            let parsed: Result<Vec<Hook>, String> = v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect();
            hooks = Some(parsed.map_err(ApiError::BadRequest)?);
        } else if let Some(key) = k.strip_prefix("config.") {
            config.insert(key.to_owned(), v);
        } else {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {k:?}: use hooks=… or config.KEY=VALUE"
            )));
        }
    }
    let info = state
        .plugins
        .put(&name, body.to_vec(), hooks, config)
        .await?;
    Ok((StatusCode::OK, Json(info)).into_response())
}

/// `DELETE /v1/plugins/{name}`.
pub async fn delete(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    state.plugins.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
